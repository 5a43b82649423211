package lb

// random is RANDOM: a uniform pick; an unavailable or excluded host is re-rolled, as
// Envoy's random balancer draws only from the healthy hosts.
type random struct {
	hosts []Host
	rng   *rng
}

var (
	_ Balancer  = (*random)(nil)
	_ anyPicker = (*random)(nil)
)

// randomTries bounds the re-rolls before the linear scan.
const randomTries = 8

// NewRandom returns a RANDOM balancer over hosts (copied). Weights are ignored, as in
// Envoy.
func NewRandom(hosts []Host) Balancer { return newRandom(hosts, nil) }

func newRandom(hosts []Host, r *rng) *random {
	return &random{hosts: copyHosts(hosts), rng: r}
}

func (b *random) Pick(ctx *Context) Host    { return b.pick(ctx, false) }
func (b *random) pickAny(ctx *Context) Host { return b.pick(ctx, true) }

func (b *random) pick(ctx *Context, anyHost bool) Host {
	n := len(b.hosts)
	if n == 0 {
		return nil
	}
	f := newFilter(ctx, anyHost)
	var i int
	for range min(n, randomTries) {
		i = below(b.rng.Uint64(), n)
		if f.accept(b.hosts[i]) {
			return b.hosts[i]
		}
	}
	return f.scan(b.hosts, i)
}

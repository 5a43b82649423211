package lb

import (
	"math"

	"github.com/cespare/xxhash/v2"
)

const (
	// DefaultMaglevTableSize is maglev_lb_config.table_size's default.
	DefaultMaglevTableSize = 65537
	// MaxMaglevTableSize is the largest table_size Envoy accepts.
	MaxMaglevTableSize = 5000011
)

// maglev is MAGLEV (Google's Maglev consistent hashing): a prime-sized lookup table
// filled by each host's own permutation of the slots, so a request is one modulo and
// one load, and removing a host moves little more than its own share of keys. Weights
// give heavier hosts proportionally more slots. An unavailable or excluded host passes
// the request to the following slot's host.
type maglev struct {
	hosts []Host
	table []uint32 // host indices, len prime
	rng   *rng
}

var (
	_ Balancer  = (*maglev)(nil)
	_ anyPicker = (*maglev)(nil)
	_ hashed    = (*maglev)(nil)
)

// NewMaglev returns a MAGLEV balancer over hosts (copied). tableSize 0 means 65537; a
// size that is not prime is raised to the next prime (FromCluster rejects it instead,
// as Envoy does). Requests without a hash land on a random slot.
func NewMaglev(hosts []Host, tableSize uint64) Balancer {
	return newMaglev(hosts, tableSize, nil)
}

func newMaglev(hosts []Host, tableSize uint64, r *rng) *maglev {
	if tableSize == 0 {
		tableSize = DefaultMaglevTableSize
	}
	tableSize = min(tableSize, MaxMaglevTableSize)
	for !isPrime(tableSize) {
		tableSize++
	}
	b := &maglev{hosts: copyHosts(hosts), rng: r}
	n := len(b.hosts)
	if n == 0 {
		return b
	}
	m := tableSize
	const empty = math.MaxUint32
	b.table = make([]uint32, m)
	for i := range b.table {
		b.table[i] = empty
	}
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	credit := make([]float64, n)
	share := make([]float64, n)
	var maxW uint64
	for _, h := range b.hosts {
		maxW = max(maxW, weightOf(h))
	}
	d := xxhash.NewWithSeed(1)
	for i, h := range b.hosts {
		key := h.Key()
		offset[i] = xxhash.Sum64String(key) % m
		d.ResetWithSeed(1)
		_, _ = d.WriteString(key)
		skip[i] = d.Sum64()%(m-1) + 1
		share[i] = float64(weightOf(h)) / float64(maxW)
	}
	// Rounds: each host earns share (1 for the heaviest) and claims its next preferred
	// free slot for every whole unit earned, until the table is full.
	var filled uint64
	for filled < m {
		for i := 0; i < n && filled < m; i++ {
			credit[i] += share[i]
			if credit[i] < 1 {
				continue
			}
			credit[i]--
			for {
				slot := (offset[i] + next[i]*skip[i]) % m
				next[i]++
				if b.table[slot] == empty {
					b.table[slot] = uint32(i)
					filled++
					break
				}
			}
		}
	}
	return b
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func (b *maglev) hashesRequests() {}

func (b *maglev) Pick(ctx *Context) Host    { return b.pick(ctx, false) }
func (b *maglev) pickAny(ctx *Context) Host { return b.pick(ctx, true) }

func (b *maglev) pick(ctx *Context, anyHost bool) Host {
	m := len(b.table)
	if m == 0 {
		return nil
	}
	var h uint64
	if ctx != nil && ctx.HasHash {
		h = ctx.Hash
	} else {
		h = b.rng.Uint64()
	}
	slot := int(h % uint64(m))
	f := newFilter(ctx, anyHost)
	prev := uint32(math.MaxUint32)
	idx := b.table[slot]
	for range probeLimit(len(b.hosts), m) {
		idx = b.table[slot]
		if idx != prev {
			if f.accept(b.hosts[idx]) {
				return b.hosts[idx]
			}
			prev = idx
		}
		if slot++; slot == m {
			slot = 0
		}
	}
	return f.scan(b.hosts, int(idx))
}

package lb

import (
	"sync/atomic"
)

const (
	// DefaultOverprovisioning is the ClusterLoadAssignment's
	// policy.overprovisioning_factor default, in percent.
	DefaultOverprovisioning = 140
	// DefaultPanicThreshold is common_lb_config.healthy_panic_threshold's default, in
	// percent.
	DefaultPanicThreshold = 50.0
)

// Locality is one LocalityLbEndpoints of a priority level.
type Locality struct {
	Name string
	// Weight is load_balancing_weight; used only with PriorityOptions.LocalityWeighted.
	Weight uint32
	Hosts  []Host
}

// PriorityOptions tune the priority and locality layer.
type PriorityOptions struct {
	// Overprovisioning is the ClusterLoadAssignment's policy.overprovisioning_factor in
	// percent; 0 means DefaultOverprovisioning (140).
	Overprovisioning uint32
	// PanicThreshold is common_lb_config.healthy_panic_threshold in percent; 0 means
	// DefaultPanicThreshold (50) and a negative value disables panic mode (Envoy's 0%).
	PanicThreshold float64
	// LocalityWeighted is common_lb_config.locality_weighted_lb_config: pick a locality
	// by its weight scaled by its availability, then a host within it.
	LocalityWeighted bool
	// Seed, when not 0, makes the priority and locality choices reproducible (tests).
	Seed uint64
}

// PrioritySet is a cluster's whole balancer: Envoy's priority levels with
// overprovisioning and panic threshold, optional locality weighting within a level, and
// the cluster's lb policy underneath (one balancer per level, and one per locality when
// locality weighting is on and the policy does not hash).
//
// RING_HASH and MAGLEV keep one ring or table per level and ignore locality weights
// (one hash space per level keeps a key on one host).
//
// Build one with NewPrioritySet whenever the host set changes. Host availability is
// read two ways: the per-policy balancers read Host.Available live on every pick, but
// the priority loads, panic flags and locality weights are recomputed only by Refresh,
// which the cluster must call after any health or ejection change (health and outlier
// onChange callbacks). Picks and Refresh may run concurrently; Pick does not allocate.
type PrioritySet struct {
	levels []prioLevel
	over   uint64
	panic  float64 // <= 0: disabled
	locW   bool
	rng    *rng
	state  atomic.Pointer[prioState]
}

type prioLevel struct {
	hosts []Host
	all   Balancer // nil when the level has no hosts
	locs  []prioLocality
}

type prioLocality struct {
	weight uint64
	hosts  []Host
	b      Balancer
}

// prioState is what Refresh computes; Pick reads it through one atomic load.
type prioState struct {
	cum    []uint32   // cumulative load in percent per level; cum[last] == 100
	panic  []bool     // level balances over all its hosts, ignoring health
	locCum [][]uint64 // per level cumulative effective locality weights; nil: none
	none   bool       // nothing to pick (no hosts, or none available without panic)
}

var _ Balancer = (*PrioritySet)(nil)

// NewPrioritySet builds the balancers of levels (index = priority; each level's
// localities in EDS order) with policy. It computes the initial loads (as Refresh).
func NewPrioritySet(levels [][]Locality, policy Factory, opts PriorityOptions) *PrioritySet {
	p := &PrioritySet{
		over:  uint64(opts.Overprovisioning),
		panic: opts.PanicThreshold,
		locW:  opts.LocalityWeighted,
	}
	if opts.Seed != 0 {
		p.rng = newRNG(opts.Seed)
	}
	if p.over == 0 {
		p.over = DefaultOverprovisioning
	}
	if p.panic == 0 {
		p.panic = DefaultPanicThreshold
	}
	p.levels = make([]prioLevel, len(levels))
	for i, locs := range levels {
		lv := &p.levels[i]
		for _, l := range locs {
			lv.hosts = append(lv.hosts, l.Hosts...)
		}
		if len(lv.hosts) == 0 {
			continue
		}
		lv.all = policy(lv.hosts)
		if _, ok := lv.all.(hashed); ok || !p.locW {
			continue
		}
		for _, l := range locs {
			pl := prioLocality{weight: uint64(l.Weight), hosts: copyHosts(l.Hosts)}
			if len(l.Hosts) > 0 {
				pl.b = policy(l.Hosts)
			}
			lv.locs = append(lv.locs, pl)
		}
	}
	p.Refresh()
	return p
}

// Pick chooses a priority level by its load (by the request hash when there is one, so
// a hash-based policy stays consistent), then a locality by weight when locality
// weighting is on, then a host with the policy. It returns nil when no host is
// available and no level is in panic.
func (p *PrioritySet) Pick(ctx *Context) Host {
	st := p.state.Load()
	if len(p.levels) == 0 {
		return nil
	}
	if !st.none {
		var r uint64
		if ctx != nil && ctx.HasHash {
			r = ctx.Hash
		} else {
			r = p.rng.Uint64()
		}
		x := uint32(r % 100)
		lvl := 0
		for lvl < len(st.cum)-1 && x >= st.cum[lvl] {
			lvl++
		}
		lv := &p.levels[lvl]
		if lv.all != nil {
			if st.panic[lvl] {
				return pickAny(lv, ctx)
			}
			if cum := st.locCum[lvl]; cum != nil {
				j := searchCum(cum, below(p.rng.Uint64(), int(cum[len(cum)-1])))
				if b := lv.locs[j].b; b != nil {
					if h := b.Pick(ctx); h != nil {
						return h
					}
				}
			}
			if h := lv.all.Pick(ctx); h != nil {
				return h
			}
		}
	}
	// The loads are stale (health changed since the last Refresh): take the first
	// level that still has an available host.
	for i := range p.levels {
		if b := p.levels[i].all; b != nil {
			if h := b.Pick(ctx); h != nil {
				return h
			}
		}
	}
	return nil
}

func pickAny(lv *prioLevel, ctx *Context) Host {
	if a, ok := lv.all.(anyPicker); ok {
		return a.pickAny(ctx)
	}
	if h := lv.all.Pick(ctx); h != nil {
		return h
	}
	return lv.hosts[0]
}

// searchCum returns the first index whose cumulative weight exceeds x.
func searchCum(cum []uint64, x int) int {
	lo, hi := 0, len(cum)-1
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cum[m] > uint64(x) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// Refresh recomputes the priority loads, panic flags and locality weights from the
// hosts' current availability. Call it after any health or ejection change; it costs
// one Host.Available call per host and a few small allocations.
//
// Envoy's rules: a level's health is available/total × overprovisioning, capped at
// 100%; levels take load in order, each its health's share of the normalized total
// (the sum of healths capped at 100), so load spills to the next level as a level
// degrades. Panic applies only when the normalized total is below 100%: then a level
// whose available share is below the panic threshold balances over all its hosts; when
// every level is in panic, load is spread by host count.
func (p *PrioritySet) Refresh() {
	n := len(p.levels)
	st := &prioState{
		cum:    make([]uint32, n),
		panic:  make([]bool, n),
		locCum: make([][]uint64, n),
	}
	avail := make([]uint64, n)
	health := make([]uint64, n)
	var sumHealth, totalHosts uint64
	for i := range p.levels {
		lv := &p.levels[i]
		for _, h := range lv.hosts {
			if h.Available() {
				avail[i]++
			}
		}
		if t := uint64(len(lv.hosts)); t > 0 {
			health[i] = min(100, avail[i]*p.over/t)
			totalHosts += t
		}
		sumHealth += health[i]
	}
	norm := min(100, sumHealth)
	panicOn := p.panic > 0
	allPanic := n > 0
	for i := range p.levels {
		t := len(p.levels[i].hosts)
		if panicOn && norm < 100 {
			st.panic[i] = t == 0 || 100*float64(avail[i])/float64(t) < p.panic
		}
		if !st.panic[i] {
			allPanic = false
		}
	}
	loads := make([]uint64, n)
	switch {
	case n == 0 || totalHosts == 0 || (norm == 0 && !panicOn):
		st.none = true
	case allPanic:
		// Total panic: spread by host count.
		rem := uint64(100)
		for i := range p.levels {
			loads[i] = min(rem, 100*uint64(len(p.levels[i].hosts))/totalHosts)
			rem -= loads[i]
		}
		for i := range p.levels {
			if len(p.levels[i].hosts) > 0 {
				loads[i] += rem
				break
			}
		}
	default:
		rem := uint64(100)
		for i := range p.levels {
			loads[i] = min(rem, health[i]*100/norm)
			rem -= loads[i]
		}
		for i := range p.levels {
			if health[i] > 0 {
				loads[i] += rem
				break
			}
		}
	}
	var c uint64
	for i := range loads {
		c += loads[i]
		st.cum[i] = uint32(c)
	}
	if n > 0 && !st.none {
		st.cum[n-1] = 100
	}
	if p.locW {
		for i := range p.levels {
			if !st.panic[i] {
				st.locCum[i] = p.localityWeights(&p.levels[i])
			}
		}
	}
	p.state.Store(st)
}

// localityWeights returns the cumulative effective weights of a level's localities:
// weight × min(1, overprovisioning × available/total), as Envoy scales a locality by
// its availability. nil when every effective weight is 0.
func (p *PrioritySet) localityWeights(lv *prioLevel) []uint64 {
	if len(lv.locs) == 0 {
		return nil
	}
	const scale = 1 << 16 // precision of the availability factor
	cum := make([]uint64, len(lv.locs))
	var c uint64
	for j, l := range lv.locs {
		t := uint64(len(l.hosts))
		if t > 0 && l.weight > 0 {
			var a uint64
			for _, h := range l.hosts {
				if h.Available() {
					a++
				}
			}
			f := min(scale, a*p.over*scale/(100*t))
			c += l.weight * f
		}
		cum[j] = c
	}
	if c == 0 {
		return nil
	}
	return cum
}

// Loads returns each level's share of traffic in percent and whether it is in panic,
// as of the last Refresh (admin and tests).
func (p *PrioritySet) Loads() (loads []uint32, panic []bool) {
	st := p.state.Load()
	loads = make([]uint32, len(st.cum))
	var prev uint32
	for i, c := range st.cum {
		if !st.none {
			loads[i] = c - prev
		}
		prev = c
	}
	return loads, append([]bool(nil), st.panic...)
}

package lb

import (
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// rng is the balancers' random source. Unseeded it is the runtime's per-thread
// generator (no shared state, no contention between cores); seeded (tests) it is a
// splitmix64 sequence advanced by one atomic add, so a single-goroutine run of picks is
// reproducible.
type rng struct {
	seeded bool
	state  atomic.Uint64
}

func newRNG(seed uint64) *rng {
	r := &rng{seeded: seed != 0}
	r.state.Store(seed)
	return r
}

func (r *rng) Uint64() uint64 {
	if r == nil || !r.seeded {
		return rand.Uint64()
	}
	z := r.state.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// below maps a random 64-bit value onto [0, n) without a division.
func below(x uint64, n int) int {
	hi, _ := bits.Mul64(x, uint64(n))
	return int(hi)
}

// filter decides whether a candidate host may be returned: it must be available
// (unless the pick ignores health, as in panic mode) and not excluded by the retry
// host predicate. After MaxExcludeAttempts excluded candidates it takes an excluded
// one anyway, as Envoy returns the last selected host once
// host_selection_retry_max_attempts is spent. It lives on the stack of a pick.
type filter struct {
	exclude  func(Host) bool
	max      uint32
	excluded uint32
	anyHost  bool // panic mode: health is ignored
	fallback Host // last available but excluded candidate
}

func newFilter(ctx *Context, anyHost bool) filter {
	f := filter{anyHost: anyHost}
	if ctx != nil && ctx.Exclude != nil {
		f.exclude = ctx.Exclude
		f.max = ctx.MaxExcludeAttempts
		if f.max == 0 {
			f.max = 1
		}
	}
	return f
}

// accept reports whether h is the pick.
func (f *filter) accept(h Host) bool {
	if !f.anyHost && !h.Available() {
		return false
	}
	if f.exclude != nil && f.exclude(h) {
		f.fallback = h
		f.excluded++
		return f.excluded > f.max
	}
	return true
}

// scan is the last resort of every balancer: a linear walk over all hosts from start,
// so a pick finds an available, not excluded host whenever one exists however few are
// available. When every available host is excluded it returns one of those.
func (f *filter) scan(hosts []Host, start int) Host {
	n := len(hosts)
	for i := 0; i < n; i++ {
		j := start + i
		if j >= n {
			j -= n
		}
		h := hosts[j]
		if !f.anyHost && !h.Available() {
			continue
		}
		if f.exclude != nil && f.exclude(h) {
			f.fallback = h
			continue
		}
		return h
	}
	return f.fallback
}

// probeLimit bounds how many positions a balancer walks in its own order (ring, table,
// rotation) before scanning linearly: enough to meet every host of a random order with
// high probability (about n·ln n), small enough to keep a pick cheap when most hosts are
// down.
func probeLimit(n, positions int) int {
	l := 2*n*(bits.Len(uint(n))+1) + 16
	if l > positions {
		l = positions
	}
	return l
}

// anyPicker is implemented by this package's balancers: a pick that ignores host health,
// for the priority layer's panic mode (common_lb_config.healthy_panic_threshold).
type anyPicker interface {
	pickAny(ctx *Context) Host
}

// hashed is implemented by the consistent-hashing balancers; the priority layer does not
// split their traffic by locality (one ring or table per priority level).
type hashed interface {
	hashesRequests()
}

func copyHosts(hosts []Host) []Host {
	return append([]Host(nil), hosts...)
}

func weightOf(h Host) uint64 {
	w := h.Weight()
	if w == 0 {
		return 1
	}
	return uint64(w)
}

func equalWeights(hosts []Host) bool {
	for i := 1; i < len(hosts); i++ {
		if weightOf(hosts[i]) != weightOf(hosts[0]) {
			return false
		}
	}
	return true
}

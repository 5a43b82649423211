package lb

import (
	"container/heap"
	"sync/atomic"
)

// maxSchedule bounds the precomputed weighted round-robin schedule (entries of 4
// bytes). Weights whose reduced sum exceeds it are scaled down to fit, which changes
// each host's share by at most about n/maxSchedule.
const maxSchedule = 1 << 16

// RoundRobin is ROUND_ROBIN. With equal weights it is a plain rotation; with weights it
// follows one period of an earliest-deadline-first schedule (as Envoy's weighted round
// robin does), precomputed when the balancer is built, so each host gets exactly its
// weight's share of every period and a pick is one atomic add and an index.
//
// An unavailable host does not hand its turn to its neighbour: the pick takes the next
// slot of the shared sequence instead, so the remaining hosts keep their proportions.
type roundRobin struct {
	hosts    []Host
	schedule []uint32 // nil: plain rotation over hosts
	next     atomic.Uint64
}

var (
	_ Balancer  = (*roundRobin)(nil)
	_ anyPicker = (*roundRobin)(nil)
)

// NewRoundRobin returns a ROUND_ROBIN balancer over hosts (copied), weighted by
// Host.Weight. The rotation starts at a random slot so that proxies started together do
// not all begin with the same host.
func NewRoundRobin(hosts []Host) Balancer { return newRoundRobin(hosts, nil) }

func newRoundRobin(hosts []Host, r *rng) *roundRobin {
	b := &roundRobin{hosts: copyHosts(hosts)}
	if !equalWeights(b.hosts) {
		b.schedule = wrrSchedule(b.hosts)
	}
	if n := b.slots(); n > 0 {
		b.next.Store(uint64(below(r.Uint64(), n)))
	}
	return b
}

func (b *roundRobin) slots() int {
	if b.schedule != nil {
		return len(b.schedule)
	}
	return len(b.hosts)
}

func (b *roundRobin) Pick(ctx *Context) Host    { return b.pick(ctx, false) }
func (b *roundRobin) pickAny(ctx *Context) Host { return b.pick(ctx, true) }

func (b *roundRobin) pick(ctx *Context, anyHost bool) Host {
	n := b.slots()
	if n == 0 {
		return nil
	}
	f := newFilter(ctx, anyHost)
	limit := probeLimit(len(b.hosts), n)
	var i int
	for range limit {
		slot := int((b.next.Add(1) - 1) % uint64(n))
		i = slot
		if b.schedule != nil {
			i = int(b.schedule[slot])
		}
		if f.accept(b.hosts[i]) {
			return b.hosts[i]
		}
	}
	return f.scan(b.hosts, i)
}

// wrrSchedule returns one period of the weighted schedule: host i appears exactly
// w_i/g times (g the gcd of the weights), ordered by earliest deadline k/w_i with ties
// broken by index. Deadlines are compared as exact fractions.
func wrrSchedule(hosts []Host) []uint32 {
	w := make([]uint64, len(hosts))
	var sum uint64
	for i, h := range hosts {
		w[i] = weightOf(h)
		sum += w[i]
	}
	if len(hosts) >= maxSchedule/2 {
		return nil // too many hosts to honour weights in a bounded schedule
	}
	reduce(w, &sum)
	if sum > maxSchedule {
		var s uint64
		for i := range w {
			w[i] = max(1, w[i]*maxSchedule/sum)
			s += w[i]
		}
		sum = s
		reduce(w, &sum)
	}
	q := make(deadlineHeap, len(w))
	for i := range w {
		q[i] = deadline{k: 1, w: w[i], idx: uint32(i)}
	}
	heap.Init(&q)
	out := make([]uint32, 0, sum)
	for range sum {
		d := &q[0]
		out = append(out, d.idx)
		d.k++
		heap.Fix(&q, 0)
	}
	return out
}

func reduce(w []uint64, sum *uint64) {
	g := uint64(0)
	for _, x := range w {
		g = gcd(g, x)
	}
	if g > 1 {
		*sum = 0
		for i := range w {
			w[i] /= g
			*sum += w[i]
		}
	}
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// deadline is the k-th turn of a host of weight w, due at k/w.
type deadline struct {
	k, w uint64
	idx  uint32
}

type deadlineHeap []deadline

func (h deadlineHeap) Len() int { return len(h) }
func (h deadlineHeap) Less(i, j int) bool {
	a, b := h[i].k*h[j].w, h[j].k*h[i].w
	if a != b {
		return a < b
	}
	return h[i].idx < h[j].idx
}
func (h deadlineHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *deadlineHeap) Push(x any)   { *h = append(*h, x.(deadline)) }
func (h *deadlineHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

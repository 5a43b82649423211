package lb

import (
	"math"
	"sync"
)

// leastRequest is LEAST_REQUEST (least_request_lb_config).
//
// With equal weights it is Envoy's power of N choices: choiceCount random hosts are
// drawn and the one with the fewest active requests wins; lock free.
//
// With unequal weights it is Envoy's weighted variant: an earliest-deadline-first
// schedule where a host's weight at each turn is
// weight / (active_requests + 1) ^ active_request_bias, so a busy host's next turn
// comes later. That schedule is shared state and is kept under a mutex.
type leastRequest struct {
	hosts  []Host
	choice int
	bias   float64
	rng    *rng

	// Weighted variant only.
	mu  sync.Mutex
	edf []lrTurn // binary min-heap on (due, seq)
	seq uint64
}

type lrTurn struct {
	due float64
	seq uint64 // FIFO among equal deadlines
	idx uint32
}

var (
	_ Balancer  = (*leastRequest)(nil)
	_ anyPicker = (*leastRequest)(nil)
)

const (
	// DefaultChoiceCount is least_request_lb_config.choice_count's default.
	DefaultChoiceCount = 2
	// DefaultActiveRequestBias is least_request_lb_config.active_request_bias's default.
	DefaultActiveRequestBias = 1.0
	lrRounds                 = 4
)

// NewLeastRequest returns a LEAST_REQUEST balancer over hosts (copied). choiceCount 0
// means 2; activeRequestBias is Envoy's active_request_bias (its default is
// DefaultActiveRequestBias; 0 makes the weighted variant ignore load).
func NewLeastRequest(hosts []Host, choiceCount uint32, activeRequestBias float64) Balancer {
	return newLeastRequest(hosts, choiceCount, activeRequestBias, nil)
}

func newLeastRequest(hosts []Host, choiceCount uint32, bias float64, r *rng) *leastRequest {
	if choiceCount == 0 {
		choiceCount = DefaultChoiceCount
	}
	if bias < 0 || math.IsNaN(bias) {
		bias = DefaultActiveRequestBias
	}
	b := &leastRequest{hosts: copyHosts(hosts), choice: int(choiceCount), bias: bias, rng: r}
	if !equalWeights(b.hosts) {
		b.edf = make([]lrTurn, len(b.hosts))
		for i, h := range b.hosts {
			b.edf[i] = lrTurn{due: 1 / float64(weightOf(h)), seq: uint64(i), idx: uint32(i)}
		}
		b.seq = uint64(len(b.hosts))
		for i := len(b.edf)/2 - 1; i >= 0; i-- {
			b.down(i)
		}
	}
	return b
}

func (b *leastRequest) Pick(ctx *Context) Host    { return b.pick(ctx, false) }
func (b *leastRequest) pickAny(ctx *Context) Host { return b.pick(ctx, true) }

func (b *leastRequest) pick(ctx *Context, anyHost bool) Host {
	n := len(b.hosts)
	if n == 0 {
		return nil
	}
	f := newFilter(ctx, anyHost)
	if b.edf != nil {
		return b.pickWeighted(&f)
	}
	var last int
	for range lrRounds {
		var best Host
		var bestActive int64
		for range b.choice {
			last = below(b.rng.Uint64(), n)
			h := b.hosts[last]
			if !f.accept(h) {
				continue
			}
			if a := h.ActiveRequests(); best == nil || a < bestActive {
				best, bestActive = h, a
			}
		}
		if best != nil {
			return best
		}
	}
	return f.scan(b.hosts, last)
}

func (b *leastRequest) pickWeighted(f *filter) Host {
	n := len(b.hosts)
	b.mu.Lock()
	var last int
	for range probeLimit(n, n) {
		t := &b.edf[0]
		last = int(t.idx)
		h := b.hosts[last]
		ok := f.accept(h)
		t.due += 1 / b.effectiveWeight(h)
		t.seq = b.seq
		b.seq++
		b.down(0)
		if ok {
			b.mu.Unlock()
			return h
		}
	}
	b.mu.Unlock()
	return f.scan(b.hosts, last)
}

func (b *leastRequest) effectiveWeight(h Host) float64 {
	w := float64(weightOf(h))
	a := h.ActiveRequests()
	if a < 0 {
		a = 0
	}
	switch b.bias {
	case 0:
		return w
	case 1:
		return w / float64(a+1)
	default:
		return w / math.Pow(float64(a+1), b.bias)
	}
}

func (b *leastRequest) less(i, j int) bool {
	x, y := &b.edf[i], &b.edf[j]
	if x.due != y.due {
		return x.due < y.due
	}
	return x.seq < y.seq
}

func (b *leastRequest) down(i int) {
	n := len(b.edf)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && b.less(r, l) {
			m = r
		}
		if !b.less(m, i) {
			return
		}
		b.edf[i], b.edf[m] = b.edf[m], b.edf[i]
		i = m
	}
}

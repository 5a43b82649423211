package lb

import (
	"fmt"
	"math"
	"testing"
)

func level(n int, prefix string) ([]Host, []*testHost) {
	hs := make([]Host, n)
	ts := make([]*testHost, n)
	for i := range n {
		ts[i] = &testHost{key: fmt.Sprintf("%s%d:80", prefix, i), weight: 1}
		hs[i] = ts[i]
	}
	return hs, ts
}

func setHealthy(ts []*testHost, healthy int) {
	for i, h := range ts {
		h.down.Store(i >= healthy)
	}
}

func TestPriorityLoadsEnvoyExamples(t *testing.T) {
	// Envoy's priority-level table (overprovisioning 1.4): P0's health spills to P1.
	tests := []struct {
		p0, p1       int // healthy hosts of 100
		want0, want1 uint32
		panic1       bool
	}{
		{100, 100, 100, 0, false},
		{72, 100, 100, 0, false},
		{71, 100, 99, 1, false},
		{50, 100, 70, 30, false},
		{25, 100, 35, 65, false},
		{0, 100, 0, 100, false},
		// Normalized total below 100 (77+14 = 91): each level takes its share of the
		// total, 77/91 and 14/91, the rounding remainder going to P0; P1 at 10% healthy
		// is in panic since the levels together cannot carry the load.
		{55, 10, 85, 15, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("P0=%d%%,P1=%d%%", tt.p0, tt.p1), func(t *testing.T) {
			h0, t0 := level(100, "a")
			h1, t1 := level(100, "b")
			setHealthy(t0, tt.p0)
			setHealthy(t1, tt.p1)
			ps := NewPrioritySet([][]Locality{{{Hosts: h0}}, {{Hosts: h1}}}, NewRoundRobin, PriorityOptions{Seed: 1})
			loads, panic := ps.Loads()
			if loads[0] != tt.want0 || loads[1] != tt.want1 {
				t.Fatalf("loads %v, want [%d %d]", loads, tt.want0, tt.want1)
			}
			if panic[0] || panic[1] != tt.panic1 {
				t.Fatalf("panic %v, want [false %v]", panic, tt.panic1)
			}
			// The picks follow the loads.
			const n = 10000
			got0 := 0
			for range n {
				h := ps.Pick(nil)
				if h == nil {
					t.Fatal("nil pick")
				}
				if h.Key()[0] == 'a' {
					got0++
					if !h.Available() {
						t.Fatalf("picked unavailable P0 host %s", h.Key())
					}
				} else if !tt.panic1 && !h.Available() {
					t.Fatalf("picked unavailable P1 host %s", h.Key())
				}
			}
			if d := math.Abs(float64(got0)/n*100 - float64(tt.want0)); d > 2 {
				t.Fatalf("P0 got %.1f%% of picks, want %d%% ±2", float64(got0)/n*100, tt.want0)
			}
		})
	}
}

func TestPriorityRefreshFollowsHealth(t *testing.T) {
	h0, t0 := level(10, "a")
	h1, _ := level(10, "b")
	ps := NewPrioritySet([][]Locality{{{Hosts: h0}}, {{Hosts: h1}}}, NewRoundRobin, PriorityOptions{})
	if l, _ := ps.Loads(); l[0] != 100 {
		t.Fatalf("loads %v", l)
	}
	setHealthy(t0, 5)
	ps.Refresh()
	if l, _ := ps.Loads(); l[0] != 70 || l[1] != 30 {
		t.Fatalf("after half of P0 failed: loads %v, want [70 30]", l)
	}
	setHealthy(t0, 10)
	ps.Refresh()
	if l, _ := ps.Loads(); l[0] != 100 {
		t.Fatalf("after recovery: loads %v", l)
	}
}

func TestPriorityOverprovisioning(t *testing.T) {
	h0, t0 := level(10, "a")
	h1, _ := level(10, "b")
	setHealthy(t0, 5)
	ps := NewPrioritySet([][]Locality{{{Hosts: h0}}, {{Hosts: h1}}}, NewRoundRobin, PriorityOptions{Overprovisioning: 100})
	if l, _ := ps.Loads(); l[0] != 50 || l[1] != 50 {
		t.Fatalf("overprovisioning 100: loads %v, want [50 50]", l)
	}
}

func TestPanicThreshold(t *testing.T) {
	hs, ts := level(10, "a")
	setHealthy(ts, 3) // 30% < 50%: panic, all hosts
	ps := NewPrioritySet([][]Locality{{{Hosts: hs}}}, NewRoundRobin, PriorityOptions{Seed: 1})
	if _, p := ps.Loads(); !p[0] {
		t.Fatal("level 0 at 30% healthy is not in panic")
	}
	down := 0
	for range 1000 {
		if !ps.Pick(nil).Available() {
			down++
		}
	}
	if down < 600 || down > 800 {
		t.Fatalf("panic mode sent %d of 1000 picks to unhealthy hosts, want ~700", down)
	}

	// Panic disabled (healthy_panic_threshold 0): only healthy hosts.
	ps = NewPrioritySet([][]Locality{{{Hosts: hs}}}, NewRoundRobin, PriorityOptions{PanicThreshold: -1})
	for range 1000 {
		if !ps.Pick(nil).Available() {
			t.Fatal("picked an unhealthy host with panic mode disabled")
		}
	}
	// Nothing healthy and no panic: no host.
	setHealthy(ts, 0)
	ps.Refresh()
	if h := ps.Pick(nil); h != nil {
		t.Fatalf("picked %v with no healthy host and panic disabled", h)
	}

	// Above the threshold: no panic.
	setHealthy(ts, 6)
	ps = NewPrioritySet([][]Locality{{{Hosts: hs}}}, NewRoundRobin, PriorityOptions{})
	if _, p := ps.Loads(); p[0] {
		t.Fatal("level at 60% healthy is in panic")
	}
}

func TestPanicIgnoredWhenLowerLevelAbsorbs(t *testing.T) {
	// P0 at 20% is below the panic threshold, but P1 makes the normalized total 100%:
	// Envoy ignores panic then.
	h0, t0 := level(10, "a")
	h1, _ := level(10, "b")
	setHealthy(t0, 2)
	ps := NewPrioritySet([][]Locality{{{Hosts: h0}}, {{Hosts: h1}}}, NewRoundRobin, PriorityOptions{Seed: 3})
	l, p := ps.Loads()
	if p[0] || p[1] || l[0] != 28 || l[1] != 72 {
		t.Fatalf("loads %v panic %v, want [28 72] without panic", l, p)
	}
	for range 2000 {
		if !ps.Pick(nil).Available() {
			t.Fatal("picked an unhealthy host")
		}
	}
}

func TestTotalPanicSpreadsByHostCount(t *testing.T) {
	h0, t0 := level(10, "a")
	h1, t1 := level(30, "b")
	setHealthy(t0, 2)
	setHealthy(t1, 6)
	ps := NewPrioritySet([][]Locality{{{Hosts: h0}}, {{Hosts: h1}}}, NewRoundRobin, PriorityOptions{})
	l, p := ps.Loads()
	if !p[0] || !p[1] || l[0] != 25 || l[1] != 75 {
		t.Fatalf("loads %v panic %v, want [25 75] both in panic", l, p)
	}
}

func TestLocalityWeights(t *testing.T) {
	ha, ta := level(5, "a")
	hb, _ := level(5, "b")
	levels := [][]Locality{{{Name: "a", Weight: 80, Hosts: ha}, {Name: "b", Weight: 20, Hosts: hb}}}
	for _, p := range []Policy{RoundRobin, LeastRequest, Random} {
		t.Run(p.String(), func(t *testing.T) {
			setHealthy(ta, 5)
			ps := NewPrioritySet(levels, Config{Policy: p, Seed: 4}.New, PriorityOptions{LocalityWeighted: true, Seed: 4})
			share := func() float64 {
				n := 0
				for range 10000 {
					if ps.Pick(nil).Key()[0] == 'a' {
						n++
					}
				}
				return float64(n) / 100
			}
			if s := share(); math.Abs(s-80) > 2 {
				t.Fatalf("locality a got %.1f%%, want 80 ±2", s)
			}
			// a at 2/5 available: effective weight 80 × min(1, 1.4×0.4) = 44.8 against
			// b's 20: a's share 69.1%.
			setHealthy(ta, 2)
			ps.Refresh()
			if s := share(); math.Abs(s-69.1) > 2 {
				t.Fatalf("degraded locality a got %.1f%%, want 69.1 ±2", s)
			}
		})
	}
	// Without locality_weighted_lb_config the weights are ignored: by host count.
	setHealthy(ta, 5)
	ps := NewPrioritySet(levels, NewRoundRobin, PriorityOptions{})
	n := 0
	for range 10000 {
		if ps.Pick(nil).Key()[0] == 'a' {
			n++
		}
	}
	if n != 5000 {
		t.Fatalf("unweighted localities: a got %d of 10000, want 5000", n)
	}
}

func TestPriorityHashConsistent(t *testing.T) {
	h0, _ := level(10, "a")
	h1, _ := level(10, "b")
	ps := NewPrioritySet([][]Locality{{{Hosts: h0}}, {{Hosts: h1}}}, Config{Policy: RingHash}.New, PriorityOptions{})
	for i := range 1000 {
		ctx := &Context{Hash: splitmix(uint64(i)), HasHash: true}
		if a, b := ps.Pick(ctx), ps.Pick(ctx); a != b {
			t.Fatalf("hash %d: %v then %v", i, a, b)
		}
	}
}

func TestPriorityEmpty(t *testing.T) {
	ps := NewPrioritySet(nil, NewRoundRobin, PriorityOptions{})
	if ps.Pick(nil) != nil {
		t.Fatal("pick from an empty set")
	}
	ps = NewPrioritySet([][]Locality{{}, {{Hosts: nil}}}, NewRoundRobin, PriorityOptions{})
	if ps.Pick(nil) != nil {
		t.Fatal("pick from empty levels")
	}
	// An empty P0 with a healthy P1: all traffic to P1.
	h1, _ := level(3, "b")
	ps = NewPrioritySet([][]Locality{{}, {{Hosts: h1}}}, NewRoundRobin, PriorityOptions{})
	if l, _ := ps.Loads(); l[1] != 100 {
		t.Fatalf("loads %v, want all on P1", l)
	}
	if ps.Pick(nil) == nil {
		t.Fatal("nil pick")
	}
}

func TestPriorityStaleLoadsStillFindHost(t *testing.T) {
	// Without Refresh the loads still point at P0, whose hosts all went down: the pick
	// falls through to P1 rather than failing.
	h0, t0 := level(3, "a")
	h1, _ := level(3, "b")
	ps := NewPrioritySet([][]Locality{{{Hosts: h0}}, {{Hosts: h1}}}, NewRoundRobin, PriorityOptions{})
	setHealthy(t0, 0)
	for range 10 {
		if h := ps.Pick(nil); h == nil || h.Key()[0] != 'b' {
			t.Fatalf("picked %v, want a P1 host", h)
		}
	}
}

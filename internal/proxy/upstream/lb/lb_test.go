package lb

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
)

type testHost struct {
	key    string
	weight uint32
	down   atomic.Bool
	active atomic.Int64
}

func (h *testHost) Key() string           { return h.key }
func (h *testHost) Weight() uint32        { return h.weight }
func (h *testHost) Available() bool       { return !h.down.Load() }
func (h *testHost) ActiveRequests() int64 { return h.active.Load() }

func mkHosts(weights ...uint32) ([]Host, []*testHost) {
	hs := make([]Host, len(weights))
	ts := make([]*testHost, len(weights))
	for i, w := range weights {
		ts[i] = &testHost{key: fmt.Sprintf("10.0.0.%d:8080", i+1), weight: w}
		hs[i] = ts[i]
	}
	return hs, ts
}

func equalHosts(n int) ([]Host, []*testHost) {
	w := make([]uint32, n)
	for i := range w {
		w[i] = 1
	}
	return mkHosts(w...)
}

// counts picks n times and returns the picks per host key.
func counts(t *testing.T, b Balancer, ctx *Context, n int) map[string]int {
	t.Helper()
	c := make(map[string]int)
	for range n {
		h := b.Pick(ctx)
		if h == nil {
			t.Fatal("Pick returned nil with hosts available")
		}
		c[h.Key()]++
	}
	return c
}

// splitmix is an independent deterministic key stream for hashing tests.
func splitmix(i uint64) uint64 {
	z := i*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func TestRoundRobinWeightedExactProportions(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		periods int
	}{
		{"equal", []uint32{1, 1, 1, 1}, 100},
		{"unset weights count as 1", []uint32{0, 1, 0}, 50},
		{"1:2:3", []uint32{1, 2, 3}, 100},
		{"gcd reduced", []uint32{10, 30}, 250},
		{"1:100", []uint32{1, 100}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs, ts := mkHosts(tt.weights...)
			b := Config{Policy: RoundRobin, Seed: 7}.New(hs)
			var sum uint64
			for _, h := range hs {
				sum += weightOf(h)
			}
			g := uint64(0)
			for _, h := range hs {
				g = gcd(g, weightOf(h))
			}
			period := int(sum / g)
			got := counts(t, b, nil, period*tt.periods)
			for _, h := range ts {
				want := int(weightOf(h)/g) * tt.periods
				if got[h.key] != want {
					t.Errorf("%s: %d picks, want exactly %d (%v)", h.key, got[h.key], want, got)
				}
			}
		})
	}
}

func TestRoundRobinInterleaves(t *testing.T) {
	// Weighted round robin spreads a heavy host's turns rather than sending them in a
	// burst: with 1:1:2 the heavy host never gets three turns in a row.
	hs, _ := mkHosts(1, 1, 2)
	b := NewRoundRobin(hs)
	run := 0
	for range 400 {
		if b.Pick(nil).Key() == hs[2].Key() {
			run++
			if run > 2 {
				t.Fatal("heavy host picked 3 times in a row")
			}
		} else {
			run = 0
		}
	}
}

func TestRoundRobinSkipsUnavailableKeepingProportions(t *testing.T) {
	hs, ts := equalHosts(4)
	ts[1].down.Store(true)
	b := Config{Policy: RoundRobin, Seed: 3}.New(hs)
	got := counts(t, b, nil, 3000)
	if got[ts[1].key] != 0 {
		t.Fatalf("unavailable host picked %d times", got[ts[1].key])
	}
	for _, i := range []int{0, 2, 3} {
		// The skipped turn goes to the shared sequence, not to the neighbour.
		if c := got[ts[i].key]; c < 950 || c > 1050 {
			t.Errorf("%s: %d picks, want ~1000 (%v)", ts[i].key, c, got)
		}
	}
}

func TestAllUnavailable(t *testing.T) {
	for _, p := range []Policy{RoundRobin, LeastRequest, Random, RingHash, Maglev} {
		t.Run(p.String(), func(t *testing.T) {
			for _, weights := range [][]uint32{{1, 1, 1}, {1, 2, 3}} {
				hs, ts := mkHosts(weights...)
				for _, h := range ts {
					h.down.Store(true)
				}
				b := Config{Policy: p, Seed: 1, TableSize: 101, MinRingSize: 64}.New(hs)
				if h := b.Pick(&Context{}); h != nil {
					t.Fatalf("picked %s with every host unavailable", h.Key())
				}
				if h := b.(anyPicker).pickAny(nil); h == nil {
					t.Fatal("panic-mode pick returned nil")
				}
				// One host comes back: it is found however far it sits.
				ts[2].down.Store(false)
				for i := range 50 {
					h := b.Pick(&Context{Hash: splitmix(uint64(i)), HasHash: true})
					if h != Host(ts[2]) {
						t.Fatalf("picked %v, want the only available host", h)
					}
				}
			}
		})
	}
}

func TestExclude(t *testing.T) {
	for _, p := range []Policy{RoundRobin, LeastRequest, Random, RingHash, Maglev} {
		t.Run(p.String(), func(t *testing.T) {
			hs, ts := equalHosts(5)
			b := Config{Policy: p, Seed: 11, TableSize: 101}.New(hs)
			tried := map[Host]bool{ts[0]: true, ts[1]: true}
			ctx := &Context{Exclude: func(h Host) bool { return tried[h] }, MaxExcludeAttempts: 100}
			for i := range 200 {
				ctx.Hash, ctx.HasHash = splitmix(uint64(i)), true
				if h := b.Pick(ctx); h == nil || tried[h] {
					t.Fatalf("pick %d: %v, want a host not yet tried", i, h)
				}
			}
			// Every available host tried: fall back to an available (tried) host.
			for _, h := range ts {
				tried[h] = true
			}
			ts[4].down.Store(true)
			for i := range 50 {
				ctx.Hash = splitmix(uint64(i))
				h := b.Pick(ctx)
				if h == nil || !h.Available() {
					t.Fatalf("pick %d: %v, want a fallback to an available host", i, h)
				}
			}
		})
	}
}

func TestExcludeAttemptsBounded(t *testing.T) {
	// host_selection_retry_max_attempts: 1 (the default) means one excluded host is
	// passed over, the second is taken.
	hs, ts := equalHosts(3)
	b := Config{Policy: RoundRobin, Seed: 5}.New(hs).(*roundRobin)
	b.next.Store(0)
	calls := 0
	ctx := &Context{Exclude: func(h Host) bool { calls++; return h != Host(ts[2]) }}
	if h := b.Pick(ctx); h != Host(ts[1]) {
		t.Fatalf("picked %v, want the second candidate (host 1) once attempts are spent", h)
	}
	if calls != 2 {
		t.Fatalf("predicate called %d times, want 2", calls)
	}
}

func TestLeastRequestPrefersIdleHost(t *testing.T) {
	hs, ts := equalHosts(2)
	ts[0].active.Store(5)
	b := Config{Policy: LeastRequest, Seed: 42}.New(hs)
	got := counts(t, b, nil, 10000)
	// Two random draws (with replacement) miss the idle host 1/4 of the time.
	if share := float64(got[ts[1].key]) / 10000; share < 0.72 || share > 0.78 {
		t.Fatalf("idle host share %.3f, want ~0.75 (%v)", share, got)
	}

	// choice_count 5 over 5 hosts where only one is idle.
	hs, ts = equalHosts(5)
	for i, h := range ts {
		if i != 3 {
			h.active.Store(int64(10 + i))
		}
	}
	b = Config{Policy: LeastRequest, ChoiceCount: 5, Seed: 42}.New(hs)
	got = counts(t, b, nil, 10000)
	want := 1 - math.Pow(4.0/5, 5) // the idle host is among 5 draws
	if share := float64(got[ts[3].key]) / 10000; math.Abs(share-want) > 0.02 {
		t.Fatalf("idle host share %.3f, want %.3f", share, want)
	}
}

func TestLeastRequestWeighted(t *testing.T) {
	hs, ts := mkHosts(2, 1)
	b := Config{Policy: LeastRequest, ActiveRequestBias: 1, Seed: 1}.New(hs)
	// Idle: the schedule follows the weights exactly.
	got := counts(t, b, nil, 3000)
	if got[ts[0].key] != 2000 || got[ts[1].key] != 1000 {
		t.Fatalf("idle weighted picks %v, want 2000/1000", got)
	}
	// The heavy host is busy: its effective weight 2/(3+1) drops below the light host's.
	ts[0].active.Store(3)
	got = counts(t, b, nil, 3000)
	if got[ts[0].key] >= got[ts[1].key] {
		t.Fatalf("busy heavy host got %d picks vs idle light host %d", got[ts[0].key], got[ts[1].key])
	}
	// Bias 0: load is ignored, the weights rule.
	b = Config{Policy: LeastRequest, ActiveRequestBias: 0, Seed: 1}.New(hs)
	got = counts(t, b, nil, 3000)
	if got[ts[0].key] != 2000 {
		t.Fatalf("bias 0 picks %v, want 2000/1000", got)
	}
}

func TestRandomUniformSkipsDown(t *testing.T) {
	hs, ts := equalHosts(4)
	ts[0].down.Store(true)
	got := counts(t, Config{Policy: Random, Seed: 9}.New(hs), nil, 30000)
	if got[ts[0].key] != 0 {
		t.Fatal("unavailable host picked")
	}
	for _, h := range ts[1:] {
		if c := got[h.key]; c < 9500 || c > 10500 {
			t.Errorf("%s: %d, want ~10000", h.key, c)
		}
	}
}

// consistency checks a hashing balancer: same hash, same host; removing one of 10 hosts
// moves about a tenth of the keys, at most maxMoved; a host turning unavailable moves
// exactly its own keys.
func consistency(t *testing.T, build func([]Host) Balancer, maxMoved float64) {
	const keys = 20000
	hs, ts := equalHosts(10)
	b := build(hs)
	before := make([]Host, keys)
	share := make(map[Host]int)
	for i := range keys {
		ctx := &Context{Hash: splitmix(uint64(i)), HasHash: true}
		before[i] = b.Pick(ctx)
		if again := b.Pick(ctx); again != before[i] {
			t.Fatalf("key %d: %v then %v", i, before[i], again)
		}
		share[before[i]]++
	}
	for _, h := range ts {
		if s := float64(share[h]) / keys; s < 0.06 || s > 0.14 {
			t.Errorf("%s owns %.3f of keys, want ~0.1", h.key, s)
		}
	}
	check := func(name string, b Balancer) {
		moved := 0
		for i := range keys {
			h := b.Pick(&Context{Hash: splitmix(uint64(i)), HasHash: true})
			if h == Host(ts[4]) {
				t.Fatalf("%s: removed host still picked", name)
			}
			if h != before[i] {
				moved++
			}
		}
		if f := float64(moved) / keys; f < 0.06 || f > maxMoved {
			t.Errorf("%s: %.3f of keys moved, want ~0.1", name, f)
		}
	}
	// Removed from the set: rebuilt without it.
	rest := append(append([]Host(nil), hs[:4]...), hs[5:]...)
	check("removed", build(rest))
	// Unavailable: the same balancer walks past it, moving only its keys.
	ts[4].down.Store(true)
	moved := 0
	for i := range keys {
		h := b.Pick(&Context{Hash: splitmix(uint64(i)), HasHash: true})
		if h != before[i] {
			moved++
			if before[i] != Host(ts[4]) {
				t.Fatalf("unavailable: key %d moved from a healthy host", i)
			}
		}
	}
	if moved != share[ts[4]] {
		t.Fatalf("unavailable: %d keys moved, want exactly the %d of the down host", moved, share[ts[4]])
	}
}

func TestRingHashConsistency(t *testing.T) {
	// A rebuilt ring gives each remaining host more points (the ring size follows
	// minimum_ring_size / hosts, as in Envoy), so besides the removed host's tenth a
	// few more keys move: about 0.18 here.
	consistency(t, func(h []Host) Balancer { return NewRingHash(h, 0, 0) }, 0.22)
}

func TestMaglevConsistency(t *testing.T) {
	consistency(t, func(h []Host) Balancer { return NewMaglev(h, 0) }, 0.13)
}

func TestHashingWeights(t *testing.T) {
	for _, tt := range []struct {
		name  string
		build func([]Host) Balancer
	}{
		{"ring", func(h []Host) Balancer { return NewRingHash(h, 0, 0) }},
		{"maglev", func(h []Host) Balancer { return NewMaglev(h, 0) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hs, ts := mkHosts(1, 3)
			b := tt.build(hs)
			n := 0
			for i := range 20000 {
				if b.Pick(&Context{Hash: splitmix(uint64(i)), HasHash: true}) == Host(ts[1]) {
					n++
				}
			}
			if s := float64(n) / 20000; math.Abs(s-0.75) > 0.05 {
				t.Fatalf("weight-3 host share %.3f, want ~0.75", s)
			}
		})
	}
}

func TestRingSize(t *testing.T) {
	hs, _ := mkHosts(1, 1, 2)
	r := newRingHash(hs, 1024, 8<<20, nil)
	if len(r.ring) < 1024 || len(r.ring) > 1100 {
		t.Fatalf("ring has %d points, want about 1024", len(r.ring))
	}
	r = newRingHash(hs, 1024, 100, nil)
	if len(r.ring) > 100 {
		t.Fatalf("ring has %d points, want at most maximum_ring_size 100", len(r.ring))
	}
	m := newMaglev(hs, 100, nil) // not prime: next prime 101
	if len(m.table) != 101 {
		t.Fatalf("maglev table size %d, want 101", len(m.table))
	}
}

func TestHashWithoutHashIsRandom(t *testing.T) {
	hs, _ := equalHosts(4)
	for _, p := range []Policy{RingHash, Maglev} {
		got := counts(t, Config{Policy: p, Seed: 2}.New(hs), &Context{}, 4000)
		if len(got) != 4 {
			t.Errorf("%v without a hash reached %d of 4 hosts", p, len(got))
		}
	}
}

func TestConcurrentPicks(t *testing.T) {
	// Run under -race: picks from many goroutines while availability flips.
	hs, ts := mkHosts(1, 2, 3, 4)
	for _, p := range []Policy{RoundRobin, LeastRequest, Random, RingHash, Maglev} {
		b := Config{Policy: p, TableSize: 101}.New(hs)
		ps := NewPrioritySet([][]Locality{{{Hosts: hs}}}, Config{Policy: p, TableSize: 101}.New, PriorityOptions{})
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 500 {
					ctx := &Context{Hash: uint64(i * g), HasHash: i%2 == 0}
					if b.Pick(ctx) == nil || ps.Pick(ctx) == nil {
						t.Error("nil pick")
						return
					}
					if i%50 == 0 && g < 3 {
						ts[g].down.Store(i%100 == 0)
						ps.Refresh()
					}
				}
			}()
		}
		wg.Wait()
		for _, h := range ts {
			h.down.Store(false)
		}
	}
}

package lb

import (
	"testing"
)

// pickCases are the balancers benchmarked over 100 hosts (weighted where the policy
// has a weighted path) and checked for zero allocations.
func pickCases() []struct {
	name string
	b    Balancer
	ctx  *Context
} {
	eq, _ := equalHosts(100)
	w := make([]uint32, 100)
	for i := range w {
		w[i] = uint32(i%5 + 1)
	}
	weighted, _ := mkHosts(w...)
	hashCtx := &Context{Hash: 0x1234567890abcdef, HasHash: true}
	h0, t0 := level(50, "a")
	h1, _ := level(50, "b")
	setHealthy(t0, 30)
	la, _ := level(25, "la")
	lb2, _ := level(25, "lb")
	return []struct {
		name string
		b    Balancer
		ctx  *Context
	}{
		{"RoundRobin", NewRoundRobin(eq), nil},
		{"RoundRobinWeighted", NewRoundRobin(weighted), nil},
		{"LeastRequest", NewLeastRequest(eq, 2, 1), nil},
		{"LeastRequestWeighted", NewLeastRequest(weighted, 2, 1), nil},
		{"Random", NewRandom(eq), nil},
		{"RingHash", NewRingHash(eq, 0, 0), hashCtx},
		{"Maglev", NewMaglev(eq, 0), hashCtx},
		{"PrioritySpill", NewPrioritySet([][]Locality{{{Hosts: h0}}, {{Hosts: h1}}}, NewRoundRobin, PriorityOptions{}), nil},
		{"PriorityLocality", NewPrioritySet([][]Locality{{{Weight: 80, Hosts: la}, {Weight: 20, Hosts: lb2}}}, NewRoundRobin, PriorityOptions{LocalityWeighted: true}), nil},
		{"Exclude", NewRoundRobin(eq), &Context{Exclude: func(h Host) bool { return h == eq[0] }}},
	}
}

func pickLoop(tb testing.TB, b Balancer, ctx *Context, n int) {
	for range n {
		if b.Pick(ctx) == nil {
			tb.Fatal("nil pick")
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, c := range pickCases() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			pickLoop(b, c.b, c.ctx, b.N)
		})
	}
}

// TestBenchmarkPick is BenchmarkPick's size-1 twin, and checks that picking does not
// allocate.
func TestBenchmarkPick(t *testing.T) {
	for _, c := range pickCases() {
		t.Run(c.name, func(t *testing.T) {
			pickLoop(t, c.b, c.ctx, 1)
			if a := testing.AllocsPerRun(100, func() { c.b.Pick(c.ctx) }); a != 0 {
				t.Fatalf("Pick allocates %v times", a)
			}
		})
	}
}

func BenchmarkPickParallel(b *testing.B) {
	for _, c := range pickCases() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.b.Pick(c.ctx)
				}
			})
		})
	}
}

func TestBenchmarkPickParallel(t *testing.T) {
	for _, c := range pickCases() {
		pickLoop(t, c.b, c.ctx, 1)
	}
}

func BenchmarkBuild(b *testing.B) {
	eq, _ := equalHosts(100)
	for _, p := range []Policy{RoundRobin, RingHash, Maglev} {
		b.Run(p.String(), func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				Config{Policy: p}.New(eq)
			}
		})
	}
}

func TestBenchmarkBuild(t *testing.T) {
	eq, _ := equalHosts(100)
	for _, p := range []Policy{RoundRobin, RingHash, Maglev} {
		if (Config{Policy: p}).New(eq).Pick(nil) == nil {
			t.Fatalf("%v: nil pick", p)
		}
	}
}

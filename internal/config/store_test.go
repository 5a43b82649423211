package config

import (
	"fmt"
	"sync"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
)

func testVS(ns, name, host string) *Resource {
	return &Resource{
		Kind: KindVirtualService, APIVersion: "networking.istio.io/v1", Namespace: ns, Name: name,
		Spec: &networking.VirtualService{Hosts: []string{host}, Http: []*networking.HTTPRoute{{
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host}}},
		}}},
	}
}

func testDR(ns, name, host string) *Resource {
	return &Resource{Kind: KindDestinationRule, APIVersion: "networking.istio.io/v1", Namespace: ns, Name: name,
		Spec: &networking.DestinationRule{Host: host}}
}

// collector records events delivered to a subscriber.
type collector struct {
	mu  sync.Mutex
	evs []Event
	ch  chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1024)} }

func (c *collector) fn(ev Event) {
	c.mu.Lock()
	c.evs = append(c.evs, ev)
	c.mu.Unlock()
	c.ch <- struct{}{}
}

// wait returns once n events in total have arrived (or fails after a generous timeout).
func (c *collector) wait(t *testing.T, n int) []Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		if len(c.evs) >= n {
			out := append([]Event(nil), c.evs...)
			c.mu.Unlock()
			return out
		}
		c.mu.Unlock()
		select {
		case <-c.ch:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("got %d events, want %d: %v", len(c.evs), n, describe(c.evs))
		}
	}
}

func describe(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		if e.Resource != nil {
			out[i] = fmt.Sprintf("%s %s gen=%d", e.Type, e.Resource, e.Resource.Generation)
		} else {
			out[i] = fmt.Sprintf("%s dropped=%d", e.Type, e.Dropped)
		}
	}
	return out
}

func TestStoreListGetOrder(t *testing.T) {
	s := NewMemoryStore()
	if err := s.Apply("a.yaml", []*Resource{testVS("ns2", "b", "b"), testVS("ns1", "z", "z"), testVS("ns1", "a", "a"),
		testDR("ns1", "a", "a")}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range s.List(KindVirtualService, "") {
		got = append(got, r.Namespace+"/"+r.Name)
	}
	if want := []string{"ns1/a", "ns1/z", "ns2/b"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List order %v, want %v", got, want)
	}
	if l := s.List(KindVirtualService, "ns1"); len(l) != 2 || l[0].Name != "a" || l[1].Name != "z" {
		t.Fatalf("List(ns1) = %v", l)
	}
	if l := s.List(KindVirtualService, "nope"); len(l) != 0 {
		t.Fatalf("List(nope) = %v", l)
	}
	r, ok := s.Get(KindDestinationRule, "ns1", "a")
	if !ok || r.Generation != 1 || r.ResourceVersion == 0 {
		t.Fatalf("Get = %v %v", r, ok)
	}
	if _, ok := s.Get(KindVirtualService, "ns1", "missing"); ok {
		t.Fatal("Get(missing) found something")
	}
	if v := s.Version(); v != 4 {
		t.Fatalf("Version = %d, want 4 (one per added resource)", v)
	}
}

func TestStoreEventsAndGenerations(t *testing.T) {
	s := NewMemoryStore()
	if err := s.Apply("f", []*Resource{testVS("default", "pre", "pre")}); err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	cancel := s.Subscribe(c.fn)
	defer cancel()
	c.wait(t, 1) // the initial Added for the existing resource

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Apply("f", []*Resource{testVS("default", "pre", "pre"), testVS("default", "x", "x")})) // Added x
	v := s.Version()
	must(s.Apply("f", []*Resource{testVS("default", "pre", "pre"), testVS("default", "x", "x")})) // no change
	if s.Version() != v {
		t.Fatalf("re-applying identical content changed the version %d -> %d", v, s.Version())
	}
	must(s.Apply("f", []*Resource{testVS("default", "pre", "pre"), testVS("default", "x", "x2")})) // Updated x
	must(s.Apply("f", []*Resource{testVS("default", "x", "x2")}))                                  // Deleted pre
	must(s.Delete("f", Key{KindVirtualService, "default", "x"}))                                   // Deleted x

	evs := c.wait(t, 5)
	want := []string{"Added default/pre gen=1", "Added default/x gen=1", "Updated default/x gen=2", "Deleted default/pre gen=1", "Deleted default/x gen=2"}
	for i, w := range want {
		e := evs[i]
		got := fmt.Sprintf("%s %s/%s gen=%d", e.Type, e.Resource.Namespace, e.Resource.Name, e.Resource.Generation)
		if got != w {
			t.Errorf("event %d = %q, want %q", i, got, w)
		}
		if i > 0 && e.Version <= evs[i-1].Version && i > 1 {
			t.Errorf("event versions not increasing: %v", describe(evs))
		}
	}
	if evs[2].Old == nil || evs[2].Old.Spec.(*networking.VirtualService).Hosts[0] != "x" {
		t.Errorf("Updated event lacks the old state")
	}
	if len(evs) != 5 {
		t.Errorf("extra events: %v", describe(evs))
	}
	if len(s.List(KindVirtualService, "")) != 0 {
		t.Error("store not empty")
	}
}

func TestStoreConflictLastAppliedWins(t *testing.T) {
	s := NewMemoryStore().(*MemoryStore)
	host := func() string {
		r, ok := s.Get(KindVirtualService, "default", "r")
		if !ok {
			return ""
		}
		return r.Spec.(*networking.VirtualService).Hosts[0]
	}
	mustApply := func(src string, rs ...*Resource) {
		t.Helper()
		if err := s.Apply(src, rs); err != nil {
			t.Fatal(err)
		}
	}
	mustApply("a", testVS("default", "r", "from-a"))
	mustApply("b", testVS("default", "r", "from-b"))
	if h := host(); h != "from-b" {
		t.Fatalf("after b applied, host = %q, want from-b", h)
	}
	if c := s.Conflicts()[Key{KindVirtualService, "default", "r"}]; fmt.Sprint(c) != "[b a]" {
		t.Fatalf("Conflicts = %v, want [b a]", c)
	}
	// a re-applies the same definition (another document of its file changed): b keeps it.
	mustApply("a", testVS("default", "r", "from-a"), testDR("default", "other", "o"))
	if h := host(); h != "from-b" {
		t.Fatalf("unchanged re-apply took over: host = %q", h)
	}
	// a changes its definition: it is now the last applied.
	mustApply("a", testVS("default", "r", "from-a2"))
	if h := host(); h != "from-a2" {
		t.Fatalf("host = %q, want from-a2", h)
	}
	// a withdraws: b's definition comes back.
	mustApply("a")
	if h := host(); h != "from-b" {
		t.Fatalf("after a withdrew, host = %q, want from-b", h)
	}
	if len(s.Conflicts()) != 0 {
		t.Fatalf("Conflicts = %v, want none", s.Conflicts())
	}
	if _, ok := s.Get(KindDestinationRule, "default", "other"); ok {
		t.Fatal("a's other resource survived its withdrawal")
	}
}

func TestStoreApplyRejectsBadInput(t *testing.T) {
	s := NewMemoryStore()
	for name, rs := range map[string][]*Resource{
		"nil":       {nil},
		"duplicate": {testVS("d", "x", "x"), testVS("d", "x", "y")},
		"no name":   {testVS("d", "", "x")},
		"no spec":   {{Kind: KindVirtualService, Name: "x", Namespace: "d"}},
	} {
		if err := s.Apply("src", rs); err == nil {
			t.Errorf("%s: Apply accepted bad input", name)
		}
	}
	if err := s.Apply("", nil); err == nil {
		t.Error("empty source accepted")
	}
	if s.Version() != 0 {
		t.Error("rejected applies changed the store")
	}
}

// TestStoreSlowSubscriberResync: a subscriber that cannot keep up gets one Resync instead
// of an unbounded backlog, and the overflow is counted.
func TestStoreSlowSubscriberResync(t *testing.T) {
	s := NewMemoryStore(WithQueueSize(4)).(*MemoryStore)
	release := make(chan struct{})
	c := newCollector()
	first := true
	cancel := s.Subscribe(func(ev Event) {
		if first {
			first = false
			<-release // block the delivery goroutine while the store changes
		}
		c.fn(ev)
	})
	defer cancel()
	for i := 0; i < 50; i++ {
		if err := s.Apply("f", []*Resource{testVS("default", fmt.Sprintf("r%d", i), "h")}); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	// Every change is either delivered or counted in a Resync; with a queue of 4 and a
	// blocked consumer, most are coalesced.
	var evs []Event
	for {
		evs = c.wait(t, len(evs)+1)
		var delivered, dropped uint64
		for _, e := range evs {
			if e.Type == EventResync {
				dropped += e.Dropped
			} else {
				delivered++
			}
		}
		if delivered+dropped == 99 { // 50 Added + 49 Deleted (each apply replaces the previous)
			if dropped == 0 || dropped != s.Overflows() {
				t.Fatalf("dropped %d, Overflows %d", dropped, s.Overflows())
			}
			if delivered > 4*2+2 {
				t.Fatalf("backlog not bounded: %d events delivered", delivered)
			}
			break
		}
		if delivered+dropped > 99 {
			t.Fatalf("accounted %d events, want 99: %v", delivered+dropped, describe(evs))
		}
	}
	// After the Resync, the subscriber sees new events again.
	if err := s.Apply("g", []*Resource{testDR("default", "after", "a")}); err != nil {
		t.Fatal(err)
	}
	evs = c.wait(t, len(evs)+1)
	if last := evs[len(evs)-1]; last.Type != EventAdded || last.Resource.Name != "after" {
		t.Fatalf("after resync got %v", describe(evs[len(evs)-1:]))
	}
}

// TestStoreConcurrent exercises Apply, List and subscribers together under -race.
func TestStoreConcurrent(t *testing.T) {
	s := NewMemoryStore()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int64{}
	cancel := s.Subscribe(func(ev Event) {
		if ev.Resource == nil {
			return
		}
		mu.Lock()
		if ev.Resource.Generation < seen[ev.Resource.Name] && ev.Type != EventDeleted {
			t.Errorf("generation went backwards for %s", ev.Resource.Name)
		}
		seen[ev.Resource.Name] = ev.Resource.Generation
		mu.Unlock()
	})
	defer cancel()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				src := fmt.Sprintf("src%d", w)
				_ = s.Apply(src, []*Resource{testVS("default", fmt.Sprintf("w%d", w), fmt.Sprintf("h%d", i%3))})
				_ = s.List(KindVirtualService, "")
				_, _ = s.Get(KindVirtualService, "default", "w0")
			}
		}(w)
	}
	wg.Wait()
	if n := len(s.List(KindVirtualService, "default")); n != 4 {
		t.Fatalf("List = %d resources, want 4", n)
	}
}

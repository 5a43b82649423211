package outlier

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/stats"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	d       *Detector
	clock   *fakeClock
	changes atomic.Int32
	hosts   []*HostState
}

func newFixture(t *testing.T, cfg *clusterv3.OutlierDetection, hosts int) *fixture {
	t.Helper()
	f := &fixture{clock: newClock()}
	d, err := New(cfg, Options{Clock: f.clock.Now, OnChange: func() { f.changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	f.d = d
	for i := range hosts {
		f.hosts = append(f.hosts, d.Track(fmt.Sprintf("10.0.0.%d:80", i+1)))
	}
	return f
}

func observeN(h *HostState, n, status int, local bool) {
	for range n {
		h.Observe(status, local)
	}
}

// permissive lets every host be ejected, as Istio's max_ejection_percent 100 does.
func permissive() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(100)}
}

func TestConsecutive5xxEjects(t *testing.T) {
	f := newFixture(t, permissive(), 2)
	h := f.hosts[0]
	observeN(h, 4, 503, false)
	if h.Ejected() {
		t.Fatal("ejected after 4 failures")
	}
	h.Observe(500, false)
	if !h.Ejected() {
		t.Fatal("not ejected after 5 consecutive 5xx")
	}
	if f.changes.Load() != 1 {
		t.Fatalf("onChange called %d times, want 1", f.changes.Load())
	}
	c := f.d.Counters()
	if c.EjectionsActive != 1 || c.EjectionsEnforcedConsecutive5xx != 1 || c.EjectionsDetectedConsecutive5xx != 1 || c.EjectionsEnforcedTotal != 1 {
		t.Fatalf("counters %+v", c)
	}
	if f.hosts[1].Ejected() {
		t.Fatal("other host ejected")
	}
}

func TestSuccessResetsCount(t *testing.T) {
	f := newFixture(t, permissive(), 1)
	h := f.hosts[0]
	for range 10 {
		observeN(h, 4, 502, false)
		h.Observe(200, false)
	}
	observeN(h, 4, 500, false)
	h.Observe(404, false) // a 4xx is not a server failure
	observeN(h, 4, 500, false)
	if h.Ejected() {
		t.Fatal("ejected though no 5 failures were consecutive")
	}
}

func TestEjectionTimeGrowsAndUnejects(t *testing.T) {
	cfg := permissive()
	cfg.BaseEjectionTime = durationpb.New(30 * time.Second)
	cfg.Interval = durationpb.New(10 * time.Second)
	f := newFixture(t, cfg, 1)
	h := f.hosts[0]

	observeN(h, 5, 500, false)
	if !h.Ejected() {
		t.Fatal("not ejected")
	}
	f.clock.Advance(29 * time.Second)
	f.d.Sweep()
	if !h.Ejected() {
		t.Fatal("returned before base_ejection_time")
	}
	f.clock.Advance(time.Second)
	f.d.Sweep()
	if h.Ejected() {
		t.Fatal("still ejected after base_ejection_time")
	}
	if f.changes.Load() != 2 || f.d.Counters().EjectionsActive != 0 {
		t.Fatalf("changes %d, active %d", f.changes.Load(), f.d.Counters().EjectionsActive)
	}

	// Second ejection lasts twice as long.
	observeN(h, 5, 500, false)
	if !h.Ejected() {
		t.Fatal("not ejected again")
	}
	f.clock.Advance(59 * time.Second)
	f.d.Sweep()
	if !h.Ejected() {
		t.Fatal("second ejection ended before 2 × base")
	}
	f.clock.Advance(time.Second)
	f.d.Sweep()
	if h.Ejected() {
		t.Fatal("second ejection did not end at 2 × base")
	}
}

func TestEjectionTimeCappedAndDecays(t *testing.T) {
	cfg := permissive()
	cfg.BaseEjectionTime = durationpb.New(10 * time.Second)
	cfg.MaxEjectionTime = durationpb.New(25 * time.Second)
	cfg.Interval = durationpb.New(time.Second)
	f := newFixture(t, cfg, 1)
	h := f.hosts[0]
	ejectFor := func() time.Duration {
		t.Helper()
		observeN(h, 5, 500, false)
		if !h.Ejected() {
			t.Fatal("not ejected")
		}
		start := f.clock.Now()
		for range 100 {
			f.clock.Advance(time.Second)
			f.d.Sweep()
			if !h.Ejected() {
				return f.clock.Now().Sub(start)
			}
		}
		t.Fatal("never returned to service")
		return 0
	}
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		if got := ejectFor(); got != want {
			t.Fatalf("ejection %d lasted %v, want %v", i+1, got, want)
		}
	}
	// Staying healthy lowers the multiplier one step per interval: after 3 intervals
	// (multiplier 3 -> 0) the next ejection is base again.
	for range 3 {
		f.clock.Advance(time.Second)
		f.d.Sweep()
	}
	if got := ejectFor(); got != 10*time.Second {
		t.Fatalf("after recovery the ejection lasted %v, want base 10s", got)
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	cfg := &clusterv3.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(20)}
	f := newFixture(t, cfg, 10)
	for _, h := range f.hosts {
		observeN(h, 5, 500, false)
	}
	ejected := 0
	for _, h := range f.hosts {
		if h.Ejected() {
			ejected++
		}
	}
	if ejected != 2 {
		t.Fatalf("%d hosts ejected, want 2 (20%% of 10)", ejected)
	}
	if c := f.d.Counters(); c.EjectionsOverflow != 8 {
		t.Fatalf("overflow %d, want 8", c.EjectionsOverflow)
	}

	// Default 10% of 3 hosts: none may be ejected, unless always_eject_one_host.
	f = newFixture(t, &clusterv3.OutlierDetection{}, 3)
	observeN(f.hosts[0], 5, 500, false)
	if f.hosts[0].Ejected() {
		t.Fatal("ejected 1 of 3 hosts with max_ejection_percent 10")
	}
	f = newFixture(t, &clusterv3.OutlierDetection{AlwaysEjectOneHost: wrapperspb.Bool(true)}, 3)
	observeN(f.hosts[0], 5, 500, false)
	observeN(f.hosts[1], 5, 500, false)
	if !f.hosts[0].Ejected() || f.hosts[1].Ejected() {
		t.Fatal("always_eject_one_host: want exactly the first host ejected")
	}
}

func TestGatewayFailures(t *testing.T) {
	// Default: gateway failures are detected but not enforced; the 5xx detector still
	// sees them.
	cfg := permissive()
	cfg.Consecutive_5Xx = wrapperspb.UInt32(100)
	f := newFixture(t, cfg, 1)
	observeN(f.hosts[0], 5, 502, false)
	if f.hosts[0].Ejected() {
		t.Fatal("ejected by gateway failures with enforcing_consecutive_gateway_failure 0")
	}
	if c := f.d.Counters(); c.EjectionsDetectedConsecutiveGatewayFailure != 1 || c.EjectionsEnforcedConsecutiveGatewayFailure != 0 {
		t.Fatalf("counters %+v", c)
	}

	// Istio enforces them.
	cfg.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
	cfg.ConsecutiveGatewayFailure = wrapperspb.UInt32(3)
	f = newFixture(t, cfg, 2)
	observeN(f.hosts[0], 3, 504, false)
	if !f.hosts[0].Ejected() {
		t.Fatal("not ejected after 3 gateway failures")
	}
	// A 500 breaks a run of gateway failures.
	h := f.hosts[1]
	observeN(h, 2, 503, false)
	h.Observe(500, false)
	observeN(h, 2, 502, false)
	if h.Ejected() {
		t.Fatal("ejected though gateway failures were not consecutive")
	}
	if c := f.d.Counters(); c.EjectionsEnforcedConsecutiveGatewayFailure != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestLocalOriginFailures(t *testing.T) {
	// Not split: a connect failure counts as a 5xx.
	f := newFixture(t, permissive(), 1)
	observeN(f.hosts[0], 5, 0, true)
	if !f.hosts[0].Ejected() || f.d.Counters().EjectionsEnforcedConsecutive5xx != 1 {
		t.Fatal("local-origin failures not counted as 5xx without split_external_local_origin_errors")
	}

	// Split: they have their own detector, and 5xx responses do not feed it.
	cfg := permissive()
	cfg.SplitExternalLocalOriginErrors = true
	cfg.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(3)
	f = newFixture(t, cfg, 2)
	observeN(f.hosts[0], 2, 0, true)
	f.hosts[0].Observe(200, false) // a response means the connection worked
	observeN(f.hosts[0], 2, 0, true)
	if f.hosts[0].Ejected() {
		t.Fatal("ejected though local failures were not consecutive")
	}
	f.hosts[0].Observe(0, true)
	if !f.hosts[0].Ejected() {
		t.Fatal("not ejected after 3 consecutive local-origin failures")
	}
	// 5xx and local failures interleaved: neither detector fires.
	h := f.hosts[1]
	for range 4 {
		h.Observe(0, true)
		h.Observe(500, false)
	}
	if h.Ejected() {
		t.Fatal("ejected by interleaved failures")
	}
	c := f.d.Counters()
	if c.EjectionsEnforcedConsecutiveLocalOriginFailure != 1 || c.EjectionsEnforcedConsecutive5xx != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestEnforcingZeroDetectsOnly(t *testing.T) {
	cfg := permissive()
	cfg.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
	f := newFixture(t, cfg, 1)
	observeN(f.hosts[0], 10, 500, false)
	if f.hosts[0].Ejected() {
		t.Fatal("ejected with enforcing_consecutive_5xx 0")
	}
	if c := f.d.Counters(); c.EjectionsDetectedConsecutive5xx != 2 {
		t.Fatalf("detected %d, want 2 (every 5 failures)", c.EjectionsDetectedConsecutive5xx)
	}
}

func TestActiveCheckUnejects(t *testing.T) {
	f := newFixture(t, permissive(), 1)
	observeN(f.hosts[0], 5, 500, false)
	f.hosts[0].ActiveCheckPassed()
	if f.hosts[0].Ejected() {
		t.Fatal("a passing active health check did not return the host")
	}
	cfg := permissive()
	cfg.SuccessfulActiveHealthCheckUnejectHost = wrapperspb.Bool(false)
	f = newFixture(t, cfg, 1)
	observeN(f.hosts[0], 5, 500, false)
	f.hosts[0].ActiveCheckPassed()
	if !f.hosts[0].Ejected() {
		t.Fatal("returned by an active check with successful_active_health_check_uneject_host false")
	}
}

func TestTrackForget(t *testing.T) {
	f := newFixture(t, permissive(), 2)
	if f.d.Track("10.0.0.1:80") != f.hosts[0] {
		t.Fatal("Track of a known key returned a new state")
	}
	observeN(f.hosts[0], 5, 500, false)
	f.d.Forget("10.0.0.1:80")
	if f.hosts[0].Ejected() || f.d.Counters().EjectionsActive != 0 {
		t.Fatal("forgotten host still counted as ejected")
	}
	observeN(f.hosts[0], 5, 500, false) // no effect, no panic
	if f.hosts[0].Ejected() {
		t.Fatal("forgotten host ejected")
	}
}

func TestDisabled(t *testing.T) {
	d, err := New(nil, Options{})
	if err != nil || d != nil {
		t.Fatalf("New(nil) = %v, %v", d, err)
	}
	h := d.Track("a")
	h.Observe(500, false)
	if h.Ejected() {
		t.Fatal("disabled detector ejected")
	}
	d.Start(context.Background())
	d.Sweep()
	d.Stop()
}

func TestValidation(t *testing.T) {
	_, err := New(&clusterv3.OutlierDetection{
		MaxEjectionPercent:       wrapperspb.UInt32(101),
		EnforcingConsecutive_5Xx: wrapperspb.UInt32(200),
		Interval:                 durationpb.New(0),
		BaseEjectionTime:         durationpb.New(time.Minute),
		MaxEjectionTime:          durationpb.New(time.Second),
	}, Options{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"outlier_detection.enforcing_consecutive_5xx: 200 exceeds 100",
		"outlier_detection.max_ejection_percent: 101 exceeds 100",
		"outlier_detection.interval: 0s must be positive",
		"outlier_detection.max_ejection_time: 1s is below base_ejection_time 1m0s",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestStatsNames(t *testing.T) {
	s := stats.New()
	d, err := New(permissive(), Options{Stats: s, Tags: []stats.Tag{{Key: "envoy_cluster_name", Value: "c1"}}})
	if err != nil {
		t.Fatal(err)
	}
	observeN(d.Track("a"), 5, 500, false)
	for name, want := range map[string]int64{
		"cluster.c1.outlier_detection.ejections_active":                   1,
		"cluster.c1.outlier_detection.ejections_enforced_total":           1,
		"cluster.c1.outlier_detection.ejections_enforced_consecutive_5xx": 1,
		"cluster.c1.outlier_detection.ejections_detected_consecutive_5xx": 1,
	} {
		if v, ok := s.Value(name); !ok || v != want {
			t.Errorf("%s = %d (%v), want %d", name, v, ok, want)
		}
	}
	// A replaced detector leaves the shared gauge.
	d.Close()
	if v, _ := s.Value("cluster.c1.outlier_detection.ejections_active"); v != 0 {
		t.Fatalf("ejections_active %d after Close, want 0", v)
	}
}

func TestStartSweeps(t *testing.T) {
	cfg := permissive()
	cfg.Interval = durationpb.New(10 * time.Millisecond)
	cfg.BaseEjectionTime = durationpb.New(20 * time.Millisecond)
	changed := make(chan struct{}, 4)
	d, err := New(cfg, Options{OnChange: func() { changed <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	d.Start(context.Background())
	defer d.Stop()
	h := d.Track("a")
	observeN(h, 5, 500, false)
	<-changed // ejected
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("not returned to service by the interval sweep")
	}
	if h.Ejected() {
		t.Fatal("still ejected")
	}
}

func TestConcurrentObserve(t *testing.T) {
	f := newFixture(t, permissive(), 4)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := f.hosts[g%4]
			for i := range 2000 {
				if i%7 == 0 {
					h.Observe(200, false)
				} else {
					h.Observe(503, false)
				}
				if i%100 == 0 {
					f.d.Sweep()
				}
			}
		}()
	}
	wg.Wait()
	if a := f.d.Counters().EjectionsActive; a < 0 || a > 4 {
		t.Fatalf("ejections_active %d out of range", a)
	}
}

func BenchmarkObserveSuccess(b *testing.B) {
	d, _ := New(permissive(), Options{})
	benchObserve(b, d.Track("a"), b.N)
}

func benchObserve(tb testing.TB, h *HostState, n int) {
	if b, ok := tb.(*testing.B); ok {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.Observe(200, false)
			}
		})
		return
	}
	for range n {
		h.Observe(200, false)
	}
}

// TestBenchmarkObserveSuccess is the benchmark's size-1 twin; the success path must not
// allocate.
func TestBenchmarkObserveSuccess(t *testing.T) {
	d, _ := New(permissive(), Options{})
	h := d.Track("a")
	benchObserve(t, h, 1)
	if a := testing.AllocsPerRun(100, func() { h.Observe(200, false); h.Ejected() }); a != 0 {
		t.Fatalf("Observe allocates %v times", a)
	}
}

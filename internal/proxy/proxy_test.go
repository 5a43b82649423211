package proxy_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// mesh is the usual fixture: a control plane, a proxy with one HTTP listener taking routes
// "r" over RDS, and backends a and b behind EDS clusters "a" and "b".
type mesh struct {
	cp       *controlPlane
	url      string
	port     int
	a, b     *backend
	c        *http.Client
	clusters []types.Resource
	eps      []types.Resource
}

func newMesh(t *testing.T, delta bool) *mesh {
	t.Helper()
	m := &mesh{cp: startControlPlane(t, "127.0.0.1:0"), a: startBackend(t, "a"), b: startBackend(t, "b"), c: client()}
	m.port = freePort(t)
	m.url = fmt.Sprintf("http://127.0.0.1:%d", m.port)
	m.clusters = []types.Resource{edsCluster("a"), edsCluster("b")}
	m.eps = []types.Resource{endpoints("a", m.a.addr), endpoints("b", m.b.addr)}
	runProxy(t, m.cp, delta)
	return m
}

// routes pushes a snapshot with the mesh's listener, clusters and the given routes.
func (m *mesh) routes(t *testing.T, routes ...*routev3.Route) string {
	t.Helper()
	return m.pushRC(t, routeConfig("r", routes...))
}

func (m *mesh) pushRC(t *testing.T, rc *routev3.RouteConfiguration, filters ...*hcmv3.HttpFilter) string {
	t.Helper()
	return m.cp.push(resources{
		listeners: []types.Resource{httpListener(t, "http", m.port, "r", filters...)},
		routes:    []types.Resource{rc},
		clusters:  m.clusters,
		endpoints: m.eps,
	})
}

// waitBackend waits until a request to path reaches the named backend.
func (m *mesh) waitBackend(t *testing.T, path, name string, hdr ...string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		code, got, body := get(t, m.c, m.url+path, hdr...)
		if code != 200 || got != name {
			return fmt.Errorf("GET %s = %d from %q (%s), want 200 from %q", path, code, got, body, name)
		}
		return nil
	})
}

func TestRoutesFromReferenceControlPlane(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			m := newMesh(t, delta)
			m.routes(t, prefixRoute("/a", "a"), prefixRoute("/", "b"))
			m.waitBackend(t, "/a/x", "a")
			m.waitBackend(t, "/other", "b")
			// An update moves the traffic.
			m.routes(t, prefixRoute("/", "a"))
			m.waitBackend(t, "/other", "a")
		})
	}
}

func weighted(weights map[string]uint32) *routev3.Route {
	var wcs []*routev3.WeightedCluster_ClusterWeight
	for _, name := range []string{"a", "b"} {
		if w, ok := weights[name]; ok {
			wcs = append(wcs, &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(w)})
		}
	}
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
			WeightedClusters: &routev3.WeightedCluster{Clusters: wcs},
		}}},
	}
}

func TestWeightedSplit(t *testing.T) {
	m := newMesh(t, false)
	m.routes(t, weighted(map[string]uint32{"a": 90, "b": 10}))
	m.waitBackend(t, "/", "a")
	m.a.hits.Store(0)
	m.b.hits.Store(0)
	const n = 10000
	var wg sync.WaitGroup
	var failed atomic.Int64
	work := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		work <- struct{}{}
	}
	close(work)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				if code, _, _ := get(t, m.c, m.url+"/"); code != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), n)
	}
	share := float64(m.a.hits.Load()) / n * 100
	t.Logf("a: %d, b: %d (a share %.2f%%)", m.a.hits.Load(), m.b.hits.Load(), share)
	if math.Abs(share-90) > 2 {
		t.Fatalf("a's share = %.2f%%, want 90±2", share)
	}
}

func TestHeaderAndQueryMatch(t *testing.T) {
	m := newMesh(t, false)
	hdr := prefixRoute("/", "b")
	hdr.Match.Headers = []*routev3.HeaderMatcher{{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "jason"}},
	}}}
	q := prefixRoute("/", "b")
	q.Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "canary", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "1"}},
	}}}
	m.routes(t, hdr, q, prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")
	m.waitBackend(t, "/", "b", "end-user", "jason")
	m.waitBackend(t, "/?canary=1", "b")
	m.waitBackend(t, "/?canary=2", "a", "end-user", "mary")
}

func TestRetryRecoversFromFailedAttempt(t *testing.T) {
	m := newMesh(t, false)
	var calls atomic.Int64
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/flaky" && calls.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	rt := prefixRoute("/", "a")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
	m.routes(t, rt)
	m.waitBackend(t, "/ok", "a")
	for i := 0; i < 20; i++ {
		if code, _, body := get(t, m.c, m.url+"/flaky"); code != 200 {
			t.Fatalf("request %d: %d %s, want 200 after a retry", i, code, body)
		}
	}
	if got := calls.Load(); got != 40 {
		t.Fatalf("upstream saw %d attempts for 20 requests, want 40 (one failure + one retry each)", got)
	}
}

func TestPerTryTimeout(t *testing.T) {
	m := newMesh(t, false)
	var calls atomic.Int64
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/slow-once" && calls.Add(1) == 1 {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return true
		}
		return false
	}
	rt := prefixRoute("/", "a")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset", NumRetries: wrapperspb.UInt32(1), PerTryTimeout: durationpb.New(200 * time.Millisecond)}
	m.routes(t, rt)
	m.waitBackend(t, "/ok", "a")
	start := time.Now()
	code, _, body := get(t, m.c, m.url+"/slow-once")
	if code != 200 {
		t.Fatalf("got %d %s, want 200 from the second try", code, body)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("took %v: the per-try timeout did not cut the first attempt", d)
	}

	// Without retries, the timeout is the answer: 504.
	rt2 := prefixRoute("/", "a")
	rt2.GetRoute().Timeout = durationpb.New(200 * time.Millisecond)
	calls.Store(0)
	m.routes(t, rt2)
	eventually(t, 10*time.Second, func() error {
		calls.Store(0)
		if code, _, body := get(t, m.c, m.url+"/slow-once"); code != http.StatusGatewayTimeout {
			return fmt.Errorf("got %d %s, want 504", code, body)
		}
		return nil
	})
}

func TestCircuitBreakerOverflow(t *testing.T) {
	m := newMesh(t, false)
	release := make(chan struct{})
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/hold" {
			<-release
		}
		return false
	}
	ca := edsCluster("a")
	ca.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxRequests: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1), MaxConnections: wrapperspb.UInt32(1),
	}}}
	m.clusters = []types.Resource{ca, edsCluster("b")}
	m.routes(t, prefixRoute("/", "a"))
	m.waitBackend(t, "/ok", "a")

	held := make(chan int, 1)
	go func() { code, _, _ := get(t, client(), m.url+"/hold"); held <- code }()
	eventually(t, 5*time.Second, func() error {
		if m.a.hits.Load() < 2 {
			return fmt.Errorf("held request not at the upstream yet")
		}
		return nil
	})
	code, _, body := get(t, client(), m.url+"/second")
	close(release)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("second request: %d %s, want 503 (max_requests=1)", code, body)
	}
	if <-held != 200 {
		t.Fatalf("held request failed")
	}
}

func TestOutlierDetectionEjectsFailingHost(t *testing.T) {
	m := newMesh(t, false)
	bad := startBackend(t, "bad")
	bad.serve = func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	}
	ca := edsCluster("a")
	ca.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(3),
		Interval:           durationpb.New(time.Second),
		BaseEjectionTime:   durationpb.New(time.Minute),
		MaxEjectionPercent: wrapperspb.UInt32(100),
	}
	m.clusters = []types.Resource{ca, edsCluster("b")}
	m.eps = []types.Resource{endpoints("a", m.a.addr, bad.addr), endpoints("b", m.b.addr)}
	m.routes(t, prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")
	for i := 0; i < 20; i++ {
		get(t, m.c, m.url+"/")
	}
	before := bad.hits.Load()
	for i := 0; i < 50; i++ {
		if code, _, _ := get(t, m.c, m.url+"/"); code != 200 {
			t.Fatalf("request %d after ejection: %d, want 200 from the healthy host", i, code)
		}
	}
	if after := bad.hits.Load(); after != before {
		t.Fatalf("ejected host got %d more requests", after-before)
	}
}

func TestFaultInjection(t *testing.T) {
	m := newMesh(t, false)
	faultFilter := &hcmv3.HttpFilter{Name: "envoy.filters.http.fault", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &faultv3.HTTPFault{})}}
	abort := prefixRoute("/abort", "a")
	abort.TypedPerFilterConfig = map[string]*anypbAny{"envoy.filters.http.fault": anyOf(t, &faultv3.HTTPFault{
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: &typev3.FractionalPercent{Numerator: 50}},
	})}
	delay := prefixRoute("/delay", "a")
	delay.TypedPerFilterConfig = map[string]*anypbAny{"envoy.filters.http.fault": anyOf(t, &faultv3.HTTPFault{
		Delay: &faultv3commonv3.FaultDelay{FaultDelaySecifier: &faultv3commonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(300 * time.Millisecond)}, Percentage: &typev3.FractionalPercent{Numerator: 100}},
	})}
	m.pushRC(t, routeConfig("r", abort, delay, prefixRoute("/", "a")), faultFilter)
	m.waitBackend(t, "/ok", "a")
	eventually(t, 10*time.Second, func() error {
		aborted := 0
		const n = 1000
		for i := 0; i < n; i++ {
			if code, _, _ := get(t, m.c, m.url+"/abort"); code == 418 {
				aborted++
			}
		}
		if share := float64(aborted) / n * 100; math.Abs(share-50) > 5 {
			return fmt.Errorf("aborted %.1f%%, want 50±5", share)
		}
		return nil
	})
	start := time.Now()
	if code, _, _ := get(t, m.c, m.url+"/delay"); code != 200 {
		t.Fatalf("delayed request failed: %d", code)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("delay route answered in %v, want >= 300ms", d)
	}
}

func TestNACKKeepsOldConfig(t *testing.T) {
	m := newMesh(t, false)
	m.routes(t, prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")
	// A route with an invalid regex cannot compile: the proxy must NACK it and keep
	// routing to a.
	bad := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(unclosed"}}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "b"}}},
	}
	m.routes(t, bad, prefixRoute("/", "b"))
	eventually(t, 10*time.Second, func() error {
		if m.cp.nackCount() == 0 {
			return fmt.Errorf("no NACK yet")
		}
		return nil
	})
	if !strings.Contains(m.cp.lastNack(), "unclosed") && !strings.Contains(m.cp.lastNack(), "regex") {
		t.Errorf("NACK error_detail %q does not say what was wrong", m.cp.lastNack())
	}
	for i := 0; i < 20; i++ {
		if code, got, _ := get(t, m.c, m.url+"/"); code != 200 || got != "a" {
			t.Fatalf("after NACK: %d from %q, want 200 from a (the last good config)", code, got)
		}
	}
	// The next good update is applied.
	m.routes(t, prefixRoute("/", "b"))
	m.waitBackend(t, "/", "b")
}

func TestControlPlaneDownTrafficFlows(t *testing.T) {
	m := newMesh(t, false)
	m.routes(t, prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")
	addr := m.cp.addr
	m.cp.stop()
	for i := 0; i < 50; i++ {
		if code, got, _ := get(t, m.c, m.url+"/"); code != 200 || got != "a" {
			t.Fatalf("control plane down: %d from %q, want 200 from a", code, got)
		}
	}
	// A control plane back on the same address with the same cache: the proxy
	// reconnects and takes new config.
	m.cp.serve(addr)
	m.routes(t, prefixRoute("/", "b"))
	m.waitBackend(t, "/", "b")
}

// TestRouteChurnLosesNothing changes the routes every 100 ms while a steady load of
// 2,000 requests per second runs for 10 s: every request must succeed.
func TestRouteChurnLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s load test")
	}
	m := newMesh(t, false)
	m.routes(t, prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// Alternate routes, weights and a listener-level change.
			switch i % 3 {
			case 0:
				m.routes(t, prefixRoute("/", "b"))
			case 1:
				m.routes(t, weighted(map[string]uint32{"a": 50, "b": 50}))
			default:
				m.routes(t, prefixRoute("/", "a"))
			}
		}
	}()
	const workers, rate = 16, 2000
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	interval := time.Second * workers / rate
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				code, _, body := get(t, m.c, m.url+"/")
				if code == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", code, body))
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests succeeded, %d failed over 10 s of route changes every 100 ms", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed during route churn; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() < 1000 {
		t.Fatalf("only %d requests in 10 s: the load did not run", ok.Load())
	}
}

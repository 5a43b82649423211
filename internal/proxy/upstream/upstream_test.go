package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
)

var netipZero netip.AddrPort

func TestStaticRoundRobinSpread(t *testing.T) {
	var addrs []string
	for i := 0; i < 3; i++ {
		addrs = append(addrs, newUpstream(t, false, nil).addr)
	}
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "web", addrs...))
	c := getCluster(t, m, "web")
	got := map[string]int{}
	for i := 0; i < 30; i++ {
		u, err := do(t, c)
		if err != nil {
			t.Fatal(err)
		}
		got[u]++
	}
	for _, a := range addrs {
		if got[a] != 10 {
			t.Errorf("upstream %s got %d requests, want 10 (all: %v)", a, got[a], got)
		}
	}
	if v := statValue(t, st, "cluster.web.upstream_rq_total"); v != 30 {
		t.Errorf("upstream_rq_total = %d, want 30", v)
	}
	if v := statValue(t, st, "cluster.web.membership_total"); v != 3 {
		t.Errorf("membership_total = %d, want 3", v)
	}
	if v := statValue(t, st, "cluster.web.membership_healthy"); v != 3 {
		t.Errorf("membership_healthy = %d, want 3", v)
	}
}

func TestEDSRoundRobinAndHealthStatus(t *testing.T) {
	a, b, d := newUpstream(t, false, nil), newUpstream(t, false, nil), newUpstream(t, false, nil)
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, edsCluster("outbound|80||svc", "svc-eds"))
	if got := m.EDSNames(); len(got) != 1 || got[0] != "svc-eds" {
		t.Fatalf("EDSNames = %v", got)
	}
	c := getCluster(t, m, "outbound|80||svc")
	if _, err := c.Pick(&lb.Context{}, netipZero); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Fatalf("pick before EDS: %v, want ErrNoHealthyUpstream", err)
	}
	la := assignment(t, "svc-eds", a.addr, b.addr, d.addr)
	la.Endpoints[0].LbEndpoints[2].HealthStatus = corev3.HealthStatus_DRAINING
	if err := m.UpdateEndpoints([]*endpointv3.ClusterLoadAssignment{la}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Warmed():
	default:
		t.Fatal("cluster not warmed after its assignment")
	}
	got := map[string]int{}
	for i := 0; i < 20; i++ {
		u, err := do(t, c)
		if err != nil {
			t.Fatal(err)
		}
		got[u]++
	}
	if got[a.addr] != 10 || got[b.addr] != 10 || got[d.addr] != 0 {
		t.Errorf("spread %v: want 10/10 and none to the DRAINING host", got)
	}
	// The same address in a new assignment keeps its host (and its connections).
	h0 := c.Hosts()[0]
	la2 := assignment(t, "svc-eds", a.addr)
	la2.Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_UNHEALTHY
	if err := m.UpdateEndpoints([]*endpointv3.ClusterLoadAssignment{la2}); err != nil {
		t.Fatal(err)
	}
	if hs := c.Hosts(); len(hs) != 1 || hs[0] != h0 {
		t.Fatalf("host identity not kept across EDS updates")
	}
	// Envoy's panic mode (healthy_panic_threshold 50% by default): with no healthy
	// host the level balances over all of them.
	if h, err := c.Pick(&lb.Context{}, netipZero); err != nil || h != h0 {
		t.Fatalf("pick in panic mode: %v, %v", h, err)
	}
	snap := m.Snapshot()
	if len(snap) != 1 || len(snap[0].Hosts) != 1 || snap[0].Hosts[0].EDSHealthStatus != "UNHEALTHY" ||
		snap[0].Hosts[0].HealthFlags() != "/failed_eds_health" || snap[0].Hosts[0].RqTotal == 0 {
		t.Fatalf("snapshot %+v", snap)
	}
	// With panic mode off (healthy_panic_threshold 0, as Istio sets with outlier
	// detection) an UNHEALTHY host is never picked.
	noPanic := edsCluster("outbound|80||svc", "svc-eds")
	noPanic.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	mustUpdate(t, m, noPanic)
	c = getCluster(t, m, "outbound|80||svc")
	if _, err := c.Pick(&lb.Context{}, netipZero); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Fatalf("pick with only an UNHEALTHY host and no panic: %v", err)
	}
}

func TestEDSAssignmentBeforeCluster(t *testing.T) {
	a := newUpstream(t, false, nil)
	m, _ := newTestManager(t, Options{})
	if err := m.UpdateEndpoints([]*endpointv3.ClusterLoadAssignment{assignment(t, "late", a.addr)}); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, m, edsCluster("late", ""))
	if u, err := do(t, getCluster(t, m, "late")); err != nil || u != a.addr {
		t.Fatalf("got %q, %v", u, err)
	}
}

func TestPriorityFailover(t *testing.T) {
	p0, p1 := newUpstream(t, false, nil), newUpstream(t, false, nil)
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, edsCluster("prio", ""))
	la := &endpointv3.ClusterLoadAssignment{ClusterName: "prio", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Priority: 0, LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(t, p0.addr)}},
		{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(t, p1.addr)}},
	}}
	if err := m.UpdateEndpoints([]*endpointv3.ClusterLoadAssignment{la}); err != nil {
		t.Fatal(err)
	}
	c := getCluster(t, m, "prio")
	for i := 0; i < 20; i++ {
		if u, _ := do(t, c); u != p0.addr {
			t.Fatalf("request %d went to %s, want priority 0", i, u)
		}
	}
	la.Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_UNHEALTHY
	if err := m.UpdateEndpoints([]*endpointv3.ClusterLoadAssignment{la}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if u, _ := do(t, c); u != p1.addr {
			t.Fatalf("request %d went to %s, want priority 1 after P0 is unhealthy", i, u)
		}
	}
}

func TestOriginalDst(t *testing.T) {
	a, b := newUpstream(t, false, nil), newUpstream(t, false, nil)
	m, _ := newTestManager(t, Options{})
	cl := &clusterv3.Cluster{
		Name:                 "passthrough",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		CleanupInterval:      durationpb.New(50 * time.Millisecond),
		LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
			UseHttpHeader: true,
		}},
	}
	mustUpdate(t, m, cl)
	c := getCluster(t, m, "passthrough")
	if c.OriginalDstHeader() != "x-envoy-original-dst-host" {
		t.Fatalf("OriginalDstHeader = %q", c.OriginalDstHeader())
	}
	if _, err := c.Pick(nil, netip.AddrPort{}); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Fatalf("pick without destination: %v", err)
	}
	for _, u := range []*upstreamServer{a, b, a} {
		dst := netip.MustParseAddrPort(u.addr)
		h, err := c.Pick(nil, dst)
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr() != u.addr {
			t.Fatalf("picked %s, want %s", h.Addr(), u.addr)
		}
		resp, err := c.RoundTrip(newRequest(t, context.Background(), "GET"), h)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Upstream"); got != u.addr {
			t.Fatalf("answered by %s, want %s", got, u.addr)
		}
	}
	if n := len(c.Hosts()); n != 2 {
		t.Fatalf("%d hosts, want 2", n)
	}
	// The header wins over the connection's destination.
	hdr := http.Header{}
	hdr.Set("X-Envoy-Original-Dst-Host", b.addr)
	if got := c.OriginalDst(hdr, netip.MustParseAddrPort(a.addr)); got.String() != b.addr {
		t.Fatalf("OriginalDst with header = %s", got)
	}
	if got := c.OriginalDst(http.Header{}, netip.MustParseAddrPort(a.addr)); got.String() != a.addr {
		t.Fatalf("OriginalDst without header = %s", got)
	}
	// Unused hosts are cleaned up after cleanup_interval.
	eventually(t, "original dst hosts cleaned up", func() bool { return len(c.Hosts()) == 0 })
}

func TestKeepAliveReuse(t *testing.T) {
	u := newUpstream(t, false, nil)
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "ka", u.addr))
	c := getCluster(t, m, "ka")
	for i := 0; i < 100; i++ {
		if _, err := do(t, c); err != nil {
			t.Fatal(err)
		}
	}
	if n := u.ln.accepted.Load(); n != 1 {
		t.Fatalf("100 sequential requests used %d connections, want 1", n)
	}
	if v := statValue(t, st, "cluster.ka.upstream_cx_total"); v != 1 {
		t.Errorf("upstream_cx_total = %d", v)
	}
	if v := statValue(t, st, "cluster.ka.upstream_cx_active"); v != 1 {
		t.Errorf("upstream_cx_active = %d", v)
	}
	if v := statValue(t, st, "cluster.ka.upstream_rq_active"); v != 0 {
		t.Errorf("upstream_rq_active = %d", v)
	}
}

func TestMaxRequestsPerConnection(t *testing.T) {
	u := newUpstream(t, false, nil)
	m, _ := newTestManager(t, Options{})
	cl := withProtocolOptions(t, staticCluster(t, "mrpc", u.addr), &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(2)},
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}},
	})
	mustUpdate(t, m, cl)
	c := getCluster(t, m, "mrpc")
	for i := 0; i < 10; i++ {
		if _, err := do(t, c); err != nil {
			t.Fatal(err)
		}
	}
	if n := u.ln.accepted.Load(); n != 5 {
		t.Fatalf("10 requests at max_requests_per_connection 2 used %d connections, want 5", n)
	}
}

func TestIdleTimeoutClosesConnection(t *testing.T) {
	u := newUpstream(t, false, nil)
	m, st := newTestManager(t, Options{})
	cl := withProtocolOptions(t, staticCluster(t, "idle", u.addr), &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(100 * time.Millisecond)},
	})
	mustUpdate(t, m, cl)
	c := getCluster(t, m, "idle")
	if _, err := do(t, c); err != nil {
		t.Fatal(err)
	}
	eventually(t, "idle connection closed", func() bool {
		return statValue(t, st, "cluster.idle.upstream_cx_active") == 0
	})
	if _, err := do(t, c); err != nil {
		t.Fatal(err)
	}
	if n := u.ln.accepted.Load(); n != 2 {
		t.Fatalf("accepted %d connections, want 2 (a new one after the idle timeout)", n)
	}
}

func TestHTTP2Multiplexing(t *testing.T) {
	release := make(chan struct{})
	var inflight sync.WaitGroup
	inflight.Add(50)
	u := newUpstream(t, true, func(w http.ResponseWriter, r *http.Request) {
		inflight.Done()
		<-release // hold every stream open until all 50 are in flight
		io.WriteString(w, "ok")
	})
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, withHTTP2(t, staticCluster(t, "h2", u.addr), 0))
	c := getCluster(t, m, "h2")
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	protos := make(chan string, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			h, err := c.Pick(nil, netipZero)
			if err != nil {
				errs <- err
				return
			}
			resp, err := c.RoundTrip(newRequest(t, ctx, "GET"), h)
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			protos <- resp.Header.Get("X-Proto")
		}()
	}
	waitDone := make(chan struct{})
	go func() { inflight.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("50 concurrent streams never were in flight together")
	}
	close(release)
	wg.Wait()
	close(errs)
	close(protos)
	for err := range errs {
		t.Fatal(err)
	}
	for p := range protos {
		if p != "HTTP/2.0" {
			t.Fatalf("upstream saw %s, want HTTP/2.0", p)
		}
	}
	if n := u.ln.accepted.Load(); n != 1 {
		t.Fatalf("50 concurrent HTTP/2 requests used %d connections, want 1", n)
	}
}

func TestHTTP2MaxConcurrentStreamsOpensMore(t *testing.T) {
	release := make(chan struct{})
	var inflight sync.WaitGroup
	inflight.Add(4)
	u := newUpstream(t, true, func(w http.ResponseWriter, r *http.Request) {
		inflight.Done()
		<-release
	})
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, withHTTP2(t, staticCluster(t, "h2max", u.addr), 2))
	c := getCluster(t, m, "h2max")
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = do(t, c)
		}()
	}
	done := make(chan struct{})
	go func() { inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("4 requests never in flight together")
	}
	close(release)
	wg.Wait()
	if n := u.ln.accepted.Load(); n != 2 {
		t.Fatalf("4 concurrent streams at max_concurrent_streams 2 used %d connections, want 2", n)
	}
}

func TestUseDownstreamProtocol(t *testing.T) {
	u := newUpstream(t, true, nil)
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, withProtocolOptions(t, staticCluster(t, "ds", u.addr), &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	}))
	c := getCluster(t, m, "ds")
	for _, tc := range []struct {
		major int
		want  string
	}{{1, "HTTP/1.1"}, {2, "HTTP/2.0"}} {
		h, _ := c.Pick(nil, netipZero)
		req := newRequest(t, context.Background(), "GET")
		req.ProtoMajor = tc.major
		resp, err := c.RoundTrip(req, h)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Proto"); got != tc.want {
			t.Errorf("downstream HTTP/%d went upstream as %s, want %s", tc.major, got, tc.want)
		}
	}
}

func TestMaxRequestsOverflow(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, withBreakers(staticCluster(t, "cb", u.addr), 0, 0, 1, 0))
	c := getCluster(t, m, "cb")
	first := make(chan error, 1)
	go func() { _, err := do(t, c); first <- err }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("first request never reached the upstream")
	}
	_, err := do(t, c)
	if !errors.Is(err, ErrOverflow) {
		t.Fatalf("second concurrent request: %v, want ErrOverflow", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if v := statValue(t, st, "cluster.cb.upstream_rq_pending_overflow"); v != 1 {
		t.Errorf("upstream_rq_pending_overflow = %d, want 1", v)
	}
	// The slot is back once the first request ended.
	if _, err := do(t, c); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestMaxConnections(t *testing.T) {
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	m, st := newTestManager(t, Options{})
	// One connection, one pending request: the second request waits for the
	// connection, the third overflows.
	mustUpdate(t, m, withBreakers(staticCluster(t, "cx", u.addr), 1, 1, 0, 0))
	c := getCluster(t, m, "cx")
	results := make(chan error, 2)
	go func() { _, err := do(t, c); results <- err }()
	<-entered
	go func() { _, err := do(t, c); results <- err }()
	eventually(t, "second request pending", func() bool {
		return statValue(t, st, "cluster.cx.upstream_rq_pending_active") == 1
	})
	if _, err := do(t, c); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third request: %v, want ErrOverflow", err)
	}
	// The TCP proxy's Dial overflows at once too.
	h, _ := c.Pick(nil, netipZero)
	if _, err := c.Dial(context.Background(), h); !errors.Is(err, ErrOverflow) {
		t.Fatalf("Dial at max_connections: %v, want ErrOverflow", err)
	}
	close(release)
	for i := 0; i < 2; i++ {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if n := u.ln.accepted.Load(); n != 1 {
		t.Errorf("accepted %d connections, want 1", n)
	}
	if v := statValue(t, st, "cluster.cx.upstream_cx_overflow"); v < 2 {
		t.Errorf("upstream_cx_overflow = %d, want >= 2", v)
	}
	if v := statValue(t, st, "cluster.cx.upstream_rq_pending_overflow"); v != 1 {
		t.Errorf("upstream_rq_pending_overflow = %d, want 1", v)
	}
}

func TestMaxRetries(t *testing.T) {
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, withBreakers(staticCluster(t, "rt", "127.0.0.1:1"), 0, 0, 0, 2))
	c := getCluster(t, m, "rt")
	r1, ok1 := c.TryRetry()
	_, ok2 := c.TryRetry()
	_, ok3 := c.TryRetry()
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("TryRetry = %v %v %v, want true true false", ok1, ok2, ok3)
	}
	r1()
	if _, ok := c.TryRetry(); !ok {
		t.Fatal("TryRetry after a release failed")
	}
	if v := statValue(t, st, "cluster.rt.upstream_rq_retry_overflow"); v != 1 {
		t.Errorf("upstream_rq_retry_overflow = %d", v)
	}
	// An explicit 0 allows none; unset keeps Envoy's default (3 retries).
	zero := withBreakers(staticCluster(t, "rt", "127.0.0.1:1"), 0, 0, 0, 0)
	zero.CircuitBreakers.Thresholds[0].MaxRetries = wrapUint32(0)
	mustUpdate(t, m, zero, staticCluster(t, "def", "127.0.0.1:1"))
	if _, ok := getCluster(t, m, "rt").TryRetry(); ok {
		t.Fatal("max_retries 0 allowed a retry")
	}
	if s := getCluster(t, m, "def").Status(); s.MaxConnections != 1024 || s.MaxPendingRequests != 1024 ||
		s.MaxRequests != 1024 || s.MaxRetries != 3 {
		t.Fatalf("default thresholds %+v", s)
	}
}

func TestConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "down", addr))
	c := getCluster(t, m, "down")
	_, err = do(t, c)
	if !errors.Is(err, ErrConnectFailure) {
		t.Fatalf("err = %v, want ErrConnectFailure", err)
	}
	h, _ := c.Pick(nil, netipZero)
	if _, err := c.Dial(context.Background(), h); !errors.Is(err, ErrConnectFailure) {
		t.Fatalf("Dial err = %v, want ErrConnectFailure", err)
	}
	if v := statValue(t, st, "cluster.down.upstream_cx_connect_fail"); v != 2 {
		t.Errorf("upstream_cx_connect_fail = %d, want 2", v)
	}
	if v := statValue(t, st, "cluster.down.upstream_cx_active"); v != 0 {
		t.Errorf("upstream_cx_active = %d, want 0", v)
	}
	if v := statValue(t, st, "cluster.down.upstream_rq_active"); v != 0 {
		t.Errorf("upstream_rq_active = %d, want 0", v)
	}
}

func TestDialTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(conn, conn); conn.Close() }()
		}
	}()
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "tcp", ln.Addr().String()))
	c := getCluster(t, m, "tcp")
	h, _ := c.Pick(nil, netipZero)
	conn, err := c.Dial(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q %v", buf, err)
	}
	if v := statValue(t, st, "cluster.tcp.upstream_cx_active"); v != 1 {
		t.Errorf("upstream_cx_active = %d, want 1", v)
	}
	conn.Close()
	if v := statValue(t, st, "cluster.tcp.upstream_cx_active"); v != 0 {
		t.Errorf("upstream_cx_active after close = %d, want 0", v)
	}
}

func TestUpdateKeepsUnchangedClusters(t *testing.T) {
	a, b := newUpstream(t, false, nil), newUpstream(t, false, nil)
	m, st := newTestManager(t, Options{})
	keep := staticCluster(t, "keep", a.addr)
	change := staticCluster(t, "change", b.addr)
	gone := staticCluster(t, "gone", b.addr)
	mustUpdate(t, m, keep, change, gone)
	k1, ch1 := getCluster(t, m, "keep"), getCluster(t, m, "change")
	if _, err := do(t, k1); err != nil {
		t.Fatal(err)
	}
	hostBefore := k1.Hosts()[0]

	change2 := proto.Clone(change).(*clusterv3.Cluster)
	change2.ConnectTimeout = durationpb.New(2 * time.Second)
	// A fresh but equal proto for "keep": equality, not identity, decides.
	mustUpdate(t, m, proto.Clone(keep).(*clusterv3.Cluster), change2)
	if m.Get("keep") != k1 || k1.Hosts()[0] != hostBefore {
		t.Fatal("unchanged cluster lost its state")
	}
	if m.Get("change") == ch1 {
		t.Fatal("changed cluster was not rebuilt")
	}
	if m.Get("gone") != nil {
		t.Fatal("removed cluster still present")
	}
	// The kept cluster still reuses its connection.
	if _, err := do(t, k1); err != nil {
		t.Fatal(err)
	}
	if n := a.ln.accepted.Load(); n != 1 {
		t.Fatalf("kept cluster opened %d connections, want 1", n)
	}
	if got := m.Names(); strings.Join(got, ",") != "change,keep" {
		t.Fatalf("Names = %v", got)
	}
	// Envoy's cluster_manager figures: 3 added, then 1 modified and 1 removed.
	for name, want := range map[string]int64{
		"cluster_manager.active_clusters": 2, "cluster_manager.cluster_added": 3,
		"cluster_manager.cluster_modified": 1, "cluster_manager.cluster_removed": 1,
	} {
		if v, ok := st.Value(name); !ok || v != want {
			t.Errorf("%s = %d (found %v), want %d", name, v, ok, want)
		}
	}
}

func TestInvalidUpdateChangesNothing(t *testing.T) {
	a := newUpstream(t, false, nil)
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "good", a.addr))
	before := getCluster(t, m, "good")

	bad := staticCluster(t, "bad", a.addr)
	bad.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "not-an-ip"
	changed := staticCluster(t, "good", a.addr)
	changed.ConnectTimeout = durationpb.New(time.Second)
	err := m.Update([]*clusterv3.Cluster{changed, bad})
	if err == nil {
		t.Fatal("invalid update accepted")
	}
	want := `cluster "bad": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: "not-an-ip" is not an IP address`
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
	if m.Get("good") != before || m.Get("bad") != nil {
		t.Fatal("invalid update changed the clusters")
	}
}

func TestValidation(t *testing.T) {
	ok := func() *clusterv3.Cluster { return staticCluster(t, "c", "127.0.0.1:80") }
	cases := []struct {
		name string
		mod  func(*clusterv3.Cluster) []*clusterv3.Cluster
		want string
	}{
		{"empty name", func(c *clusterv3.Cluster) []*clusterv3.Cluster { c.Name = ""; return []*clusterv3.Cluster{c} },
			`cluster "": name: must not be empty`},
		{"duplicate", func(c *clusterv3.Cluster) []*clusterv3.Cluster { return []*clusterv3.Cluster{c, ok()} },
			`cluster "c": name: duplicate of clusters[0]`},
		{"custom type", func(c *clusterv3.Cluster) []*clusterv3.Cluster {
			c.ClusterDiscoveryType = &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "envoy.clusters.aggregate"}}
			return []*clusterv3.Cluster{c}
		}, `cluster "c": cluster_type: custom cluster type "envoy.clusters.aggregate" is not supported`},
		{"original dst needs cluster provided", func(c *clusterv3.Cluster) []*clusterv3.Cluster {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
			c.LoadAssignment = nil
			return []*clusterv3.Cluster{c}
		}, `cluster "c": lb_policy: ORIGINAL_DST clusters need CLUSTER_PROVIDED`},
		{"logical dns one endpoint", func(c *clusterv3.Cluster) []*clusterv3.Cluster {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
			c.LoadAssignment = assignment(t, "c", "127.0.0.1:1", "127.0.0.1:2")
			return []*clusterv3.Cluster{c}
		}, `cluster "c": load_assignment: LOGICAL_DNS clusters need exactly one endpoint, got 2`},
		{"zero connect timeout", func(c *clusterv3.Cluster) []*clusterv3.Cluster {
			c.ConnectTimeout = durationpb.New(0)
			return []*clusterv3.Cluster{c}
		}, `cluster "c": connect_timeout: must be greater than 0`},
		{"zero weight", func(c *clusterv3.Cluster) []*clusterv3.Cluster {
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
			return []*clusterv3.Cluster{c}
		}, `cluster "c": load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight: must be at least 1`},
		{"http3", func(c *clusterv3.Cluster) []*clusterv3.Cluster {
			withProtocolOptions(t, c, &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions{Http3ProtocolOptions: &corev3.Http3ProtocolOptions{}},
				}}})
			return []*clusterv3.Cluster{c}
		}, `explicit_http_config.http3_protocol_options: HTTP/3 upstreams are not supported`},
		{"unknown transport socket", func(c *clusterv3.Cluster) []*clusterv3.Cluster {
			c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.alts"}
			return []*clusterv3.Cluster{c}
		}, `cluster "c": transport_socket.name: unsupported transport socket "envoy.transport_sockets.alts"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestManager(t, Options{})
			err := m.Update(tc.mod(ok()))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if len(m.Names()) != 0 {
				t.Fatal("invalid update installed clusters")
			}
		})
	}
	// Every violation is reported at once.
	m, _ := newTestManager(t, Options{})
	a, b := ok(), ok()
	a.Name, b.Name = "a", "b"
	a.ConnectTimeout, b.ConnectTimeout = durationpb.New(0), durationpb.New(0)
	err := m.Update([]*clusterv3.Cluster{a, b})
	if err == nil || !strings.Contains(err.Error(), `cluster "a"`) || !strings.Contains(err.Error(), `cluster "b"`) {
		t.Fatalf("err = %v, want both clusters named", err)
	}
}

func TestRemovedClusterFinishesInFlight(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("slow") != "" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "done")
	})
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "old", u.addr))
	c := getCluster(t, m, "old")
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	// One busy connection, then one idle one.
	h, _ := c.Pick(nil, netipZero)
	req, _ := http.NewRequest("GET", "http://svc.test/?slow=1", nil)
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := c.RoundTrip(req, h)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-entered
	if _, err := do(t, c); err != nil {
		t.Fatal(err)
	}
	if v := statValue(t, st, "cluster.old.upstream_cx_active"); v != 2 {
		t.Fatalf("upstream_cx_active = %d, want 2", v)
	}
	mustUpdate(t, m) // remove every cluster
	eventually(t, "idle connection closed on removal", func() bool {
		return statValue(t, st, "cluster.old.upstream_cx_active") == 1
	})
	unblock()
	r := <-res
	if r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request on a removed cluster: %q %v", r.body, r.err)
	}
	eventually(t, "busy connection closed after its request", func() bool {
		return statValue(t, st, "cluster.old.upstream_cx_active") == 0
	})
}

func TestRecordStatus(t *testing.T) {
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "s", "127.0.0.1:1"))
	cs := getCluster(t, m, "s").Stats()
	cs.RecordStatus(200)
	cs.RecordStatus(200)
	cs.RecordStatus(503)
	cs.RecordStatus(42) // ignored
	for name, want := range map[string]int64{
		"cluster.s.upstream_rq_200": 2, "cluster.s.upstream_rq_2xx": 2,
		"cluster.s.upstream_rq_503": 1, "cluster.s.upstream_rq_5xx": 1,
	} {
		if v := statValue(t, st, name); v != want {
			t.Errorf("%s = %d, want %d", name, v, want)
		}
	}
}

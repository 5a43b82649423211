package health

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/stats"
)

const wait = 10 * time.Second // bound on any awaited event; generous for a loaded machine

type event struct {
	key     string
	healthy bool
}

// events collects OnChange calls.
type events struct{ ch chan event }

func newEvents() *events { return &events{ch: make(chan event, 64)} }

func (e *events) on(key string, healthy bool) { e.ch <- event{key, healthy} }

func (e *events) expect(t *testing.T, key string, healthy bool) {
	t.Helper()
	select {
	case ev := <-e.ch:
		if ev.key != key || ev.healthy != healthy {
			t.Fatalf("got change %+v, want %s healthy=%v", ev, key, healthy)
		}
	case <-time.After(wait):
		t.Fatalf("no change to healthy=%v for %s within %v", healthy, key, wait)
	}
}

func (e *events) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-e.ch:
		t.Fatalf("unexpected change %+v", ev)
	case <-time.After(d):
	}
}

func httpHC(path string, unhealthy, healthy uint32) *corev3.HealthCheck {
	return &corev3.HealthCheck{
		Timeout:            durationpb.New(2 * time.Second),
		Interval:           durationpb.New(20 * time.Millisecond),
		UnhealthyThreshold: wrapperspb.UInt32(unhealthy),
		HealthyThreshold:   wrapperspb.UInt32(healthy),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
			Path: path,
		}},
	}
}

func tcpHealthCheck(send string, receive ...string) *corev3.HealthCheck {
	t := &corev3.HealthCheck_TcpHealthCheck{}
	if send != "" {
		t.Send = &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: hex.EncodeToString([]byte(send))}}
	}
	for _, r := range receive {
		t.Receive = append(t.Receive, &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: hex.EncodeToString([]byte(r))}})
	}
	return &corev3.HealthCheck{
		Timeout:            durationpb.New(time.Second),
		Interval:           durationpb.New(20 * time.Millisecond),
		UnhealthyThreshold: wrapperspb.UInt32(2),
		HealthyThreshold:   wrapperspb.UInt32(1),
		HealthChecker:      &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: t},
	}
}

func start(t *testing.T, cfg []*corev3.HealthCheck, o Options, keys ...string) *Checker {
	t.Helper()
	c, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	c.SetHosts(keys)
	c.Start(context.Background())
	t.Cleanup(c.Stop)
	return c
}

// statusServer answers with the current status and counts answers per status.
type statusServer struct {
	*httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	served map[int]int
	last   *http.Request
}

func newStatusServer(t *testing.T) *statusServer {
	s := &statusServer{served: make(map[int]int)}
	s.status.Store(200)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := int(s.status.Load())
		s.mu.Lock()
		s.served[st]++
		s.last = r.Clone(context.Background())
		s.mu.Unlock()
		w.WriteHeader(st)
		_, _ = io.WriteString(w, "service is ok, version 2")
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *statusServer) count(status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[status]
}

func (s *statusServer) key() string { return s.Listener.Addr().String() }

func TestHTTPThresholds(t *testing.T) {
	srv := newStatusServer(t)
	ev := newEvents()
	hc := httpHC("/healthz", 3, 2)
	hc.GetHttpHealthCheck().RetriableStatuses = []*typev3.Int64Range{{Start: 503, End: 504}}
	c := start(t, []*corev3.HealthCheck{hc}, Options{Cluster: "c", OnChange: ev.on}, srv.key())

	// New hosts start unhealthy; the first pass is enough.
	ev.expect(t, srv.key(), true)
	if !c.Healthy(srv.key()) {
		t.Fatal("Healthy false after the change to healthy")
	}

	srv.status.Store(503)
	ev.expect(t, srv.key(), false)
	if n := srv.count(503); n != 3 {
		t.Fatalf("turned unhealthy after %d retriable failures, want unhealthy_threshold 3", n)
	}

	srv.status.Store(200)
	before := srv.count(200)
	ev.expect(t, srv.key(), true)
	if n := srv.count(200) - before; n != 2 {
		t.Fatalf("turned healthy after %d passes, want healthy_threshold 2", n)
	}
}

func TestHTTPUnexpectedStatusIsImmediate(t *testing.T) {
	// Without retriable_statuses, a status outside expected_statuses fails the host at
	// once, whatever unhealthy_threshold says (Envoy).
	srv := newStatusServer(t)
	ev := newEvents()
	start(t, []*corev3.HealthCheck{httpHC("/", 5, 1)}, Options{OnChange: ev.on}, srv.key())
	ev.expect(t, srv.key(), true)
	srv.status.Store(503)
	ev.expect(t, srv.key(), false)
	if n := srv.count(503); n != 1 {
		t.Fatalf("unhealthy after %d failures, want 1", n)
	}
}

func TestHTTPExpectedStatusesAndRequest(t *testing.T) {
	srv := newStatusServer(t)
	srv.status.Store(302)
	ev := newEvents()
	hc := httpHC("/ready?full=1", 1, 1)
	h := hc.GetHttpHealthCheck()
	h.ExpectedStatuses = []*typev3.Int64Range{{Start: 200, End: 400}}
	h.Method = corev3.RequestMethod_HEAD
	h.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: "x-check", Value: "1"}},
		{Header: &corev3.HeaderValue{Key: "x-drop", Value: "1"}},
	}
	h.RequestHeadersToRemove = []string{"x-drop"}
	start(t, []*corev3.HealthCheck{hc}, Options{Cluster: "reviews", OnChange: ev.on}, srv.key())
	ev.expect(t, srv.key(), true)

	srv.mu.Lock()
	r := srv.last
	srv.mu.Unlock()
	if r.Method != http.MethodHead || r.URL.Path != "/ready" || r.URL.RawQuery != "full=1" {
		t.Errorf("request %s %s", r.Method, r.URL)
	}
	if r.Host != "reviews" {
		t.Errorf("Host %q, want the cluster name", r.Host)
	}
	if r.Header.Get("X-Check") != "1" || r.Header.Get("X-Drop") != "" || r.Header.Get("User-Agent") != "Envoy/HC" {
		t.Errorf("headers %v", r.Header)
	}
}

func TestHTTPReceive(t *testing.T) {
	srv := newStatusServer(t)
	ev := newEvents()
	hc := httpHC("/", 1, 1)
	hc.GetHttpHealthCheck().Receive = []*corev3.HealthCheck_Payload{
		{Payload: &corev3.HealthCheck_Payload_Binary{Binary: []byte("ok")}},
		{Payload: &corev3.HealthCheck_Payload_Text{Text: hex.EncodeToString([]byte("version 2"))}},
	}
	start(t, []*corev3.HealthCheck{hc}, Options{OnChange: ev.on}, srv.key())
	ev.expect(t, srv.key(), true)

	srv2 := newStatusServer(t)
	hc = httpHC("/", 1, 1)
	hc.GetHttpHealthCheck().Receive = []*corev3.HealthCheck_Payload{
		{Payload: &corev3.HealthCheck_Payload_Binary{Binary: []byte("version 3")}},
	}
	c := start(t, []*corev3.HealthCheck{hc}, Options{}, srv2.key())
	deadline := time.Now().Add(wait)
	for srv2.count(200) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Healthy(srv2.key()) {
		t.Fatal("healthy though the body does not match receive")
	}
}

func TestHTTPTimeout(t *testing.T) {
	var hang atomic.Bool
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) })
	hc := httpHC("/", 1, 1)
	hc.Timeout = durationpb.New(50 * time.Millisecond)
	key := srv.Listener.Addr().String()
	ev := newEvents()
	s := stats.New()
	start(t, []*corev3.HealthCheck{hc}, Options{OnChange: ev.on, Stats: s, Tags: []stats.Tag{{Key: "envoy_cluster_name", Value: "c"}}}, key)
	ev.expect(t, key, true)
	hang.Store(true)
	ev.expect(t, key, false) // the server never answers: only a honoured timeout ends the check
	if v, _ := s.Value("cluster.c.health_check.network_failure"); v < 1 {
		t.Fatalf("network_failure %d, want >= 1", v)
	}
}

func TestTCPConnectOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	key := ln.Addr().String()
	ev := newEvents()
	start(t, []*corev3.HealthCheck{tcpHealthCheck("")}, Options{OnChange: ev.on}, key)
	ev.expect(t, key, true)
	ln.Close()
	ev.expect(t, key, false)
}

func TestTCPSendReceive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var reply atomic.Value
	reply.Store("+PO")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "PING" {
					return
				}
				// The reply arrives in two segments; the matcher waits for both.
				r := reply.Load().(string)
				_, _ = io.WriteString(c, r)
				time.Sleep(5 * time.Millisecond)
				_, _ = io.WriteString(c, "NG\r\n")
			}()
		}
	}()
	key := ln.Addr().String()
	ev := newEvents()
	start(t, []*corev3.HealthCheck{tcpHealthCheck("PING", "+", "PONG")}, Options{OnChange: ev.on}, key)
	ev.expect(t, key, true)
	reply.Store("-ERR ") // "-ERR NG": no "+", no "PONG"
	ev.expect(t, key, false)
}

func TestDialReusesClusterTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			w.WriteHeader(500)
		}
	}))
	t.Cleanup(srv.Close)
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	var dials atomic.Int32
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, "tcp", addr)
	}
	key := srv.Listener.Addr().String()
	ev := newEvents()
	start(t, []*corev3.HealthCheck{httpHC("/", 1, 1)}, Options{Dial: dial, OnChange: ev.on}, key)
	ev.expect(t, key, true)
	ev.none(t, 200*time.Millisecond) // stays healthy over several checks
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1 (reuse_connection defaults to true)", n)
	}
}

func TestHTTP2Codec(t *testing.T) {
	var proto atomic.Value
	srv := httptest.NewServer(h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto.Store(r.Proto)
	}), &http2.Server{}))
	t.Cleanup(srv.Close)
	hc := httpHC("/", 1, 1)
	hc.GetHttpHealthCheck().CodecClientType = typev3.CodecClientType_HTTP2
	key := srv.Listener.Addr().String()
	ev := newEvents()
	start(t, []*corev3.HealthCheck{hc}, Options{OnChange: ev.on}, key)
	ev.expect(t, key, true)
	if p, _ := proto.Load().(string); p != "HTTP/2.0" {
		t.Fatalf("server saw %q, want HTTP/2.0", p)
	}
}

func TestSetHosts(t *testing.T) {
	a, b := newStatusServer(t), newStatusServer(t)
	ev := newEvents()
	c := start(t, []*corev3.HealthCheck{httpHC("/", 1, 1)}, Options{OnChange: ev.on}, a.key())
	ev.expect(t, a.key(), true)
	if c.Healthy(b.key()) != true {
		t.Fatal("unknown key should report healthy")
	}
	c.SetHosts([]string{a.key(), b.key()})
	if c.Healthy(b.key()) {
		t.Fatal("a new host must start unhealthy")
	}
	ev.expect(t, b.key(), true)
	c.SetHosts([]string{b.key()})
	time.Sleep(50 * time.Millisecond) // let an in-flight check of a finish
	n := a.count(200)
	time.Sleep(200 * time.Millisecond)
	if a.count(200) != n {
		t.Fatal("removed host still checked")
	}
}

func TestMultipleChecksAllMustPass(t *testing.T) {
	srv := newStatusServer(t)
	ev := newEvents()
	tcp := tcpHealthCheck("")
	start(t, []*corev3.HealthCheck{httpHC("/", 1, 1), tcp}, Options{OnChange: ev.on}, srv.key())
	ev.expect(t, srv.key(), true)
	srv.status.Store(500) // the TCP check still passes; the HTTP one fails
	ev.expect(t, srv.key(), false)
}

func TestOnCheckAndStats(t *testing.T) {
	srv := newStatusServer(t)
	var passed atomic.Int32
	s := stats.New()
	tags := []stats.Tag{{Key: "envoy_cluster_name", Value: "c"}}
	ev := newEvents()
	c := start(t, []*corev3.HealthCheck{httpHC("/", 1, 1)}, Options{
		OnChange: ev.on, Stats: s, Tags: tags,
		OnCheck: func(key string, ok bool) {
			if ok {
				passed.Add(1)
			}
		},
	}, srv.key())
	ev.expect(t, srv.key(), true)
	if passed.Load() < 1 {
		t.Fatal("OnCheck not called")
	}
	if v, _ := s.Value("cluster.c.health_check.healthy"); v != 1 {
		t.Fatalf("health_check.healthy %d, want 1", v)
	}
	if v, _ := s.Value("cluster.c.health_check.success"); v < 1 {
		t.Fatalf("health_check.success %d", v)
	}
	c.Stop()
	if v, _ := s.Value("cluster.c.health_check.healthy"); v != 0 {
		t.Fatalf("health_check.healthy %d after Stop, want 0", v)
	}
}

func TestNoChecks(t *testing.T) {
	c, err := New(nil, Options{})
	if err != nil || c != nil {
		t.Fatalf("New(nil) = %v, %v", c, err)
	}
	c.SetHosts([]string{"127.0.0.1:1"})
	c.Start(context.Background())
	if !c.Healthy("127.0.0.1:1") {
		t.Fatal("no checks: hosts must be healthy")
	}
	c.Stop()
}

func TestValidation(t *testing.T) {
	bad := &corev3.HealthCheck{
		Interval: durationpb.New(time.Second),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
			Path:             "healthz",
			ExpectedStatuses: []*typev3.Int64Range{{Start: 300, End: 200}},
		}},
	}
	grpc := &corev3.HealthCheck{
		Timeout: durationpb.New(time.Second), Interval: durationpb.New(time.Second),
		UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{}},
	}
	_, err := New([]*corev3.HealthCheck{bad, grpc}, Options{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"health_checks[0].timeout: required",
		"health_checks[0].unhealthy_threshold: required",
		`health_checks[0].http_health_check.path: "healthz" must start with /`,
		"health_checks[0].http_health_check.expected_statuses[0]: [300, 200) must be a non-empty range",
		"health_checks[1].grpc_health_check: not supported",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestHostHeaderChoice(t *testing.T) {
	tests := []struct{ cfgHost, cluster, want string }{
		{"api.example.com", "c", "api.example.com"},
		{"", "reviews", "reviews"},
		{"", "outbound|9080||reviews.default.svc.cluster.local", "127.0.0.1:9"}, // not a valid Host
		{"", "", "127.0.0.1:9"},
	}
	for _, tt := range tests {
		hc := httpHC("/", 1, 1)
		hc.GetHttpHealthCheck().Host = tt.cfgHost
		checks, err := compile([]*corev3.HealthCheck{hc})
		if err != nil {
			t.Fatal(err)
		}
		p := newHTTPProber(checks[0], "127.0.0.1:9", tt.cluster, netDial)
		if p.host != tt.want {
			t.Errorf("host %q cluster %q: Host %q, want %q", tt.cfgHost, tt.cluster, p.host, tt.want)
		}
	}
}

func TestFuzzyMatch(t *testing.T) {
	tests := []struct {
		buf    string
		blocks []string
		want   bool
	}{
		{"+PONG\r\n", []string{"PONG"}, true},
		{"abcdef", []string{"ab", "ef"}, true},
		{"abcdef", []string{"ef", "ab"}, false}, // order matters
		{"abab", []string{"ab", "ab"}, true},
		{"ab", []string{"ab", "ab"}, false},
		{"", nil, true},
	}
	for _, tt := range tests {
		var blocks [][]byte
		for _, b := range tt.blocks {
			blocks = append(blocks, []byte(b))
		}
		if got := fuzzyMatch([]byte(tt.buf), blocks); got != tt.want {
			t.Errorf("fuzzyMatch(%q, %q) = %v", tt.buf, tt.blocks, got)
		}
	}
}

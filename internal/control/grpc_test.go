package control

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	xdsgrpc "google.golang.org/grpc/xds"

	"github.com/weft-mesh/weft/internal/config"
	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/xds"
)

const (
	echoHost = "echo.default.svc.cluster.local"
	// echoPort is the service port: proxyless clients dial host:echoPort and the
	// endpoints carry each backend's real port, so nothing listens on it.
	echoPort   = 7070
	grpcNodeID = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
)

// versionServer is the interop TestService answering UnaryCall with its version in
// server_id, so a caller sees which subset served it.
type versionServer struct {
	testgrpc.UnimplementedTestServiceServer
	version string
}

func (s *versionServer) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: s.version}, nil
}

// echoBackend starts a gRPC server on 127.0.0.1 and returns its instance.
func echoBackend(t *testing.T, version string) *registry.Instance {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, &versionServer{version: version})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return &registry.Instance{
		Service: echoHost, ServicePort: echoPort, Address: "127.0.0.1", Port: uint32(lis.Addr().(*net.TCPAddr).Port),
		Workload: "echo-" + version, Namespace: "default", ServiceAccount: "echo",
		Labels: map[string]string{"app": "echo", "version": version}, Weight: 1, Healthy: true,
	}
}

// startControl runs a control plane on loopback ports with the given registry content;
// opts may set more options.
func startControl(t *testing.T, src registry.Source, opts ...func(*Options)) *Server {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	o := Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", Sources: []registry.Source{src},
		Debounce: 20 * time.Millisecond, Log: log}
	for _, f := range opts {
		f(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("control plane Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("control plane did not stop within 10s")
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("control plane stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("control plane not ready within 20s")
	}
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// applyYAML parses a config file as a source would and applies it under source.
func applyYAML(t *testing.T, s *Server, source, yaml string) {
	t.Helper()
	res := config.ParseFile(source+".yaml", []byte(yaml))
	if !res.OK() {
		t.Fatalf("config %s: %v", source, res.Err())
	}
	if err := s.Store().Apply(source, res.Resources); err != nil {
		t.Fatal(err)
	}
}

const echoRules = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
  namespace: default
spec:
  host: echo.default.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
  - name: v3
    labels: {version: v3}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
  namespace: default
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - match:
    - headers:
        x-canary: {exact: "yes"}
    route:
    - destination: {host: echo.default.svc.cluster.local, subset: v3}
  - route:
    - destination: {host: echo.default.svc.cluster.local, subset: v1}
      weight: 80
    - destination: {host: echo.default.svc.cluster.local, subset: v2}
      weight: 20
`

// echoSource is the echo service with three real backends, v1 v2 v3.
func echoSource(t *testing.T) *registry.Static {
	src := &registry.Static{SourceName: "test",
		Svcs: []*registry.Service{{Hostname: echoHost, Name: "echo", Namespace: "default",
			Ports: []registry.Port{{Name: "grpc", Number: echoPort, Protocol: registry.GRPC}}, Source: "test"}},
		Insts: []*registry.Instance{echoBackend(t, "v1"), echoBackend(t, "v2"), echoBackend(t, "v3")},
	}
	registry.SortInstances(src.Insts)
	return src
}

// echoClient dials xds:///echo...:PORT with grpc-go's xDS resolver bootstrapped for the
// control plane s as a proxyless node; call makes one call (with x-canary: yes when
// canary) and returns the version that answered.
func echoClient(t *testing.T, s *Server) (testgrpc.TestServiceClient, func(canary bool) (string, error)) {
	t.Helper()
	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": %q, "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}}
}`, s.XDSAddr(), grpcNodeID)
	builder, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(fmt.Sprintf("xds:///%s:%d", echoHost, echoPort), grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := testgrpc.NewTestServiceClient(cc)
	return client, func(canary bool) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if canary {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-canary", "yes")
		}
		r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		return r.GetServerId(), err
	}
}

// TestProxylessGRPCFollowsVirtualService runs grpc-go's xDS resolver against weft's
// whole control plane (store, registry, snapshot, generators, ADS server): a client
// bootstrapped as a proxyless node resolves xds:///echo...:PORT, reaches three real
// backends, and follows the VirtualService's header match and 80/20 weights; a later
// change of the rule reaches the client without a redial.
func TestProxylessGRPCFollowsVirtualService(t *testing.T) {
	s := startControl(t, echoSource(t))
	client, call := echoClient(t, s)
	eventually := func(what string, canary bool, n int, ok func(string) bool) {
		t.Helper()
		inARow(t, call, what, canary, n, ok)
	}

	// With no rule, the default route reaches every endpoint of the service.
	seen := map[string]bool{}
	for i := 0; i < 300 && len(seen) < 3; i++ {
		v, err := call(false)
		if err != nil {
			t.Fatalf("call %d with no rules: %v", i, err)
		}
		seen[v] = true
	}
	if len(seen) != 3 {
		t.Fatalf("default route reached %v, want v1, v2 and v3", seen)
	}

	applyYAML(t, s, "rules", echoRules)
	// 30 canary calls in a row on v3 (1 in 3^30 by chance under round robin).
	eventually("canary calls on v3", true, 30, func(v string) bool { return v == "v3" })

	const n = 1000
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		v, err := call(false)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		counts[v]++
	}
	t.Logf("split over %d calls: %v", n, counts)
	if counts["v3"] != 0 {
		t.Errorf("%d calls without x-canary reached v3", counts["v3"])
	}
	// 80/20: a binomial standard deviation is 1.3% at n=1000; ±5% is ~4 of them.
	if v1 := float64(counts["v1"]) / n; v1 < 0.75 || v1 > 0.85 {
		t.Errorf("v1 got %.1f%% of calls, want 80±5%%", 100*v1)
	}
	if v2 := float64(counts["v2"]) / n; v2 < 0.15 || v2 > 0.25 {
		t.Errorf("v2 got %.1f%% of calls, want 20±5%%", 100*v2)
	}
	for i := 0; i < 100; i++ {
		v, err := call(true)
		if err != nil || v != "v3" {
			t.Fatalf("canary call %d: backend %q, %v; want v3", i, v, err)
		}
	}
	// Other header values fall through to the weighted route.
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-canary", "no"), 10*time.Second)
	defer cancel()
	for i := 0; i < 30; i++ {
		r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err != nil || r.GetServerId() == "v3" {
			t.Fatalf("x-canary: no, call %d: backend %q, %v; want v1 or v2", i, r.GetServerId(), err)
		}
	}

	// A rule change reaches the connected client: everything to v2.
	applyYAML(t, s, "rules", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: echo.default.svc.cluster.local, subset: v2}
`)
	eventually("all calls on v2 after the rule change", false, 50, func(v string) bool { return v == "v2" })
	eventually("canary calls on v2 after the rule change", true, 20, func(v string) bool { return v == "v2" })

	// The control plane sees the client as a proxyless node with every type ACKed.
	ps, ok := findStatus(s, grpcNodeID)
	if !ok {
		t.Fatalf("no xDS status for %s", grpcNodeID)
	}
	if ps.Type != node.GRPC {
		t.Errorf("node type %q, want grpc", ps.Type)
	}
	for _, typ := range []string{"LDS", "RDS", "CDS", "EDS"} {
		if ts := ps.PerType[typ]; !ts.Synced() || ts.Nacked != "" {
			t.Errorf("%s: %+v, want synced", typ, ts)
		}
	}
}

func findStatus(s *Server, id string) (xds.ProxyStatus, bool) {
	for _, ps := range s.XDS().Status() {
		if ps.ID == id {
			return ps, true
		}
	}
	return xds.ProxyStatus{}, false
}

// inARow waits (up to 30 s) until n calls in a row satisfy ok.
func inARow(t *testing.T, call func(bool) (string, error), what string, canary bool, n int, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	streak := 0
	var last string
	var lastErr error
	for streak < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s (last backend %q, err %v)", what, last, lastErr)
		}
		last, lastErr = call(canary)
		if lastErr == nil && ok(last) {
			streak++
			continue
		}
		streak = 0
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProxylessGRPCSurvivesControlRestart stops the control plane under a connected
// proxyless client: calls keep following the last rule while it is down; a new control
// plane on the same address, with the same config, is reconnected to and serves the
// same versions; a rule applied to it then reaches the client.
func TestProxylessGRPCSurvivesControlRestart(t *testing.T) {
	src := echoSource(t)
	ctx1, stop1 := context.WithCancel(context.Background())
	s1, err := New(Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", Sources: []registry.Source{src},
		Debounce: 20 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done1 := make(chan error, 1)
	go func() { done1 <- s1.Run(ctx1) }()
	var runErr error
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stop1()
			runErr = <-done1
		}
	}
	defer stop()
	<-s1.Ready()
	applyYAML(t, s1, "rules", echoRules)
	_, call := echoClient(t, s1)
	inARow(t, call, "canary calls on v3", true, 30, func(v string) bool { return v == "v3" })
	before, ok := findStatus(s1, grpcNodeID)
	if !ok {
		t.Fatal("no status for the client")
	}

	// Down: the client keeps its last config (Envoy's and gRPC's behaviour with the
	// management server gone).
	addr := s1.XDSAddr()
	stop()
	if runErr != nil {
		t.Fatalf("Run: %v", runErr)
	}
	for i := 0; i < 50; i++ {
		canary := i%2 == 0
		v, err := call(canary)
		if err != nil || canary && v != "v3" || !canary && v == "v3" {
			t.Fatalf("call %d (canary %v) with the control plane down: backend %q, %v", i, canary, v, err)
		}
	}

	// Back on the same address with the same config.
	s2 := startControl(t, src, func(o *Options) { o.XDSAddress = addr })
	applyYAML(t, s2, "rules", echoRules)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ps, ok := findStatus(s2, grpcNodeID)
		synced := ok && ps.Connected
		for _, typ := range []string{"LDS", "RDS", "CDS", "EDS"} {
			synced = synced && ps.PerType[typ].Synced()
		}
		if synced {
			for _, typ := range []string{"LDS", "RDS", "CDS", "EDS"} {
				if ps.PerType[typ].Acked != before.PerType[typ].Acked {
					t.Errorf("%s: version %s after the restart, %s before", typ, ps.PerType[typ].Acked, before.PerType[typ].Acked)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client did not resync with the new control plane within 60s: %+v", ps)
		}
		time.Sleep(100 * time.Millisecond)
	}
	applyYAML(t, s2, "rules", strings.Replace(echoRules, "subset: v3", "subset: v1", 1))
	inARow(t, call, "canary calls on v1 after a change on the new control plane", true, 30, func(v string) bool { return v == "v1" })
}

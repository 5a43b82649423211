package proxy_test

// Request-path benchmarks: a keep-alive client sends sequential requests to weft-proxy,
// which forwards them to a backend on loopback (1 KiB responses), over HTTP/1.1 and
// over h2c. The Direct benchmarks send the same requests straight to the backend, so
// (Proxy - Direct) is what the proxy adds per request: its time and its allocations
// (the client's and the backend's own are in both). Everything runs in this process.
//
//	go test -run '^$' -bench 'Proxy|Direct' -benchtime 3s -count 5 ./internal/proxy/
//
// The harness helpers (startControlPlane, runProxy, startBackend, freePort) take a
// *testing.T, so the setup here is a testing.TB twin of them that reuses the harness's
// resource builders. The proxy's listener binds port 0 and the test asks the proxy for
// the port, so no other process can take it between a freePort and the bind.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/weft-mesh/weft/internal/proxy"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
)

// benchBody is the backend's response: 1 KiB.
var benchBody = bytes.Repeat([]byte("weft-bench-1KiB."), 64)

// benchEnv is a backend, a weft-proxy in front of it configured over ADS by
// go-control-plane's reference server, and a keep-alive client of the right protocol.
type benchEnv struct {
	proxyURL  string // through weft-proxy
	directURL string // straight to the backend
	client    *http.Client
}

// newBenchEnv starts the environment; h2 selects h2c (prior knowledge) on both hops.
func newBenchEnv(tb testing.TB, h2 bool) *benchEnv {
	tb.Helper()
	// Backend.
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"application/octet-stream"}
		h["Content-Length"] = []string{"1024"}
		if r.ProtoMajor == 2 {
			h["X-Backend-Proto"] = h2Proto
		}
		_, _ = w.Write(benchBody)
	})}
	if h2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		backend.Protocols = &p
	}
	go func() { _ = backend.Serve(bln) }()
	tb.Cleanup(func() { _ = backend.Close() })

	// Control plane: go-control-plane's snapshot cache and ADS server.
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(context.Background(), cache, nil))
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = g.Serve(cln) }()
	tb.Cleanup(g.Stop)

	cluster := edsCluster("backend")
	if h2 {
		cluster = h2Cluster(tb, "backend")
	}
	snap, err := cachev3.NewSnapshot("1", map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {httpListener(tb, "bench", 0, "r")},
		resourcev3.RouteType:    {routeConfig("r", prefixRoute("/", "backend"))},
		resourcev3.ClusterType:  {cluster},
		resourcev3.EndpointType: {endpoints("backend", bln.Addr().String())},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		tb.Fatal(err)
	}

	// weft-proxy.
	level := slog.LevelWarn
	if os.Getenv("WEFT_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	p, err := proxy.New(proxy.Options{
		Bootstrap:         bootstrap.FromFlags(bootstrap.Flags{NodeID: nodeID, Cluster: "test", XDSAddress: cln.Addr().String(), AdminAddress: "127.0.0.1:0"}),
		AdminAddress:      "127.0.0.1:0",
		HealthAddress:     "127.0.0.1:0",
		PrometheusAddress: "127.0.0.1:0",
		DrainTimeout:      time.Second,
		Log:               slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		tb.Fatalf("proxy.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			tb.Errorf("proxy.Run: %v", err)
		}
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			tb.Errorf("proxy did not stop within 10s")
		}
	})

	var port int
	deadline := time.Now().Add(15 * time.Second)
	for {
		if a, ok := p.Listeners().Addr("bench").(*net.TCPAddr); ok && a != nil {
			port = a.Port
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("listener not bound within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	if h2 {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	tb.Cleanup(tr.CloseIdleConnections)
	env := &benchEnv{
		proxyURL:  fmt.Sprintf("http://127.0.0.1:%d/bench", port),
		directURL: "http://" + bln.Addr().String() + "/bench",
		client:    &http.Client{Transport: tr, Timeout: 10 * time.Second},
	}
	// Ready once a request goes through.
	for {
		err := benchRequest(env.client, env.proxyURL, h2)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("proxy not serving within 15s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return env
}

var (
	discardBuf = make([]byte, 4096)
	h2Proto    = []string{"HTTP/2.0"}
)

// benchRequest sends one GET and checks the answer: status, protocol and the 1 KiB body.
func benchRequest(c *http.Client, url string, h2 bool) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	n, err := io.ReadFull(resp.Body, discardBuf[:len(benchBody)])
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d", resp.StatusCode)
	case err != nil:
		return fmt.Errorf("body after %d bytes: %w", n, err)
	case h2 && resp.ProtoMajor != 2, !h2 && resp.ProtoMajor != 1:
		return fmt.Errorf("protocol %s", resp.Proto)
	case h2 != (resp.Header.Get("X-Backend-Proto") != ""):
		return fmt.Errorf("the backend was reached over %s HTTP/2", map[bool]string{true: "", false: "not"}[resp.Header.Get("X-Backend-Proto") != ""])
	}
	return nil
}

// runBench sends b.N requests one after the other.
func runBench(b *testing.B, h2, direct bool) {
	env := newBenchEnv(b, h2)
	url := env.proxyURL
	if direct {
		url = env.directURL
	}
	// Warm the connections and the proxy's first-use paths before measuring.
	for i := 0; i < 50; i++ {
		if err := benchRequest(env.client, url, h2); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := benchRequest(env.client, url, h2); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProxyHTTP1(b *testing.B)  { runBench(b, false, false) }
func BenchmarkProxyHTTP2(b *testing.B)  { runBench(b, true, false) }
func BenchmarkDirectHTTP1(b *testing.B) { runBench(b, false, true) }
func BenchmarkDirectHTTP2(b *testing.B) { runBench(b, true, true) }

// The size-1 twins run in the suite so the benchmarks cannot rot: one request each way,
// through the proxy and direct, with the protocol checked.
func TestBenchProxyHTTP1(t *testing.T) { benchTwin(t, false) }
func TestBenchProxyHTTP2(t *testing.T) { benchTwin(t, true) }

func benchTwin(t *testing.T, h2 bool) {
	env := newBenchEnv(t, h2)
	for _, url := range []string{env.proxyURL, env.directURL} {
		if err := benchRequest(env.client, url, h2); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
}

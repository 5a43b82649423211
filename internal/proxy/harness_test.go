package proxy_test

// The harness drives a real weft-proxy (in process, real sockets on 127.0.0.1) from
// go-control-plane's own reference server (snapshot cache + server), so the proxy is
// proven against xDS code the project did not write.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
	"github.com/weft-mesh/weft/internal/testnet"
)

// anypbAny shortens typed_per_filter_config literals.
type anypbAny = anypb.Any

const nodeID = "sidecar~127.0.0.1~test.default~default.svc.cluster.local"

// controlPlane is go-control-plane's reference ADS server on a loopback port.
type controlPlane struct {
	t       *testing.T
	cache   cachev3.SnapshotCache
	addr    string
	grpc    *grpc.Server
	version atomic.Int64

	mu    sync.Mutex
	nacks []string // error_detail messages seen
	acks  map[string]string
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	cp := &controlPlane{t: t, cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), acks: map[string]string{}}
	cp.serve(addr)
	return cp
}

func (cp *controlPlane) serve(addr string) {
	t := cp.t
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			cp.observe(req.GetTypeUrl(), req.GetVersionInfo(), req.GetErrorDetail().GetMessage())
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			cp.observe(req.GetTypeUrl(), "", req.GetErrorDetail().GetMessage())
			return nil
		},
	}
	srv := serverv3.NewServer(context.Background(), cp.cache, cb)
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // a restarted control plane reclaims its port
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("control plane listen: %v", err)
	}
	cp.addr = ln.Addr().String()
	cp.grpc = g
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
}

func (cp *controlPlane) observe(typeURL, version, nack string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if nack != "" {
		cp.nacks = append(cp.nacks, nack)
	} else if version != "" {
		cp.acks[typeURL] = version
	}
}

func (cp *controlPlane) nackCount() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return len(cp.nacks)
}

func (cp *controlPlane) lastNack() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.nacks) == 0 {
		return ""
	}
	return cp.nacks[len(cp.nacks)-1]
}

func (cp *controlPlane) acked(typeURL string) string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.acks[typeURL]
}

// push sets a new snapshot for the test node and returns its version.
func (cp *controlPlane) push(res resources) string {
	cp.t.Helper()
	return cp.pushFor(nodeID, res)
}

// pushFor sets a new snapshot for one node.
func (cp *controlPlane) pushFor(node string, res resources) string {
	cp.t.Helper()
	v := strconv.FormatInt(cp.version.Add(1), 10)
	snap, err := cachev3.NewSnapshot(v, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: res.listeners,
		resourcev3.RouteType:    res.routes,
		resourcev3.ClusterType:  res.clusters,
		resourcev3.EndpointType: res.endpoints,
		resourcev3.SecretType:   res.secrets,
	})
	if err != nil {
		cp.t.Fatalf("snapshot: %v", err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		cp.t.Fatalf("set snapshot: %v", err)
	}
	return v
}

// stop ends the server and its streams, as a control plane that dies.
func (cp *controlPlane) stop() { cp.grpc.Stop() }

type resources struct {
	listeners, routes, clusters, endpoints, secrets []types.Resource
}

// runProxy starts weft-proxy with a bootstrap pointing ADS at cp.
func runProxy(t *testing.T, cp *controlPlane, delta bool) *proxy.Proxy {
	t.Helper()
	return runProxyNode(t, cp, nodeID, delta)
}

func runProxyNode(t *testing.T, cp *controlPlane, node string, delta bool) *proxy.Proxy {
	t.Helper()
	b := bootstrap.FromFlags(bootstrap.Flags{NodeID: node, Cluster: "test", XDSAddress: cp.addr, Delta: delta, AdminAddress: "127.0.0.1:0"})
	return runProxyWith(t, b)
}

func runProxyWith(t *testing.T, b *bootstrapv3.Bootstrap) *proxy.Proxy {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("WEFT_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	p, err := proxy.New(proxy.Options{
		Bootstrap:         b,
		AdminAddress:      "127.0.0.1:0",
		HealthAddress:     "127.0.0.1:0",
		PrometheusAddress: "127.0.0.1:0",
		DrainTimeout:      time.Second,
		Log:               slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("proxy.Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("proxy did not stop within 10s")
		}
	})
	return p
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int { return testnet.FreePort(t) }

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not within %v: %v", d, err)
}

// --- resource builders ---

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func socketAddr(host string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// httpListener is a listener on 127.0.0.1:port whose HTTP connection manager takes its
// routes over RDS.
func httpListener(t testing.TB, name string, port int, routeName string, filters ...*hcmv3.HttpFilter) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}),
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: socketAddr("127.0.0.1", port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}}},
		}},
	}
}

// edsCluster is a cluster whose endpoints come over EDS.
func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		},
	}
}

// endpoints is the load assignment of a cluster: every address in one locality.
func endpoints(cluster string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddr(host, p)}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Locality: &corev3.Locality{Region: "local"}, LbEndpoints: lbs, LoadBalancingWeight: wrapperspb.UInt32(1),
	}}}
}

func routeConfig(name string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}}}
}

func prefixRoute(prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}
}

// --- upstreams ---

// backend is an HTTP server on loopback that answers with its name.
type backend struct {
	name  string
	addr  string
	hits  atomic.Int64
	srv   *http.Server
	ln    net.Listener
	serve func(w http.ResponseWriter, r *http.Request) bool // true when it answered
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().String(), ln: ln}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if b.serve != nil && b.serve(w, r) {
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// client is a keep-alive HTTP/1.1 client with enough idle connections for the tests.
func client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
}

// get sends GET and returns status, backend name and body.
func get(t testing.TB, c *http.Client, url string, hdr ...string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Backend"), string(body)
}

func wrapBool(v bool) *wrapperspb.BoolValue { return wrapperspb.Bool(v) }

package xds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// fakeMesh is a mutable mesh state with a Generator over it: per proxy (by workload
// name) one EDS cluster, its CLA, and an API listener with inline routes to it.
type fakeMesh struct {
	mu       sync.Mutex
	epPort   uint32
	epAddr   string
	svc      string // listener name; "" = "l-<workload>"
	timeout  int64  // cluster connect_timeout seconds; 0 = 1s
	fail     map[string]error
	calls    map[string]int
	firstGen time.Time
}

func newFakeMesh() *fakeMesh {
	return &fakeMesh{epPort: 9000, epAddr: "127.0.0.1", fail: map[string]error{}, calls: map[string]int{}}
}

func (m *fakeMesh) Generate(p *node.Proxy) (Resources, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[p.ID]++
	if m.firstGen.IsZero() {
		m.firstGen = time.Now()
	}
	if err := m.fail[p.ID]; err != nil {
		return nil, err
	}
	cname := "c-" + p.Workload
	lname := "l-" + p.Workload
	domain := "*"
	if m.svc != "" {
		lname, domain = m.svc, m.svc
	}
	c := edsCluster(cname)
	if m.timeout > 0 {
		c.ConnectTimeout = durationpb.New(time.Duration(m.timeout) * time.Second)
	}
	return Resources{
		resource.ClusterType:  {c},
		resource.EndpointType: {cla(cname, m.epAddr, m.epPort)},
		resource.ListenerType: {apiListener(lname, domain, cname)},
	}, nil
}

func (m *fakeMesh) setEndpointPort(port uint32) {
	m.mu.Lock()
	m.epPort = port
	m.mu.Unlock()
}

func (m *fakeMesh) setFail(id string, err error) {
	m.mu.Lock()
	m.fail[id] = err
	m.mu.Unlock()
}

func (m *fakeMesh) count(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[id]
}

func (m *fakeMesh) reset() {
	m.mu.Lock()
	m.calls = map[string]int{}
	m.firstGen = time.Time{}
	m.mu.Unlock()
}

func edsCluster(name string) *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig: &cluster.Cluster_EdsClusterConfig{EdsConfig: &core.ConfigSource{
			ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
			ResourceApiVersion:    core.ApiVersion_V3,
		}},
		ConnectTimeout: durationpb.New(time.Second),
		LbPolicy:       cluster.Cluster_ROUND_ROBIN,
	}
}

func cla(name, addr string, port uint32) *endpoint.ClusterLoadAssignment {
	return &endpoint.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpoint.LocalityLbEndpoints{{
			Locality:            &core.Locality{Region: "local"},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpoint.LbEndpoint{{
				HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
					Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
						Address: addr, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
					}}},
				}},
				HealthStatus: core.HealthStatus_HEALTHY,
			}},
		}},
	}
}

// apiListener is what grpc-go's xDS resolver needs: an HCM API listener with inline
// routes and the router filter last.
func apiListener(name, domain, clusterName string) *listener.Listener {
	rc := &route.RouteConfiguration{
		Name: "r-" + name,
		VirtualHosts: []*route.VirtualHost{{
			Name:    "vh",
			Domains: []string{domain},
			Routes: []*route.Route{{
				Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: &route.Route_Route{Route: &route.RouteAction{
					ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName},
				}},
			}},
		}},
	}
	m := &hcm.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters: []*hcm.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})},
		}},
	}
	return &listener.Listener{Name: name, ApiListener: &listener.ApiListener{ApiListener: mustAny(m)}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func sidecarNode(workload string) *core.Node {
	p := &node.Proxy{Type: node.Sidecar, Workload: workload, Namespace: "default", ServiceAccount: workload,
		Interception: node.Explicit, Labels: map[string]string{"app": workload}}
	ip := netip.MustParseAddr("127.0.0.1")
	p.IP, p.AppIP = ip, ip
	return &core.Node{
		Id:       node.ID(node.Sidecar, ip, workload, "default", "default.svc.cluster.local"),
		Metadata: node.Metadata(p),
	}
}

// harness is a Server on a real gRPC listener on loopback and a client connection.
type harness struct {
	s    *Server
	mesh *fakeMesh
	addr string
	cc   *grpc.ClientConn
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHarness(t *testing.T, mesh *fakeMesh, opts Options) *harness {
	t.Helper()
	if opts.Generator == nil {
		opts.Generator = mesh
	}
	if opts.Log == nil {
		opts.Log = quietLog()
	}
	s := New(opts)
	g := grpc.NewServer(GRPCServerOptions()...)
	s.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		s.Close()
		g.Stop()
	})
	return &harness{s: s, mesh: mesh, addr: lis.Addr().String(), cc: cc}
}

const (
	waitLong = 10 * time.Second       // for what must happen (generous: shared 2-core machine)
	quiet    = 400 * time.Millisecond // for what must not happen
)

var allTypes = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}

// connectSotW subscribes to every type as Envoy would (EDS by the cluster's name) and
// ACKs the first response of each; it returns them by type.
func connectSotW(t *testing.T, h *harness, n *core.Node, ctx context.Context) (*xdstest.SotW, map[string]*discovery.DiscoveryResponse) {
	t.Helper()
	c, err := xdstest.NewSotW(ctx, h.cc, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for _, typ := range allTypes {
		var names []string
		if typ == resource.EndpointType {
			names = []string{"c-" + workloadOf(t, n)}
		}
		if err := c.Subscribe(typ, names...); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]*discovery.DiscoveryResponse{}
	for len(got) < len(allTypes) {
		r, err := c.Recv(waitLong)
		if err != nil {
			t.Fatalf("%s: waiting for initial responses (have %d): %v", n.GetId(), len(got), err)
		}
		if got[r.GetTypeUrl()] != nil {
			t.Fatalf("%s: second %s response before all types answered", n.GetId(), ShortName(r.GetTypeUrl()))
		}
		got[r.GetTypeUrl()] = r
		if err := c.ACK(r); err != nil {
			t.Fatal(err)
		}
	}
	return c, got
}

func connectDelta(t *testing.T, h *harness, n *core.Node, ctx context.Context) (*xdstest.Delta, map[string]*discovery.DeltaDiscoveryResponse) {
	t.Helper()
	c, err := xdstest.NewDelta(ctx, h.cc, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for _, typ := range allTypes {
		if err := c.Subscribe(typ); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]*discovery.DeltaDiscoveryResponse{}
	for len(got) < len(allTypes) {
		r, err := c.Recv(waitLong)
		if err != nil {
			t.Fatalf("%s: waiting for initial delta responses (have %d): %v", n.GetId(), len(got), err)
		}
		got[r.GetTypeUrl()] = r
		if err := c.ACK(r); err != nil {
			t.Fatal(err)
		}
	}
	return c, got
}

func workloadOf(t *testing.T, n *core.Node) string {
	p, err := node.Parse(n)
	if err != nil {
		t.Fatal(err)
	}
	return p.Workload
}

// waitFor polls cond until it holds or waitLong passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func statusOf(s *Server, id string) (ProxyStatus, bool) {
	for _, ps := range s.Status() {
		if ps.ID == id {
			return ps, true
		}
	}
	return ProxyStatus{}, false
}

func names(t *testing.T, anys []*anypb.Any) []string {
	t.Helper()
	var out []string
	for _, a := range anys {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, nameOf(m))
	}
	return out
}

func nameOf(m proto.Message) string {
	if c, ok := m.(*endpoint.ClusterLoadAssignment); ok {
		return c.GetClusterName()
	}
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

func portOf(t *testing.T, a *anypb.Any) uint32 {
	t.Helper()
	var c endpoint.ClusterLoadAssignment
	if err := a.UnmarshalTo(&c); err != nil {
		t.Fatal(err)
	}
	return c.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
}

var errBoom = errors.New("boom: registry half-synced")

// metricValue sums a metric family's samples whose labels include want.
func metricValue(t *testing.T, s *Server, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := s.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

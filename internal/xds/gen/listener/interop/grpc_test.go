package interop

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/xds/gen/listener"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

const nodeID = "weft-interop-grpc-client"

// backend is a gRPC server on 127.0.0.1 answering health checks with its name in the
// "x-backend" response header.
func backend(t *testing.T, name string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", name))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// clusters makes an EDS cluster and its endpoints for every cluster the route
// configurations name (standing in for the cluster generator): subset v1 and no subset
// go to backend "v1", the other subsets to "v2".
func clusters(t *testing.T, rcs []*routev3.RouteConfiguration, v1, v2 string) (cs, eps []types.Resource) {
	t.Helper()
	seen := map[string]bool{}
	add := func(name string) {
		if seen[name] {
			return
		}
		seen[name] = true
		_, _, subset, _, ok := names.ParseCluster(name)
		if !ok {
			t.Fatalf("cluster %q is not an Istio name", name)
		}
		addr := v1
		if subset != "" && subset != "v1" {
			addr = v2
		}
		host, port, _ := net.SplitHostPort(addr)
		var p uint32
		fmt.Sscan(port, &p)
		ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
		cs = append(cs, &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		})
		eps = append(eps, &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				// grpc-go rejects a locality without an ID (the cluster generator must
				// set one for proxyless clients).
				Locality:            &corev3.Locality{Region: "local"},
				LoadBalancingWeight: wrapperspb.UInt32(1),
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: p}}}},
				}}}},
			}},
		})
	}
	for _, rc := range rcs {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if c := r.GetRoute().GetCluster(); c != "" {
					add(c)
				}
				for _, w := range r.GetRoute().GetWeightedClusters().GetClusters() {
					add(w.GetName())
				}
			}
		}
	}
	return cs, eps
}

// xdsServer serves a snapshot for nodeID on 127.0.0.1 over ADS.
func xdsServer(t *testing.T, snap *cache.Snapshot) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	// Not ADS mode: go-control-plane's ADS-mode cache did not answer grpc-go's first
	// named LDS request here; the responses are the same either way.
	sc := cache.NewSnapshotCache(false, cache.IDHash{}, nil)
	// Not snap.Consistent(): it does not look into API listeners for RDS names.
	if err := sc.SetSnapshot(ctx, nodeID, snap); err != nil {
		t.Fatal(err)
	}
	srv := serverv3.NewServer(ctx, sc, serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoverygrpc.DiscoveryRequest) error {
			t.Logf("request %s %v v=%s nonce=%s err=%v", r.GetTypeUrl(), r.GetResourceNames(), r.GetVersionInfo(), r.GetResponseNonce(), r.GetErrorDetail())
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, r *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
			t.Logf("response %s %d resources", resp.GetTypeUrl(), len(resp.GetResources()))
		},
	})
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); cancel() })
	return lis.Addr().String()
}

func TestProxylessGRPC(t *testing.T) {
	s := simtest.BookinfoFiles("destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml",
		"virtual-service-ratings-test-abort.yaml", "virtual-service-reviews-80-20.yaml")
	p := simtest.GRPCProxy("default")
	ls, rcs := listener.GRPC(s, p), route.GRPC(s, p)
	v1, v2 := backend(t, "v1"), backend(t, "v2")
	cs, eps := clusters(t, rcs, v1, v2)
	var lres, rres []types.Resource
	for _, l := range ls {
		lres = append(lres, l)
	}
	for _, rc := range rcs {
		rres = append(rres, rc)
	}
	snap, err := cache.NewSnapshot("1", map[resource.Type][]types.Resource{
		resource.ListenerType: lres, resource.RouteType: rres, resource.ClusterType: cs, resource.EndpointType: eps,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := xdsServer(t, snap)
	bootstrap := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": %q}}`, addr, nodeID)
	builder, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(target string) healthpb.HealthClient {
		conn, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(builder))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
	call := func(c healthpb.HealthClient, user string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if user != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "end-user", user)
		}
		var hdr metadata.MD
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr), grpc.WaitForReady(true))
		return strings.Join(hdr.Get("x-backend"), ","), err
	}

	// reviews: the short dial target; jason goes to v2, others by the first
	// VirtualService (test-v2 is older than 80-20, so it wins: v1).
	reviews := dial("reviews:9080")
	if got, err := call(reviews, "jason"); err != nil || got != "v2" {
		t.Fatalf("reviews for jason: backend %q, %v", got, err)
	}
	for i := 0; i < 5; i++ {
		if got, err := call(reviews, "bob"); err != nil || got != "v1" {
			t.Fatalf("reviews for bob: backend %q, %v", got, err)
		}
	}
	// ratings by FQDN: jason's calls are aborted by the fault filter (HTTP 500).
	ratings := dial("ratings.default.svc.cluster.local:9080")
	if got, err := call(ratings, ""); err != nil || got != "v1" {
		t.Fatalf("ratings: backend %q, %v", got, err)
	}
	_, err = call(ratings, "jason")
	if status.Code(err) == codes.OK || !strings.Contains(status.Convert(err).Message(), "fault") {
		t.Fatalf("ratings for jason: %v, want an injected fault", err)
	}
	// details has no VirtualService: the default route (the service's cluster).
	if got, err := call(dial("details:9080"), ""); err != nil || got != "v1" {
		t.Fatalf("details: backend %q, %v", got, err)
	}
}

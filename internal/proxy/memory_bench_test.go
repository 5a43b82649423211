package proxy

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// meshCluster is an outbound cluster as weft control sends a sidecar for a service of
// the mesh: EDS over ADS, Istio's auto mTLS (transport socket matches on tlsMode, SDS
// certificates, the service account's SPIFFE ID as SAN), a circuit breaker.
func meshCluster(tb testing.TB, i int) (*anypb.Any, *anypb.Any) {
	tb.Helper()
	host := fmt.Sprintf("svc-%d.bench.svc.cluster.local", i)
	name := "outbound|80||" + host
	sds := func(n string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: n, SdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}}
	}
	utc := &tlsv3.UpstreamTlsContext{
		Sni: "outbound_.80_._." + host,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"istio-peer-exchange", "istio"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("default")},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
							SanType: tlsv3.SubjectAltNameMatcher_URI,
							Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{
								Exact: fmt.Sprintf("spiffe://cluster.local/ns/bench/sa/svc-%d", i)}},
						}},
					},
					ValidationContextSdsSecretConfig: sds("ROOTCA"),
				},
			},
		},
	}
	mustAny := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			tb.Fatal(err)
		}
		return a
	}
	socket := func(name string, m proto.Message) *corev3.TransportSocket {
		return &corev3.TransportSocket{Name: name, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(m)}}
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(10e9),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: name, EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(4294967295), MaxPendingRequests: wrapperspb.UInt32(4294967295),
			MaxRequests: wrapperspb.UInt32(4294967295), MaxRetries: wrapperspb.UInt32(4294967295),
		}}},
		TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{
			{
				Name:            "tlsMode-istio",
				Match:           &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
				TransportSocket: socket("envoy.transport_sockets.tls", utc),
			},
			{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: socket("envoy.transport_sockets.raw_buffer", &rawv3.RawBuffer{})},
		},
	}
	var eps []*endpointv3.LbEndpoint
	for j := range 2 {
		eps = append(eps, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: fmt.Sprintf("10.%d.%d.%d", i>>8&255, i&255, j+1), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
				}},
			}}},
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"istio":                        {Fields: map[string]*structpb.Value{"workload": structpb.NewStringValue(fmt.Sprintf("svc-%d-v1;bench;svc-%d;v1;cluster.local", i, i))}},
				"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
			}},
			LoadBalancingWeight: wrapperspb.UInt32(1),
		})
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Locality:            &corev3.Locality{Region: "region", Zone: "zone"},
		LbEndpoints:         eps,
		LoadBalancingWeight: wrapperspb.UInt32(2),
	}}}
	return mustAny(c), mustAny(cla)
}

// BenchmarkMeshClusterMemory is what a sidecar keeps for each service of a mesh it is
// told about: 1,000 clusters as meshCluster makes them, with their endpoints, applied
// through CDS and EDS as from the control plane. retained-B/cluster is the live heap
// after a collection, less the heap before, per cluster: the decoded-and-compiled
// state, the resources kept for config_dump and every metric of the cluster.
// Run with -benchtime 1x.
func BenchmarkMeshClusterMemory(b *testing.B) {
	const n = 1000
	meshProxy := func(n int) *Proxy {
		p, err := New(Options{Bootstrap: &bootstrapv3.Bootstrap{}, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		cds, eds := map[string]*anypb.Any{}, map[string]*anypb.Any{}
		for i := range n {
			c, e := meshCluster(b, i)
			name := fmt.Sprintf("outbound|80||svc-%d.bench.svc.cluster.local", i)
			cds[name], eds[name] = c, e
		}
		if err := p.Apply(TypeCluster, "1", cds); err != nil {
			b.Fatal(err)
		}
		if err := p.Apply(TypeEndpoint, "1", eds); err != nil {
			b.Fatal(err)
		}
		if got := len(p.clusters.Snapshot()); got != n {
			b.Fatalf("%d clusters, want %d", got, n)
		}
		return p
	}
	for b.Loop() {
		// A proxy of one cluster first: what is made once per process (protobuf's
		// descriptors of the types used, the filters' stats, which go to the store
		// of the newest proxy) is not counted.
		warm := meshProxy(1)
		warm.clusters.Close()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		p := meshProxy(n)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "retained-B/cluster")
		b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
		p.clusters.Close()
	}
}

package bootstrap

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/internal/proxy/bootstrap/pgv"
)

// Validate checks what the proxy relies on and returns every violation at once, each
// with its field path: the proto constraints Envoy enforces on a bootstrap
// (protoc-gen-validate rules), unique static names, node.id when dynamic_resources is
// set, ads_config api_type GRPC or DELTA_GRPC with a gRPC service whose envoy_grpc
// cluster is in static_resources, and lds_config/cds_config by ADS (the only dynamic
// source weft-proxy has).
func Validate(b *bootstrapv3.Bootstrap) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	// The rules are read from the descriptors (package pgv) rather than by calling
	// b.ValidateAll, which would link every generated validator (see pgv).
	if err := pgv.Check(b, ""); err != nil {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = append(errs, j.Unwrap()...)
		} else {
			errs = append(errs, err)
		}
	}

	sr := b.GetStaticResources()
	clusters := map[string]bool{}
	for i, c := range sr.GetClusters() {
		if clusters[c.GetName()] {
			add("static_resources.clusters[%d].name: duplicate cluster %q", i, c.GetName())
		}
		clusters[c.GetName()] = true
	}
	seen := map[string]bool{}
	for i, l := range sr.GetListeners() {
		if l.GetName() != "" && seen[l.GetName()] {
			add("static_resources.listeners[%d].name: duplicate listener %q", i, l.GetName())
		}
		seen[l.GetName()] = true
	}
	seen = map[string]bool{}
	for i, s := range sr.GetSecrets() {
		if seen[s.GetName()] {
			add("static_resources.secrets[%d].name: duplicate secret %q", i, s.GetName())
		}
		seen[s.GetName()] = true
	}

	dr := b.GetDynamicResources()
	if dr != nil {
		if b.GetNode().GetId() == "" {
			add("node.id: required when dynamic_resources is set")
		}
		ads := dr.GetAdsConfig()
		if ads != nil {
			switch ads.GetApiType() {
			case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_DELTA_GRPC:
			default:
				add("dynamic_resources.ads_config.api_type: %s not supported (GRPC or DELTA_GRPC)", ads.GetApiType())
			}
			if len(ads.GetGrpcServices()) == 0 {
				add("dynamic_resources.ads_config.grpc_services: one gRPC service required")
			}
			for i, s := range ads.GetGrpcServices() {
				if name := s.GetEnvoyGrpc().GetClusterName(); s.GetEnvoyGrpc() != nil && !clusters[name] {
					add("dynamic_resources.ads_config.grpc_services[%d].envoy_grpc.cluster_name: cluster %q is not in static_resources.clusters", i, name)
				}
			}
		}
		for _, src := range []struct {
			field string
			cs    *corev3.ConfigSource
		}{{"lds_config", dr.GetLdsConfig()}, {"cds_config", dr.GetCdsConfig()}} {
			switch {
			case src.cs == nil:
			case src.cs.GetAds() == nil:
				add("dynamic_resources.%s: only ads is supported", src.field)
			case ads == nil:
				add("dynamic_resources.%s: ads requires dynamic_resources.ads_config", src.field)
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("bootstrap: %w", errors.Join(errs...))
}

// XDS resolves dynamic_resources.ads_config to what the xdsclient dials. For envoy_grpc
// it is the static cluster named by cluster_name, which must be STATIC, STRICT_DNS or
// LOGICAL_DNS with exactly one endpoint in load_assignment (a socket address becomes
// "host:port", a pipe "unix://path"); tls is that cluster's UpstreamTlsContext transport
// socket, if any, for the caller to build credentials from. For google_grpc it is
// target_uri (its channel credentials are not translated). ok is false when there is no
// ads_config. The first of several grpc_services is used.
func XDS(b *bootstrapv3.Bootstrap) (target string, delta bool, tls *tlsv3.UpstreamTlsContext, ok bool, err error) {
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads == nil {
		return "", false, nil, false, nil
	}
	const field = "dynamic_resources.ads_config"
	switch ads.GetApiType() {
	case corev3.ApiConfigSource_GRPC:
	case corev3.ApiConfigSource_DELTA_GRPC:
		delta = true
	default:
		return "", false, nil, false, fmt.Errorf("bootstrap: %s.api_type: %s not supported (GRPC or DELTA_GRPC)", field, ads.GetApiType())
	}
	if len(ads.GetGrpcServices()) == 0 {
		return "", false, nil, false, fmt.Errorf("bootstrap: %s.grpc_services: one gRPC service required", field)
	}
	svc := ads.GetGrpcServices()[0]
	if g := svc.GetGoogleGrpc(); g != nil {
		if g.GetTargetUri() == "" {
			return "", false, nil, false, fmt.Errorf("bootstrap: %s.grpc_services[0].google_grpc.target_uri: required", field)
		}
		return g.GetTargetUri(), delta, nil, true, nil
	}
	name := svc.GetEnvoyGrpc().GetClusterName()
	if name == "" {
		return "", false, nil, false, fmt.Errorf("bootstrap: %s.grpc_services[0]: envoy_grpc.cluster_name or google_grpc.target_uri required", field)
	}
	var c *clusterv3.Cluster
	idx := 0
	for i, sc := range b.GetStaticResources().GetClusters() {
		if sc.GetName() == name {
			c, idx = sc, i
			break
		}
	}
	if c == nil {
		return "", false, nil, false, fmt.Errorf("bootstrap: %s.grpc_services[0].envoy_grpc.cluster_name: cluster %q is not in static_resources.clusters", field, name)
	}
	cpath := fmt.Sprintf("static_resources.clusters[%d] (%q)", idx, name)
	if c.GetClusterType() != nil {
		return "", false, nil, false, fmt.Errorf("bootstrap: %s.cluster_type: custom cluster types not supported for the xDS server", cpath)
	}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
	default:
		return "", false, nil, false, fmt.Errorf("bootstrap: %s.type: %s not supported for the xDS server (STATIC, STRICT_DNS or LOGICAL_DNS)", cpath, c.GetType())
	}
	var eps []*endpointv3.LbEndpoint
	for _, l := range c.GetLoadAssignment().GetEndpoints() {
		eps = append(eps, l.GetLbEndpoints()...)
	}
	if len(eps) != 1 {
		return "", false, nil, false, fmt.Errorf("bootstrap: %s.load_assignment: the xDS server cluster needs exactly one endpoint, has %d", cpath, len(eps))
	}
	target, err = grpcTarget(eps[0].GetEndpoint().GetAddress())
	if err != nil {
		return "", false, nil, false, fmt.Errorf("bootstrap: %s.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address: %w", cpath, err)
	}
	if ts := c.GetTransportSocket(); ts.GetTypedConfig() != nil {
		tc := ts.GetTypedConfig()
		if tc.MessageIs((*tlsv3.UpstreamTlsContext)(nil)) {
			tls = &tlsv3.UpstreamTlsContext{}
			if err := tc.UnmarshalTo(tls); err != nil {
				return "", false, nil, false, fmt.Errorf("bootstrap: %s.transport_socket.typed_config: %w", cpath, err)
			}
		}
	}
	return target, delta, tls, true, nil
}

func grpcTarget(a *corev3.Address) (string, error) {
	if p := a.GetPipe(); p != nil {
		if p.GetPath() == "" {
			return "", errors.New("pipe.path: required")
		}
		return "unix://" + p.GetPath(), nil
	}
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", errors.New("socket_address or pipe required")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", fmt.Errorf("socket_address.protocol: %s not supported", sa.GetProtocol())
	}
	if sa.GetAddress() == "" {
		return "", errors.New("socket_address.address: required")
	}
	if _, named := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); named || sa.GetPortValue() == 0 {
		return "", errors.New("socket_address.port_value: required")
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), nil
}

// Flags are the command-line settings for a proxy started without a bootstrap file.
type Flags struct {
	NodeID, Cluster string
	// XDSAddress is the control plane, "host:port" or "unix:///path"; empty means no xDS.
	XDSAddress string
	// Delta selects DELTA_GRPC.
	Delta bool
	// AdminAddress is "host:port" for the admin listener; empty means none.
	AdminAddress string
}

// XDSClusterName is the static cluster FromFlags creates for the control plane (Istio's name).
const XDSClusterName = "xds-grpc"

// FromFlags builds the bootstrap of the common case: node identity, the admin address,
// and, with an XDSAddress, a static HTTP/2 cluster for the control plane (STATIC for an
// IP or a unix socket, STRICT_DNS for a name) with LDS and CDS over ADS. An address that
// does not split as host:port is taken as a host with port 0; run Validate on the result.
func FromFlags(f Flags) *bootstrapv3.Bootstrap {
	b := &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: f.NodeID, Cluster: f.Cluster}}
	if f.AdminAddress != "" {
		b.Admin = &bootstrapv3.Admin{Address: flagAddress(f.AdminAddress)}
	}
	if f.XDSAddress == "" {
		return b
	}
	addr := flagAddress(f.XDSAddress)
	typ := clusterv3.Cluster_STATIC
	if h := addr.GetSocketAddress().GetAddress(); h != "" && net.ParseIP(h) == nil {
		typ = clusterv3.Cluster_STRICT_DNS
	}
	// The xDS server speaks gRPC: HTTP/2 upstream, as Envoy requires for envoy_grpc.
	h2, _ := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	b.StaticResources = &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{{
		Name:                 XDSClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: XDSClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
			}}}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2,
		},
	}}}
	apiType := corev3.ApiConfigSource_GRPC
	if f.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	adsSource := func() *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}
	}
	b.DynamicResources = &bootstrapv3.Bootstrap_DynamicResources{
		AdsConfig: &corev3.ApiConfigSource{
			ApiType:                   apiType,
			TransportApiVersion:       corev3.ApiVersion_V3,
			SetNodeOnFirstMessageOnly: true,
			GrpcServices: []*corev3.GrpcService{{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSClusterName}},
			}},
		},
		LdsConfig: adsSource(),
		CdsConfig: adsSource(),
	}
	return b
}

func flagAddress(s string) *corev3.Address {
	if p, ok := strings.CutPrefix(s, "unix://"); ok {
		return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: p}}}
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, "0"
	}
	n, _ := strconv.ParseUint(port, 10, 16)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}

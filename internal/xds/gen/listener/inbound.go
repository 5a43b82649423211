package listener

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
	"github.com/weft-mesh/weft/internal/xds/gen/security"
)

// TLSMode is how an inbound port accepts connections.
type TLSMode int

const (
	// Plaintext: one plaintext chain per port, matching any transport.
	Plaintext TLSMode = iota
	// Permissive: an mTLS chain (transport "tls") beside a plaintext chain
	// (transport "raw_buffer"); the listener gets a tls_inspector to tell them apart.
	Permissive
	// Strict: the mTLS chain only.
	Strict
)

// InboundTLS is the TLS side of one inbound port.
type InboundTLS struct {
	Mode TLSMode
	// TransportSocket terminates mTLS on the TLS chain (see MeshTLSTransportSocket).
	TransportSocket *corev3.TransportSocket
	// ALPN, when set, is required of TLS connections on the TLS chain (Istio's mesh
	// clients offer "istio-peer-exchange", "istio").
	ALPN []string
}

// InboundSecurity decides the TLS side of an inbound port of a proxy.
type InboundSecurity func(s *snapshot.Snapshot, p *node.Proxy, port uint32) InboundTLS

// inboundSecurity is the one place where PeerAuthentication reaches listeners: the
// port's mode (security.PeerMode: workload, namespace, mesh, port-level; PERMISSIVE when
// none) picks the chains. STRICT takes any TLS as mesh mTLS (no ALPN asked, so a
// proxyless gRPC client offering only "h2" is served too); PERMISSIVE takes TLS as mesh
// mTLS only when the client offers a mesh ALPN (security.MeshALPN), as Istio does, and
// plaintext beside it; DISABLE is plaintext only.
func inboundSecurity(s *snapshot.Snapshot, p *node.Proxy, port uint32) InboundTLS {
	mode := security.PeerMode(s, p, port)
	if mode == security.Disable {
		return InboundTLS{Mode: Plaintext}
	}
	http := false
	for _, ip := range route.InboundPorts(s, p) {
		if ip.Port == port {
			http = ip.Protocol.IsHTTP()
		}
	}
	if mode == security.Strict {
		return InboundTLS{Mode: Strict, TransportSocket: MeshTLSTransportSocket(http)}
	}
	return InboundTLS{Mode: Permissive, TransportSocket: MeshTLSTransportSocket(http), ALPN: security.MeshALPN()}
}

// MeshTLSTransportSocket terminates the mesh's mTLS: the workload certificate and the
// root CA from SDS (names.WorkloadCert, names.RootCA over ADS), a client certificate
// required, and HTTP ALPN offered for HTTP ports.
func MeshTLSTransportSocket(http bool) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: names.WorkloadCert, SdsConfig: ads()}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: names.RootCA, SdsConfig: ads()},
			},
		},
	}
	if http {
		ctx.CommonTlsContext.AlpnProtocols = []string{"h2", "http/1.1"}
	}
	return downstreamTLS(ctx)
}

func downstreamTLS(ctx *tlsv3.DownstreamTlsContext) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// sniffedHTTP are the application protocols the http_inspector reports for HTTP (a
// fresh slice each time: generated resources share no mutable state).
func sniffedHTTP() []string { return []string{"http/1.1", "h2c"} }

// inspectors records which listener filters a listener's chains need.
type inspectors struct {
	originalDst, tls, http bool
}

func (in inspectors) filters() []*listenerv3.ListenerFilter {
	var out []*listenerv3.ListenerFilter
	if in.originalDst {
		out = append(out, listenerFilter(OriginalDst))
	}
	if in.tls {
		out = append(out, listenerFilter(TLSInspector))
	}
	if in.http {
		out = append(out, listenerFilter(HTTPInspector))
	}
	return out
}

// inboundChains are the filter chains of one inbound port. Redirect mode matches the
// destination port (all ports share virtualInbound); Explicit mode has a listener per
// port. Plaintext chains sniff HTTP for ports of unknown protocol; TLS chains cannot
// (the protocol is inside the TLS), so such ports are TCP there.
func inboundChains(s *snapshot.Snapshot, p *node.Proxy, ip route.InboundPort, sec InboundTLS, matchPort bool, in *inspectors) []*listenerv3.FilterChain {
	cluster := names.Cluster(names.Inbound, ip.Port, "", "")
	fc := FilterContext{Snapshot: s, Proxy: p, Side: SideInbound, Port: ip.Port}
	statPrefix := "inbound_" + strconv.FormatUint(uint64(ip.Port), 10)
	hcm := func() *listenerv3.Filter {
		return hcmFilter(httpConnectionManager(fc, statPrefix, names.InboundRoute(ip.Port)))
	}
	tcp := func() []*listenerv3.Filter {
		return tcpChain(fc, []route.WeightedCluster{{Name: cluster, Weight: 1}})
	}
	base := func(transport string) *listenerv3.FilterChainMatch {
		m := &listenerv3.FilterChainMatch{TransportProtocol: transport}
		if matchPort {
			m.DestinationPort = wrapperspb.UInt32(ip.Port)
		}
		return m
	}
	var out []*listenerv3.FilterChain
	if sec.Mode == Permissive || sec.Mode == Strict {
		in.tls = true
		m := base("tls")
		m.ApplicationProtocols = append([]string(nil), sec.ALPN...)
		f := tcp()
		if ip.Protocol.IsHTTP() {
			f = []*listenerv3.Filter{hcm()}
		}
		out = append(out, &listenerv3.FilterChain{
			Name:             cluster + "-tls",
			FilterChainMatch: m,
			Filters:          f,
			TransportSocket:  sec.TransportSocket,
		})
	}
	if sec.Mode == Strict {
		return out
	}
	transport := ""
	if sec.Mode == Permissive {
		transport = "raw_buffer"
	}
	switch {
	case ip.Protocol.IsHTTP():
		out = append(out, &listenerv3.FilterChain{Name: cluster + "-http", FilterChainMatch: base(transport), Filters: []*listenerv3.Filter{hcm()}})
	case ip.Protocol == registry.Unknown:
		in.http = true
		m := base(transport)
		m.ApplicationProtocols = sniffedHTTP()
		out = append(out,
			&listenerv3.FilterChain{Name: cluster + "-http", FilterChainMatch: m, Filters: []*listenerv3.Filter{hcm()}},
			&listenerv3.FilterChain{Name: cluster + "-tcp", FilterChainMatch: base(transport), Filters: tcp()})
	default:
		out = append(out, &listenerv3.FilterChain{Name: cluster + "-tcp", FilterChainMatch: base(transport), Filters: tcp()})
	}
	return out
}

package listener

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

// CACertSuffix names the SDS secret with a credential's CA certificates for MUTUAL
// TLS: "<credentialName>-cacert" (Istio's convention for gateway credentials).
const CACertSuffix = "-cacert"

// Gateway builds a gateway proxy's listeners: one per port of the servers of the
// Gateways that select it, "0.0.0.0_<port>" bound on 0.0.0.0 (on the proxy's IP in
// Explicit mode, where several local processes share the machine).
//
//   - HTTP servers: one chain, HCM with RDS names.GatewayRoute(port).
//   - HTTPS servers the gateway terminates (SIMPLE, MUTUAL, ISTIO_MUTUAL): a chain per
//     server matching its hosts as SNI, with a DownstreamTlsContext whose certificate
//     comes over SDS by the name tls.credentialName — the Kubernetes secret name, which
//     the secret generator serves as is, with "<credentialName>-cacert" for MUTUAL's CA
//     — or from the files the server names; HCM with RDS names.GatewayRoute(port).
//   - TLS PASSTHROUGH servers: a chain per SNI host of the VirtualService tls routes,
//     tcp_proxy to their destinations.
//   - TCP servers (and TLS servers the gateway terminates): tcp_proxy from the
//     VirtualService tcp routes.
//
// A port without anything to serve gets no listener. Sorted by name.
func Gateway(s *snapshot.Snapshot, p *node.Proxy) []*listenerv3.Listener {
	servers := route.GatewayServers(s, p)
	if len(servers) == 0 {
		return nil
	}
	sc := route.NewScope(s, p)
	bind := "0.0.0.0"
	if p.Interception == node.Explicit && p.IP.IsValid() {
		bind = p.IP.String()
	}
	var out []*listenerv3.Listener
	for i := 0; i < len(servers); {
		port := servers[i].Port()
		j := i
		for j < len(servers) && servers[j].Port() == port {
			j++
		}
		if l := gatewayListener(sc, bind, port, servers[i:j]); l != nil {
			out = append(out, l)
		}
		i = j
	}
	sortListeners(out)
	return out
}

func gatewayListener(sc *route.Scope, bind string, port uint32, servers []route.GatewayServer) *listenerv3.Listener {
	s, p := sc.Snapshot(), sc.Proxy()
	name := names.Listener(bind, port)
	fc := FilterContext{Snapshot: s, Proxy: p, Side: SideGateway, Port: port}
	hcm := func() *listenerv3.Filter {
		return hcmFilter(httpConnectionManager(fc, "outbound_"+names.Listener("0.0.0.0", port), names.GatewayRoute(port)))
	}
	var insp inspectors
	var chains []*listenerv3.FilterChain
	for si, g := range servers {
		chainName := name + "-" + strconv.Itoa(si)
		switch {
		case g.TerminatesHTTP() && g.TerminatesTLS():
			insp.tls = true
			chains = append(chains, &listenerv3.FilterChain{
				Name:             chainName,
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: sniHosts(g.Hosts(""))},
				TransportSocket:  gatewayTLS(g.Server.GetTls(), true),
				Filters:          []*listenerv3.Filter{hcm()},
			})
		case g.TerminatesHTTP():
			chains = append(chains, &listenerv3.FilterChain{Name: chainName, Filters: []*listenerv3.Filter{hcm()}})
		case (g.Protocol() == "TLS" || g.Protocol() == "HTTPS") && !g.TerminatesTLS():
			insp.tls = true
			for ri, r := range sc.GatewayTLSRoutes(g) {
				chains = append(chains, &listenerv3.FilterChain{
					Name:             chainName + "-" + strconv.Itoa(ri),
					FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: sniHosts(r.SNIHosts), PrefixRanges: cidrs(r.Subnets)},
					Filters:          tcpChain(fc, r.Clusters),
				})
			}
		default: // TCP, or TLS terminated here then proxied as TCP
			var ts *corev3.TransportSocket
			var sni []string
			if g.TerminatesTLS() {
				insp.tls = true
				ts = gatewayTLS(g.Server.GetTls(), false)
				sni = sniHosts(g.Hosts(""))
			}
			for ri, r := range sc.GatewayTCPRoutes(g) {
				chains = append(chains, &listenerv3.FilterChain{
					Name:             chainName + "-" + strconv.Itoa(ri),
					FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: sni, PrefixRanges: cidrs(r.Subnets)},
					TransportSocket:  ts,
					Filters:          tcpChain(fc, r.Clusters),
				})
			}
		}
	}
	chains = normalize(chains)
	if len(chains) == 0 {
		return nil
	}
	return &listenerv3.Listener{
		Name:             name,
		Address:          address(bind, port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters:  insp.filters(),
		FilterChains:     chains,
	}
}

// sniHosts are server hosts as SNI names; "*" matches without SNI, so none.
func sniHosts(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		if h == "*" {
			return nil
		}
		out = append(out, h)
	}
	return out
}

// gatewayTLS terminates a gateway server's TLS.
func gatewayTLS(t *networking.ServerTLSSettings, http bool) *corev3.TransportSocket {
	common := &tlsv3.CommonTlsContext{}
	mutual := false
	switch t.GetMode() {
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: names.WorkloadCert, SdsConfig: ads()}}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: names.RootCA, SdsConfig: ads()},
		}
		mutual = true
	default:
		creds := t.GetCredentialNames()
		if t.GetCredentialName() != "" {
			creds = append([]string{t.GetCredentialName()}, creds...)
		}
		for _, c := range creds {
			common.TlsCertificateSdsSecretConfigs = append(common.TlsCertificateSdsSecretConfigs, &tlsv3.SdsSecretConfig{Name: c, SdsConfig: ads()})
		}
		if len(creds) == 0 && t.GetServerCertificate() != "" {
			common.TlsCertificates = []*tlsv3.TlsCertificate{{
				CertificateChain: file(t.GetServerCertificate()),
				PrivateKey:       file(t.GetPrivateKey()),
			}}
		}
		if t.GetMode() == networking.ServerTLSSettings_MUTUAL || t.GetMode() == networking.ServerTLSSettings_OPTIONAL_MUTUAL {
			switch {
			case t.GetCaCertCredentialName() != "":
				common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: t.GetCaCertCredentialName(), SdsConfig: ads()},
				}
			case len(creds) > 0:
				common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: creds[0] + CACertSuffix, SdsConfig: ads()},
				}
			case t.GetCaCertificates() != "":
				common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{
					ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: file(t.GetCaCertificates())},
				}
			}
			mutual = t.GetMode() == networking.ServerTLSSettings_MUTUAL
		}
	}
	if min, max := tlsVersion(t.GetMinProtocolVersion()), tlsVersion(t.GetMaxProtocolVersion()); min != 0 || max != 0 || len(t.GetCipherSuites()) > 0 {
		common.TlsParams = &tlsv3.TlsParameters{TlsMinimumProtocolVersion: min, TlsMaximumProtocolVersion: max, CipherSuites: t.GetCipherSuites()}
	}
	if http {
		common.AlpnProtocols = []string{"h2", "http/1.1"}
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if mutual {
		ctx.RequireClientCertificate = wrapperspb.Bool(true)
	}
	return downstreamTLS(ctx)
}

func tlsVersion(v networking.ServerTLSSettings_TLSProtocol) tlsv3.TlsParameters_TlsProtocol {
	switch v {
	case networking.ServerTLSSettings_TLSV1_0:
		return tlsv3.TlsParameters_TLSv1_0
	case networking.ServerTLSSettings_TLSV1_1:
		return tlsv3.TlsParameters_TLSv1_1
	case networking.ServerTLSSettings_TLSV1_2:
		return tlsv3.TlsParameters_TLSv1_2
	case networking.ServerTLSSettings_TLSV1_3:
		return tlsv3.TlsParameters_TLSv1_3
	}
	return tlsv3.TlsParameters_TLS_AUTO
}

func file(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

package cluster

import (
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// Names of the transport sockets and of the endpoint metadata Istio's auto mTLS matches.
const (
	tlsSocketName = "envoy.transport_sockets.tls"
	rawSocketName = "envoy.transport_sockets.raw_buffer"
	// TransportSocketMatchKey is the endpoint filter_metadata namespace that
	// transport_socket_matches compare against.
	TransportSocketMatchKey = "envoy.transport_socket_match"
	// TLSModeKey/TLSModeIstio: an endpoint with a sidecar carries {tlsMode: istio}.
	TLSModeKey   = "tlsMode"
	TLSModeIstio = "istio"
)

// ALPN a sidecar offers when it originates Istio mTLS (Istio's values): the server side
// tells mesh mTLS from other TLS by them; "h2" is added for HTTP/2 clusters.
var (
	alpnInMesh   = []string{"istio-peer-exchange", "istio"}
	alpnInMeshH2 = []string{"istio-peer-exchange", "istio", "h2"}
)

// applyTLS sets the cluster's transport socket from the DestinationRule tls settings, or
// auto mTLS when the rule has none.
func (b *builder) applyTLS(c *clusterv3.Cluster, t *target) {
	settings := t.policy.GetTls()
	if b.grpc {
		// grpc-go reads certificates only from certificate provider instances; only
		// ISTIO_MUTUAL has a form it accepts (Istio's proxyless clients do the same).
		if settings.GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL {
			c.TransportSocket = tlsSocket(b.grpcMutual(t))
		}
		return
	}
	if settings != nil {
		if utc := b.upstreamTLS(settings, t); utc != nil {
			c.TransportSocket = tlsSocket(utc)
		}
		return
	}
	if !b.autoMTLS(c, t) {
		return
	}
	// Istio's auto mTLS: endpoints with a sidecar (metadata tlsMode=istio) get Istio
	// mTLS, the rest plaintext; the proxy chooses per endpoint.
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{
			Name:            "tlsMode-istio",
			Match:           &structpb.Struct{Fields: map[string]*structpb.Value{TLSModeKey: structpb.NewStringValue(TLSModeIstio)}},
			TransportSocket: tlsSocket(b.istioMutual(t)),
		},
		{
			Name:            "tlsMode-disabled",
			Match:           &structpb.Struct{},
			TransportSocket: rawSocket(),
		},
	}
}

// autoMTLS reports whether auto mTLS applies to a cluster without DestinationRule tls:
// the mesh enables it, the service is in the mesh and has endpoints with sidecars, the
// cluster balances over known endpoints, and the destination namespace's
// PeerAuthentication (or the mesh-wide one) does not disable mTLS.
func (b *builder) autoMTLS(c *clusterv3.Cluster, t *target) bool {
	if !b.s.Mesh.EnableAutoMTLS || t.svc.MeshExternal || c.GetType() == clusterv3.Cluster_ORIGINAL_DST {
		return false
	}
	sidecar := false
	for _, in := range t.instances(b.s) {
		if in.Sidecar {
			sidecar = true
			break
		}
	}
	return sidecar && !mtlsDisabled(b.s, t.svc.Namespace)
}

// mtlsDisabled is Istio's best-effort guess of a destination's mTLS mode: the
// namespace-wide PeerAuthentication of the namespace, else the mesh-wide one in the root
// namespace, says DISABLE. Workload-level policies are not considered (the cluster
// serves every workload of the service).
func mtlsDisabled(s *snapshot.Snapshot, ns string) bool {
	mode := func(ns string) security.PeerAuthentication_MutualTLS_Mode {
		var pick *snapshot.Config[*security.PeerAuthentication]
		for i := range s.PeerAuthentications {
			pa := &s.PeerAuthentications[i]
			if pa.Namespace != ns || len(pa.Spec.GetSelector().GetMatchLabels()) > 0 {
				continue
			}
			if pick == nil || pa.CreationIndex < pick.CreationIndex {
				pick = pa
			}
		}
		if pick == nil {
			return security.PeerAuthentication_MutualTLS_UNSET
		}
		return pick.Spec.GetMtls().GetMode()
	}
	m := mode(ns)
	if m == security.PeerAuthentication_MutualTLS_UNSET && ns != s.Mesh.RootNamespace {
		m = mode(s.Mesh.RootNamespace)
	}
	return m == security.PeerAuthentication_MutualTLS_DISABLE
}

// upstreamTLS translates ClientTLSSettings; nil for DISABLE.
func (b *builder) upstreamTLS(ts *networking.ClientTLSSettings, t *target) *tlsv3.UpstreamTlsContext {
	switch ts.GetMode() {
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		utc := b.istioMutual(t)
		if ts.GetSni() != "" {
			utc.Sni = ts.GetSni()
		}
		if sans := ts.GetSubjectAltNames(); len(sans) > 0 {
			// The rule's SANs replace the service accounts (Istio's behaviour).
			utc.GetCommonTlsContext().GetCombinedValidationContext().DefaultValidationContext = &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: sanMatchers(sans),
			}
		}
		return utc
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
	default:
		return nil
	}
	common := &tlsv3.CommonTlsContext{}
	if ts.GetMode() == networking.ClientTLSSettings_MUTUAL {
		switch {
		case ts.GetCredentialName() != "":
			common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sds(ts.GetCredentialName())}
		case ts.GetClientCertificate() != "":
			common.TlsCertificates = []*tlsv3.TlsCertificate{{
				CertificateChain: fileSource(ts.GetClientCertificate()),
				PrivateKey:       fileSource(ts.GetPrivateKey()),
			}}
		}
	}
	if !ts.GetInsecureSkipVerify().GetValue() {
		vc := &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sanMatchers(ts.GetSubjectAltNames())}
		switch {
		case ts.GetCredentialName() != "":
			// The CA of a credential is its "<name>-cacert" secret (Istio's convention).
			common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         vc,
					ValidationContextSdsSecretConfig: sds(ts.GetCredentialName() + "-cacert"),
				},
			}
		case ts.GetCaCertificates() != "":
			vc.TrustedCa = fileSource(ts.GetCaCertificates())
			common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
		default:
			// No CA given: verify against the system roots, as Istio does
			// (VERIFY_CERTIFICATE_AT_CLIENT) for external TLS origination.
			vc.SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
			common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
		}
	}
	if t.h2() {
		common.AlpnProtocols = []string{"h2"}
	}
	utc := &tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: ts.GetSni()}
	if utc.Sni == "" && !strings.HasPrefix(t.svc.Hostname, "*") && !isIP(t.svc.Hostname) {
		// Without an explicit sni the service's host name is what the server expects.
		utc.Sni = t.svc.Hostname
	}
	return utc
}

// istioMutual is Istio mTLS to a mesh workload: the workload certificate and the root
// CA from SDS ("default", "ROOTCA"), the destination's SPIFFE identities as the accepted
// SANs, the subset's outbound SNI and the mesh ALPN.
func (b *builder) istioMutual(t *target) *tlsv3.UpstreamTlsContext {
	alpn := alpnInMesh
	if t.h2() {
		alpn = alpnInMeshH2
	}
	return &tlsv3.UpstreamTlsContext{
		Sni: names.OutboundSNI(t.port.Number, t.subset, t.svc.Hostname),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  append([]string(nil), alpn...),
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds(names.WorkloadCert)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchTypedSubjectAltNames: sanMatchers(b.identities(t)),
					},
					ValidationContextSdsSecretConfig: sds(names.RootCA),
				},
			},
		},
	}
}

// grpcMutual is ISTIO_MUTUAL for grpc-go: certificates from the bootstrap's certificate
// provider instance "default" (certificate "default", roots "ROOTCA"), SANs as
// match_subject_alt_names, which is what grpc-go reads.
func (b *builder) grpcMutual(t *target) *tlsv3.UpstreamTlsContext {
	var sans []*matcherv3.StringMatcher
	for _, id := range b.identities(t) {
		sans = append(sans, exact(id))
	}
	return &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
				InstanceName: "default", CertificateName: names.WorkloadCert,
			},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
					InstanceName: "default", CertificateName: names.RootCA,
				},
				MatchSubjectAltNames: sans,
			}},
		},
	}
}

// identities are the SPIFFE IDs of the service accounts of the service port's
// instances (all of them, not only a subset's, as Istio does), sorted. A sidecar
// without an account runs as "default", as node.Parse assumes for its proxy.
func (b *builder) identities(t *target) []string {
	seen := map[string]bool{}
	var out []string
	for _, in := range serviceInstances(b.s, t.svc, t.port.Number) {
		if !in.Sidecar && in.ServiceAccount == "" {
			continue // no proxy and no declared identity: it presents no mesh certificate
		}
		ns, sa := in.Namespace, in.ServiceAccount
		if ns == "" {
			ns = t.svc.Namespace
		}
		if sa == "" {
			sa = "default"
		}
		id := "spiffe://" + b.s.Mesh.TrustDomain + "/ns/" + ns + "/sa/" + sa
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// sanMatchers matches SANs exactly: a SPIFFE ID (or other URI) as a URI SAN, an IP as an
// IP SAN, anything else as a DNS SAN.
func sanMatchers(sans []string) []*tlsv3.SubjectAltNameMatcher {
	var out []*tlsv3.SubjectAltNameMatcher
	for _, s := range sans {
		typ := tlsv3.SubjectAltNameMatcher_DNS
		switch {
		case strings.Contains(s, "://"):
			typ = tlsv3.SubjectAltNameMatcher_URI
		case isIP(s):
			typ = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		}
		out = append(out, &tlsv3.SubjectAltNameMatcher{SanType: typ, Matcher: exact(s)})
	}
	return out
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func sds(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func tlsSocket(utc *tlsv3.UpstreamTlsContext) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(utc)}}
}

func rawSocket() *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: rawSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawv3.RawBuffer{})}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic("cluster: marshal " + string(proto.MessageName(m)) + ": " + err.Error()) // a well-formed message always marshals
	}
	return a
}

// h2 reports whether the target's cluster speaks explicit HTTP/2 upstream.
func (t *target) h2() bool {
	return protocolOptions{proto: t.port.Protocol, http: t.policy.GetConnectionPool().GetHttp()}.upstream() == protoHTTP2
}

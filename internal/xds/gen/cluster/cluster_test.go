package cluster

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

const (
	reviewsHost = "reviews.default.svc.cluster.local"
	reviews     = "outbound|9080||" + reviewsHost
)

func find(t *testing.T, cs []*clusterv3.Cluster, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range cs {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %q among %v", name, clusterNames(cs))
	return nil
}

func findCLA(t *testing.T, eps []*endpointv3.ClusterLoadAssignment, name string) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	for _, e := range eps {
		if e.GetClusterName() == name {
			return e
		}
	}
	t.Fatalf("no assignment %q", name)
	return nil
}

// sidecarWith builds Bookinfo plus the YAML and returns productpage's clusters.
func sidecarWith(t *testing.T, yaml string, edit func(*snapshot.Input)) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	t.Helper()
	in := bookinfo()
	if yaml != "" {
		addYAML(t, &in, "test.yaml", yaml)
	}
	if edit != nil {
		edit(&in)
	}
	return generate(snapshot.Build(in), sidecarProxy())
}

func upstreamTLSOf(t *testing.T, c *clusterv3.Cluster) *tlsv3.UpstreamTlsContext {
	t.Helper()
	ts := c.GetTransportSocket()
	if ts == nil {
		t.Fatalf("cluster %q: no transport_socket", c.GetName())
	}
	var utc tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&utc); err != nil {
		t.Fatal(err)
	}
	return &utc
}

func TestDestinationRuleLookup(t *testing.T) {
	// reviews lives in "default"; the proxy is in "default" too unless a case moves it.
	cases := []struct {
		name    string
		yaml    string
		proxyNS string
		wantLB  clusterv3.Cluster_LbPolicy
		subsets []string
	}{
		{
			name: "no rule: Istio's default LEAST_REQUEST",
			yaml: "", wantLB: clusterv3.Cluster_LEAST_REQUEST,
		},
		{
			name: "short host resolved in the rule's namespace",
			yaml: `
kind: DestinationRule
metadata: {name: r}
spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: RANDOM}}}`,
			wantLB: clusterv3.Cluster_RANDOM,
		},
		{
			name: "a short host in another namespace names another service",
			yaml: `
kind: DestinationRule
metadata: {name: r, namespace: other}
spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: RANDOM}}}`,
			wantLB: clusterv3.Cluster_LEAST_REQUEST,
		},
		{
			name: "proxy namespace before service namespace",
			yaml: `
kind: DestinationRule
metadata: {name: in-client-ns, namespace: client}
spec: {host: reviews.default.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
---
kind: DestinationRule
metadata: {name: in-service-ns}
spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: RANDOM}}}`,
			proxyNS: "client", wantLB: clusterv3.Cluster_ROUND_ROBIN,
		},
		{
			name: "service namespace before root namespace",
			yaml: `
kind: DestinationRule
metadata: {name: mesh, namespace: istio-system}
spec: {host: "*.svc.cluster.local", trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
---
kind: DestinationRule
metadata: {name: in-service-ns}
spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: RANDOM}}}`,
			proxyNS: "client", wantLB: clusterv3.Cluster_RANDOM,
		},
		{
			name: "root namespace as the last resort",
			yaml: `
kind: DestinationRule
metadata: {name: mesh, namespace: istio-system}
spec: {host: "*.svc.cluster.local", trafficPolicy: {loadBalancer: {simple: RANDOM}}}`,
			proxyNS: "client", wantLB: clusterv3.Cluster_RANDOM,
		},
		{
			name: "exportTo . hides a rule from other namespaces",
			yaml: `
kind: DestinationRule
metadata: {name: private}
spec: {host: reviews, exportTo: ["."], trafficPolicy: {loadBalancer: {simple: RANDOM}}}`,
			proxyNS: "client", wantLB: clusterv3.Cluster_LEAST_REQUEST,
		},
		{
			name: "exact host beats a wildcard in the same namespace",
			yaml: `
kind: DestinationRule
metadata: {name: wild}
spec: {host: "*.default.svc.cluster.local", trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
---
kind: DestinationRule
metadata: {name: exact}
spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: RANDOM}}}`,
			wantLB: clusterv3.Cluster_RANDOM,
		},
		{
			name: "rules for the same host merge: oldest policy, union of subsets",
			yaml: `
kind: DestinationRule
metadata: {name: b-first}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: v1}}]
---
kind: DestinationRule
metadata: {name: a-second}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v1, labels: {version: v3}}, {name: v2, labels: {version: v2}}]`,
			wantLB: clusterv3.Cluster_RANDOM, subsets: []string{"v1", "v2"},
		},
		{
			name: "a workloadSelector rule for this proxy wins; one for others is ignored",
			yaml: `
kind: DestinationRule
metadata: {name: ns-wide}
spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
---
kind: DestinationRule
metadata: {name: for-productpage}
spec: {host: reviews, workloadSelector: {matchLabels: {app: productpage}}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
kind: DestinationRule
metadata: {name: for-others}
spec: {host: reviews, workloadSelector: {matchLabels: {app: other}}, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}`,
			wantLB: clusterv3.Cluster_RANDOM,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := bookinfo()
			if tc.yaml != "" {
				addYAML(t, &in, "dr.yaml", tc.yaml)
			}
			p := sidecarProxy()
			if tc.proxyNS != "" {
				p.Namespace = tc.proxyNS
			}
			cs := Sidecar(snapshot.Build(in), p)
			if got := find(t, cs, reviews).GetLbPolicy(); got != tc.wantLB {
				t.Errorf("lb_policy %v, want %v", got, tc.wantLB)
			}
			var subsets []string
			for _, c := range cs {
				if _, _, subset, host, ok := parseName(c.GetName()); ok && host == reviewsHost && subset != "" {
					subsets = append(subsets, subset)
				}
			}
			if !slices.Equal(subsets, tc.subsets) {
				t.Errorf("subsets %v, want %v", subsets, tc.subsets)
			}
		})
	}
}

func parseName(n string) (string, uint32, string, string, bool) {
	dir, port, subset, host, ok := names.ParseCluster(n)
	return string(dir), port, subset, host, ok
}

func dur(seconds int64) *durationpb.Duration {
	return durationpb.New(time.Duration(seconds) * time.Second)
}

// TestMergedSubsetEndpoints: the first subset of a name wins when rules merge.
func TestMergedSubsetEndpoints(t *testing.T) {
	_, eps := sidecarWith(t, `
kind: DestinationRule
metadata: {name: first}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
kind: DestinationRule
metadata: {name: second}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v3}}]}`, nil)
	got := endpointAddrs(findCLA(t, eps, "outbound|9080|v1|"+reviewsHost))
	if !slices.Equal(got, []string{"127.2.0.3:9080"}) {
		t.Fatalf("v1 endpoints %v, want the first rule's subset [127.2.0.3:9080]", got)
	}
}

func endpointAddrs(e *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range e.GetEndpoints() {
		for _, lb := range l.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, netip.AddrPortFrom(netip.MustParseAddr(sa.GetAddress()), uint16(sa.GetPortValue())).String())
		}
	}
	return out
}

func TestAutoMTLS(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		edit func(*snapshot.Input)
		want bool
	}{
		{name: "sidecars: tlsMode match", want: true},
		{name: "mesh turns it off", edit: func(in *snapshot.Input) { in.Mesh.EnableAutoMTLS = false }},
		{name: "no endpoint has a sidecar", edit: func(in *snapshot.Input) {
			for _, i := range in.Instances {
				i.Sidecar = false
			}
		}},
		{name: "DestinationRule tls DISABLE", yaml: `
kind: DestinationRule
metadata: {name: r}
spec: {host: reviews, trafficPolicy: {tls: {mode: DISABLE}}}`},
		{name: "namespace PeerAuthentication DISABLE", yaml: `
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: DISABLE}}`},
		{name: "mesh-wide PeerAuthentication DISABLE", yaml: `
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}`},
		{name: "namespace STRICT over mesh DISABLE", want: true, yaml: `
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}
---
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}`},
		{name: "workload PeerAuthentication is not considered", want: true, yaml: `
kind: PeerAuthentication
metadata: {name: reviews}
spec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs, _ := sidecarWith(t, tc.yaml, tc.edit)
			c := find(t, cs, reviews)
			if got := len(c.GetTransportSocketMatches()) > 0; got != tc.want {
				t.Fatalf("transport_socket_matches present %v, want %v", got, tc.want)
			}
			if c.GetTransportSocket() != nil {
				t.Fatalf("unexpected transport_socket %v", c.GetTransportSocket())
			}
			if !tc.want {
				return
			}
			m := c.GetTransportSocketMatches()
			if len(m) != 2 || m[0].GetMatch().GetFields()[TLSModeKey].GetStringValue() != TLSModeIstio ||
				len(m[1].GetMatch().GetFields()) != 0 || m[1].GetTransportSocket().GetName() != rawSocketName {
				t.Fatalf("matches %v: want tlsMode=istio then a plaintext catch-all", m)
			}
			var utc tlsv3.UpstreamTlsContext
			if err := m[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil {
				t.Fatal(err)
			}
			if utc.GetSni() != "outbound_.9080_._."+reviewsHost {
				t.Errorf("sni %q", utc.GetSni())
			}
		})
	}
}

// TestAutoMTLSEndpointMetadata: only endpoints with sidecars carry tlsMode=istio.
func TestAutoMTLSEndpointMetadata(t *testing.T) {
	_, eps := sidecarWith(t, "", func(in *snapshot.Input) {
		for _, i := range in.Instances {
			if i.Workload == "reviews-v2" {
				i.Sidecar = false
			}
		}
	})
	for _, l := range findCLA(t, eps, reviews).GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			addr := e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
			mode := e.GetMetadata().GetFilterMetadata()[TransportSocketMatchKey].GetFields()[TLSModeKey].GetStringValue()
			want := TLSModeIstio
			if addr == "127.2.0.4" {
				want = ""
			}
			if mode != want {
				t.Errorf("%s: tlsMode %q, want %q", addr, mode, want)
			}
		}
	}
}

func TestClientTLSModes(t *testing.T) {
	t.Run("SIMPLE with CA, SANs and sni", func(t *testing.T) {
		cs, _ := sidecarWith(t, `
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, subjectAltNames: [reviews.example.com, "spiffe://x/y", 10.0.0.1], sni: reviews.example.com}`, nil)
		utc := upstreamTLSOf(t, find(t, cs, reviews))
		vc := utc.GetCommonTlsContext().GetValidationContext()
		if utc.GetSni() != "reviews.example.com" || vc.GetTrustedCa().GetFilename() != "/etc/ca.pem" {
			t.Fatalf("sni %q, trusted_ca %v", utc.GetSni(), vc.GetTrustedCa())
		}
		var types []tlsv3.SubjectAltNameMatcher_SanType
		for _, m := range vc.GetMatchTypedSubjectAltNames() {
			types = append(types, m.GetSanType())
		}
		want := []tlsv3.SubjectAltNameMatcher_SanType{tlsv3.SubjectAltNameMatcher_DNS, tlsv3.SubjectAltNameMatcher_URI, tlsv3.SubjectAltNameMatcher_IP_ADDRESS}
		if !slices.Equal(types, want) {
			t.Errorf("SAN types %v, want %v", types, want)
		}
		if len(utc.GetCommonTlsContext().GetTlsCertificates()) != 0 {
			t.Error("SIMPLE must not present a client certificate")
		}
	})
	t.Run("SIMPLE without CA: system roots, host as sni", func(t *testing.T) {
		cs, _ := sidecarWith(t, `
kind: DestinationRule
metadata: {name: r}
spec: {host: reviews, trafficPolicy: {tls: {mode: SIMPLE}}}`, nil)
		utc := upstreamTLSOf(t, find(t, cs, reviews))
		if utc.GetSni() != reviewsHost || utc.GetCommonTlsContext().GetValidationContext().GetSystemRootCerts() == nil {
			t.Fatalf("got %v", utc)
		}
	})
	t.Run("SIMPLE insecureSkipVerify: no validation", func(t *testing.T) {
		cs, _ := sidecarWith(t, `
kind: DestinationRule
metadata: {name: r}
spec: {host: reviews, trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}}`, nil)
		if vc := upstreamTLSOf(t, find(t, cs, reviews)).GetCommonTlsContext().GetValidationContextType(); vc != nil {
			t.Fatalf("validation %v", vc)
		}
	})
	t.Run("MUTUAL with files", func(t *testing.T) {
		cs, _ := sidecarWith(t, `
kind: DestinationRule
metadata: {name: r}
spec: {host: reviews, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}}}`, nil)
		common := upstreamTLSOf(t, find(t, cs, reviews)).GetCommonTlsContext()
		certs := common.GetTlsCertificates()
		if len(certs) != 1 || certs[0].GetCertificateChain().GetFilename() != "/c.pem" || certs[0].GetPrivateKey().GetFilename() != "/k.pem" {
			t.Fatalf("certificates %v", certs)
		}
	})
	t.Run("MUTUAL with credentialName: SDS", func(t *testing.T) {
		cs, _ := sidecarWith(t, `
kind: DestinationRule
metadata: {name: r}
spec: {host: reviews, trafficPolicy: {tls: {mode: MUTUAL, credentialName: reviews-cred}}}`, nil)
		common := upstreamTLSOf(t, find(t, cs, reviews)).GetCommonTlsContext()
		if n := common.GetTlsCertificateSdsSecretConfigs(); len(n) != 1 || n[0].GetName() != "reviews-cred" {
			t.Fatalf("certificate SDS %v", n)
		}
		if n := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName(); n != "reviews-cred-cacert" {
			t.Fatalf("validation SDS %q", n)
		}
	})
	t.Run("ISTIO_MUTUAL: identities, SNI, ALPN; subjectAltNames replace identities", func(t *testing.T) {
		cs, _ := sidecarWith(t, `
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: ["spiffe://cluster.local/ns/default/sa/special"]}}`, nil)
		c := find(t, cs, reviews)
		if len(c.GetTransportSocketMatches()) != 0 {
			t.Fatal("explicit ISTIO_MUTUAL must not use transport_socket_matches")
		}
		utc := upstreamTLSOf(t, c)
		common := utc.GetCommonTlsContext()
		if utc.GetSni() != "outbound_.9080_._."+reviewsHost ||
			!slices.Equal(common.GetAlpnProtocols(), []string{"istio-peer-exchange", "istio"}) ||
			common.GetTlsCertificateSdsSecretConfigs()[0].GetName() != "default" ||
			common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != "ROOTCA" {
			t.Fatalf("got %v", utc)
		}
		sans := common.GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
		if len(sans) != 1 || sans[0].GetMatcher().GetExact() != "spiffe://cluster.local/ns/default/sa/bookinfo-reviews" {
			t.Fatalf("SANs %v", sans)
		}
		v1 := upstreamTLSOf(t, find(t, cs, "outbound|9080|v1|"+reviewsHost))
		if v1.GetSni() != "outbound_.9080_.v1_."+reviewsHost {
			t.Errorf("v1 sni %q", v1.GetSni())
		}
		sans = v1.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
		if len(sans) != 1 || sans[0].GetMatcher().GetExact() != "spiffe://cluster.local/ns/default/sa/special" {
			t.Fatalf("v1 SANs %v", sans)
		}
	})
}

func TestProtocols(t *testing.T) {
	in := bookinfo()
	in.Services = append(in.Services,
		&registry.Service{Hostname: "grpc.default.svc.cluster.local", Name: "grpc", Namespace: "default",
			Ports: []registry.Port{{Name: "grpc", Number: 7070, Protocol: registry.GRPC}}},
		&registry.Service{Hostname: "db.default.svc.cluster.local", Name: "db", Namespace: "default",
			Ports: []registry.Port{{Name: "tcp", Number: 5432, Protocol: registry.TCP}}},
		&registry.Service{Hostname: "sniffed.default.svc.cluster.local", Name: "sniffed", Namespace: "default",
			Ports: []registry.Port{{Name: "p", Number: 8000, Protocol: registry.Unknown}}},
	)
	in.Instances = append(in.Instances, &registry.Instance{
		Service: "grpc.default.svc.cluster.local", ServicePort: 7070, Address: "127.2.0.9", Port: 7070,
		Namespace: "default", ServiceAccount: "grpc", Weight: 1, Healthy: true, Sidecar: true,
	})
	addYAML(t, &in, "dr.yaml", `
kind: DestinationRule
metadata: {name: ratings}
spec: {host: ratings, trafficPolicy: {connectionPool: {http: {useClientProtocol: true}}}}`)
	cs := Sidecar(snapshot.Build(in), sidecarProxy())
	kind := func(name string) string {
		a := find(t, cs, name).GetTypedExtensionProtocolOptions()[httpOptionsName]
		if a == nil {
			return "none"
		}
		var h httpv3.HttpProtocolOptions
		if err := a.UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		switch {
		case h.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
			return "h2"
		case h.GetExplicitHttpConfig().GetHttpProtocolOptions() != nil:
			return "h1"
		case h.GetUseDownstreamProtocolConfig() != nil:
			return "downstream"
		}
		return "?"
	}
	for name, want := range map[string]string{
		reviews: "h1",
		"outbound|7070||grpc.default.svc.cluster.local":    "h2",
		"outbound|5432||db.default.svc.cluster.local":      "none",
		"outbound|8000||sniffed.default.svc.cluster.local": "downstream",
		"outbound|9080||ratings.default.svc.cluster.local": "downstream",
	} {
		if got := kind(name); got != want {
			t.Errorf("%s: protocol %s, want %s", name, got, want)
		}
	}
	// Auto mTLS to an HTTP/2 service offers h2 after the mesh ALPN.
	m := find(t, cs, "outbound|7070||grpc.default.svc.cluster.local").GetTransportSocketMatches()
	var utc tlsv3.UpstreamTlsContext
	if err := m[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil {
		t.Fatal(err)
	}
	if got := utc.GetCommonTlsContext().GetAlpnProtocols(); !slices.Equal(got, []string{"istio-peer-exchange", "istio", "h2"}) {
		t.Errorf("ALPN %v", got)
	}
}

func TestInboundAndSpecialClusters(t *testing.T) {
	s := snapshot.Build(bookinfo())
	epAddr := func(c *clusterv3.Cluster) string {
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		return netip.AddrPortFrom(netip.MustParseAddr(sa.GetAddress()), uint16(sa.GetPortValue())).String()
	}
	t.Run("explicit", func(t *testing.T) {
		cs := Sidecar(s, sidecarProxy())
		if got := epAddr(find(t, cs, "inbound|9080||")); got != "127.1.0.1:9080" {
			t.Errorf("inbound endpoint %s, want the application's 127.1.0.1:9080", got)
		}
		pt := find(t, cs, "PassthroughCluster")
		if pt.GetType() != clusterv3.Cluster_ORIGINAL_DST || !pt.GetOriginalDstLbConfig().GetUseHttpHeader() {
			t.Errorf("PassthroughCluster %v: want ORIGINAL_DST with use_http_header", pt)
		}
		for _, c := range cs {
			if c.GetName() == "InboundPassthroughCluster" {
				t.Error("Explicit mode has no inbound capture, hence no InboundPassthroughCluster")
			}
		}
		bh := find(t, cs, "BlackHoleCluster")
		if bh.GetType() != clusterv3.Cluster_STATIC || len(bh.GetLoadAssignment().GetEndpoints()) != 0 {
			t.Errorf("BlackHoleCluster %v", bh)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		cs := Sidecar(s, redirectProxy())
		if got := epAddr(find(t, cs, "inbound|9080||")); got != "127.0.0.1:9080" {
			t.Errorf("inbound endpoint %s, want 127.0.0.1:9080", got)
		}
		if pt := find(t, cs, "PassthroughCluster"); pt.GetOriginalDstLbConfig() != nil {
			t.Errorf("Redirect-mode PassthroughCluster uses the connection's destination, got %v", pt.GetOriginalDstLbConfig())
		}
		find(t, cs, "InboundPassthroughCluster")
	})
	t.Run("a workload serving nothing has no inbound clusters", func(t *testing.T) {
		p := sidecarProxy()
		p.IP = netip.MustParseAddr("127.2.0.99")
		for _, c := range Sidecar(s, p) {
			if _, _, _, _, ok := parseName(c.GetName()); ok && strings.HasPrefix(c.GetName(), "inbound") {
				t.Errorf("unexpected %s", c.GetName())
			}
		}
	})
}

func TestOutlierDetection(t *testing.T) {
	cases := []struct {
		name string
		od   string
		want *clusterv3.OutlierDetection
	}{
		{"defaults", `{consecutive5xxErrors: 5}`, &clusterv3.OutlierDetection{
			Consecutive_5Xx: u32(5), EnforcingConsecutive_5Xx: u32(100),
			Interval: dur(10), BaseEjectionTime: dur(30), MaxEjectionPercent: u32(10),
		}},
		{"deprecated consecutiveErrors means gateway errors", `{consecutiveErrors: 4}`, &clusterv3.OutlierDetection{
			ConsecutiveGatewayFailure: u32(4), EnforcingConsecutiveGatewayFailure: u32(100), EnforcingConsecutive_5Xx: u32(0),
			Interval: dur(10), BaseEjectionTime: dur(30), MaxEjectionPercent: u32(10),
		}},
		{"zero disables; long ejection raises max_ejection_time", `{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, baseEjectionTime: 10m, maxEjectionPercent: 100}`, &clusterv3.OutlierDetection{
			Consecutive_5Xx: u32(0), EnforcingConsecutive_5Xx: u32(0),
			ConsecutiveGatewayFailure: u32(2), EnforcingConsecutiveGatewayFailure: u32(100),
			Interval: dur(10), BaseEjectionTime: dur(600), MaxEjectionTime: dur(600), MaxEjectionPercent: u32(100),
		}},
		{"local origin split", `{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3}`, &clusterv3.OutlierDetection{
			SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: u32(3), EnforcingConsecutiveLocalOriginFailure: u32(100),
			Interval: dur(10), BaseEjectionTime: dur(30), MaxEjectionPercent: u32(10),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs, _ := sidecarWith(t, `
kind: DestinationRule
metadata: {name: r}
spec: {host: reviews, trafficPolicy: {outlierDetection: `+tc.od+`}}`, nil)
			c := find(t, cs, reviews)
			if !proto.Equal(c.GetOutlierDetection(), tc.want) {
				t.Fatalf("outlier_detection\n got %v\nwant %v", c.GetOutlierDetection(), tc.want)
			}
			if th := c.GetCommonLbConfig().GetHealthyPanicThreshold(); th == nil || th.GetValue() != 0 {
				t.Errorf("healthy_panic_threshold %v, want 0 (minHealthPercent default)", th)
			}
		})
	}
}

func TestLocalityMatch(t *testing.T) {
	cases := []struct {
		pattern, loc string
		want         bool
	}{
		{"*", "", true},
		{"*", "us-east/zone1", true},
		{"us-east/*", "us-east/zone1/a", true},
		{"us-east/*", "us-west/zone1", false},
		{"us-east/zone1/*", "us-east/zone1/b", true},
		{"us-east/zone1/*", "us-east/zone2", false},
		{"us-east", "us-east/zone2/c", true},
		{"us-east/zone1/a", "us-east/zone1/a", true},
		{"us-east/zone1/a", "us-east/zone1/b", false},
		{"us-east/*", "", false},
	}
	for _, tc := range cases {
		if got := localityMatch(tc.pattern, tc.loc); got != tc.want {
			t.Errorf("localityMatch(%q, %q) = %v, want %v", tc.pattern, tc.loc, got, tc.want)
		}
	}
}

func TestHostMatch(t *testing.T) {
	cases := []struct {
		pattern, host string
		want          bool
	}{
		{"*", "a.b", true},
		{"a.b", "a.b", true},
		{"*.example.com", "www.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "*.sub.example.com", true},
		{"*.com", "*.example.com", true},
		{"www.example.com", "*.example.com", false},
		{"*.example.com", "wwwexample.com", false},
	}
	for _, tc := range cases {
		if got := hostMatch(tc.pattern, tc.host); got != tc.want {
			t.Errorf("hostMatch(%q, %q) = %v, want %v", tc.pattern, tc.host, got, tc.want)
		}
	}
}

// TestFailoverPriority: failoverPriority labels order endpoints by how many leading
// labels they share with the proxy; without outlier detection there is no failover.
func TestFailoverPriority(t *testing.T) {
	in := bookinfo()
	for _, i := range in.Instances {
		if i.Service == reviewsHost {
			i.Labels = map[string]string{"app": "reviews", "version": i.Labels["version"], "tier": map[string]string{"v1": "gold", "v2": "gold", "v3": "silver"}[i.Labels["version"]]}
		}
	}
	rule := `
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    %s
    loadBalancer:
      localityLbSetting:
        failoverPriority: [version, tier]`
	prios := func(t *testing.T, yaml string) map[string]uint32 {
		in := in
		addYAML(t, &in, "dr.yaml", yaml)
		p := sidecarProxy()
		p.Labels = map[string]string{"app": "productpage", "version": "v1", "tier": "gold"}
		s := snapshot.Build(in)
		_, eps := generate(s, p)
		out := map[string]uint32{}
		for _, l := range findCLA(t, eps, reviews).GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				out[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = l.GetPriority()
			}
		}
		return out
	}
	got := prios(t, fmt.Sprintf(rule, "outlierDetection: {consecutive5xxErrors: 3}"))
	// v1/gold shares both labels: 0; v2/gold shares none in order (version differs): 2;
	// v3 likewise 2. Compacted: 0 and 1.
	want := map[string]uint32{"127.2.0.3": 0, "127.2.0.4": 1, "127.2.0.5": 1}
	if !maps.Equal(got, want) {
		t.Errorf("priorities %v, want %v", got, want)
	}
	got = prios(t, fmt.Sprintf(rule, "connectionPool: {}"))
	want = map[string]uint32{"127.2.0.3": 0, "127.2.0.4": 0, "127.2.0.5": 0}
	if !maps.Equal(got, want) {
		t.Errorf("without outlier detection: priorities %v, want all 0", got)
	}
}

func TestGRPCClusters(t *testing.T) {
	in := bookinfo()
	loadYAML(t, &in, istioSamples+"/egress-rule-google-apis.yaml")
	addYAML(t, &in, "se.yaml", serviceEntries)
	addYAML(t, &in, "dr.yaml", `
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}, connectionPool: {http: {http2MaxRequests: 7}}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {consistentHash: {maglev: {tableSize: 7}}}}}`)
	s := snapshot.Build(in)
	cs := GRPC(s, grpcProxy())
	for _, c := range cs {
		switch c.GetType() {
		case clusterv3.Cluster_EDS, clusterv3.Cluster_LOGICAL_DNS:
		default:
			t.Errorf("%s: type %v: grpc-go takes EDS and LOGICAL_DNS only", c.GetName(), c.GetType())
		}
		if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN && c.GetLbPolicy() != clusterv3.Cluster_RING_HASH {
			t.Errorf("%s: lb_policy %v", c.GetName(), c.GetLbPolicy())
		}
		if len(c.GetTransportSocketMatches()) > 0 || c.GetTransportSocket() != nil {
			t.Errorf("%s: grpc-go rejects transport_socket_matches; no tls was asked for", c.GetName())
		}
		if c.GetType() == clusterv3.Cluster_EDS && c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			t.Errorf("%s: EDS config must be ADS", c.GetName())
		}
		if _, _, _, host, _ := parseName(c.GetName()); host == "legacy.example.com" || host == "*.wild.example.com" {
			t.Errorf("%s: resolution NONE has no grpc-go form", c.GetName())
		}
	}
	if c := find(t, cs, reviews); c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN || c.GetCircuitBreakers().GetThresholds()[0].GetMaxRequests().GetValue() != 7 {
		t.Errorf("reviews: %v", c)
	}
	if c := find(t, cs, "outbound|9080|v1|"+reviewsHost); c.GetLbPolicy() != clusterv3.Cluster_RING_HASH {
		t.Errorf("maglev for grpc-go: lb_policy %v, want RING_HASH", c.GetLbPolicy())
	}
	if c := find(t, cs, "outbound|80||www.googleapis.com"); c.GetType() != clusterv3.Cluster_LOGICAL_DNS {
		t.Errorf("DNS service for grpc-go: type %v, want LOGICAL_DNS", c.GetType())
	}
}

// TestEndpointsEdgeCases: unknown EDS names still get an (empty) assignment; duplicate
// instance addresses and non-IP addresses are left out of EDS.
func TestEndpointsEdgeCases(t *testing.T) {
	in := bookinfo()
	dup := *in.Instances[2] // reviews-v1
	dup.Workload = "reviews-v1-dup"
	bad := *in.Instances[2]
	bad.Address = "reviews-host.example"
	in.Instances = append(in.Instances, &dup, &bad)
	s := snapshot.Build(in)
	p := sidecarProxy()
	cs := Sidecar(s, p)
	cs = append(cs, &clusterv3.Cluster{
		Name:                 "outbound|1||gone.default.svc.cluster.local",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
	})
	eps := Endpoints(s, p, cs)
	if e := findCLA(t, eps, "outbound|1||gone.default.svc.cluster.local"); len(e.GetEndpoints()) != 0 {
		t.Errorf("unknown cluster got endpoints %v", e)
	}
	got := endpointAddrs(findCLA(t, eps, reviews))
	if !slices.Equal(got, []string{"127.2.0.3:9080", "127.2.0.4:9080", "127.2.0.5:9080"}) {
		t.Errorf("reviews endpoints %v", got)
	}
}

// TestGatewayAndProxyNamespace: a gateway sees every exported service; exportTo "."
// hides a service from other namespaces.
func TestGatewayAndProxyNamespace(t *testing.T) {
	in := bookinfo()
	for i, svc := range in.Services {
		if svc.Name == "ratings" {
			c := *svc
			c.ExportTo = []string{"."}
			in.Services[i] = &c
		}
	}
	s := snapshot.Build(in)
	gw := clusterNames(Gateway(s, gatewayProxy()))
	if slices.Contains(gw, "outbound|9080||ratings.default.svc.cluster.local") {
		t.Error("gateway in istio-system sees a service exported only to default")
	}
	if !slices.Contains(gw, reviews) || !slices.Contains(gw, "BlackHoleCluster") {
		t.Errorf("gateway clusters %v", gw)
	}
	if !slices.Contains(clusterNames(Sidecar(s, sidecarProxy())), "outbound|9080||ratings.default.svc.cluster.local") {
		t.Error("a sidecar in default must see ratings")
	}
}

// TestHostInTwoNamespaces: a hostname defined in two namespaces yields one cluster,
// from the proxy's own namespace when it has one.
func TestHostInTwoNamespaces(t *testing.T) {
	se := func(ns, addr string) string {
		return fmt.Sprintf(`
kind: ServiceEntry
metadata: {name: api, namespace: %s}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: %s}]
`, ns, addr)
	}
	for _, tc := range []struct{ proxyNS, want string }{
		{"default", "127.5.0.2:80"}, // its own namespace's entry
		{"other", "127.5.0.1:80"},   // none of its own: the first by namespace ("a-team")
	} {
		in := bookinfo()
		addYAML(t, &in, "se.yaml", se("a-team", "127.5.0.1")+"---"+se("default", "127.5.0.2"))
		p := sidecarProxy()
		p.Namespace = tc.proxyNS
		cs, eps := generate(snapshot.Build(in), p)
		n := 0
		for _, c := range cs {
			if c.GetName() == "outbound|80||api.example.com" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("proxy in %s: %d clusters for api.example.com, want 1", tc.proxyNS, n)
		}
		if got := endpointAddrs(findCLA(t, eps, "outbound|80||api.example.com")); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("proxy in %s: endpoints %v, want [%s]", tc.proxyNS, got, tc.want)
		}
	}
}

// TestAutoMTLSHonoursWorkloadDisable: a workload whose PeerAuthentication DISABLEs mTLS
// is marked plaintext, so auto mTLS does not originate TLS it cannot accept.
func TestAutoMTLSHonoursWorkloadDisable(t *testing.T) {
	_, eps := sidecarWith(t, `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-v2-plain, namespace: default}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  mtls: {mode: DISABLE}
`, nil)
	var plain, mtls int
	for _, l := range findCLA(t, eps, reviews).GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if e.GetMetadata().GetFilterMetadata()[TransportSocketMatchKey].GetFields()[TLSModeKey].GetStringValue() == TLSModeIstio {
				mtls++
			} else {
				plain++
			}
		}
	}
	if plain != 1 || mtls != 2 {
		t.Fatalf("reviews endpoints: %d plaintext, %d mTLS; want v2 plaintext and v1, v3 mTLS", plain, mtls)
	}
}

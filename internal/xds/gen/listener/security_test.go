package listener

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	"github.com/weft-mesh/weft/internal/xds/gen/security"
	"github.com/weft-mesh/weft/internal/xds/gen/security/securitytest"
)

// withPolicies is Bookinfo plus a TCP port 7070 on the reviews workloads (a second
// inbound port for port-level mTLS) and the security resources of yamlText.
func withPolicies(yamlText string, cfgs ...simtest.Configs) snapshot.Input {
	in := simtest.BookinfoInput(cfgs...)
	in.Services = append(in.Services, &registry.Service{Hostname: "reviews-admin.default.svc.cluster.local", Name: "reviews-admin",
		Namespace: "default", Ports: []registry.Port{{Name: "tcp-admin", Number: 7070, Protocol: registry.TCP}}})
	for _, w := range simtest.BookinfoWorkloads {
		if w.Service == "reviews" {
			in.Instances = append(in.Instances, &registry.Instance{Service: "reviews-admin.default.svc.cluster.local", ServicePort: 7070,
				Address: w.IP, Port: 7070, Workload: w.Name, Namespace: "default", ServiceAccount: "bookinfo-reviews",
				Labels: map[string]string{"app": "reviews", "version": w.Version}, Weight: 1, Healthy: true, Sidecar: true})
		}
	}
	securitytest.MustParse(yamlText).AddTo(&in)
	return in
}

func peerAuthn(name, ns, spec string) string {
	return "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec: " + spec + "\n"
}

// TestPeerAuthenticationChains: the generated inbound chains accept what each mode
// accepts, in both interception modes, with mesh, namespace, workload and port-level
// policies.
func TestPeerAuthenticationChains(t *testing.T) {
	type accepts struct{ mtls, plain bool }
	tests := []struct {
		name       string
		yaml       string
		http, tcp  accepts // port 9080 (HTTP), 7070 (TCP)
		strictMesh bool    // the workload-level mode is STRICT
	}{
		{"default permissive", ``, accepts{true, true}, accepts{true, true}, false},
		{"mesh strict", peerAuthn("default", "istio-system", "{mtls: {mode: STRICT}}"), accepts{true, false}, accepts{true, false}, true},
		{"namespace disable over mesh strict", peerAuthn("default", "istio-system", "{mtls: {mode: STRICT}}") + peerAuthn("ns", "default", "{mtls: {mode: DISABLE}}"),
			accepts{false, true}, accepts{false, true}, false},
		{"workload strict over namespace permissive", peerAuthn("ns", "default", "{mtls: {mode: PERMISSIVE}}") +
			peerAuthn("wl", "default", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}}"), accepts{true, false}, accepts{true, false}, true},
		{"port level", peerAuthn("wl", "default", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}, portLevelMtls: {7070: {mode: PERMISSIVE}}}"),
			accepts{true, false}, accepts{true, true}, true},
		{"port level disable", peerAuthn("default", "istio-system", "{mtls: {mode: STRICT}}") +
			peerAuthn("wl", "default", "{selector: {matchLabels: {app: reviews}}, portLevelMtls: {9080: {mode: DISABLE}}}"), accepts{false, true}, accepts{true, false}, true},
	}
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/%s", mode, tc.name), func(t *testing.T) {
				s := snapshot.Build(withPolicies(tc.yaml))
				p := simtest.SidecarProxy("reviews-v1", mode)
				sim := simtest.New(generate(t, s, p))
				addr := p.IP.String()
				for _, port := range []struct {
					n   uint32
					tcp bool
					acc accepts
				}{{9080, false, tc.http}, {7070, true, tc.tcp}} {
					cluster := names.InboundRoute(port.n)
					mtls := simtest.Request{Address: addr, Port: port.n, Inbound: true, TLS: true, ALPN: []string{"istio-peer-exchange", "istio"}, TCP: port.tcp, Host: "reviews:9080", Path: "/"}
					plain := simtest.Request{Address: addr, Port: port.n, Inbound: true, TCP: port.tcp, Host: "reviews:9080", Path: "/"}
					res, err := sim.Run(mtls)
					terminated := err == nil && res.TerminatesTLS && res.Cluster == cluster
					if terminated != port.acc.mtls {
						t.Errorf("port %d mTLS: terminated=%v (%+v %v), want %v", port.n, terminated, res, err, port.acc.mtls)
					}
					res, err = sim.Run(plain)
					ok := err == nil && !res.TerminatesTLS && res.Cluster == cluster
					if ok != port.acc.plain {
						t.Errorf("port %d plaintext: accepted=%v (%+v %v), want %v", port.n, ok, res, err, port.acc.plain)
					}
					if port.acc.mtls {
						// STRICT takes any client TLS as mesh mTLS (a proxyless gRPC client offers
						// only h2); PERMISSIVE asks for a mesh ALPN, so TLS that is not the
						// mesh's is never asked for a mesh certificate.
						h2 := mtls
						h2.ALPN = []string{"h2"}
						res, err = sim.Run(h2)
						strict := !port.acc.plain
						if got := err == nil && res.TerminatesTLS; got != strict {
							t.Errorf("port %d TLS with ALPN h2: terminated=%v (%v), want %v", port.n, got, err, strict)
						}
					}
				}
				if mode == node.Redirect {
					catchAll := chainNamed(t, sim.Listeners, names.VirtualInbound, "virtualInbound-catchall")
					if got := denyAll(t, catchAll); got != tc.strictMesh {
						t.Errorf("passthrough chain refuses plaintext: %v, want %v", got, tc.strictMesh)
					}
				}
			})
		}
	}
}

func chainNamed(t *testing.T, ls []*listenerv3.Listener, listener, chain string) *listenerv3.FilterChain {
	t.Helper()
	for _, l := range ls {
		if l.GetName() != listener {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			if fc.GetName() == chain {
				return fc
			}
		}
	}
	t.Fatalf("no chain %s in %s", chain, listener)
	return nil
}

// denyAll: the chain starts with a network RBAC that denies everything.
func denyAll(t *testing.T, fc *listenerv3.FilterChain) bool {
	t.Helper()
	for _, f := range fc.GetFilters() {
		if f.GetName() != security.NetworkRBACFilter {
			continue
		}
		var r rbacnetv3.RBAC
		if err := f.GetTypedConfig().UnmarshalTo(&r); err != nil {
			t.Fatal(err)
		}
		for _, p := range r.GetRules().GetPolicies() {
			if r.GetRules().GetAction().String() == "DENY" && p.GetPermissions()[0].GetAny() && p.GetPrincipals()[0].GetAny() {
				return true
			}
		}
	}
	return false
}

func filterNames(fc *listenerv3.FilterChain) []string {
	var out []string
	for _, f := range fc.GetFilters() {
		out = append(out, f.GetName())
	}
	return out
}

const policies = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: ["GET"]}}]
  - from: [{source: {namespaces: ["default"]}}]
    to: [{operation: {ports: ["7070"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/debug/*"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules: [{issuer: "testing@secure.istio.io", jwksUri: "https://example.com/jwks.json"}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: istio-system}
spec: {selector: {matchLabels: {istio: ingressgateway}}, action: DENY, rules: [{to: [{operation: {paths: ["/admin"]}}]}]}
`

// TestSecurityFilterPlacement: the JWT and RBAC filters are on the inbound connection
// managers (jwt_authn, deny, allow, then the rest, router last), network RBAC before
// tcp_proxy on inbound TCP chains; outbound chains carry none; a gateway gets its own.
func TestSecurityFilterPlacement(t *testing.T) {
	s := snapshot.Build(withPolicies(policies, simtest.MustLoad("bookinfo-gateway.yaml"), simtest.MustLoad("virtual-service-all-v1.yaml")))
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		p := simtest.SidecarProxy("reviews-v1", mode)
		ls, rcs := generate(t, s, p)
		sim := simtest.New(ls, rcs)
		addr := p.IP.String()
		res, err := sim.Run(simtest.Request{Address: addr, Port: 9080, Inbound: true, Host: "reviews:9080", Path: "/"})
		if err != nil {
			t.Fatal(err)
		}
		want := "envoy.filters.http.jwt_authn envoy.filters.http.rbac envoy.filters.http.rbac envoy.filters.http.fault envoy.filters.http.cors envoy.filters.http.router"
		if got := strings.Join(res.HTTPFilters, " "); got != want {
			t.Errorf("%s inbound HTTP filters: %s", mode, got)
		}
		out := simtest.Request{Address: "10.0.0.1", Port: 9080, Host: "ratings:9080", Path: "/"}
		if mode == node.Explicit {
			out.Address, out.Port = addr, names.OutboundCapturePort
		}
		if res, err := sim.Run(out); err != nil || len(res.HTTPFilters) != 3 {
			t.Errorf("%s outbound filters: %v %v", mode, res.HTTPFilters, err)
		}
		// TCP port: network RBAC per action present, then tcp_proxy.
		for _, l := range ls {
			for _, fc := range l.GetFilterChains() {
				if !strings.HasPrefix(fc.GetName(), "inbound|7070||") {
					continue
				}
				if got := strings.Join(filterNames(fc), " "); got != "envoy.filters.network.rbac envoy.filters.network.rbac envoy.filters.network.tcp_proxy" {
					t.Errorf("%s %s: %s", mode, fc.GetName(), got)
				}
			}
		}
		// Other workloads see only the mesh-wide DENY.
		pp := simtest.SidecarProxy("productpage-v1", mode)
		ppls, pprcs := generate(t, s, pp)
		res, err = simtest.New(ppls, pprcs).Run(simtest.Request{Address: pp.IP.String(), Port: 9080, Inbound: true, Host: "productpage:9080", Path: "/"})
		if err != nil || strings.Join(res.HTTPFilters, " ") != "envoy.filters.http.rbac envoy.filters.http.fault envoy.filters.http.cors envoy.filters.http.router" {
			t.Errorf("%s productpage filters: %v %v", mode, res.HTTPFilters, err)
		}
	}
	gw := simtest.GatewayProxy(node.Explicit)
	ls, rcs := generate(t, s, gw)
	res, err := simtest.New(ls, rcs).Run(simtest.Request{Address: simtest.GatewayIP, Port: 8080, Host: "localhost:8080", Path: "/productpage"})
	if err != nil || res.HTTPFilters[0] != security.HTTPRBACFilter || len(res.HTTPFilters) != 4 {
		t.Errorf("gateway filters: %v %v", res.HTTPFilters, err)
	}
	// A proxyless client's listeners never carry them.
	for _, l := range GRPC(s, simtest.GRPCProxy("default")) {
		if strings.Contains(l.String(), "rbac") || strings.Contains(l.String(), "jwt") {
			t.Fatalf("%s carries security filters", l.GetName())
		}
	}
}

var securityGoldens = []struct {
	file string
	p    func() *node.Proxy
}{
	{"security-reviews-explicit.json", func() *node.Proxy { return simtest.SidecarProxy("reviews-v1", node.Explicit) }},
	{"security-reviews-redirect.json", func() *node.Proxy { return simtest.SidecarProxy("reviews-v1", node.Redirect) }},
}

// TestGoldenSecurity: reviews-v1 with STRICT on port 9080, PERMISSIVE on 7070, an ALLOW
// and a DENY policy and a RequestAuthentication.
func TestGoldenSecurity(t *testing.T) {
	y := policies + peerAuthn("wl", "default", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}, portLevelMtls: {7070: {mode: PERMISSIVE}}}")
	s := snapshot.Build(withPolicies(y))
	for _, g := range securityGoldens {
		t.Run(g.file, func(t *testing.T) {
			ls, rcs := generate(t, s, g.p())
			got := render(t, ls, rcs)
			path := filepath.Join("testdata", g.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from the generated config; run go test -update and review the diff", path)
			}
		})
	}
	// The same policies in any order give the same bytes.
	base := withPolicies(y)
	want := render(t, Sidecar(snapshot.Build(base), simtest.SidecarProxy("reviews-v1", node.Redirect)), nil)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 10; i++ {
		in := base
		in.PeerAuthentications = shuffled(rng, base.PeerAuthentications)
		in.AuthorizationPolicies = shuffled(rng, base.AuthorizationPolicies)
		in.RequestAuthentications = shuffled(rng, base.RequestAuthentications)
		if got := render(t, Sidecar(snapshot.Build(in), simtest.SidecarProxy("reviews-v1", node.Redirect)), nil); !bytes.Equal(got, want) {
			t.Fatalf("shuffle %d: output depends on input order", i)
		}
	}
}

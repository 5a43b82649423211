package proxycheck

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/ca"
	"github.com/weft-mesh/weft/internal/ca/secret"
	"github.com/weft-mesh/weft/internal/node"
	_ "github.com/weft-mesh/weft/internal/proxy/filter/all" // the proxy's HTTP filters
	"github.com/weft-mesh/weft/internal/proxy/httpconn"
	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/netrbac"
	"github.com/weft-mesh/weft/internal/proxy/router"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/tcpproxy"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	genlistener "github.com/weft-mesh/weft/internal/xds/gen/listener"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	genroute "github.com/weft-mesh/weft/internal/xds/gen/route"
	"github.com/weft-mesh/weft/internal/xds/gen/security/securitytest"
)

// stack is weft-proxy's data plane assembled as cmd/weft-proxy assembles it (without xDS):
// secrets, routes, clusters, and a listener manager with the HTTP connection manager,
// the TCP proxy and the network RBAC filter.
type stack struct {
	secrets  *tlsctx.Store
	routes   *router.Store
	clusters *upstream.Manager
	lm       *listener.Manager
}

func newStack(t *testing.T) *stack {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	st := stats.New()
	s := &stack{secrets: tlsctx.NewStore(), routes: router.NewStore()}
	s.clusters = upstream.NewManager(upstream.Options{Secrets: s.secrets, Stats: st, Log: log})
	t.Cleanup(s.clusters.Close)
	hcm := httpconn.NewFactory(httpconn.Options{Routes: s.routes, Clusters: s.clusters, Stats: st, Log: log, DrainTimeout: time.Second})
	tcp := tcpproxy.NewFactory(tcpproxy.Options{Clusters: s.clusters, Stats: st, Log: log})
	s.lm = listener.NewManager(listener.Options{
		Secrets: s.secrets, Stats: st, Log: log,
		Filters:      []listener.NetworkFilterFactory{hcm, tcp},
		Wrappers:     []listener.WrapperFactory{netrbac.NewFactory(st, log)},
		DrainTimeout: time.Second,
	})
	t.Cleanup(func() { _ = s.lm.Close() })
	return s
}

// onLoopback rewrites the addresses of the listeners that bind (the generated ones bind
// the workload's address or 0.0.0.0) to 127.0.0.1 with a free port; listeners that do
// not bind keep theirs (they only take connections handed over by original destination).
func onLoopback(ls []*listenerv3.Listener) []*listenerv3.Listener {
	out := make([]*listenerv3.Listener, 0, len(ls))
	for _, l := range ls {
		l = proto.Clone(l).(*listenerv3.Listener)
		if l.GetBindToPort() == nil || l.GetBindToPort().GetValue() {
			l.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}}
		}
		out = append(out, l)
	}
	return out
}

// bookinfoWithTCP adds a TCP port 7070 to the reviews workloads, so TCP chains exist.
func bookinfoWithTCP(yamlText string, cfgs ...simtest.Configs) *snapshot.Snapshot {
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
	return snapshot.Build(in)
}

const everyPolicy = `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews}
spec: {selector: {matchLabels: {app: reviews}}, portLevelMtls: {7070: {mode: PERMISSIVE}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"], notIpBlocks: ["10.0.0.0/8"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/reviews/*", "/users/{*}"], hosts: ["reviews*"]}}]
    when: [{key: "request.headers[x-a]", notValues: ["b"]}, {key: "request.auth.claims[groups]", values: ["g"]}]
  - from: [{source: {namespaces: ["default"], serviceAccounts: ["bookinfo-ratings"]}}]
    to: [{operation: {ports: ["7070"]}}]
    when: [{key: destination.ip, values: ["127.0.0.0/8"]}, {key: connection.sni, values: ["*"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/debug/*"]}}]
  - when: [{key: request.bogus, values: ["x"]}]
  - from: [{source: {requestPrincipals: ["*"], remoteIpBlocks: ["1.2.3.4"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: istio-system}
spec: {action: AUDIT, rules: [{to: [{operation: {methods: ["DELETE"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry, annotations: {"istio.io/dry-run": "true"}}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext}
spec: {action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: ["/ext"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: istio-system}
spec: {selector: {matchLabels: {istio: ingressgateway}}, rules: [{from: [{source: {remoteIpBlocks: ["0.0.0.0/0"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  jwtRules:
  - {issuer: "testing@secure.istio.io", jwksUri: "https://example.com/jwks.json", fromHeaders: [{name: x-jwt, prefix: "Bearer "}], outputClaimToHeaders: [{header: x-group, claim: groups}]}
  - {issuer: "no-keys.example"}
`

// TestProxyAcceptsListeners: weft-proxy's listener manager compiles every listener the
// generator makes with policies in force (HTTP and network RBAC, JWT, mTLS chains) for
// sidecars in both modes and for the gateway, as it would over LDS.
func TestProxyAcceptsListeners(t *testing.T) {
	scenarios := []struct {
		name string
		s    *snapshot.Snapshot
	}{
		{"no policy", bookinfoWithTCP(``, simtest.MustLoad("bookinfo-gateway.yaml"), simtest.MustLoad("virtual-service-all-v1.yaml"))},
		{"every policy", bookinfoWithTCP(everyPolicy, simtest.MustLoad("bookinfo-gateway.yaml"), simtest.MustLoad("virtual-service-all-v1.yaml"))},
	}
	proxies := []*node.Proxy{
		simtest.SidecarProxy("reviews-v1", node.Explicit), simtest.SidecarProxy("reviews-v2", node.Redirect),
		simtest.SidecarProxy("productpage-v1", node.Redirect), simtest.GatewayProxy(node.Explicit),
	}
	for _, sc := range scenarios {
		for _, p := range proxies {
			t.Run(sc.name+"/"+p.Workload+"/"+string(p.Interception), func(t *testing.T) {
				var ls []*listenerv3.Listener
				if p.Type == node.Router {
					ls = genlistener.Gateway(sc.s, p)
				} else {
					ls = genlistener.Sidecar(sc.s, p)
				}
				if len(ls) == 0 {
					t.Fatal("no listeners")
				}
				st := newStack(t)
				if err := st.lm.Update(onLoopback(ls)); err != nil {
					t.Fatalf("the proxy rejects the listeners: %v", err)
				}
				for _, l := range ls {
					if st.lm.Addr(l.GetName()) == nil {
						t.Errorf("listener %s not installed", l.GetName())
					}
				}
				for _, n := range st.lm.SecretNames() {
					if n != names.WorkloadCert && n != names.RootCA {
						t.Errorf("unexpected SDS secret %q", n)
					}
				}
			})
		}
	}
}

// mesh is a CA and the identities of the test.
type mesh struct {
	ca *ca.CA
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	c, err := ca.New(ca.Options{TrustDomain: "cluster.local", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{ca: c}
}

func (m *mesh) keyPair(t *testing.T, ns, sa string) *ca.KeyPair {
	t.Helper()
	kp, err := m.ca.Issue("spiffe://cluster.local/ns/"+ns+"/sa/"+sa, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// clientTLS is what a weft sidecar presents when it originates mesh mTLS to a port:
// its certificate, Istio's mesh ALPN, and the SNI of the service port.
func (m *mesh) clientTLS(t *testing.T, ns, sa, sni string) *tls.Config {
	kp := m.keyPair(t, ns, sa)
	roots := m.ca.RootPool()
	return &tls.Config{
		Certificates: []tls.Certificate{kp.Certificate},
		NextProtos:   []string{"istio-peer-exchange", "istio"},
		ServerName:   sni,
		// The server's certificate names a SPIFFE ID, not a host: check its chain.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs[i] = c
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}
}

func staticCluster(name, addr string) *clusterv3.Cluster {
	ap := netip.MustParseAddrPort(addr)
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: ap.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())}}}},
			}}}},
		}}},
	}
}

// TestMeshTrafficOverLoopback sends real mTLS connections through reviews-v1's
// generated inbound listeners (Explicit mode), served by the proxy's own stack with
// certificates from weft's CA: STRICT refuses plaintext, RBAC allows productpage's GETs
// and nothing else on HTTP, network RBAC lets only the default namespace (asking for the
// TCP service) onto the TCP port, and the workload sees its caller in
// X-Forwarded-Client-Cert.
func TestMeshTrafficOverLoopback(t *testing.T) {
	signer := newJWTKey(t)
	s := bookinfoWithTCP(strings.ReplaceAll(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews}
spec: {selector: {matchLabels: {app: reviews}}, portLevelMtls: {7070: {mode: PERMISSIVE}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/reviews/*"]}}]
  - from: [{source: {namespaces: ["default"]}}]
    when: [{key: connection.sni, values: ["outbound_.7070_*"]}]
  - from: [{source: {requestPrincipals: ["https://accounts.example.com/alice"]}}]
    to: [{operation: {paths: ["/jwt"]}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules: [{issuer: "https://accounts.example.com", jwks: 'JWKS'}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: istio-system}
spec:
  action: DENY
  # Without the SNI condition this would deny every TCP connection: a connection has no
  # path, and a DENY rule keeps only what a connection can be matched on (Istio's).
  rules: [{to: [{operation: {paths: ["/reviews/debug"]}}], when: [{key: connection.sni, values: ["outbound_.9080_*"]}]}]
`, "JWKS", signer.jwks))
	p := simtest.SidecarProxy("reviews-v1", node.Explicit)
	m := newMesh(t)
	st := newStack(t)

	// The workload: an HTTP server reporting the caller, a TCP server greeting.
	var mu sync.Mutex
	var xfcc []string
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		xfcc = append(xfcc, r.Header.Get("X-Forwarded-Client-Cert"))
		mu.Unlock()
		_, _ = io.WriteString(w, "reviews")
	}), ReadHeaderTimeout: 10 * time.Second}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(httpLn) }()
	t.Cleanup(func() { _ = app.Close() })
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tcpLn.Close() })
	go func() {
		for {
			c, err := tcpLn.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "admin\n")
			_ = c.Close()
		}
	}()

	// The sidecar: its certificate and roots, the inbound clusters to the workload, the
	// generated routes and listeners.
	kp := m.keyPair(t, p.Namespace, p.ServiceAccount)
	if err := st.secrets.Update([]*tlsv3.Secret{
		secret.Certificate(names.WorkloadCert, kp.ChainPEM, kp.KeyPEM),
		secret.Validation(names.RootCA, m.ca.Roots()),
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.clusters.Update([]*clusterv3.Cluster{
		staticCluster(names.Cluster(names.Inbound, 9080, "", ""), httpLn.Addr().String()),
		staticCluster(names.Cluster(names.Inbound, 7070, "", ""), tcpLn.Addr().String()),
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.routes.Update(genroute.Inbound(s, p)); err != nil {
		t.Fatal(err)
	}
	if err := st.lm.Update(onLoopback(genlistener.Sidecar(s, p))); err != nil {
		t.Fatal(err)
	}
	httpAddr := st.lm.Addr(names.Listener(p.IP.String(), 9080)).String()
	tcpAddr := st.lm.Addr(names.Listener(p.IP.String(), 7070)).String()

	get := func(cfg *tls.Config, method, path string, token ...string) (int, error) {
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		scheme := "https"
		if cfg == nil {
			scheme = "http"
		}
		req, _ := http.NewRequest(method, scheme+"://"+httpAddr+path, nil)
		req.Host = "reviews:9080"
		for _, tok := range token {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	const httpSNI, tcpSNI = "outbound_.9080_._.reviews.default.svc.cluster.local", "outbound_.7070_._.reviews-admin.default.svc.cluster.local"
	productpage, ratings, other := m.clientTLS(t, "default", "bookinfo-productpage", httpSNI), m.clientTLS(t, "default", "bookinfo-ratings", httpSNI), m.clientTLS(t, "other", "client", httpSNI)
	alice, bob := signer.token(t, "alice"), signer.token(t, "bob")
	for _, tc := range []struct {
		name         string
		cfg          *tls.Config
		method, path string
		want         int // 0: the connection is refused
		token        []string
	}{
		{"alice's token", ratings, "GET", "/jwt", 200, []string{alice}},
		{"bob's token", ratings, "GET", "/jwt", 403, []string{bob}},
		{"no token", ratings, "GET", "/jwt", 403, nil},
		{"forged token", ratings, "GET", "/jwt", 401, []string{alice[:len(alice)-4] + "AAAA"}},
		{"productpage GET", productpage, "GET", "/reviews/0", 200, nil},
		{"productpage POST", productpage, "POST", "/reviews/0", 403, nil},
		{"productpage other path", productpage, "GET", "/ratings/0", 403, nil},
		{"productpage denied path", productpage, "GET", "/reviews/debug", 403, nil},
		{"ratings GET", ratings, "GET", "/reviews/0", 403, nil},
		{"other namespace GET", other, "GET", "/reviews/0", 403, nil},
		{"plaintext (STRICT)", nil, "GET", "/reviews/0", 0, nil},
	} {
		code, err := get(tc.cfg, tc.method, tc.path, tc.token...)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("%s: answered %d, want the connection refused", tc.name, code)
			}
			continue
		}
		if err != nil || code != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.name, code, err, tc.want)
		}
	}
	// A client without a certificate cannot complete the handshake.
	noCert := m.clientTLS(t, "default", "bookinfo-productpage", httpSNI)
	noCert.Certificates = nil
	if code, err := get(noCert, "GET", "/reviews/0"); err == nil {
		t.Errorf("no client certificate: answered %d", code)
	}
	mu.Lock()
	seen := append([]string(nil), xfcc...)
	mu.Unlock()
	if len(seen) != 2 || !strings.Contains(seen[0], "URI=spiffe://cluster.local/ns/default/sa/bookinfo-ratings") ||
		!strings.Contains(seen[1], "URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage") {
		t.Errorf("the workload saw X-Forwarded-Client-Cert %q", seen)
	}

	// TCP port 7070 (PERMISSIVE): network RBAC lets the default namespace in over mTLS;
	// another namespace and plaintext (no identity) are closed before the workload.
	dialTCP := func(cfg *tls.Config) string {
		var c net.Conn
		var err error
		d := &net.Dialer{Timeout: 10 * time.Second}
		if cfg != nil {
			c, err = tls.DialWithDialer(d, "tcp", tcpAddr, cfg)
		} else {
			c, err = d.Dial("tcp", tcpAddr)
		}
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		if cfg == nil {
			// Speak first: the port's tls_inspector waits for the client's first bytes
			// (listener_filters_timeout for a server-first client).
			_, _ = io.WriteString(c, "hello\n")
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want string
	}{
		{"ratings", m.clientTLS(t, "default", "bookinfo-ratings", tcpSNI), "admin"},
		{"ratings to the HTTP port's SNI", ratings, ""},
		{"other namespace", m.clientTLS(t, "other", "client", tcpSNI), ""},
		{"plaintext", nil, ""},
	} {
		if got := dialTCP(tc.cfg); got != tc.want {
			t.Errorf("tcp %s: read %q, want %q", tc.name, got, tc.want)
		}
	}
}

// jwtKey signs the test's tokens; its JWKS goes inline into a RequestAuthentication.
type jwtKey struct {
	priv *rsa.PrivateKey
	jwks string
}

func newJWTKey(t *testing.T) *jwtKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &jwtKey{priv: priv, jwks: string(b)}
}

func (k *jwtKey) token(t *testing.T, sub string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.priv, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"iss": "https://accounts.example.com", "sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

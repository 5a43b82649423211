package security

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/filter"
	_ "github.com/weft-mesh/weft/internal/proxy/filter/jwtauthn" // registers the filters the proxy builds
	_ "github.com/weft-mesh/weft/internal/proxy/filter/rbac"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
)

// testKey signs the tests' tokens; its JWKS goes inline into RequestAuthentications.
type testKey struct {
	priv *rsa.PrivateKey
	jwks string
}

func newTestKey(t *testing.T) *testKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{priv: priv, jwks: string(b)}
}

func (k *testKey) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.priv, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	payload, _ := json.Marshal(claims)
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

// TestJWTConfigFromSamples: Istio's RequestAuthentication samples (inline jwks and
// jwksUri) become Envoy's JwtAuthentication as Istio builds it.
func TestJWTConfigFromSamples(t *testing.T) {
	k := newTestKey(t)
	s := bookinfo(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json"
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh-jwt, namespace: istio-system}
spec:
  jwtRules:
  - issuer: "https://accounts.example.com"
    audiences: [bookinfo]
    jwks: '` + k.jwks + `'
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
    fromParams: [my_token]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-jwt-group, claim: nested.group}]
    spaceDelimitedClaims: [roles, scope]
    timeout: 2s
`)
	j := JWTAuthn(s, reviews())
	if j == nil {
		t.Fatal("no JWT filter")
	}
	validate(t, j)
	if len(j.GetProviders()) != 2 || !j.GetBypassCorsPreflight() {
		t.Fatalf("providers %v", j.GetProviders())
	}
	// Policies in snapshot order (namespace, name): default before istio-system.
	sample, mesh := j.GetProviders()["origins-0"], j.GetProviders()["origins-1"]
	if mesh.GetIssuer() != "https://accounts.example.com" || strings.Join(mesh.GetAudiences(), ",") != "bookinfo" ||
		mesh.GetLocalJwks().GetInlineString() != k.jwks || !mesh.GetForward() || mesh.GetPayloadInMetadata() != "https://accounts.example.com" ||
		mesh.GetForwardPayloadHeader() != "x-jwt-payload" || len(mesh.GetFromHeaders()) != 1 ||
		mesh.GetFromHeaders()[0].GetName() != "x-jwt-assertion" || mesh.GetFromHeaders()[0].GetValuePrefix() != "Bearer " ||
		strings.Join(mesh.GetFromParams(), ",") != "my_token" || mesh.GetClaimToHeaders()[0].GetClaimName() != "nested.group" ||
		strings.Join(mesh.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(), ",") != "scope,permission,roles" {
		t.Errorf("inline provider: %v", mesh)
	}
	rj := sample.GetRemoteJwks()
	if sample.GetIssuer() != "testing@secure.istio.io" || rj.GetHttpUri().GetUri() != "https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json" ||
		rj.GetHttpUri().GetCluster() != "outbound|443||raw.githubusercontent.com" || rj.GetHttpUri().GetTimeout().AsDuration() != 5*time.Second ||
		rj.GetCacheDuration().AsDuration() != 5*time.Minute || sample.GetForward() ||
		len(sample.GetFromHeaders()) != 0 || len(sample.GetFromParams()) != 0 {
		t.Errorf("remote provider: %v", sample)
	}
	// One rule for every path: any provider, or no token (RBAC decides then).
	if len(j.GetRules()) != 1 || j.GetRules()[0].GetMatch().GetPrefix() != "/" {
		t.Fatalf("rules %v", j.GetRules())
	}
	var reqs []string
	for _, r := range j.GetRules()[0].GetRequires().GetRequiresAny().GetRequirements() {
		if r.GetAllowMissing() != nil {
			reqs = append(reqs, "allow_missing")
		} else {
			reqs = append(reqs, r.GetProviderName())
		}
	}
	if strings.Join(reqs, ",") != "origins-0,origins-1,allow_missing" {
		t.Fatalf("requirement %v", reqs)
	}
	// The proxy builds it (no fetch happens at build time).
	if _, err := filter.Build(JWTAuthnFilter, mustAny(t, j)); err != nil {
		t.Fatalf("proxy rejects the config: %v", err)
	}
	// ratings sees only the mesh-wide rule.
	if r := JWTAuthn(s, simtest.SidecarProxy("ratings-v1", node.Explicit)); len(r.GetProviders()) != 1 || r.GetProviders()["origins-0"].GetIssuer() != "https://accounts.example.com" {
		t.Fatalf("ratings: %v", r)
	}
}

// TestJWTRuleWithoutIssuer: a provider without an issuer would accept any issuer; the
// rule is left out (its tokens are then rejected as of an unknown issuer).
func TestJWTRuleWithoutIssuer(t *testing.T) {
	k := newTestKey(t)
	s := bookinfo(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec: {jwtRules: [{jwks: '` + k.jwks + `'}, {issuer: good.example, jwks: '` + k.jwks + `'}]}
`)
	j := JWTAuthn(s, reviews())
	if len(j.GetProviders()) != 1 || j.GetProviders()["origins-0"].GetIssuer() != "good.example" {
		t.Fatalf("providers %v", j.GetProviders())
	}
	h := chain(t, s, reviews())
	if code, _ := serve(h, "GET", "/", map[string]string{"Authorization": "Bearer " + k.token(t, map[string]any{"iss": "other", "sub": "a"})}, ""); code != http.StatusUnauthorized {
		t.Fatalf("token of another issuer: %d", code)
	}
	if code, _ := serve(h, "GET", "/", map[string]string{"Authorization": "Bearer " + k.token(t, map[string]any{"iss": "good.example", "sub": "a"})}, ""); code != http.StatusOK {
		t.Fatalf("good token: %d", code)
	}
}

func TestJWTNotApplied(t *testing.T) {
	for _, y := range []string{``, `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: no-rules}
spec: {}
`, `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: other}
spec: {selector: {matchLabels: {app: ratings}}, jwtRules: [{issuer: x, jwks: "{}"}]}
`, `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: other-ns, namespace: other}
spec: {jwtRules: [{issuer: x, jwks: "{}"}]}
`} {
		if j := JWTAuthn(bookinfo(y), reviews()); j != nil {
			t.Errorf("%s: filter %v", y, j)
		}
	}
}

// TestJWKSUnusableFailsClosed: keys weft cannot use are replaced by a key set that
// verifies nothing; the config still builds, so the workload's other config stays.
func TestJWKSUnusableFailsClosed(t *testing.T) {
	k := newTestKey(t)
	for _, rule := range []string{
		`{issuer: "https://accounts.example.com"}`,
		`{issuer: "https://accounts.example.com", jwks: '` + k.jwks + `', fromHeaders: [{name: "bad header"}]}`,
		`{issuer: "https://accounts.example.com", jwks: '` + k.jwks + `', outputClaimToHeaders: [{header: "x:y", claim: sub}]}`,
		`{issuer: "https://accounts.example.com", jwks: '{"keys":[{"kty":"oct","use":"enc","k":"AAAA"}]}'}`,
		`{issuer: "https://accounts.example.com", jwks: 'not json'}`,
	} {
		s := bookinfo(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec: {jwtRules: [` + rule + `]}
`)
		h := chain(t, s, reviews())
		tok := k.token(t, map[string]any{"iss": "https://accounts.example.com", "sub": "alice"})
		if code, _ := serve(h, "GET", "/", map[string]string{"Authorization": "Bearer " + tok}, ""); code != http.StatusUnauthorized {
			t.Errorf("%s: token accepted: %d", rule, code)
		}
		if code, _ := serve(h, "GET", "/", nil, ""); code != http.StatusOK {
			t.Errorf("%s: request without token: %d", rule, code)
		}
	}
}

// TestJWTThroughRBAC runs the generated jwt_authn and RBAC filters as the proxy builds
// them: Istio's require-JWT pattern (RequestAuthentication + ALLOW requestPrincipals and
// a groups claim) with real signed tokens.
func TestJWTThroughRBAC(t *testing.T) {
	k := newTestKey(t)
	const iss = "testing@secure.istio.io"
	s := bookinfo(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules: [{issuer: "` + iss + `", jwks: '` + k.jwks + `'}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {requestPrincipals: ["` + iss + `/` + iss + `"]}}]
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/admin"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["admins"]}, {key: "request.auth.claims[scope]", values: ["write"]}]
`)
	h := chain(t, s, reviews())
	bearer := func(claims map[string]any) map[string]string {
		return map[string]string{"Authorization": "Bearer " + k.token(t, claims)}
	}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		path string
		want int
	}{
		{"istio's sample token", bearer(map[string]any{"iss": iss, "sub": iss}), "/", 200},
		{"another subject", bearer(map[string]any{"iss": iss, "sub": "bob"}), "/", 403},
		{"admin group and scope", bearer(map[string]any{"iss": iss, "sub": "bob", "groups": []string{"users", "admins"}, "scope": "read write"}), "/admin", 200},
		{"admin group without scope", bearer(map[string]any{"iss": iss, "sub": "bob", "groups": []string{"admins"}, "scope": "read"}), "/admin", 403},
		{"no token", nil, "/", 403},
		{"expired", bearer(map[string]any{"iss": iss, "sub": iss, "exp": time.Now().Add(-time.Hour).Unix()}), "/", 401},
		{"unknown issuer", bearer(map[string]any{"iss": "evil", "sub": iss}), "/", 401},
		{"forged metadata header", map[string]string{"request.auth.principal": iss + "/" + iss}, "/", 403},
	} {
		if code, body := serve(h, "GET", tc.path, tc.hdr, ""); code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.want)
		}
	}
}

// chain builds the workload's generated security filters in chain order, as the proxy's
// connection manager would, in front of a handler answering 200.
func chain(t *testing.T, s *snapshot.Snapshot, p *node.Proxy) filter.Handler {
	t.Helper()
	type entry struct {
		name string
		cfg  proto.Message
	}
	var list []entry
	if j := JWTAuthn(s, p); j != nil {
		validate(t, j)
		list = append(list, entry{JWTAuthnFilter, j})
	}
	for _, a := range Actions {
		if r := HTTPRBAC(s, p, a); r != nil {
			validate(t, r)
			list = append(list, entry{HTTPRBACFilter, r})
		}
	}
	var h filter.Handler = filter.HandlerFunc(func(x *filter.Exchange) error {
		x.W.WriteHeader(http.StatusOK)
		_, err := io.WriteString(x.W, "ok")
		return err
	})
	for i := len(list) - 1; i >= 0; i-- {
		mw, err := filter.Build(list[i].name, mustAny(t, list[i].cfg))
		if err != nil {
			t.Fatalf("the proxy rejects %s: %v", list[i].name, err)
		}
		h = mw(h)
	}
	return h
}

// serve runs one request through h; principal is the mTLS peer ("" for plaintext).
func serve(h filter.Handler, method, path string, hdr map[string]string, principal string) (int, string) {
	r := httptest.NewRequest(method, "http://reviews:9080"+path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	info := &stream.Info{Start: time.Now(), Path: path,
		Downstream:      netip.MustParseAddrPort("127.2.0.1:40000"),
		DownstreamLocal: netip.MustParseAddrPort("127.2.0.3:9080"),
		DownstreamTLS:   principal != "", PeerPrincipal: principal}
	if err := h.Serve(&filter.Exchange{W: w, R: r, Info: info}); err != nil {
		return 500, err.Error()
	}
	return w.Code, w.Body.String()
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

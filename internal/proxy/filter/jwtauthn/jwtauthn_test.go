package jwtauthn

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
)

func TestVerification(t *testing.T) {
	k := getKeys(t)
	now := time.Now().Unix()
	h := newHarness(t, build(t, strictConfig(t, localProvider(t, nil))), nil)
	tests := []struct {
		name  string
		token string // "" sends no token
		code  int
		body  string
	}{
		{"RS256", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil)), 200, ""},
		{"RS256 without kid tries every key", sign(t, jose.RS256, k.rsa, "", claims("alice", nil)), 200, ""},
		{"PS256", sign(t, jose.PS256, k.rsa, "rsa1-ps", claims("alice", nil)), 200, ""},
		{"ES256", sign(t, jose.ES256, k.ec, "ec1", claims("alice", nil)), 200, ""},
		{"EdDSA", sign(t, jose.EdDSA, k.ed, "ed1", claims("alice", nil)), 200, ""},
		{"audience in a list", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { c["aud"] = []string{"other", "https://" + audience + "/"} })), 200, ""},
		{"expired within clock skew", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { c["exp"] = now - 30 })), 200, ""},
		{"missing", "", 401, "Jwt is missing"},
		{"expired", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { c["exp"] = now - 600 })), 401, "Jwt is expired"},
		{"not yet valid", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { c["nbf"] = now + 600 })), 401, "Jwt not yet valid"},
		{"wrong issuer", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { c["iss"] = "https://evil.example.com" })), 401, "Jwt issuer is not configured"},
		{"no issuer", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { delete(c, "iss") })), 401, "Jwt issuer is not configured"},
		{"wrong audience", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { c["aud"] = "other" })), 403, "Audiences in Jwt are not allowed"},
		{"no audience", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { delete(c, "aud") })), 403, "Audiences in Jwt are not allowed"},
		{"bad signature: another key, same kid", sign(t, jose.RS256, k.rsaOther, "rsa1", claims("alice", nil)), 401, "Jwt verification fails"},
		{"bad signature: tampered payload", tamper(t, sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil))), 401, "Jwt verification fails"},
		{"unknown kid", sign(t, jose.RS256, k.rsa, "nope", claims("alice", nil)), 401, "Jwks doesn't have key to match kid or alg from Jwt"},
		{"HS256 keyed with the public key", hmacWithPublicKey(t, k), 401, "Jwks doesn't have key to match kid or alg from Jwt"},
		{"alg none", unsigned(`{"alg":"none","typ":"JWT"}`, mustJSON(t, claims("mallory", nil)), ""), 401, "Jwt header [alg] is not supported"},
		{"alg missing", unsigned(`{"typ":"JWT"}`, mustJSON(t, claims("mallory", nil)), "c2ln"), 401, "Jwt header [alg] field is required and must be a string"},
		{"malformed: one part", "abcdef", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"malformed: four parts", "a.b.c.d", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"malformed: header not base64", "e30!.e30.c2ln", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"malformed: header not JSON", unsigned(`{"alg":`, `{}`, "c2ln"), 401, "Jwt header is an invalid JSON"},
		{"malformed: payload not JSON", unsigned(`{"alg":"RS256"}`, `[1,`, "c2ln"), 401, "Jwt payload is an invalid JSON"},
		{"malformed: exp not a number", unsigned(`{"alg":"RS256"}`, `{"iss":"`+issuer+`","exp":"soon"}`, "c2ln"), 401, "Jwt payload has a registered claim of the wrong type"},
		{"malformed: non-canonical base64", sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil)) + "\n", 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr map[string]string
			if tt.token != "" {
				hdr = bearer(tt.token)
			}
			if strings.ContainsAny(tt.token, "\n") {
				// A header cannot carry it; the query parameter can.
				hdr = nil
				r := h.do(t, "/x?access_token="+strings.ReplaceAll(tt.token, "\n", "%0A"), nil)
				if r.code != tt.code {
					t.Fatalf("got %d %q, want %d", r.code, r.body, tt.code)
				}
				return
			}
			r := h.do(t, "/x", hdr)
			if r.code != tt.code {
				t.Fatalf("got %d %q, want %d %q", r.code, r.body, tt.code, tt.body)
			}
			if tt.code == 200 {
				if r.seen.Principal != issuer+"/alice" {
					t.Fatalf("principal %q", r.seen.Principal)
				}
				if r.seen.Authorization != "" {
					t.Fatalf("token forwarded: %q", r.seen.Authorization)
				}
				return
			}
			if r.body != tt.body {
				t.Fatalf("body %q, want %q", r.body, tt.body)
			}
			challenge := r.hdr.Get("Www-Authenticate")
			if !strings.HasPrefix(challenge, `Bearer realm="http://127.0.0.1:`) || !strings.Contains(challenge, `/x"`) {
				t.Fatalf("www-authenticate %q", challenge)
			}
			if (tt.body == "Jwt is missing") == strings.Contains(challenge, `error="invalid_token"`) {
				t.Fatalf("www-authenticate %q", challenge)
			}
			want := "jwt_authn_access_denied{" + strings.ReplaceAll(tt.body, " ", "_") + "}"
			if r.info.ResponseDetails != want {
				t.Fatalf("details %q, want %q", r.info.ResponseDetails, want)
			}
			if r.info.Flags != 0 {
				t.Fatalf("flags %v", r.info.Flags)
			}
		})
	}
}

func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	p = []byte(strings.Replace(string(p), `"alice"`, `"admin"`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(p)
	return strings.Join(parts, ".")
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Istio's shape: requires_any [provider, allow_missing]. No token passes; a bad one fails.
func TestIstioAllowMissing(t *testing.T) {
	k := getKeys(t)
	h := newHarness(t, build(t, istioConfig(t, localProvider(t, nil))), nil)
	if r := h.do(t, "/", nil); r.code != 200 || r.seen.Principal != "" {
		t.Fatalf("no token: %d principal %q", r.code, r.seen.Principal)
	}
	if r := h.do(t, "/", bearer(sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil)))); r.code != 200 || r.seen.Principal != issuer+"/alice" {
		t.Fatalf("valid: %d principal %q", r.code, r.seen.Principal)
	}
	if r := h.do(t, "/", bearer(sign(t, jose.RS256, k.rsaOther, "rsa1", claims("alice", nil)))); r.code != 401 || r.body != "Jwt verification fails" {
		t.Fatalf("invalid: %d %q", r.code, r.body)
	}
	if r := h.do(t, "/", bearer(sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { c["iss"] = "other" })))); r.code != 401 || r.body != "Jwt issuer is not configured" {
		t.Fatalf("unknown issuer: %d %q", r.code, r.body)
	}
	// A non-bearer Authorization header holds no token.
	if r := h.do(t, "/", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}); r.code != 200 {
		t.Fatalf("basic auth: %d", r.code)
	}
}

func TestRequirementsAndRules(t *testing.T) {
	k := getKeys(t)
	p2 := localProvider(t, func(p *jwtv3.JwtProvider) {
		p.Issuer = "https://second.example.com"
		p.FromHeaders = []*jwtv3.JwtHeader{{Name: "x-second-token"}}
	})
	cfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p1": localProvider(t, nil), "p2": p2},
		Rules: []*jwtv3.RequirementRule{
			prefixRule("/health", nil),
			prefixRule("/any", reqAny(reqProvider("p1"), reqProvider("p2"))),
			prefixRule("/all", reqAll(reqProvider("p1"), reqProvider("p2"))),
			prefixRule("/secure", reqProvider("p1")),
		},
	}
	h := newHarness(t, build(t, cfg), nil)
	t1 := sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil))
	t2 := sign(t, jose.ES256, k.ec, "ec1", claims("bob", func(c map[string]any) { c["iss"] = "https://second.example.com" }))
	both := map[string]string{"Authorization": "Bearer " + t1, "X-Second-Token": t2}
	tests := []struct {
		path string
		hdr  map[string]string
		code int
	}{
		{"/health", nil, 200},
		{"/unmatched", nil, 200},
		{"/secure", nil, 401},
		{"/secure", bearer(t1), 200},
		{"/public/../secure", nil, 401}, // the rule sees the normalized path
		{"/any", map[string]string{"X-Second-Token": t2}, 200},
		{"/any", bearer(t1), 200},
		{"/any", nil, 401},
		{"/all", bearer(t1), 401},
		{"/all", both, 200},
	}
	for _, tt := range tests {
		if r := h.do(t, tt.path, tt.hdr); r.code != tt.code {
			t.Errorf("%s %v: got %d %q, want %d", tt.path, tt.hdr != nil, r.code, r.body, tt.code)
		}
	}
	// Both tokens verified: the principal is the one whose issuer sorts first.
	if r := h.do(t, "/all", both); r.seen.Principal != issuer+"/alice" {
		t.Errorf("principal %q", r.seen.Principal)
	}
}

func TestOutputs(t *testing.T) {
	k := getKeys(t)
	p := localProvider(t, func(p *jwtv3.JwtProvider) {
		p.ForwardPayloadHeader = "x-jwt-payload"
		p.ClaimToHeaders = []*jwtv3.JwtClaimToHeader{
			{HeaderName: "x-jwt-sub", ClaimName: "sub"},
			{HeaderName: "x-jwt-admin", ClaimName: "admin"},
			{HeaderName: "x-jwt-nested", ClaimName: "org.team"},
		}
		p.FromParams = []string{"token"}
		p.FromHeaders = []*jwtv3.JwtHeader{{Name: "Authorization", ValuePrefix: "Bearer "}}
	})
	h := newHarness(t, build(t, istioConfig(t, p)), nil, "X-Jwt-Payload", "X-Jwt-Sub", "X-Jwt-Admin", "X-Jwt-Nested")
	tok := sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) {
		c["admin"] = true
		c["org"] = map[string]any{"team": "payments"}
	}))
	r := h.do(t, "/", bearer(tok))
	if r.code != 200 {
		t.Fatalf("%d %q", r.code, r.body)
	}
	if r.seen.Authorization != "" {
		t.Errorf("token forwarded without forward: true")
	}
	if want := strings.Split(tok, ".")[1]; r.seen.Headers["X-Jwt-Payload"] != want {
		t.Errorf("payload header %q", r.seen.Headers["X-Jwt-Payload"])
	}
	if r.seen.Headers["X-Jwt-Sub"] != "alice" || r.seen.Headers["X-Jwt-Admin"] != "true" || r.seen.Headers["X-Jwt-Nested"] != "payments" {
		t.Errorf("claim headers %v", r.seen.Headers)
	}
	// A client's own copies of the output headers never reach the upstream.
	r = h.do(t, "/", map[string]string{"X-Jwt-Payload": "forged", "X-Jwt-Sub": "admin"})
	if r.code != 200 || r.seen.Headers["X-Jwt-Payload"] != "" || r.seen.Headers["X-Jwt-Sub"] != "" {
		t.Errorf("spoofed headers passed: %d %v", r.code, r.seen.Headers)
	}
	// A token in a query parameter is removed from it after verification.
	r = h.do(t, "/?a=1&token="+tok+"&b=2", nil)
	if r.code != 200 || r.seen.Query != "a=1&b=2" || r.seen.Principal != issuer+"/alice" {
		t.Errorf("query token: %d %q %q", r.code, r.seen.Query, r.seen.Principal)
	}
	// forward: true keeps it.
	p.Forward = true
	h = newHarness(t, build(t, istioConfig(t, p)), nil)
	if r := h.do(t, "/", bearer(tok)); r.seen.Authorization != "Bearer "+tok {
		t.Errorf("forward: %q", r.seen.Authorization)
	}
}

func TestPerRoute(t *testing.T) {
	k := getKeys(t)
	cfg := &jwtv3.JwtAuthentication{
		Providers:      map[string]*jwtv3.JwtProvider{"p": localProvider(t, nil)},
		RequirementMap: map[string]*jwtv3.JwtRequirement{"strict": reqProvider("p")},
		Rules:          []*jwtv3.RequirementRule{prefixRule("/", reqProvider("p"))},
	}
	mw := build(t, cfg)
	parse := func(m *jwtv3.PerRouteConfig) any {
		c, ok, err := filter.ParsePerRoute("envoy.filters.http.jwt_authn", mustAny(t, m))
		if err != nil || !ok {
			t.Fatalf("ParsePerRoute: %v %v", ok, err)
		}
		return c
	}
	off := newHarness(t, mw, fakeRoute{"envoy.filters.http.jwt_authn": parse(&jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_Disabled{Disabled: true}})})
	if r := off.do(t, "/", nil); r.code != 200 {
		t.Fatalf("disabled: %d", r.code)
	}
	named := newHarness(t, mw, fakeRoute{"envoy.filters.http.jwt_authn": parse(&jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "strict"}})})
	if r := named.do(t, "/", nil); r.code != 401 {
		t.Fatalf("named, no token: %d", r.code)
	}
	if r := named.do(t, "/", bearer(sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil)))); r.code != 200 {
		t.Fatalf("named, token: %d", r.code)
	}
	unknown := newHarness(t, mw, fakeRoute{"envoy.filters.http.jwt_authn": parse(&jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "nope"}})})
	if r := unknown.do(t, "/", bearer(sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil)))); r.code != 401 {
		t.Fatalf("unknown requirement: %d", r.code)
	}
}

func TestCORSPreflightBypass(t *testing.T) {
	cfg := strictConfig(t, localProvider(t, nil))
	cfg.BypassCorsPreflight = true
	h := newHarness(t, build(t, cfg), nil)
	req, _ := http.NewRequest(http.MethodOptions, h.srv.URL+"/", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("preflight: %d", resp.StatusCode)
	}
	<-h.infos
	if r := h.do(t, "/", nil); r.code != 401 {
		t.Fatalf("plain GET: %d", r.code)
	}
}

// jwksServer serves the test JWKS on loopback; down makes it answer 503.
type jwksServer struct {
	*httptest.Server
	down atomic.Bool
	hits atomic.Int64
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	doc := getKeys(t).jwks(t)
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(doc))
	}))
	t.Cleanup(s.Close)
	return s
}

func remoteProvider(t *testing.T, uri string, mod func(*jwtv3.RemoteJwks)) *jwtv3.JwtProvider {
	r := &jwtv3.RemoteJwks{HttpUri: &corev3.HttpUri{
		Uri:              uri,
		HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|443||issuer.example.com"},
		Timeout:          durationpb.New(5 * time.Second),
	}}
	if mod != nil {
		mod(r)
	}
	return localProvider(t, func(p *jwtv3.JwtProvider) {
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: r}
	})
}

func TestRemoteJWKS(t *testing.T) {
	st := stats.New()
	UseStats(st)
	t.Cleanup(func() { UseStats(nil) })
	k := getKeys(t)
	srv := newJWKSServer(t)
	srv.down.Store(true)
	p := remoteProvider(t, srv.URL+"/jwks", func(r *jwtv3.RemoteJwks) {
		r.AsyncFetch = &jwtv3.JwksAsyncFetch{FailedRefetchDuration: durationpb.New(100 * time.Millisecond)}
	})
	h := newHarness(t, build(t, istioConfig(t, p)), nil)
	tok := bearer(sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil)))

	// JWKS unreachable: a token cannot be verified, so it is rejected...
	if r := h.do(t, "/", tok); r.code != 401 || r.body != "Jwks remote fetch is failed" {
		t.Fatalf("JWKS down: %d %q", r.code, r.body)
	}
	// ...while a request without a token still passes allow_missing.
	if r := h.do(t, "/", nil); r.code != 200 {
		t.Fatalf("JWKS down, no token: %d", r.code)
	}
	// Back up: after failed_refetch_duration the next request fetches and passes.
	srv.down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := h.do(t, "/", tok)
		if r.code == 200 {
			if r.seen.Principal != issuer+"/alice" {
				t.Fatalf("principal %q", r.seen.Principal)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("JWKS back up, still %d %q", r.code, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Cached: more requests do not fetch again.
	hits := srv.hits.Load()
	for i := 0; i < 5; i++ {
		if r := h.do(t, "/", tok); r.code != 200 {
			t.Fatalf("cached: %d", r.code)
		}
	}
	if srv.hits.Load() != hits {
		t.Fatalf("JWKS fetched %d more times while cached", srv.hits.Load()-hits)
	}
	if v, _ := st.Value("http.jwt_authn.jwks_fetch_success"); v < 1 {
		t.Errorf("jwks_fetch_success = %d", v)
	}
	if v, _ := st.Value("http.jwt_authn.jwks_fetch_failed"); v < 1 {
		t.Errorf("jwks_fetch_failed = %d", v)
	}
}

// On demand (no async_fetch): the first request waits for the fetch; an expired cache is
// fetched again; a dead server (connection refused) fails the token.
func TestRemoteJWKSOnDemand(t *testing.T) {
	k := getKeys(t)
	srv := newJWKSServer(t)
	p := remoteProvider(t, srv.URL+"/jwks", func(r *jwtv3.RemoteJwks) { r.CacheDuration = durationpb.New(200 * time.Millisecond) })
	h := newHarness(t, build(t, strictConfig(t, p)), nil)
	tok := bearer(sign(t, jose.ES256, k.ec, "ec1", claims("alice", nil)))
	if r := h.do(t, "/", tok); r.code != 200 {
		t.Fatalf("first request: %d %q", r.code, r.body)
	}
	time.Sleep(300 * time.Millisecond)
	srv.down.Store(true)
	if r := h.do(t, "/", tok); r.code != 401 || r.body != "Jwks remote fetch is failed" {
		t.Fatalf("expired cache, server down: %d %q", r.code, r.body)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/jwks"
	ln.Close()
	h = newHarness(t, build(t, strictConfig(t, remoteProvider(t, dead, nil))), nil)
	if r := h.do(t, "/", tok); r.code != 401 || r.body != "Jwks remote fetch is failed" {
		t.Fatalf("refused: %d %q", r.code, r.body)
	}
}

func TestBuildRejects(t *testing.T) {
	lp := localProvider(t, nil)
	tests := []struct {
		name string
		m    *jwtv3.JwtAuthentication
		want string
	}{
		{"unknown provider", &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": lp},
			Rules: []*jwtv3.RequirementRule{prefixRule("/", reqProvider("q"))}}, `rules[0].requires.provider_name: no provider "q"`},
		{"extract only", &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": lp},
			Rules: []*jwtv3.RequirementRule{prefixRule("/", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ExtractOnlyWithoutValidation{ExtractOnlyWithoutValidation: &jwtv3.ExtractOnlyWithoutValidation{}}})}},
			"extract_only_without_validation: not supported"},
		{"filter state rules", &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": lp}, FilterStateRules: &jwtv3.FilterStateRule{Name: "x"}},
			"filter_state_rules: not supported"},
		{"bad local jwks", &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": localProvider(t, func(p *jwtv3.JwtProvider) {
			p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: `{"keys":[{"kty":"XX"}]}`}}}
		})}}, `providers["p"].local_jwks: jwks: no usable signature key`},
		{"bad uri", &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": remoteProvider(t, "ftp://x/jwks", nil)}}, `remote_jwks: http_uri.uri`},
		{"query match", &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": lp},
			Rules: []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				QueryParameters: []*routev3.QueryParameterMatcher{{Name: "a"}}}}}}, "rules[0].match.query_parameters: not supported"},
		{"unknown requirement name", &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": lp},
			Rules: []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				RequirementType: &jwtv3.RequirementRule_RequirementName{RequirementName: "x"}}}}, `rules[0].requirement_name: no requirement "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := filter.Build("jwt", mustAny(t, tt.m))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestResultLookup(t *testing.T) {
	res := newResult([]Token{{
		Provider: "p", Issuer: "iss", Subject: "sub", Audiences: []string{"a1", "a2"}, Presenter: "client",
		Claims: map[string]any{"groups": []any{"g1"}, "nested": map[string]any{"k": "v"}}, RawClaims: `{}`, payloadKey: "iss",
	}})
	tests := []struct {
		filter string
		path   []string
		want   any
		ok     bool
	}{
		{IstioAuthn, []string{KeyPrincipal}, "iss/sub", true},
		{IstioAuthn, []string{KeyPresenter}, "client", true},
		{IstioAuthn, []string{KeyClaims, "nested", "k"}, "v", true},
		{IstioAuthn, []string{KeyClaims, "missing"}, nil, false},
		{IstioAuthn, []string{KeyPrincipal, "extra"}, nil, false},
		{FilterName, []string{"iss", "nested", "k"}, "v", true},
		{FilterName, []string{"other"}, nil, false},
		{"else", []string{KeyPrincipal}, nil, false},
	}
	for _, tt := range tests {
		got, ok := res.Lookup(tt.filter, tt.path)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("%s %v: got %v %v", tt.filter, tt.path, got, ok)
		}
	}
	if v, ok := res.Lookup(IstioAuthn, []string{KeyAudiences}); !ok || len(v.([]any)) != 2 {
		t.Errorf("audiences %v %v", v, ok)
	}
	var nilRes *Result
	if _, ok := nilRes.Lookup(IstioAuthn, []string{KeyPrincipal}); ok {
		t.Error("nil result answered")
	}
}

func TestLocationsAndSharedIssuer(t *testing.T) {
	k := getKeys(t)
	tok := sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", nil))
	// Two providers of the same issuer: the first (by name) has keys that cannot verify
	// the token; as in Envoy, each is tried, and the second verifies it.
	otherKeys, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.rsaOther.PublicKey, KeyID: "rsa1", Algorithm: "RS256"}}})
	if err != nil {
		t.Fatal(err)
	}
	a := localProvider(t, func(p *jwtv3.JwtProvider) {
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(otherKeys)}}}
	})
	b := localProvider(t, func(p *jwtv3.JwtProvider) {
		p.FromCookies = []string{"session"}
		p.FromHeaders = []*jwtv3.JwtHeader{{Name: "Authorization", ValuePrefix: "Bearer "}, {Name: "x-token"}}
		p.ClockSkewSeconds = 1
	})
	cfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"a": a, "b": b},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/", reqAny(reqProvider("a"), reqProvider("b")))},
	}
	h := newHarness(t, build(t, cfg), nil)
	for name, hdr := range map[string]map[string]string{
		"bearer":       bearer(tok),
		"header":       {"X-Token": tok},
		"cookie":       {"Cookie": "theme=dark; session=" + tok},
		"lower bearer": {"Authorization": "bearer " + tok},
	} {
		if r := h.do(t, "/", hdr); r.code != 200 || r.seen.Principal != issuer+"/alice" {
			t.Errorf("%s: %d %q %q", name, r.code, r.body, r.seen.Principal)
		}
	}
	// Provider b's clock skew is 1 s: a token expired 30 s ago fails there, and provider a
	// cannot verify it at all; the first failure is reported.
	old := sign(t, jose.RS256, k.rsa, "rsa1", claims("alice", func(c map[string]any) { c["exp"] = time.Now().Unix() - 30 }))
	if r := h.do(t, "/", bearer(old)); r.code != 401 {
		t.Errorf("expired beyond skew: %d %q", r.code, r.body)
	}
}

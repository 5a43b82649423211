package rbac

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

	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// --- harness: a loopback HTTP server running a chain of filters in front of a 200 ---

type fakeRoute map[string]any

func (r fakeRoute) FilterConfig(name string) any { return r[name] }

type harness struct {
	srv   *httptest.Server
	infos chan *stream.Info
}

// newHarness serves chain (outermost first); fill sets what the connection manager would
// have put in the request's Info (peer principal, addresses).
func newHarness(t *testing.T, chain []filter.Middleware, route filter.Route, fill func(*stream.Info)) *harness {
	t.Helper()
	h := &harness{infos: make(chan *stream.Info, 64)}
	var next filter.Handler = filter.HandlerFunc(func(x *filter.Exchange) error {
		x.Info.ResponseDetails = "via_upstream"
		x.W.WriteHeader(http.StatusOK)
		_, err := io.WriteString(x.W, "ok")
		return err
	})
	for i := len(chain) - 1; i >= 0; i-- {
		next = chain[i](next)
	}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := &stream.Info{Start: time.Now(), Path: r.RequestURI}
		info.Downstream, _ = netip.ParseAddrPort(r.RemoteAddr)
		if fill != nil {
			fill(info)
		}
		x := &filter.Exchange{W: w, R: r, Info: info, Route: route}
		if err := next.Serve(x); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		select {
		case h.infos <- x.Info:
		default:
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

type reply struct {
	code int
	hdr  http.Header
	body string
	info *stream.Info
}

func (h *harness) do(t *testing.T, method, path string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var info *stream.Info
	select {
	case info = <-h.infos:
	case <-time.After(10 * time.Second):
		t.Fatal("no request info recorded")
	}
	return reply{code: resp.StatusCode, hdr: resp.Header, body: string(b), info: info}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func build(t *testing.T, name string, m *rbacv3.RBAC) filter.Middleware {
	t.Helper()
	mw, err := filter.Build(name, mustAny(t, m))
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

// --- config builders ---

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func pathPerm(sm *matcherv3.StringMatcher) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}
}

func methodPerm(m string) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m)}}}}
}

func anyPerm() *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
}

func anyPrin() *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
}

func authPrin(spiffe string) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: exact(spiffe)}}}
}

func rules(action rbacconfigv3.RBAC_Action, policies map[string]*rbacconfigv3.Policy) *rbacconfigv3.RBAC {
	return &rbacconfigv3.RBAC{Action: action, Policies: policies}
}

func pol(perms []*rbacconfigv3.Permission, prins []*rbacconfigv3.Principal) *rbacconfigv3.Policy {
	return &rbacconfigv3.Policy{Permissions: perms, Principals: prins}
}

// --- tests ---

func TestDenyPolicyOverHTTP(t *testing.T) {
	st := stats.New()
	UseStats(st)
	t.Cleanup(func() { UseStats(nil) })
	mw := build(t, "envoy.filters.http.rbac", &rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{
		"ns[default]-policy[deny-admin]-rule[0]": pol([]*rbacconfigv3.Permission{pathPerm(prefix("/admin"))}, []*rbacconfigv3.Principal{anyPrin()}),
	})})
	h := newHarness(t, []filter.Middleware{mw}, nil, nil)

	r := h.do(t, "GET", "/admin/users", nil)
	if r.code != http.StatusForbidden || r.body != "RBAC: access denied" {
		t.Fatalf("got %d %q", r.code, r.body)
	}
	if !r.info.Flags.Has(stream.UnauthorizedRBAC) || r.info.Flags.String() != "RBAC" {
		t.Fatalf("flags %v", r.info.Flags)
	}
	if r.info.ResponseDetails != "rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]]" {
		t.Fatalf("details %q", r.info.ResponseDetails)
	}
	// Path tricks that reach "/admin" upstream are denied too.
	for _, p := range []string{"/public/../admin", "//admin", "/%61dmin/x"} {
		if r := h.do(t, "GET", p, nil); r.code != http.StatusForbidden {
			t.Errorf("%s: got %d", p, r.code)
		}
	}
	if r := h.do(t, "GET", "/public", nil); r.code != http.StatusOK || r.body != "ok" {
		t.Fatalf("allowed request: %d %q", r.code, r.body)
	}
	if v, _ := st.Value("http.rbac.denied"); v != 4 {
		t.Errorf("denied = %d", v)
	}
	if v, _ := st.Value("http.rbac.allowed"); v != 1 {
		t.Errorf("allowed = %d", v)
	}
}

// Istio chains a DENY filter, then an ALLOW filter: each decides on its own, in order.
func TestIstioChainDenyThenAllow(t *testing.T) {
	deny := build(t, "rbac-deny", &rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{
		"deny-delete": pol([]*rbacconfigv3.Permission{methodPerm("DELETE")}, []*rbacconfigv3.Principal{anyPrin()}),
	})})
	allow := build(t, "rbac-allow", &rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"allow-productpage": pol([]*rbacconfigv3.Permission{anyPerm()}, []*rbacconfigv3.Principal{authPrin("spiffe://cluster.local/ns/default/sa/productpage")}),
	})})
	peer := "spiffe://cluster.local/ns/default/sa/productpage"
	h := newHarness(t, []filter.Middleware{deny, allow}, nil, func(i *stream.Info) {
		i.DownstreamTLS = true
		i.PeerPrincipal = peer
	})
	if r := h.do(t, "GET", "/x", nil); r.code != http.StatusOK {
		t.Fatalf("allowed principal: %d", r.code)
	}
	r := h.do(t, "DELETE", "/x", nil)
	if r.code != http.StatusForbidden || r.info.ResponseDetails != "rbac_access_denied_matched_policy[deny-delete]" {
		t.Fatalf("DELETE: %d %q", r.code, r.info.ResponseDetails)
	}
	peer = "spiffe://cluster.local/ns/default/sa/ratings"
	h2 := newHarness(t, []filter.Middleware{deny, allow}, nil, func(i *stream.Info) {
		i.DownstreamTLS = true
		i.PeerPrincipal = peer
	})
	r = h2.do(t, "GET", "/x", nil)
	if r.code != http.StatusForbidden || r.info.ResponseDetails != "rbac_access_denied_matched_policy[none]" {
		t.Fatalf("other principal: %d %q", r.code, r.info.ResponseDetails)
	}
}

func TestRulesAbsentOrEmpty(t *testing.T) {
	// No rules: no enforcement.
	h := newHarness(t, []filter.Middleware{build(t, "r", &rbacv3.RBAC{})}, nil, nil)
	if r := h.do(t, "GET", "/", nil); r.code != http.StatusOK {
		t.Fatalf("no rules: %d", r.code)
	}
	// Rules present and empty under ALLOW: everything is denied.
	h = newHarness(t, []filter.Middleware{build(t, "r", &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW}})}, nil, nil)
	if r := h.do(t, "GET", "/", nil); r.code != http.StatusForbidden {
		t.Fatalf("empty ALLOW: %d", r.code)
	}
}

func TestShadowRulesOnlyCount(t *testing.T) {
	st := stats.New()
	UseStats(st)
	t.Cleanup(func() { UseStats(nil) })
	mw := build(t, "r", &rbacv3.RBAC{
		ShadowRules:           rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{"all": pol([]*rbacconfigv3.Permission{anyPerm()}, []*rbacconfigv3.Principal{anyPrin()})}),
		ShadowRulesStatPrefix: "istio_dry_run_allow_",
	})
	h := newHarness(t, []filter.Middleware{mw}, nil, nil)
	if r := h.do(t, "GET", "/", nil); r.code != http.StatusOK {
		t.Fatalf("shadow enforced: %d", r.code)
	}
	if v, _ := st.Value("http.rbac.istio_dry_run_allow_shadow_denied"); v != 1 {
		t.Fatalf("shadow_denied = %d", v)
	}
}

func TestPerRoute(t *testing.T) {
	mw := build(t, "envoy.filters.http.rbac", &rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{
		"all": pol([]*rbacconfigv3.Permission{anyPerm()}, []*rbacconfigv3.Principal{anyPrin()}),
	})})
	parse := func(m *rbacv3.RBACPerRoute) any {
		cfg, ok, err := filter.ParsePerRoute("envoy.filters.http.rbac", mustAny(t, m))
		if err != nil || !ok {
			t.Fatalf("ParsePerRoute: ok=%v err=%v", ok, err)
		}
		return cfg
	}
	// RBACPerRoute without rbac turns the filter off for the route.
	h := newHarness(t, []filter.Middleware{mw}, fakeRoute{"envoy.filters.http.rbac": parse(&rbacv3.RBACPerRoute{})}, nil)
	if r := h.do(t, "GET", "/", nil); r.code != http.StatusOK {
		t.Fatalf("disabled route: %d", r.code)
	}
	// An override replaces the filter-level rules.
	override := parse(&rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"get-only": pol([]*rbacconfigv3.Permission{methodPerm("GET")}, []*rbacconfigv3.Principal{anyPrin()}),
	})}})
	h = newHarness(t, []filter.Middleware{mw}, fakeRoute{"envoy.filters.http.rbac": override}, nil)
	if r := h.do(t, "GET", "/", nil); r.code != http.StatusOK {
		t.Fatalf("override GET: %d", r.code)
	}
	if r := h.do(t, "POST", "/", nil); r.code != http.StatusForbidden {
		t.Fatalf("override POST: %d", r.code)
	}
	// A route without per-route config keeps the filter-level rules.
	h = newHarness(t, []filter.Middleware{mw}, fakeRoute{}, nil)
	if r := h.do(t, "GET", "/", nil); r.code != http.StatusForbidden {
		t.Fatalf("filter-level: %d", r.code)
	}
}

func TestGRPCDenial(t *testing.T) {
	mw := build(t, "r", &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW}})
	h := newHarness(t, []filter.Middleware{mw}, nil, nil)
	r := h.do(t, "POST", "/pkg.Svc/Method", map[string]string{"Content-Type": "application/grpc"})
	if r.code != http.StatusOK || r.hdr.Get("Grpc-Status") != "7" || r.hdr.Get("Grpc-Message") != "RBAC: access denied" {
		t.Fatalf("got %d grpc-status=%q message=%q", r.code, r.hdr.Get("Grpc-Status"), r.hdr.Get("Grpc-Message"))
	}
	if !r.info.Flags.Has(stream.UnauthorizedRBAC) || r.info.GRPCStatus != "7" {
		t.Fatalf("info %v %q", r.info.Flags, r.info.GRPCStatus)
	}
}

// Fail closed: a config the filter cannot evaluate is rejected when built, with its path.
func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name string
		m    *rbacv3.RBAC
		want string
	}{
		{"uri_template", &rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{
			"p": pol([]*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{}}}}, []*rbacconfigv3.Principal{anyPrin()}),
		})}, `rules.policies["p"].permissions[0].uri_template`},
		{"shadow filter_state", &rbacv3.RBAC{ShadowRules: rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{
			"p": pol([]*rbacconfigv3.Permission{anyPerm()}, []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{}}}}),
		})}, `shadow_rules.policies["p"].principals[0].filter_state`},
		{"matcher tree", &rbacv3.RBAC{Matcher: &xdsmatcherv3.Matcher{}}, "matcher: matcher trees are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := filter.Build("rbac", mustAny(t, tt.m))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	// Per-route configs are checked the same way.
	_, _, err := filter.ParsePerRoute("rbac", mustAny(t, &rbacv3.RBACPerRoute{Rbac: tests[0].m}))
	if err == nil || !strings.Contains(err.Error(), "uri_template") {
		t.Fatalf("per-route: %v", err)
	}
}

// Claims verified by jwt_authn reach RBAC through the request: Istio's
// request.auth.principal policy allows that token's principal and nothing else.
func TestJWTClaimsReachRBAC(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	const iss = "https://accounts.example.com"
	jwtCfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": {
			Issuer:              iss,
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(jwks)}}},
			PayloadInMetadata:   iss,
		}},
		Rules: []*jwtv3.RequirementRule{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{
				{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}},
				{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}},
			}}}}},
		}},
	}
	jwtMW, err := filter.Build("envoy.filters.http.jwt_authn", mustAny(t, jwtCfg))
	if err != nil {
		t.Fatal(err)
	}
	meta := func(path []string, sm *matcherv3.StringMatcher) *rbacconfigv3.Principal {
		m := &matcherv3.MetadataMatcher{Filter: "istio_authn", Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm}}}
		for _, k := range path {
			m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
		}
		return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Metadata{Metadata: m}}
	}
	rbacMW := build(t, "envoy.filters.http.rbac", &rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"ns[default]-policy[require-alice]-rule[0]": pol([]*rbacconfigv3.Permission{anyPerm()}, []*rbacconfigv3.Principal{meta([]string{"request.auth.principal"}, exact(iss+"/alice"))}),
		// Envoy's own namespace works too: payload_in_metadata under jwt_authn.
		"claims-admin": pol([]*rbacconfigv3.Permission{anyPerm()}, []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
			Filter: "envoy.filters.http.jwt_authn",
			Path: []*matcherv3.MetadataMatcher_PathSegment{
				{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: iss}},
				{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "role"}},
			},
			Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact("admin")}},
		}}}}),
	})})
	h := newHarness(t, []filter.Middleware{jwtMW, rbacMW}, nil, nil)
	token := func(sub, role string) map[string]string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: priv, KeyID: "k1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := map[string]any{"iss": iss, "sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
		if role != "" {
			c["role"] = role
		}
		payload, _ := json.Marshal(c)
		obj, err := s.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := obj.CompactSerialize()
		return map[string]string{"Authorization": "Bearer " + tok}
	}
	if r := h.do(t, "GET", "/", token("alice", "")); r.code != http.StatusOK {
		t.Fatalf("alice: %d %q", r.code, r.body)
	}
	r := h.do(t, "GET", "/", token("bob", ""))
	if r.code != http.StatusForbidden || r.body != "RBAC: access denied" {
		t.Fatalf("bob: %d %q", r.code, r.body)
	}
	if r := h.do(t, "GET", "/", token("bob", "admin")); r.code != http.StatusOK {
		t.Fatalf("bob as admin: %d %q", r.code, r.body)
	}
	// No token passes jwt_authn (allow_missing) and is then denied by RBAC.
	if r := h.do(t, "GET", "/", nil); r.code != http.StatusForbidden {
		t.Fatalf("no token: %d", r.code)
	}
	// A client cannot claim a principal with a header: only verified tokens count.
	if r := h.do(t, "GET", "/", map[string]string{"request.auth.principal": iss + "/alice"}); r.code != http.StatusForbidden {
		t.Fatalf("forged header: %d", r.code)
	}
}

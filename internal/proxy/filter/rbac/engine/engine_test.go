package engine

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	exprv1 "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// --- builders ---

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func regex(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

func cidr(a string, n uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(n)}
}

func permAny() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func prinAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func permHeader(name string, sm *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}}}
}

func permPath(sm *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}
}

func metaMatcher(filter string, path []string, v *matcherv3.ValueMatcher) *matcherv3.MetadataMatcher {
	m := &matcherv3.MetadataMatcher{Filter: filter, Value: v}
	for _, k := range path {
		m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return m
}

func strValue(sm *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm}}
}

func listValue(v *matcherv3.ValueMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: v}}}}
}

func rbac(action rbacv3.RBAC_Action, perms []*rbacv3.Permission, prins []*rbacv3.Principal) *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{"p": {Permissions: perms, Principals: prins}}}
}

// fakeMeta is dynamic metadata for the tests: namespaces of JSON-shaped values.
type fakeMeta map[string]map[string]any

func (f fakeMeta) Lookup(filter string, path []string) (any, bool) {
	var v any = f[filter]
	if f[filter] == nil {
		return nil, false
	}
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func request(method, target string, hdr map[string]string) *http.Request {
	r, err := http.NewRequest(method, "http://svc.ns.svc.cluster.local"+target, nil)
	if err != nil {
		panic(err)
	}
	r.RequestURI = target
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	return r
}

func baseAttrs() Attrs {
	return Attrs{
		Source:       netip.MustParseAddrPort("10.1.2.3:40000"),
		DirectSource: netip.MustParseAddrPort("10.1.2.3:40000"),
		Destination:  netip.MustParseAddrPort("10.9.0.5:8080"),
		TLS:          true,
		Principal:    "spiffe://cluster.local/ns/default/sa/productpage",
		SNI:          "outbound_.8080_._.reviews.default.svc.cluster.local",
		Request:      request("GET", "/api/v1/items?x=1", map[string]string{"X-Tenant": "acme"}),
	}
}

// --- permission and principal kinds, under ALLOW and DENY ---

func TestKinds(t *testing.T) {
	tests := []struct {
		name  string
		perm  *rbacv3.Permission
		prin  *rbacv3.Principal
		attrs func(a *Attrs)
		match bool
	}{
		{"any", permAny(), prinAny(), nil, true},
		{"header exact", permHeader("x-tenant", exact("acme")), prinAny(), nil, true},
		{"header mismatch", permHeader("x-tenant", exact("other")), prinAny(), nil, false},
		{"header missing", permHeader("x-absent", prefix("")), prinAny(), nil, false},
		{":method", permHeader(":method", exact("GET")), prinAny(), nil, true},
		{":method other", permHeader(":method", exact("POST")), prinAny(), nil, false},
		{":path includes query", permHeader(":path", exact("/api/v1/items?x=1")), prinAny(), nil, true},
		{":authority", permHeader(":authority", prefix("svc.ns")), prinAny(), nil, true},
		{"host alias", permHeader("host", exact("svc.ns.svc.cluster.local")), prinAny(), nil, true},
		{":scheme https over TLS", permHeader(":scheme", exact("https")), prinAny(), nil, true},
		{"url_path prefix", permPath(prefix("/api/")), prinAny(), nil, true},
		{"url_path excludes query", permPath(exact("/api/v1/items")), prinAny(), nil, true},
		{"url_path normalized", permPath(exact("/admin")), prinAny(), func(a *Attrs) {
			a.Request = request("GET", "/public/../admin", nil)
		}, true},
		{"url_path merged slashes", permPath(prefix("/admin")), prinAny(), func(a *Attrs) {
			a.Request = request("GET", "//admin/x", nil)
		}, true},
		{"url_path percent-decoded", permPath(exact("/admin")), prinAny(), func(a *Attrs) {
			a.Request = request("GET", "/%61dmin", nil)
		}, true},
		{"url_path regex", permPath(regex(`/api/v[0-9]+/.*`)), prinAny(), nil, true},
		{"url_path on a connection", permPath(prefix("/")), prinAny(), func(a *Attrs) { a.Request = nil }, false},
		{"destination_ip", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.9.0.0", 16)}}, prinAny(), nil, true},
		{"destination_ip outside", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.8.0.0", 16)}}, prinAny(), nil, false},
		{"destination_ip v4-mapped", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.9.0.5", 32)}}, prinAny(), func(a *Attrs) {
			a.Destination = netip.MustParseAddrPort("[::ffff:10.9.0.5]:8080")
		}, true},
		{"destination_port", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}}, prinAny(), nil, true},
		{"destination_port other", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 9090}}, prinAny(), nil, false},
		{"destination_port_range", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 8000, End: 8081}}}, prinAny(), nil, true},
		{"destination_port_range end exclusive", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 8000, End: 8080}}}, prinAny(), nil, false},
		{"requested_server_name", &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: regex(`.*\.reviews\..*`)}}, prinAny(), nil, true},
		{"and_rules", &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			permHeader(":method", exact("GET")), permPath(prefix("/api"))}}}}, prinAny(), nil, true},
		{"and_rules one fails", &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			permHeader(":method", exact("GET")), permPath(prefix("/other"))}}}}, prinAny(), nil, false},
		{"or_rules", &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			permHeader(":method", exact("POST")), permPath(prefix("/api"))}}}}, prinAny(), nil, true},
		{"not_rule", &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: permHeader(":method", exact("POST"))}}, prinAny(), nil, true},
		{"not_rule negates", &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: permAny()}}, prinAny(), nil, false},
		{"permission metadata", &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: metaMatcher("istio_authn", []string{"request.auth.principal"}, strValue(exact("iss/sub")))}}, prinAny(), func(a *Attrs) {
			a.Metadata = fakeMeta{"istio_authn": {"request.auth.principal": "iss/sub"}}
		}, true},

		{"authenticated exact", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: exact("spiffe://cluster.local/ns/default/sa/productpage")}}}, nil, true},
		{"authenticated other sa", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: exact("spiffe://cluster.local/ns/default/sa/other")}}}, nil, false},
		{"authenticated needs TLS", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: prefix("")}}}, func(a *Attrs) { a.TLS = false }, false},
		{"authenticated unset name: any TLS peer", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}}, nil, true},
		{"source_ip", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("10.1.0.0", 16)}}, nil, true},
		{"remote_ip", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.1.2.3", 32)}}, nil, true},
		{"remote_ip outside", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("192.168.0.0", 16)}}, nil, false},
		{"direct_remote_ip", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.1.2.0", 24)}}, nil, true},
		{"ipv6 cidr vs v4 peer", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("::", 0)}}, nil, false},
		{"principal header", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{
			Name: "x-tenant", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}, nil, true},
		{"principal url_path", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: prefix("/api")}}}}, nil, true},
		{"and_ids", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			prinAny(), {Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}}}}}}, nil, true},
		{"or_ids", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("192.168.0.0", 16)}}, {Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}}}}}}, nil, true},
		{"not_id", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}}}}, nil, false},
		{"istio source.principal from the certificate", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"source.principal"}, strValue(exact("cluster.local/ns/default/sa/productpage")))}}, nil, true},
		{"istio source.namespace from the certificate", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"source.namespace"}, strValue(exact("default")))}}, nil, true},
		{"istio source.principal without TLS", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"source.principal"}, strValue(prefix("")))}}, func(a *Attrs) { a.TLS = false }, false},
		{"request.auth.principal", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"request.auth.principal"}, strValue(exact("https://issuer/alice")))}}, func(a *Attrs) {
			a.Metadata = fakeMeta{"istio_authn": {"request.auth.principal": "https://issuer/alice"}}
		}, true},
		{"request.auth.principal missing metadata", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"request.auth.principal"}, strValue(prefix("")))}}, nil, false},
		{"claims list_match on a list", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"request.auth.claims", "groups"}, listValue(strValue(exact("admins"))))}}, func(a *Attrs) {
			a.Metadata = fakeMeta{"istio_authn": {"request.auth.claims": map[string]any{"groups": []any{"users", "admins"}}}}
		}, true},
		{"claims list_match on a scalar", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"request.auth.claims", "iss"}, listValue(strValue(exact("iss1"))))}}, func(a *Attrs) {
			a.Metadata = fakeMeta{"istio_authn": {"request.auth.claims": map[string]any{"iss": "iss1"}}}
		}, true},
		{"nested claim", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"request.auth.claims", "a", "b"}, listValue(strValue(exact("c"))))}}, func(a *Attrs) {
			a.Metadata = fakeMeta{"istio_authn": {"request.auth.claims": map[string]any{"a": map[string]any{"b": "c"}}}}
		}, true},
		{"audiences string_match on a list", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metaMatcher("istio_authn", []string{"request.auth.audiences"}, strValue(exact("svc-b")))}}, func(a *Attrs) {
			a.Metadata = fakeMeta{"istio_authn": {"request.auth.audiences": []any{"svc-a", "svc-b"}}}
		}, true},
		{"sourced_metadata dynamic", permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
			MetadataMatcher: metaMatcher("envoy.filters.http.jwt_authn", []string{"payload", "sub"}, strValue(exact("alice")))}}}, func(a *Attrs) {
			a.Metadata = fakeMeta{"envoy.filters.http.jwt_authn": {"payload": map[string]any{"sub": "alice"}}}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, action := range []rbacv3.RBAC_Action{rbacv3.RBAC_ALLOW, rbacv3.RBAC_DENY} {
				e, err := Compile(rbac(action, []*rbacv3.Permission{tt.perm}, []*rbacv3.Principal{tt.prin}), Options{})
				if err != nil {
					t.Fatal(err)
				}
				a := baseAttrs()
				if tt.attrs != nil {
					tt.attrs(&a)
				}
				allowed, policy := e.Decide(&a)
				wantAllowed := tt.match == (action == rbacv3.RBAC_ALLOW)
				if allowed != wantAllowed {
					t.Errorf("%v: allowed = %v, want %v", action, allowed, wantAllowed)
				}
				if tt.match && policy != "p" {
					t.Errorf("%v: policy %q, want p", action, policy)
				}
				if !tt.match && policy != "" {
					t.Errorf("%v: policy %q, want none", action, policy)
				}
			}
		})
	}
}

func TestPolicyOrderAndActions(t *testing.T) {
	m := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"zeta":  {Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{prinAny()}},
		"alpha": {Permissions: []*rbacv3.Permission{permPath(prefix("/api"))}, Principals: []*rbacv3.Principal{prinAny()}},
		"beta":  {Permissions: []*rbacv3.Permission{permPath(prefix("/nope"))}, Principals: []*rbacv3.Principal{prinAny()}},
	}}
	e, err := Compile(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(e.Policies(), ","); got != "alpha,beta,zeta" {
		t.Fatalf("order %s", got)
	}
	a := baseAttrs()
	if ok, p := e.Decide(&a); ok || p != "alpha" {
		t.Fatalf("DENY: allowed=%v policy=%q, want denied by alpha", ok, p)
	}
	// A policy needs a permission AND a principal.
	m2 := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("192.168.0.0", 16)}}}},
	}}
	if e, err = Compile(m2, Options{}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.Decide(&a); ok {
		t.Fatal("ALLOW matched on permission alone")
	}
	// No policies: ALLOW denies everything, DENY allows everything, LOG allows.
	for action, want := range map[rbacv3.RBAC_Action]bool{rbacv3.RBAC_ALLOW: false, rbacv3.RBAC_DENY: true, rbacv3.RBAC_LOG: true} {
		e, err := Compile(&rbacv3.RBAC{Action: action}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := e.Decide(&a); ok != want {
			t.Errorf("%v with no policies: allowed=%v", action, ok)
		}
	}
	// LOG matches but never denies.
	e, _ = Compile(rbac(rbacv3.RBAC_LOG, []*rbacv3.Permission{permAny()}, []*rbacv3.Principal{prinAny()}), Options{})
	if ok, p := e.Decide(&a); !ok || p != "p" {
		t.Fatalf("LOG: allowed=%v policy=%q", ok, p)
	}
}

func TestHeaderMatcherForms(t *testing.T) {
	r := request("GET", "/", map[string]string{"X-N": "42", "X-E": ""})
	r.Header.Add("X-Multi", "a")
	r.Header.Add("X-Multi", "b")
	tests := []struct {
		name string
		h    *routev3.HeaderMatcher
		want bool
	}{
		{"range in", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 40, End: 43}}}, true},
		{"range out", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 43, End: 50}}}, false},
		{"present", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, true},
		{"present false on missing", &routev3.HeaderMatcher{Name: "x-missing", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, true},
		{"no specifier means present", &routev3.HeaderMatcher{Name: "x-e"}, true},
		{"invert", &routev3.HeaderMatcher{Name: "x-n", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "41"}}, true},
		{"invert does not rescue missing", &routev3.HeaderMatcher{Name: "x-missing", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "41"}}, false},
		{"missing as empty", &routev3.HeaderMatcher{Name: "x-missing", TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: ""}}, true},
		{"repeated joined", &routev3.HeaderMatcher{Name: "x-multi", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "a,b"}}, true},
		{"suffix", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "2"}}, true},
		{"contains ignore case", &routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "NS.SVC"}, IgnoreCase: true}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hm, err := CompileHeader(tt.h)
			if err != nil {
				t.Fatal(err)
			}
			if got := hm.MatchRequest(r); got != tt.want {
				t.Fatalf("got %v", got)
			}
		})
	}
}

// Fail closed: everything the engine cannot evaluate is rejected, with its field path.
func TestCompileRejects(t *testing.T) {
	tests := []struct {
		name string
		m    *rbacv3.RBAC
		opts Options
		want string
	}{
		{"uri_template", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{Name: "x"}}}}, []*rbacv3.Principal{prinAny()}),
			Options{}, `policies["p"].permissions[0].uri_template: uri templates are not supported`},
		{"matcher extension", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{{Rule: &rbacv3.Permission_Matcher{Matcher: &corev3.TypedExtensionConfig{Name: "x"}}}}, []*rbacv3.Principal{prinAny()}),
			Options{}, `permissions[0].matcher: matcher extensions are not supported`},
		{"nested unsupported", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			permAny(), {Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{}}}}}}}}}}, []*rbacv3.Principal{prinAny()}),
			Options{}, `permissions[0].and_rules.rules[1].not_rule.uri_template`},
		{"filter_state", rbac(rbacv3.RBAC_ALLOW, []*rbacv3.Permission{permAny()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{Key: "k"}}}}),
			Options{}, `principals[0].filter_state: filter state is not supported`},
		{"custom principal", rbac(rbacv3.RBAC_ALLOW, []*rbacv3.Permission{permAny()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Custom{Custom: &corev3.TypedExtensionConfig{}}}}),
			Options{}, `principals[0].custom`},
		{"route metadata", rbac(rbacv3.RBAC_ALLOW, []*rbacv3.Permission{{Rule: &rbacv3.Permission_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
			MetadataMatcher: metaMatcher("f", []string{"k"}, strValue(exact("v"))), MetadataSource: rbacv3.MetadataSource_ROUTE}}}}, []*rbacv3.Principal{prinAny()}),
			Options{}, `sourced_metadata.metadata_source: only DYNAMIC`},
		{"empty rule", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{{}}, []*rbacv3.Principal{prinAny()}), Options{}, `permissions[0]: rule: one of the permission rules is required`},
		{"condition", &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"c": {Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{prinAny()},
			Condition: &exprv1.Expr{}}}}, Options{}, `policies["c"].condition: CEL conditions are not supported`},
		{"no principals", &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"c": {Permissions: []*rbacv3.Permission{permAny()}}}}, Options{}, `policies["c"].principals: at least one is required`},
		{"bad regex", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{permPath(regex("("))}, []*rbacv3.Principal{prinAny()}), Options{}, `url_path.path: safe_regex`},
		{"bad cidr", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.0.0.0", 33)}}}, []*rbacv3.Principal{prinAny()}), Options{}, `destination_ip: prefix_len: 33`},
		{"unknown pseudo-header", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{permHeader(":protocol", exact("x"))}, []*rbacv3.Principal{prinAny()}), Options{}, `unsupported pseudo-header`},
		{"network header", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{permHeader("x", exact("y"))}, []*rbacv3.Principal{prinAny()}), Options{Network: true}, `permissions[0].header: only HTTP requests have it`},
		{"network url_path", rbac(rbacv3.RBAC_DENY, []*rbacv3.Permission{permAny()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/")}}}}}), Options{Network: true}, `principals[0].url_path: only HTTP requests have it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.m, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestCompileCollectsEveryError(t *testing.T) {
	m := &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
		"a": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{}}}}, Principals: []*rbacv3.Principal{prinAny()}},
		"b": {Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_FilterState{}}}},
	}}
	_, err := Compile(m, Options{})
	if err == nil || !strings.Contains(err.Error(), `policies["a"]`) || !strings.Contains(err.Error(), `policies["b"]`) {
		t.Fatalf("err = %v", err)
	}
}

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "/",
		"/":                "/",
		"/a/b":             "/a/b",
		"/a/b/":            "/a/b/",
		"/a/../b":          "/b",
		"/../../etc":       "/etc",
		"//a///b":          "/a/b",
		"/a/./b/.":         "/a/b/",
		"/a/..":            "/",
		"a/b":              "/a/b",
		"*":                "*",
		"/public/../admin": "/admin",
	} {
		if got := NormalizePath(in); got != want {
			t.Errorf("NormalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValueMatchers(t *testing.T) {
	meta := fakeMeta{"f": {"n": 3.0, "b": true, "nul": nil, "s": "x", "obj": map[string]any{"k": "v"}}}
	tests := []struct {
		name   string
		key    string
		v      *matcherv3.ValueMatcher
		invert bool
		want   bool
	}{
		{"double exact", "n", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_DoubleMatch{DoubleMatch: &matcherv3.DoubleMatcher{MatchPattern: &matcherv3.DoubleMatcher_Exact{Exact: 3}}}}, false, true},
		{"double range", "n", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_DoubleMatch{DoubleMatch: &matcherv3.DoubleMatcher{MatchPattern: &matcherv3.DoubleMatcher_Range{Range: &typev3.DoubleRange{Start: 3, End: 4}}}}}, false, true},
		{"bool", "b", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_BoolMatch{BoolMatch: true}}, false, true},
		{"null", "nul", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}}, false, true},
		{"null on missing", "missing", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}}, false, false},
		{"present", "obj", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}, false, true},
		{"present on missing", "missing", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}, false, false},
		{"invert on missing", "missing", strValue(exact("x")), true, true},
		{"invert on match", "s", strValue(exact("x")), true, false},
		{"string on number", "n", strValue(exact("3")), false, false},
		{"or", "s", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{
			strValue(exact("y")), strValue(exact("x"))}}}}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mm := metaMatcher("f", []string{tt.key}, tt.v)
			mm.Invert = tt.invert
			e, err := Compile(rbac(rbacv3.RBAC_ALLOW, []*rbacv3.Permission{{Rule: &rbacv3.Permission_Metadata{Metadata: mm}}}, []*rbacv3.Principal{prinAny()}), Options{})
			if err != nil {
				t.Fatal(err)
			}
			a := baseAttrs()
			a.Metadata = meta
			if got, _ := e.Decide(&a); got != tt.want {
				t.Fatalf("got %v", got)
			}
		})
	}
}

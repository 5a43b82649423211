package router

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

func TestVirtualHostSelection(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
		vhost("exact", []string{"exact.com"}, prefixRoute("/", "exact")),
		// Istio lists the service with and without its port.
		vhost("reviews", []string{"reviews", "reviews:9080", "reviews.default.svc.cluster.local"}, prefixRoute("/", "reviews")),
		vhost("ported", []string{"only.port:8080"}, prefixRoute("/", "ported")),
		vhost("suffix", []string{"*.foo.com"}, prefixRoute("/", "suffix")),
		vhost("longer-suffix", []string{"*.bar.foo.com"}, prefixRoute("/", "longer-suffix")),
		vhost("prefix", []string{"foo.*"}, prefixRoute("/", "prefix")),
		vhost("longer-prefix", []string{"foo.bar.*"}, prefixRoute("/", "longer-prefix")),
		vhost("upper", []string{"UPPER.example.com"}, prefixRoute("/", "upper")),
		vhost("v6", []string{"[::1]"}, prefixRoute("/", "v6")),
		vhost("default", []string{"*"}, prefixRoute("/", "default")),
	}}
	tb := mustCompile(t, rc)
	cases := []struct{ host, want string }{
		{"exact.com", "exact"},
		{"EXACT.com", "exact"},
		{"exact.com:80", "exact"}, // no port in domains: matched without it
		{"reviews", "reviews"},
		{"reviews:9080", "reviews"},
		{"reviews:1234", "reviews"},
		{"reviews.default.svc.cluster.local:9080", "reviews"},
		{"only.port:8080", "ported"},
		{"only.port", "default"},
		{"only.port:9090", "default"},
		{"a.foo.com", "suffix"},
		{"a.bar.foo.com", "longer-suffix"}, // longest suffix wins
		{"bar.foo.com", "suffix"},          // "*.bar.foo.com" needs at least one char before
		{".foo.com", "default"},            // the wildcard must match something... "*" catches it
		{"foo.com", "prefix"},
		{"foo.org", "prefix"},
		{"foo.bar.org", "longer-prefix"},
		{"a.foo.com:443", "suffix"},
		{"foo.org:80", "prefix"}, // prefix wildcard matches with the port attached
		{"upper.example.com", "upper"},
		{"[::1]", "v6"},
		{"[::1]:8080", "v6"},
		{"unknown", "default"},
		{"", "default"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = c.host
		rt, vh := tb.Match(r)
		if vh == nil || rt == nil {
			t.Errorf("host %q: no match, want %s", c.host, c.want)
			continue
		}
		if vh.Name() != c.want {
			t.Errorf("host %q: virtual host %s, want %s", c.host, vh.Name(), c.want)
		}
	}
	// ".foo.com" must not match "*.foo.com": the wildcard needs one character.
	if vh := tb.lookupHost(".foo.com"); vh != nil && vh.Name() == "suffix" {
		t.Errorf(".foo.com matched *.foo.com")
	}
}

func TestNoDefaultVirtualHost(t *testing.T) {
	tb := mustCompile(t, &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
		vhost("a", []string{"a"}, prefixRoute("/x", "a")),
	}})
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "b"
	if rt, vh := tb.Match(r); rt != nil || vh != nil {
		t.Fatalf("host b matched %v %v", rt, vh)
	}
	r.Host = "a"
	if rt, vh := tb.Match(r); rt != nil || vh == nil {
		t.Fatalf("path / on a: route %v vhost %v, want no route in vhost a", rt, vh)
	}
}

func TestIgnorePortAndVhostHeader(t *testing.T) {
	tb := mustCompile(t, &routev3.RouteConfiguration{Name: "rc", IgnorePortInHostMatching: true, VirtualHosts: []*routev3.VirtualHost{
		vhost("a", []string{"a"}, prefixRoute("/", "a")),
	}})
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "a:1234"
	if _, vh := tb.Match(r); vh == nil || vh.Name() != "a" {
		t.Fatalf("ignore_port_in_host_matching: got %v", vh)
	}
	tb = mustCompile(t, &routev3.RouteConfiguration{Name: "rc", VhostHeader: "x-vhost", VirtualHosts: []*routev3.VirtualHost{
		vhost("a", []string{"a"}, prefixRoute("/", "a")),
		vhost("b", []string{"b"}, prefixRoute("/", "b")),
	}})
	r.Host = "a"
	r.Header.Set("X-Vhost", "b")
	if _, vh := tb.Match(r); vh == nil || vh.Name() != "b" {
		t.Fatalf("vhost_header: got %v", vh)
	}
}

func hm(name string, spec *routev3.HeaderMatcher) *routev3.HeaderMatcher {
	spec.Name = name
	return spec
}

func TestRouteMatchKinds(t *testing.T) {
	m := func(rm *routev3.RouteMatch) *routev3.RouteMatch { return rm }
	pfx := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
	}
	withHeaders := func(h ...*routev3.HeaderMatcher) *routev3.RouteMatch {
		rm := pfx("/")
		rm.Headers = h
		return rm
	}
	type req struct {
		method, target, host string
		headers              map[string]string
		tls                  *tls.ConnectionState
	}
	cases := []struct {
		name  string
		match *routev3.RouteMatch
		yes   []req
		no    []req
	}{
		{"prefix", pfx("/api"), []req{{target: "/api"}, {target: "/api/v1"}, {target: "/apix"}, {target: "/api?x=1"}}, []req{{target: "/ap"}, {target: "/API"}}},
		{"prefix case-insensitive", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/Api"}, CaseSensitive: wrapperspb.Bool(false)}),
			[]req{{target: "/api/x"}, {target: "/APIX"}}, []req{{target: "/ap"}}},
		{"path", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}),
			[]req{{target: "/exact"}, {target: "/exact?q=1"}}, []req{{target: "/exact/"}, {target: "/exactly"}, {target: "/EXACT"}}},
		{"path case-insensitive", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}, CaseSensitive: wrapperspb.Bool(false)}),
			[]req{{target: "/EXACT"}}, []req{{target: "/exact/"}}},
		{"safe_regex full match", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/v[0-9]+/items`)}}),
			[]req{{target: "/v1/items"}, {target: "/v22/items?x"}}, []req{{target: "/v1/items/3"}, {target: "/x/v1/items"}}},
		{"path_separated_prefix", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}}),
			[]req{{target: "/api"}, {target: "/api/"}, {target: "/api/x"}, {target: "/api?x=1"}}, []req{{target: "/apix"}, {target: "/ap"}}},
		{"header exact", withHeaders(hm("end-user", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "jason"}})),
			[]req{{headers: map[string]string{"End-User": "jason"}}}, []req{{headers: map[string]string{"End-User": "Jason"}}, {}}},
		{"header string_match ignore_case", withHeaders(hm("end-user", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "jason"}, IgnoreCase: true}}})),
			[]req{{headers: map[string]string{"end-user": "JASON"}}}, []req{{headers: map[string]string{"end-user": "mary"}}}},
		{"header prefix/suffix/contains", withHeaders(
			hm("a", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "pre"}}),
			hm("b", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "suf"}}),
			hm("c", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "mid"}}),
		), []req{{headers: map[string]string{"a": "prefix", "b": "asuf", "c": "amidb"}}},
			[]req{{headers: map[string]string{"a": "xpre", "b": "asuf", "c": "amidb"}}, {headers: map[string]string{"a": "pre", "b": "sufx", "c": "mid"}}, {headers: map[string]string{"a": "pre", "b": "suf"}}}},
		{"header string_match contains ignore_case", withHeaders(hm("ua", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "chrome"}, IgnoreCase: true}}})),
			[]req{{headers: map[string]string{"ua": "Mozilla Chrome/1"}}}, []req{{headers: map[string]string{"ua": "Firefox"}}}},
		{"header safe_regex", withHeaders(hm("x-v", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: regex(`v[12]`)}})),
			[]req{{headers: map[string]string{"x-v": "v1"}}}, []req{{headers: map[string]string{"x-v": "v12"}}, {headers: map[string]string{"x-v": "v3"}}}},
		{"header range", withHeaders(hm("n", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -10, End: 10}}})),
			[]req{{headers: map[string]string{"n": "-10"}}, {headers: map[string]string{"n": "9"}}}, []req{{headers: map[string]string{"n": "10"}}, {headers: map[string]string{"n": "x"}}, {}}},
		{"header present", withHeaders(hm("p", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})),
			[]req{{headers: map[string]string{"p": ""}}, {headers: map[string]string{"p": "x"}}}, []req{{}}},
		{"header absent (present_match false)", withHeaders(hm("p", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}})),
			[]req{{}}, []req{{headers: map[string]string{"p": "x"}}}},
		{"header no specifier means present", withHeaders(&routev3.HeaderMatcher{Name: "p"}),
			[]req{{headers: map[string]string{"p": "x"}}}, []req{{}}},
		{"header invert", withHeaders(hm("v", &routev3.HeaderMatcher{InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "bad"}})),
			[]req{{headers: map[string]string{"v": "good"}}}, []req{{headers: map[string]string{"v": "bad"}}, {} /* missing never matches */}},
		{"header invert present", withHeaders(hm("v", &routev3.HeaderMatcher{InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})),
			[]req{{}}, []req{{headers: map[string]string{"v": "x"}}}},
		{"header invert treat_missing_as_empty", withHeaders(hm("v", &routev3.HeaderMatcher{InvertMatch: true, TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "bad"}})),
			[]req{{headers: map[string]string{"v": "good"}}, {}}, []req{{headers: map[string]string{"v": "bad"}}}},
		{"header regex treat_missing_as_empty", withHeaders(hm("v", &routev3.HeaderMatcher{TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: regex(`^$`)}})),
			[]req{{}}, []req{{headers: map[string]string{"v": "x"}}}},
		{":method", withHeaders(hm(":method", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "POST"}})),
			[]req{{method: "POST"}}, []req{{method: "GET"}}},
		{":authority", withHeaders(hm(":authority", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: ":9080"}})),
			[]req{{host: "reviews:9080"}}, []req{{host: "reviews"}}},
		{":path", withHeaders(hm(":path", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "/a?b=c"}})),
			[]req{{target: "/a?b=c"}}, []req{{target: "/a"}}},
		{":scheme", withHeaders(hm(":scheme", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "https"}})),
			[]req{{tls: &tls.ConnectionState{}}}, []req{{}}},
		{"query string_match", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "canary", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("a b")}},
		}}), []req{{target: "/?canary=a+b"}, {target: "/?x=1&canary=a%20b"}}, []req{{target: "/?canary=ab"}, {target: "/"}, {target: "/?canary"}}},
		{"query present", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
		}}), []req{{target: "/?debug"}, {target: "/?debug=0"}}, []req{{target: "/?debugx=1"}}},
		{"grpc", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Grpc: &routev3.RouteMatch_GrpcRouteMatchOptions{}}),
			[]req{{headers: map[string]string{"Content-Type": "application/grpc"}}, {headers: map[string]string{"Content-Type": "application/grpc+proto"}}},
			[]req{{headers: map[string]string{"Content-Type": "application/json"}}, {headers: map[string]string{"Content-Type": "application/grpc-web"}}}},
		{"cookie", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Cookies: []*routev3.CookieMatcher{{Name: "user", StringMatch: exact("jason")}}}),
			[]req{{headers: map[string]string{"Cookie": "a=1; user=jason"}}}, []req{{headers: map[string]string{"Cookie": "user=mary"}}, {}}},
		{"tls presented", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, TlsContext: &routev3.RouteMatch_TlsContextMatchOptions{Presented: wrapperspb.Bool(true)}}),
			[]req{{tls: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}}}, []req{{}, {tls: &tls.ConnectionState{}}}},
		{"connect", m(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}}),
			[]req{{method: "CONNECT", target: "example.com:443"}}, []req{{method: "GET"}}},
	}
	build := func(q req) *http.Request {
		method, target := q.method, q.target
		if method == "" {
			method = "GET"
		}
		if target == "" {
			target = "/"
		}
		r := httptest.NewRequest(method, target, nil)
		if method == "CONNECT" {
			r.URL.Path = ""
		}
		r.Host = "h"
		if q.host != "" {
			r.Host = q.host
		}
		for k, v := range q.headers {
			r.Header.Set(k, v)
		}
		r.TLS = q.tls
		return r
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := mustCompile(t, &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
				vhost("all", []string{"*"}, routeWith(c.match, "hit"), prefixRoute("/", "fallback")),
			}})
			for _, q := range c.yes {
				rt, _ := tb.Match(build(q))
				if rt == nil || rt.Cluster() != "hit" {
					t.Errorf("%+v: want match", q)
				}
			}
			for _, q := range c.no {
				rt, _ := tb.Match(build(q))
				if rt != nil && rt.Cluster() == "hit" {
					t.Errorf("%+v: want no match", q)
				}
			}
		})
	}
}

func TestRuntimeFraction(t *testing.T) {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, RuntimeFraction: &corev3.RuntimeFractionalPercent{
		DefaultValue: &typev3.FractionalPercent{Numerator: 0, Denominator: typev3.FractionalPercent_HUNDRED},
	}}
	tb := mustCompile(t, &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
		vhost("all", []string{"*"}, routeWith(rm, "never"), prefixRoute("/", "always")),
	}})
	for i := 0; i < 100; i++ {
		if rt, _ := tb.Match(httptest.NewRequest("GET", "/", nil)); rt.Cluster() != "always" {
			t.Fatalf("0%% runtime_fraction matched")
		}
	}
}

func TestCompileErrors(t *testing.T) {
	good := func() *routev3.Route { return prefixRoute("/", "c") }
	cases := []struct {
		name string
		rc   *routev3.RouteConfiguration
		want []string
	}{
		{"duplicate domain", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"x"}, good()), vhost("b", []string{"X"}, good()),
		}}, []string{`route config "rc"`, `virtual_hosts[1] ("b")`, `"x" is already used by virtual host "a"`}},
		{"bad wildcard", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"a.*.com"}, good()),
		}}, []string{`domains[0]`, "wildcard"}},
		{"bad regex", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"a"}, good(), routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex("(")}}, "c")),
		}}, []string{`virtual_hosts[0] ("a")`, `routes[1] ("to-c")`, "match.safe_regex"}},
		{"no action", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"a"}, &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}}),
		}}, []string{"routes[0]", "action"}},
		{"non-forwarding", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"a"}, &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}}),
		}}, []string{"non_forwarding_action: unsupported"}},
		{"pseudo header mutation", &routev3.RouteConfiguration{Name: "rc", RequestHeadersToAdd: []*corev3.HeaderValueOption{hdrAdd(":path", "/x", 0)}, VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"a"}, good()),
		}}, []string{`route config "rc": request_headers_to_add[0]`, "pseudo-headers"}},
		{"unknown formatter", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			{Name: "a", Domains: []string{"a"}, Routes: []*routev3.Route{good()}, ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdrAdd("x", "%NOPE%", 0)}},
		}}, []string{`virtual_hosts[0] ("a")`, "response_headers_to_add[0]", "unsupported variable %NOPE%"}},
		{"zero weights", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"a"}, &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "x", Weight: wrapperspb.UInt32(0)}}}},
			}}}),
		}}, []string{"sum of weights"}},
		{"unknown per-filter config", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			{Name: "a", Domains: []string{"a"}, Routes: []*routev3.Route{good()}, TypedPerFilterConfig: map[string]*anypb.Any{"f": mustAny(t, &emptypb.Empty{})}},
		}}, []string{"typed_per_filter_config[f]", "unsupported type"}},
		{"two errors at once", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"a"}, routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex("[")}}, "c")),
			vhost("b", []string{""}, good()),
		}}, []string{"routes[0]", `virtual_hosts[1] ("b").domains[0]`}},
		{"bad direct response status", &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
			vhost("a", []string{"a"}, &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 99}}}),
		}}, []string{"direct_response.status"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(c.rc)
			if err == nil {
				t.Fatal("compiled, want error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// perRouteFactory is a test filter with per-route config: google.protobuf.StringValue.
type perRouteFactory struct{}

func (perRouteFactory) ConfigType() string { return "google.protobuf.Int64Value" }
func (perRouteFactory) Build(string, proto.Message) (filter.Middleware, error) {
	return nil, nil
}
func (perRouteFactory) New() proto.Message { return &wrapperspb.Int64Value{} }
func (perRouteFactory) PerRouteTypes() []string {
	return []string{"google.protobuf.StringValue", "envoy.extensions.filters.http.cors.v3.CorsPolicy"}
}
func (perRouteFactory) ParsePerRoute(a *anypb.Any) (any, error) {
	if a.MessageName() == "envoy.extensions.filters.http.cors.v3.CorsPolicy" {
		return "cors:" + string(a.GetValue()), nil
	}
	var s wrapperspb.StringValue
	if err := a.UnmarshalTo(&s); err != nil {
		return nil, err
	}
	return s.GetValue(), nil
}

func init() { filter.Register(perRouteFactory{}) }

func TestFilterConfigLevels(t *testing.T) {
	sv := func(s string) *anypb.Any { return mustAny(t, wrapperspb.String(s)) }
	disabled := mustAny(t, &routev3.FilterConfig{Disabled: true})
	r1 := prefixRoute("/route", "c")
	r1.TypedPerFilterConfig = map[string]*anypb.Any{"f": sv("route"), "off": disabled}
	r2 := prefixRoute("/", "c")
	r2.GetRoute().Cors = &routev3.CorsPolicy{AllowMethods: "GET"}
	rc := &routev3.RouteConfiguration{Name: "rc",
		TypedPerFilterConfig: map[string]*anypb.Any{"f": sv("rc"), "g": sv("rc-g"), "h": sv("rc-h")},
		VirtualHosts: []*routev3.VirtualHost{
			{Name: "a", Domains: []string{"*"}, Routes: []*routev3.Route{r1, r2}, TypedPerFilterConfig: map[string]*anypb.Any{"g": sv("vh-g"), "off": sv("vh-on")}},
		}}
	tb := mustCompile(t, rc)
	rt, _ := tb.Match(httptest.NewRequest("GET", "/route", nil))
	if got := rt.FilterConfig("f"); got != "route" {
		t.Errorf("f = %v, want route's", got)
	}
	if got := rt.FilterConfig("g"); got != "vh-g" {
		t.Errorf("g = %v, want virtual host's", got)
	}
	if got := rt.FilterConfig("h"); got != "rc-h" {
		t.Errorf("h = %v, want route config's", got)
	}
	if !filter.IsDisabled(rt.FilterConfig("off")) {
		t.Errorf("off = %v, want disabled", rt.FilterConfig("off"))
	}
	if rt.FilterConfig("none") != nil {
		t.Errorf("none = %v", rt.FilterConfig("none"))
	}
	rt2, _ := tb.Match(httptest.NewRequest("GET", "/other", nil))
	if got := rt2.FilterConfig("f"); got != "rc" {
		t.Errorf("route 2 f = %v, want rc", got)
	}
	if got, ok := rt2.FilterConfig(CorsFilterName).(string); !ok || !strings.HasPrefix(got, "cors:") || !strings.Contains(got, "GET") {
		t.Errorf("deprecated cors = %v, want the converted CorsPolicy", rt2.FilterConfig(CorsFilterName))
	}
}

func reqCtx(r *http.Request) *fmtCtx {
	return &fmtCtx{r: r, reqH: r.Header, info: &stream.Info{
		Downstream:      netip.MustParseAddrPort("10.0.0.1:5555"),
		DownstreamLocal: netip.MustParseAddrPort("10.0.0.2:80"),
		Protocol:        "HTTP/1.1",
		Start:           time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC),
	}}
}

func TestHeaderMutationOrder(t *testing.T) {
	mk := func(mostSpecific bool) *Table {
		r := prefixRoute("/", "c")
		r.RequestHeadersToAdd = []*corev3.HeaderValueOption{hdrAdd("x-level", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
		r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hdrAdd("x-level", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
		return mustCompile(t, &routev3.RouteConfiguration{Name: "rc", MostSpecificHeaderMutationsWins: mostSpecific,
			RequestHeadersToAdd:  []*corev3.HeaderValueOption{hdrAdd("x-level", "rc", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdrAdd("x-level", "rc", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
			VirtualHosts: []*routev3.VirtualHost{{Name: "a", Domains: []string{"*"}, Routes: []*routev3.Route{r},
				RequestHeadersToAdd: []*corev3.HeaderValueOption{hdrAdd("x-level", "vh", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
			}},
		})
	}
	for _, c := range []struct {
		mostSpecific bool
		want         string
	}{{false, "rc"}, {true, "route"}} {
		tb := mk(c.mostSpecific)
		r := httptest.NewRequest("GET", "/", nil)
		rt, _ := tb.Match(r)
		rt.reqOps.apply(r.Header, reqCtx(r))
		if got := r.Header.Values("X-Level"); len(got) != 1 || got[0] != c.want {
			t.Errorf("most_specific_header_mutations_wins=%v: request x-level = %v, want [%s]", c.mostSpecific, got, c.want)
		}
		resp := http.Header{}
		rt.respOps.apply(resp, reqCtx(r))
		if got := resp.Values("X-Level"); len(got) != 1 || got[0] != c.want {
			t.Errorf("most_specific_header_mutations_wins=%v: response x-level = %v, want [%s]", c.mostSpecific, got, c.want)
		}
	}
}

func TestHeaderAppendActions(t *testing.T) {
	lv, err := compileHeaderLevel([]*corev3.HeaderValueOption{
		hdrAdd("append", "new", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		hdrAdd("absent-only", "new", corev3.HeaderValueOption_ADD_IF_ABSENT),
		hdrAdd("absent-only-missing", "new", corev3.HeaderValueOption_ADD_IF_ABSENT),
		hdrAdd("overwrite", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		hdrAdd("overwrite-if-exists", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
		hdrAdd("overwrite-if-exists-missing", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
		hdrAddAppend("legacy-append", "new", true),
		hdrAddAppend("legacy-overwrite", "new", false),
		hdrAdd("empty", "%REQ(missing)%", 0),
		{Header: &corev3.HeaderValue{Key: "keep-empty", Value: "%REQ(missing)%"}, KeepEmptyValue: true},
	}, []string{"removed", "append"}, "add", "remove")
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for _, k := range []string{"Append", "Absent-Only", "Overwrite", "Overwrite-If-Exists", "Legacy-Append", "Legacy-Overwrite", "Removed"} {
		h.Set(k, "old")
	}
	r := httptest.NewRequest("GET", "/", nil)
	lv.apply(h, reqCtx(r))
	want := map[string][]string{
		"Append":                      {"new"}, // removed first, then added
		"Absent-Only":                 {"old"},
		"Absent-Only-Missing":         {"new"},
		"Overwrite":                   {"new"},
		"Overwrite-If-Exists":         {"new"},
		"Overwrite-If-Exists-Missing": nil,
		"Legacy-Append":               {"old", "new"},
		"Legacy-Overwrite":            {"new"},
		"Removed":                     nil,
		"Empty":                       nil,
		"Keep-Empty":                  {""},
	}
	for k, w := range want {
		if got := h[k]; strings.Join(got, "|") != strings.Join(w, "|") || (w == nil) != (got == nil) {
			t.Errorf("%s = %q, want %q", k, got, w)
		}
	}
	if _, err := compileHeaderLevel([]*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x", Value: "y"}, Append: wrapperspb.Bool(true), AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT}}, nil, "add", "remove"); err == nil {
		t.Errorf("append and append_action together compiled")
	}
	if _, err := compileHeaderLevel(nil, []string{"host"}, "add", "remove"); err == nil || !strings.Contains(err.Error(), "remove[0]") {
		t.Errorf("removing host: %v", err)
	}
}

func TestTemplates(t *testing.T) {
	r := httptest.NewRequest("POST", "/p?q=1", nil)
	r.Host = "svc:8080"
	r.Header.Set("X-User", "jason")
	r.Header.Set("X-Long", "abcdefghij")
	cases := []struct{ in, want string }{
		{"plain", "plain"},
		{"100%%", "100%"},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.0.1:5555"},
		{"ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%;", "ip=10.0.0.1;"},
		{"%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%:%DOWNSTREAM_LOCAL_PORT%", "10.0.0.2:80"},
		{"%REQ(x-user)%", "jason"},
		{"%REQ(x-missing?x-user)%", "jason"},
		{"%REQ(x-long):3%", "abc"},
		{"%REQ(:authority)% %REQ(:path)% %REQ(:method)%", "svc:8080 /p?q=1 POST"},
		{"%PROTOCOL%", "HTTP/1.1"},
		{"%START_TIME%", "2024-05-06T07:08:09.123Z"},
		{"%START_TIME(%s)%", "1714979289"},
		{"%START_TIME(%Y/%m/%d %H:%M:%S.%3f)%", "2024/05/06 07:08:09.123"},
	}
	for _, c := range cases {
		tp, err := parseTemplate(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got := tp.eval(reqCtx(r)); got != c.want {
			t.Errorf("%q = %q, want %q", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"%", "50% off", "%UNKNOWN_THING%", "%REQ()%", "%DOWNSTREAM_REMOTE_ADDRESS(x)%"} {
		if _, err := parseTemplate(bad); err == nil {
			t.Errorf("%q parsed, want error", bad)
		}
	}
}

func TestStoreUpdate(t *testing.T) {
	s := NewStore()
	a := &routev3.RouteConfiguration{Name: "a", VirtualHosts: []*routev3.VirtualHost{vhost("v", []string{"*"}, prefixRoute("/", "a"))}}
	b := &routev3.RouteConfiguration{Name: "b", VirtualHosts: []*routev3.VirtualHost{vhost("v", []string{"*"}, prefixRoute("/", "b"))}}
	if err := s.Update([]*routev3.RouteConfiguration{a, b}); err != nil {
		t.Fatal(err)
	}
	if got := s.Names(); strings.Join(got, ",") != "a,b" {
		t.Fatalf("names = %v", got)
	}
	ta := s.Get("a")
	bad := &routev3.RouteConfiguration{Name: "bad", VirtualHosts: []*routev3.VirtualHost{vhost("v", []string{"*"}, routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex("(")}}, "x"))}}
	a2 := proto.Clone(a).(*routev3.RouteConfiguration)
	err := s.Update([]*routev3.RouteConfiguration{a2, bad})
	if err == nil || !strings.Contains(err.Error(), `route config "bad"`) {
		t.Fatalf("update with a bad config: %v", err)
	}
	if s.Get("b") == nil || s.Get("bad") != nil {
		t.Fatalf("a failed update changed the store")
	}
	// Same proto: the compiled table is kept; b is dropped (state of the world).
	if err := s.Update([]*routev3.RouteConfiguration{a2}); err != nil {
		t.Fatal(err)
	}
	if s.Get("a") != ta {
		t.Errorf("unchanged config was recompiled")
	}
	if s.Get("b") != nil {
		t.Errorf("b survived a state-of-the-world update without it")
	}
	if err := s.Upsert([]*routev3.RouteConfiguration{b}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if s.Get("a") != nil || s.Get("b") == nil {
		t.Errorf("upsert: a=%v b=%v", s.Get("a"), s.Get("b"))
	}
	var empty Store
	if empty.Get("x") != nil || empty.Names() != nil {
		t.Errorf("zero store not empty")
	}
}

func TestRouteAccessors(t *testing.T) {
	r := prefixRoute("/", "c")
	r.GetRoute().IdleTimeout = durationpb.New(3 * time.Second)
	r.GetRoute().MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(time.Minute)}
	tb := mustCompile(t, &routev3.RouteConfiguration{Name: "rc", InternalOnlyHeaders: []string{"x-internal"}, VirtualHosts: []*routev3.VirtualHost{vhost("v", []string{"*"}, r)}})
	rt, vh := tb.Match(httptest.NewRequest("GET", "/", nil))
	if d, ok := rt.IdleTimeout(); !ok || d != 3*time.Second {
		t.Errorf("idle timeout %v %v", d, ok)
	}
	if d, ok := rt.MaxStreamDuration(); !ok || d != time.Minute {
		t.Errorf("max stream duration %v %v", d, ok)
	}
	if rt.Name() != "to-c" || vh.Name() != "v" || rt.VirtualHost() != vh || vh.Table() != tb || tb.Name() != "rc" || !rt.IsForward() {
		t.Errorf("accessors wrong")
	}
	if got := tb.InternalOnlyHeaders(); len(got) != 1 || got[0] != "X-Internal" {
		t.Errorf("internal only headers %v", got)
	}
	if rt.fwd.timeout != DefaultTimeout {
		t.Errorf("default timeout %v", rt.fwd.timeout)
	}
}

func TestHelpers(t *testing.T) {
	for in, want := range map[string]string{"a:80": "a", "a": "a", "[::1]:80": "[::1]", "[::1]": "[::1]", "::1": "::1", "a:b": "a:b"} {
		if got := stripPort(in); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"svc:8080": "svc-shadow:8080", "svc": "svc-shadow"} {
		if got := shadowHost(in); got != want {
			t.Errorf("shadowHost(%q) = %q, want %q", in, got, want)
		}
	}
	if got := stripPathParams("/a;x=1/b;y/c"); got != "/a/b/c" {
		t.Errorf("stripPathParams = %q", got)
	}
	if got := re2Substitution(`/\1/x\\$`); got != `/${1}/x\$$` {
		t.Errorf("re2Substitution = %q", got)
	}
	for in, want := range map[string]time.Duration{"1S": time.Second, "100m": 100 * time.Millisecond, "5H": 5 * time.Hour, "x": 0, "1X": 0} {
		if got, _ := parseGRPCTimeout(in); got != want {
			t.Errorf("parseGRPCTimeout(%q) = %v, want %v", in, got, want)
		}
	}
	for code, want := range map[int]int{400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14, 500: 2, 200: 2} {
		if got := GRPCStatusFromHTTP(code); got != want {
			t.Errorf("GRPCStatusFromHTTP(%d) = %d, want %d", code, got, want)
		}
	}
	if got := encodeGRPCMessage("a 100% é"); got != "a 100%25 %C3%A9" {
		t.Errorf("encodeGRPCMessage = %q", got)
	}
}

func TestRetryOnParsing(t *testing.T) {
	got := parseRetryOn("5xx, gateway-error,unknown-thing,unavailable")
	if got != ro5xx|roGatewayError|roGRPCUnavailable {
		t.Errorf("parseRetryOn = %b", got)
	}
	rp, err := compileRetryPolicy(&routev3.RetryPolicy{RetryOn: "5xx"})
	if err != nil || rp.numRetries != 1 || rp.base != 25*time.Millisecond || rp.max != 250*time.Millisecond {
		t.Errorf("defaults: %+v %v", rp, err)
	}
}

func TestRequestHash(t *testing.T) {
	hp := func(p *routev3.RouteAction_HashPolicy) *routev3.RouteAction_HashPolicy { return p }
	compile := func(ps ...*routev3.RouteAction_HashPolicy) *forward {
		f := &forward{}
		for _, p := range ps {
			h, err := compileHashPolicy(p)
			if err != nil {
				t.Fatal(err)
			}
			f.hash = append(f.hash, h)
		}
		return f
	}
	header := hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}})
	cookie := hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "sticky", Ttl: durationpb.New(time.Hour), Path: "/"}}})
	srcIP := hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}})
	query := hp(&routev3.RouteAction_HashPolicy{Terminal: true, PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: "session"}}})

	r := httptest.NewRequest("GET", "/?session=s1", nil)
	r.Header.Set("X-User", "jason")
	f := compile(header)
	h1, ok1, _ := f.requestHash(r, "10.0.0.1")
	h2, ok2, _ := f.requestHash(r, "10.0.0.2")
	if !ok1 || !ok2 || h1 != h2 {
		t.Fatalf("header hash not stable: %x %v %x %v", h1, ok1, h2, ok2)
	}
	r.Header.Set("X-User", "mary")
	if h3, _, _ := f.requestHash(r, "10.0.0.1"); h3 == h1 {
		t.Fatalf("different users hash the same")
	}
	r.Header.Del("X-User")
	if _, ok, _ := f.requestHash(r, "10.0.0.1"); ok {
		t.Fatalf("a missing header produced a hash")
	}

	// A cookie policy with a ttl generates the cookie when it is missing.
	f = compile(cookie)
	h, ok, set := f.requestHash(r, "10.0.0.1")
	if !ok || !strings.HasPrefix(set, "sticky=") || !strings.Contains(set, "Max-Age=3600") || !strings.Contains(set, "Path=/") {
		t.Fatalf("generated cookie: %v %q", ok, set)
	}
	val := strings.TrimPrefix(strings.SplitN(set, ";", 2)[0], "sticky=")
	r.Header.Set("Cookie", "sticky="+val)
	if h2, ok, set2 := f.requestHash(r, "10.9.9.9"); !ok || h2 != h || set2 != "" {
		t.Fatalf("the returned cookie hashes differently: %x vs %x (set %q)", h2, h, set2)
	}

	// A terminal policy that produced a hash stops the rest.
	f = compile(query, srcIP)
	a, _, _ := f.requestHash(r, "10.0.0.1")
	b, _, _ := f.requestHash(r, "10.0.0.2")
	if a != b {
		t.Fatalf("terminal query policy did not stop the source ip policy")
	}
	f = compile(srcIP, header)
	if a, _, _ := f.requestHash(r, "10.0.0.1"); a == 0 {
		t.Fatalf("no hash from source ip")
	}
}

func TestRequireTLS(t *testing.T) {
	tb := mustCompile(t, &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
		{Name: "all", Domains: []string{"all.example"}, RequireTls: routev3.VirtualHost_ALL, Routes: []*routev3.Route{prefixRoute("/", "c")}},
		{Name: "ext", Domains: []string{"ext.example"}, RequireTls: routev3.VirtualHost_EXTERNAL_ONLY, Routes: []*routev3.Route{prefixRoute("/", "c")}},
	}})
	cases := []struct {
		host       string
		hdr        map[string]string
		tls        bool
		redirectTo string // "" means the normal route
	}{
		{"all.example", nil, false, "https://all.example/p?q=1"},
		{"all.example:80", nil, false, "https://all.example/p?q=1"},
		{"all.example", map[string]string{"X-Forwarded-Proto": "https"}, false, ""},
		{"all.example", nil, true, ""},
		{"all.example", map[string]string{"X-Envoy-Internal": "true"}, false, "https://all.example/p?q=1"},
		{"ext.example", map[string]string{"X-Envoy-Internal": "true"}, false, ""},
		{"ext.example", nil, false, "https://ext.example/p?q=1"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/p?q=1", nil)
		r.Host = c.host
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		if c.tls {
			r.TLS = &tls.ConnectionState{}
		}
		rt, _ := tb.Match(r)
		if c.redirectTo == "" {
			if rt == nil || !rt.IsForward() {
				t.Errorf("%s %v: got %v, want the forwarding route", c.host, c.hdr, rt)
			}
			continue
		}
		if rt == nil || rt.action != actRedirect {
			t.Errorf("%s %v: no redirect", c.host, c.hdr)
			continue
		}
		if got := rt.redir.location(r, rt); got != c.redirectTo {
			t.Errorf("%s %v: location %q, want %q", c.host, c.hdr, got, c.redirectTo)
		}
	}
}

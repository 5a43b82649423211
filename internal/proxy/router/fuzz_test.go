package router

import (
	"net/http"
	"net/url"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fuzzTable exercises every matcher kind; it has no runtime_fraction so matching is
// deterministic.
func fuzzTable(t testing.TB) *Table {
	pfx := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
	}
	withH := func(m *routev3.RouteMatch, h ...*routev3.HeaderMatcher) *routev3.RouteMatch { m.Headers = h; return m }
	return mustCompile(t, &routev3.RouteConfiguration{Name: "fuzz", VirtualHosts: []*routev3.VirtualHost{
		vhost("reviews", []string{"reviews", "reviews:9080", "*.reviews.svc", "reviews.*"},
			routeWith(withH(pfx("/"), &routev3.HeaderMatcher{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("jason")}}), "v2"),
			routeWith(withH(pfx("/"), &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 1, End: 100}}}, &routev3.HeaderMatcher{Name: ":method", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "GET"}}), "range"),
			routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/v[0-9]+/.*`)}}, "regex"),
			routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}, CaseSensitive: wrapperspb.Bool(false)}, "sep"),
			routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}, QueryParameters: []*routev3.QueryParameterMatcher{{Name: "q", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("1")}}}}, "query"),
			routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Cookies: []*routev3.CookieMatcher{{Name: "c", StringMatch: exact("v")}}}, "cookie"),
			routeWith(withH(pfx("/"), &routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: ":9080"}}), "authority"),
			prefixRoute("/", "v1"),
		),
		vhost("default", []string{"*"}, prefixRoute("/", "passthrough")),
	}})
}

func FuzzMatch(f *testing.F) {
	tb := fuzzTable(f)
	f.Add("GET", "/reviews/0", "reviews:9080", "end-user", "jason", "")
	f.Add("POST", "/v2/items?x=1", "a.reviews.svc", "x-n", "50", "c=v")
	f.Add("PUT", "/API/x", "REVIEWS.default", "x-n", "-1", "c=\"v\"; d=1")
	f.Add("GET", "/exact?q=%31&q=2", "reviews", "", "", "")
	f.Add("GET", "*", "[::1]:80", "x", "\x00", ";;=")
	f.Add("CONNECT", "/%zz", "", ":path", "/", "")
	f.Fuzz(func(t *testing.T, method, target, authority, hname, hvalue, cookie string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: method, URL: u, Host: authority, Header: http.Header{}, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		if hname != "" {
			r.Header[http.CanonicalHeaderKey(hname)] = []string{hvalue}
		}
		if cookie != "" {
			r.Header["Cookie"] = []string{cookie}
		}
		rt1, vh1 := tb.Match(r)
		rt2, vh2 := tb.Match(r)
		if rt1 != rt2 || vh1 != vh2 {
			t.Fatalf("Match is not deterministic for %q %q %q", method, target, authority)
		}
		if vh1 == nil {
			t.Fatalf("the * virtual host did not catch %q", authority)
		}
		if rt1 != nil && rt1.VirtualHost() != vh1 {
			t.Fatalf("route from another virtual host")
		}
	})
}

// FuzzHeaderTemplate parses header values as route configs carry them and evaluates
// them: never a panic, and never an invalid header value out of a valid config.
func FuzzHeaderTemplate(f *testing.F) {
	for _, s := range []string{"plain", "%%", "%REQ(x-user)%", "%REQ(:path):4%", "%START_TIME(%Y-%m-%d %3f %s)%", "%DOWNSTREAM_REMOTE_ADDRESS%-%PROTOCOL%", "%", "%REQ(", "%START_TIME(%", "a%%b%UPSTREAM_CLUSTER%c"} {
		f.Add(s, "value")
	}
	r := &http.Request{Method: "GET", URL: &url.URL{Path: "/p", RawQuery: "q=1"}, Host: "h:1", Header: http.Header{}}
	f.Fuzz(func(t *testing.T, value, reqValue string) {
		a, err := compileHeaderAdd(&corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-out", Value: value}})
		if err != nil {
			return
		}
		if !httpguts.ValidHeaderFieldValue(reqValue) {
			return
		}
		r.Header.Set("X-User", reqValue)
		c := reqCtx(r)
		v1 := a.tmpl.eval(c)
		v2 := a.tmpl.eval(c)
		if v1 != v2 {
			t.Fatalf("%q evaluates differently: %q then %q", value, v1, v2)
		}
		if !httpguts.ValidHeaderFieldValue(v1) {
			t.Fatalf("%q produced an invalid header value %q", value, v1)
		}
		h := http.Header{}
		lv := headerLevel{add: []headerAdd{a}}
		lv.apply(h, c)
		if v1 != "" && h.Get("X-Out") != v1 {
			t.Fatalf("apply set %q, want %q", h.Get("X-Out"), v1)
		}
	})
}

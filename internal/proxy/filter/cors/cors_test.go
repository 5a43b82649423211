package cors

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

const filterName = "envoy.filters.http.cors"

type fakeRoute map[string]any

func (r fakeRoute) FilterConfig(name string) any { return r[name] }

type harness struct {
	srv      *httptest.Server
	infos    chan *stream.Info
	upstream http.Header // headers the terminal handler sets, as an upstream would
}

func newHarness(t *testing.T, mw filter.Middleware, route filter.Route, upstream http.Header) *harness {
	t.Helper()
	h := &harness{infos: make(chan *stream.Info, 64), upstream: upstream}
	chain := mw(filter.HandlerFunc(func(x *filter.Exchange) error {
		for k, v := range h.upstream {
			x.W.Header()[k] = v
		}
		x.Info.ResponseDetails = "via_upstream"
		x.W.Header().Set("X-Reached", "upstream")
		x.W.WriteHeader(http.StatusOK)
		_, err := io.WriteString(x.W, "ok")
		return err
	}))
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &filter.Exchange{W: w, R: r, Info: &stream.Info{Start: time.Now()}, Route: route}
		if err := chain.Serve(x); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		h.infos <- x.Info
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) do(t *testing.T, method string, hdr map[string]string) (*http.Response, *stream.Info) {
	t.Helper()
	req, _ := http.NewRequest(method, h.srv.URL+"/api", nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	select {
	case i := <-h.infos:
		return resp, i
	case <-time.After(10 * time.Second):
		t.Fatal("no info recorded")
		return nil, nil
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func build(t *testing.T, p *corsv3.CorsPolicy) (filter.Middleware, filter.Route) {
	t.Helper()
	mw, err := filter.Build(filterName, mustAny(t, &corsv3.Cors{}))
	if err != nil {
		t.Fatal(err)
	}
	route := fakeRoute{}
	if p != nil {
		cfg, ok, err := filter.ParsePerRoute(filterName, mustAny(t, p))
		if err != nil || !ok {
			t.Fatalf("ParsePerRoute: ok=%v err=%v", ok, err)
		}
		route[filterName] = cfg
	}
	return mw, route
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func bookinfoPolicy() *corsv3.CorsPolicy {
	return &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{
			exact("https://example.com"),
			{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example.org"}, IgnoreCase: true},
		},
		AllowMethods:     "GET,POST",
		AllowHeaders:     "x-custom,content-type",
		ExposeHeaders:    "x-trace",
		MaxAge:           "600",
		AllowCredentials: wrapperspb.Bool(true),
	}
}

func TestOriginMatching(t *testing.T) {
	p, err := compile(bookinfoPolicy())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		origin string
		want   bool
	}{
		{"https://example.com", true},
		{"https://EXAMPLE.com", false}, // exact is case-sensitive unless ignore_case
		{"https://a.EXAMPLE.org", true},
		{"https://evil.com", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := p.allows(tt.origin); got != tt.want {
			t.Errorf("origin %q: got %v want %v", tt.origin, got, tt.want)
		}
	}
	star, err := compile(&corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("*")}})
	if err != nil {
		t.Fatal(err)
	}
	if !star.allows("https://anything.test") {
		t.Error(`exact "*" must allow every origin`)
	}
	re, err := compile(&corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{{
		MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `https://[a-z]+\.test`}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if !re.allows("https://app.test") || re.allows("https://app.test.evil") {
		t.Error("regex origin must match the whole origin")
	}
}

func TestCompileErrors(t *testing.T) {
	_, err := compile(&corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{{
		MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `(`}},
	}}})
	if err == nil {
		t.Fatal("bad regex accepted")
	}
}

func TestHTTPPreflight(t *testing.T) {
	st := stats.New()
	UseStats(st)
	t.Cleanup(func() { UseStats(nil) })
	mw, route := build(t, bookinfoPolicy())
	h := newHarness(t, mw, route, nil)

	resp, info := h.do(t, http.MethodOptions, map[string]string{
		"Origin": "https://example.com", "Access-Control-Request-Method": "POST",
	})
	want := map[string]string{
		"Access-Control-Allow-Origin":      "https://example.com",
		"Access-Control-Allow-Credentials": "true",
		"Access-Control-Allow-Methods":     "GET,POST",
		"Access-Control-Allow-Headers":     "x-custom,content-type",
		"Access-Control-Max-Age":           "600",
		"X-Reached":                        "",
	}
	if resp.StatusCode != 200 {
		t.Errorf("preflight status %d", resp.StatusCode)
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("preflight %s = %q, want %q", k, got, v)
		}
	}
	if info.ResponseDetails != "cors_response" {
		t.Errorf("details %q", info.ResponseDetails)
	}

	// A preflight from an origin not allowed goes to the upstream (forward_not_matching_preflights).
	resp, _ = h.do(t, http.MethodOptions, map[string]string{
		"Origin": "https://evil.com", "Access-Control-Request-Method": "POST",
	})
	if resp.Header.Get("X-Reached") != "upstream" || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("bad-origin preflight: reached %q, allow-origin %q", resp.Header.Get("X-Reached"), resp.Header.Get("Access-Control-Allow-Origin"))
	}
	if v, _ := st.Value("http.cors.origin_valid"); v != 1 {
		t.Errorf("origin_valid = %d", v)
	}
	if v, _ := st.Value("http.cors.origin_invalid"); v != 1 {
		t.Errorf("origin_invalid = %d", v)
	}
}

func TestHTTPPreflightNotForwarded(t *testing.T) {
	p := bookinfoPolicy()
	p.ForwardNotMatchingPreflights = wrapperspb.Bool(false)
	mw, route := build(t, p)
	h := newHarness(t, mw, route, nil)
	resp, _ := h.do(t, http.MethodOptions, map[string]string{
		"Origin": "https://evil.com", "Access-Control-Request-Method": "POST",
	})
	if resp.StatusCode != 200 || resp.Header.Get("X-Reached") != "" || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("got %d reached %q allow-origin %q, want a local 200 without CORS headers",
			resp.StatusCode, resp.Header.Get("X-Reached"), resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

func TestHTTPActualRequest(t *testing.T) {
	mw, route := build(t, bookinfoPolicy())
	// The upstream answers with its own, wider CORS header: the policy's replaces it.
	h := newHarness(t, mw, route, http.Header{"Access-Control-Allow-Origin": {"*"}})

	resp, _ := h.do(t, http.MethodGet, map[string]string{"Origin": "https://shop.example.org"})
	if resp.Header.Get("X-Reached") != "upstream" {
		t.Fatal("actual request did not reach the upstream")
	}
	if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "https://shop.example.org" {
		t.Errorf("allow-origin %q", got)
	}
	if resp.Header.Get("Access-Control-Allow-Credentials") != "true" || resp.Header.Get("Access-Control-Expose-Headers") != "x-trace" {
		t.Errorf("credentials %q expose %q", resp.Header.Get("Access-Control-Allow-Credentials"), resp.Header.Get("Access-Control-Expose-Headers"))
	}

	// A disallowed origin gets nothing added.
	h2 := newHarness(t, mw, route, nil)
	resp, _ = h2.do(t, http.MethodGet, map[string]string{"Origin": "https://evil.com"})
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("disallowed origin got allow-origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	// OPTIONS without Access-Control-Request-Method is an actual request, not a preflight.
	resp, _ = h2.do(t, http.MethodOptions, map[string]string{"Origin": "https://example.com"})
	if resp.Header.Get("X-Reached") != "upstream" || resp.Header.Get("Access-Control-Allow-Origin") != "https://example.com" {
		t.Errorf("plain OPTIONS: reached %q allow-origin %q", resp.Header.Get("X-Reached"), resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

func TestHTTPNoPolicyOrDisabled(t *testing.T) {
	mw, route := build(t, nil)
	h := newHarness(t, mw, route, nil)
	resp, _ := h.do(t, http.MethodOptions, map[string]string{"Origin": "https://example.com", "Access-Control-Request-Method": "GET"})
	if resp.Header.Get("X-Reached") != "upstream" || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("route without a policy must pass through")
	}

	p := bookinfoPolicy()
	p.FilterEnabled = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 0}}
	mw, route = build(t, p)
	h = newHarness(t, mw, route, nil)
	resp, _ = h.do(t, http.MethodOptions, map[string]string{"Origin": "https://example.com", "Access-Control-Request-Method": "GET"})
	if resp.Header.Get("X-Reached") != "upstream" || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("filter_enabled 0% must pass through")
	}

	h = newHarness(t, mw, fakeRoute{filterName: filter.Disabled}, nil)
	resp, _ = h.do(t, http.MethodGet, map[string]string{"Origin": "https://example.com"})
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("disabled filter added headers")
	}
}

func TestWriterKeepsResponseController(t *testing.T) {
	rec := httptest.NewRecorder()
	p, _ := compile(bookinfoPolicy())
	w := &writer{ResponseWriter: rec, p: p, origin: "https://example.com"}
	if err := http.NewResponseController(w).Flush(); err != nil {
		t.Fatalf("flush through the CORS writer: %v", err)
	}
	if rec.Header().Get("Access-Control-Allow-Origin") != "https://example.com" || !rec.Flushed {
		t.Error("flush did not start the response with CORS headers")
	}
}

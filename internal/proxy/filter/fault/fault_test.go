package fault

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// --- harness: a loopback HTTP server running one filter in front of a 200 handler ---

type fakeRoute map[string]any

func (r fakeRoute) FilterConfig(name string) any { return r[name] }

type harness struct {
	srv   *httptest.Server
	infos chan *stream.Info
}

func newHarness(t *testing.T, mw filter.Middleware, route filter.Route) *harness {
	t.Helper()
	h := &harness{infos: make(chan *stream.Info, 4096)}
	terminal := filter.HandlerFunc(func(x *filter.Exchange) error {
		x.Info.ResponseDetails = "via_upstream"
		x.W.WriteHeader(http.StatusOK)
		_, err := io.WriteString(x.W, "ok")
		return err
	})
	chain := mw(terminal)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &filter.Exchange{W: w, R: r, Info: &stream.Info{Start: time.Now()}, Route: route}
		if err := chain.Serve(x); err != nil {
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

func (h *harness) do(t *testing.T, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.srv.URL+"/x", nil)
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
	return resp.StatusCode, resp.Header, string(b)
}

func (h *harness) info(t *testing.T) *stream.Info {
	t.Helper()
	select {
	case i := <-h.infos:
		return i
	case <-time.After(10 * time.Second):
		t.Fatal("no request info recorded")
		return nil
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

// build compiles the filter through the registry, as the connection manager does: an
// empty filter-level config (Istio's shape) and, when perRoute is set, a route carrying it.
func build(t *testing.T, filterLevel, perRoute *faultv3.HTTPFault) (filter.Middleware, filter.Route) {
	t.Helper()
	if filterLevel == nil {
		filterLevel = &faultv3.HTTPFault{}
	}
	mw, err := filter.Build("envoy.filters.http.fault", mustAny(t, filterLevel))
	if err != nil {
		t.Fatal(err)
	}
	route := fakeRoute{}
	if perRoute != nil {
		cfg, ok, err := filter.ParsePerRoute("envoy.filters.http.fault", mustAny(t, perRoute))
		if err != nil || !ok {
			t.Fatalf("ParsePerRoute: ok=%v err=%v", ok, err)
		}
		route["envoy.filters.http.fault"] = cfg
	}
	return mw, route
}

func pct(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func httpAbort(status, n uint32) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{
		ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: status},
		Percentage: pct(n, typev3.FractionalPercent_HUNDRED),
	}
}

func fixedDelay(d time.Duration, n uint32) *faultcommonv3.FaultDelay {
	return &faultcommonv3.FaultDelay{
		FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)},
		Percentage:         pct(n, typev3.FractionalPercent_HUNDRED),
	}
}

// --- unit tests ---

func TestPercent(t *testing.T) {
	tests := []struct {
		name string
		p    *typev3.FractionalPercent
		want percent
	}{
		{"nil is zero", nil, percent{0, 100}},
		{"hundred", pct(50, typev3.FractionalPercent_HUNDRED), percent{50, 100}},
		{"ten thousand", pct(5, typev3.FractionalPercent_TEN_THOUSAND), percent{5, 10_000}},
		{"million", pct(7, typev3.FractionalPercent_MILLION), percent{7, 1_000_000}},
	}
	for _, tt := range tests {
		if got := toPercent(tt.p); got != tt.want {
			t.Errorf("%s: got %+v want %+v", tt.name, got, tt.want)
		}
	}
	for range 1000 {
		if (percent{0, 100}).hit() {
			t.Fatal("0% hit")
		}
		if !(percent{100, 100}).hit() || !(percent{200, 100}).hit() {
			t.Fatal("100% missed")
		}
	}
	hits := 0
	for range 100_000 {
		if (percent{25, 10_000}).hit() { // 0.25%
			hits++
		}
	}
	if hits < 150 || hits > 350 {
		t.Errorf("0.25%% of 100000: %d hits, want about 250", hits)
	}
}

func TestHeaderPercentage(t *testing.T) {
	base := percent{50, 100}
	tests := []struct {
		hdr  string
		want percent
	}{
		{"", percent{50, 100}},
		{"junk", percent{50, 100}},
		{"20", percent{20, 100}},
		{"80", percent{50, 100}}, // capped by the configured numerator
		{"0", percent{0, 100}},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.hdr != "" {
			h.Set(hdrAbortPercentage, tt.hdr)
		}
		if got := base.withHeader(h, hdrAbortPercentage); got != tt.want {
			t.Errorf("header %q: got %+v want %+v", tt.hdr, got, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *faultv3.HTTPFault
		want string
	}{
		{"status out of range", &faultv3.HTTPFault{Abort: httpAbort(600, 100)}, "http_status"},
		{"abort without type", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{}}, "abort"},
		{"bad regex", &faultv3.HTTPFault{Abort: httpAbort(503, 100), Headers: []*routev3.HeaderMatcher{{
			Name:                 "x",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "("}},
		}}}, "headers[0]"},
	}
	for _, tt := range tests {
		_, err := compile(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want mention of %q", tt.name, err, tt.want)
		}
	}
}

func TestHeaderMatcher(t *testing.T) {
	sm := func(p *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
		return &routev3.HeaderMatcher_StringMatch{StringMatch: p}
	}
	tests := []struct {
		name string
		m    *routev3.HeaderMatcher
		hdr  http.Header
		want bool
	}{
		{"exact", &routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "jason"}})}, http.Header{"X-User": {"jason"}}, true},
		{"exact miss", &routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "jason"}})}, http.Header{"X-User": {"Jason"}}, false},
		{"exact ignore case", &routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "jason"}})}, http.Header{"X-User": {"JASON"}}, true},
		{"prefix", &routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "ja"}}, http.Header{"X-User": {"jason"}}, true},
		{"suffix", &routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "son"}})}, http.Header{"X-User": {"jason"}}, true},
		{"contains", &routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "as"}}, http.Header{"X-User": {"jason"}}, true},
		{"regex whole value", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: `\d{3}`}}}, http.Header{"X-N": {"1234"}}, false},
		{"regex inverted", &routev3.HeaderMatcher{Name: "x-n", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: `\d{3}`}}}, http.Header{"X-N": {"1234"}}, true},
		{"present", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, http.Header{"X-A": {""}}, true},
		{"present missing", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, http.Header{}, false},
		{"absent", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, http.Header{}, true},
		{"missing not rescued by invert", &routev3.HeaderMatcher{Name: "x-a", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "z"}}, http.Header{}, false},
		{"missing as empty", &routev3.HeaderMatcher{Name: "x-a", TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: ``}}}, http.Header{}, true},
		{"range", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -10, End: 0}}}, http.Header{"X-N": {"-1"}}, true},
		{"range end exclusive", &routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -10, End: 0}}}, http.Header{"X-N": {"0"}}, false},
		{"repeated joined", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "a,b"}}, http.Header{"X-A": {"a", "b"}}, true},
	}
	for _, tt := range tests {
		hm, err := compileHeaderMatcher(tt.m)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := hm.match(tt.hdr); got != tt.want {
			t.Errorf("%s: got %v want %v", tt.name, got, tt.want)
		}
	}
}

func TestAbortForHeaders(t *testing.T) {
	c, err := compile(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType:  &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}},
		Percentage: pct(100, typev3.FractionalPercent_HUNDRED),
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		hdr          http.Header
		status, grpc int
		ok           bool
	}{
		{http.Header{}, 0, -1, false},
		{http.Header{hdrAbort: {"503"}}, 503, -1, true},
		{http.Header{hdrAbort: {"199"}}, 0, -1, false},
		{http.Header{hdrAbort: {"600"}}, 0, -1, false},
		{http.Header{hdrAbortGRPC: {"14"}}, 0, 14, true},
		{http.Header{hdrAbort: {"503"}, hdrAbortPercentage: {"0"}}, 0, -1, false},
	}
	for i, tt := range tests {
		s, g, ok := c.abortFor(tt.hdr)
		if s != tt.status || g != tt.grpc || ok != tt.ok {
			t.Errorf("case %d: got (%d,%d,%v) want (%d,%d,%v)", i, s, g, ok, tt.status, tt.grpc, tt.ok)
		}
	}
}

// --- HTTP tests ---

func TestHTTPAbortFiftyPercent(t *testing.T) {
	st := stats.New()
	UseStats(st)
	t.Cleanup(func() { UseStats(nil) })
	mw, route := build(t, nil, &faultv3.HTTPFault{Abort: httpAbort(503, 50)})
	h := newHarness(t, mw, route)
	const n = 2000
	aborted := 0
	for range n {
		code, _, body := h.do(t, nil)
		info := h.info(t)
		switch code {
		case http.StatusServiceUnavailable:
			aborted++
			if body != "fault filter abort" || !info.Flags.Has(stream.FaultInjected) || info.ResponseDetails != "fault_filter_abort" {
				t.Fatalf("abort: body %q flags %v details %q", body, info.Flags, info.ResponseDetails)
			}
		case http.StatusOK:
			if info.Flags != 0 {
				t.Fatalf("passed request has flags %v", info.Flags)
			}
		default:
			t.Fatalf("status %d", code)
		}
	}
	share := float64(aborted) * 100 / n
	if share < 46 || share > 54 {
		t.Errorf("aborted %.1f%% of %d requests, want 50±4", share, n)
	}
	if v, _ := st.Value("http.fault.aborts_injected"); v != int64(aborted) {
		t.Errorf("aborts_injected = %d, want %d", v, aborted)
	}
}

func TestHTTPFilterLevelConfigWithoutRoute(t *testing.T) {
	mw, _ := build(t, &faultv3.HTTPFault{Abort: httpAbort(418, 100)}, nil)
	h := newHarness(t, mw, nil)
	if code, _, _ := h.do(t, nil); code != http.StatusTeapot {
		t.Errorf("filter-level abort: status %d, want 418", code)
	}
}

func TestHTTPRouteOverridesAndDisables(t *testing.T) {
	mw, route := build(t, &faultv3.HTTPFault{Abort: httpAbort(418, 100)}, &faultv3.HTTPFault{Abort: httpAbort(502, 100)})
	h := newHarness(t, mw, route)
	if code, _, _ := h.do(t, nil); code != http.StatusBadGateway {
		t.Errorf("per-route abort: status %d, want 502", code)
	}
	h2 := newHarness(t, mw, fakeRoute{"envoy.filters.http.fault": filter.Disabled})
	if code, _, _ := h2.do(t, nil); code != http.StatusOK {
		t.Errorf("disabled on route: status %d, want 200", code)
	}
}

func TestHTTPDelay(t *testing.T) {
	const d = 200 * time.Millisecond
	mw, route := build(t, nil, &faultv3.HTTPFault{Delay: fixedDelay(d, 100)})
	h := newHarness(t, mw, route)
	start := time.Now()
	code, _, body := h.do(t, nil)
	if el := time.Since(start); el < d {
		t.Errorf("request took %v, want at least %v", el, d)
	}
	if code != http.StatusOK || body != "ok" {
		t.Errorf("delayed request: %d %q", code, body)
	}
	if info := h.info(t); !info.Flags.Has(stream.DelayInjected) {
		t.Errorf("flags %v, want DI", info.Flags)
	}
}

func TestHTTPDelayThenAbort(t *testing.T) {
	mw, route := build(t, nil, &faultv3.HTTPFault{Delay: fixedDelay(50*time.Millisecond, 100), Abort: httpAbort(500, 100)})
	h := newHarness(t, mw, route)
	start := time.Now()
	code, _, _ := h.do(t, nil)
	if code != 500 || time.Since(start) < 50*time.Millisecond {
		t.Errorf("got %d after %v, want 500 after 50ms", code, time.Since(start))
	}
	if info := h.info(t); info.Flags != stream.DelayInjected|stream.FaultInjected {
		t.Errorf("flags %v, want DI,FI", info.Flags)
	}
}

func TestHTTPDelayHonoursCancellation(t *testing.T) {
	mw, route := build(t, nil, &faultv3.HTTPFault{Delay: fixedDelay(time.Hour, 100)})
	h := newHarness(t, mw, route)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL, nil)
	if resp, err := h.srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("request finished despite an hour's delay")
	}
	// The filter must give up the delay once the client is gone, well before the hour.
	info := h.info(t)
	if !info.Flags.Has(stream.DownstreamConnectionTermination | stream.DelayInjected) {
		t.Errorf("flags %v, want DI,DC", info.Flags)
	}
}

func TestHTTPHeaderControlledFaults(t *testing.T) {
	mw, route := build(t, nil, &faultv3.HTTPFault{
		Abort: &faultv3.FaultAbort{
			ErrorType:  &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}},
			Percentage: pct(100, typev3.FractionalPercent_HUNDRED),
		},
		Delay: &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_HeaderDelay_{HeaderDelay: &faultcommonv3.FaultDelay_HeaderDelay{}},
			Percentage:         pct(100, typev3.FractionalPercent_HUNDRED),
		},
	})
	h := newHarness(t, mw, route)

	if code, _, _ := h.do(t, nil); code != http.StatusOK {
		t.Errorf("no fault headers: %d, want 200", code)
	}
	h.info(t)

	if code, _, body := h.do(t, map[string]string{"x-envoy-fault-abort-request": "429"}); code != 429 || body != "fault filter abort" {
		t.Errorf("header abort: %d %q, want 429", code, body)
	}
	h.info(t)

	code, hdr, _ := h.do(t, map[string]string{"x-envoy-fault-abort-grpc-request": "14"})
	if code != 200 || hdr.Get("Grpc-Status") != "14" || hdr.Get("Content-Type") != "application/grpc" {
		t.Errorf("header grpc abort: %d grpc-status %q content-type %q", code, hdr.Get("Grpc-Status"), hdr.Get("Content-Type"))
	}
	if info := h.info(t); info.GRPCStatus != "14" || !info.Flags.Has(stream.FaultInjected) {
		t.Errorf("grpc abort info: status %q flags %v", info.GRPCStatus, info.Flags)
	}

	start := time.Now()
	if code, _, _ := h.do(t, map[string]string{"x-envoy-fault-delay-request": "150"}); code != 200 {
		t.Errorf("header delay: %d", code)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("header delay took %v, want at least 150ms", el)
	}
	if info := h.info(t); !info.Flags.Has(stream.DelayInjected) {
		t.Errorf("header delay flags %v", info.Flags)
	}

	if code, _, _ := h.do(t, map[string]string{"x-envoy-fault-abort-request": "503", "x-envoy-fault-abort-request-percentage": "0"}); code != 200 {
		t.Errorf("header abort at 0%%: %d, want 200", code)
	}
	h.info(t)
}

func TestHTTPHeadersMatch(t *testing.T) {
	mw, route := build(t, nil, &faultv3.HTTPFault{
		Abort: httpAbort(503, 100),
		Headers: []*routev3.HeaderMatcher{{
			Name:                 "end-user",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "jason"},
		}},
	})
	h := newHarness(t, mw, route)
	if code, _, _ := h.do(t, nil); code != 200 {
		t.Errorf("non-matching request: %d, want 200", code)
	}
	if code, _, _ := h.do(t, map[string]string{"end-user": "jason"}); code != 503 {
		t.Errorf("matching request: %d, want 503", code)
	}
}

func TestHTTPDownstreamNodes(t *testing.T) {
	mw, route := build(t, nil, &faultv3.HTTPFault{Abort: httpAbort(503, 100), DownstreamNodes: []string{"productpage"}})
	h := newHarness(t, mw, route)
	if code, _, _ := h.do(t, map[string]string{"x-envoy-downstream-service-node": "reviews"}); code != 200 {
		t.Errorf("other node: %d, want 200", code)
	}
	if code, _, _ := h.do(t, map[string]string{"x-envoy-downstream-service-node": "productpage"}); code != 503 {
		t.Errorf("listed node: %d, want 503", code)
	}
}

func TestHTTPMaxActiveFaults(t *testing.T) {
	st := stats.New()
	UseStats(st)
	t.Cleanup(func() { UseStats(nil) })
	cfg := &faultv3.HTTPFault{Delay: fixedDelay(2*time.Second, 100), MaxActiveFaults: wrapperspb.UInt32(1)}
	mw, route := build(t, nil, cfg)
	h := newHarness(t, mw, route)

	done := make(chan int, 1)
	go func() {
		resp, err := h.srv.Client().Get(h.srv.URL)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	// Wait (bounded) until the first request holds the only fault slot.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, _ := st.Value("http.fault.active_faults"); v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first fault never became active")
		}
		time.Sleep(5 * time.Millisecond)
	}
	code, _, _ := h.do(t, nil)
	info := h.info(t)
	if code != 200 || info.Flags.Has(stream.DelayInjected) {
		t.Errorf("second request: %d flags %v, want 200 without DI", code, info.Flags)
	}
	if v, _ := st.Value("http.fault.faults_overflow"); v != 1 {
		t.Errorf("faults_overflow = %d, want 1", v)
	}
	if c := <-done; c != 200 {
		t.Errorf("first request: %d", c)
	}
	if v, _ := st.Value("http.fault.active_faults"); v != 0 {
		t.Errorf("active_faults = %d after both finished", v)
	}
}

func BenchmarkPassThrough(b *testing.B) {
	b.ReportAllocs()
	serve := passThrough(b)
	for b.Loop() {
		serve()
	}
}

// TestPassThroughBenchmarkTwin runs the benchmark body once so it cannot rot.
func TestPassThroughBenchmarkTwin(t *testing.T) { passThrough(t)() }

// passThrough is the request path of a route whose faults are configured at 0%.
func passThrough(tb testing.TB) func() {
	c, err := compile(&faultv3.HTTPFault{Abort: httpAbort(503, 0), Delay: fixedDelay(time.Second, 0)})
	if err != nil {
		tb.Fatal(err)
	}
	f := &instance{name: "f", base: c, st: counters()}
	next := filter.HandlerFunc(func(*filter.Exchange) error { return nil })
	x := &filter.Exchange{
		W:    httptest.NewRecorder(),
		R:    httptest.NewRequest(http.MethodGet, "/", nil),
		Info: &stream.Info{},
	}
	return func() {
		if err := f.serve(next, x); err != nil || x.Info.Flags != 0 {
			tb.Fatalf("pass-through: err %v flags %v", err, x.Info.Flags)
		}
	}
}

type clusterRoute struct {
	fakeRoute
	cluster string
}

func (r clusterRoute) Cluster() string { return r.cluster }

func TestHTTPUpstreamCluster(t *testing.T) {
	mw, route := build(t, nil, &faultv3.HTTPFault{Abort: httpAbort(503, 100), UpstreamCluster: "reviews"})
	hit := newHarness(t, mw, clusterRoute{route.(fakeRoute), "reviews"})
	if code, _, _ := hit.do(t, nil); code != 503 {
		t.Errorf("route to the fault's cluster: %d, want 503", code)
	}
	miss := newHarness(t, mw, clusterRoute{route.(fakeRoute), "ratings"})
	if code, _, _ := miss.do(t, nil); code != 200 {
		t.Errorf("route to another cluster: %d, want 200", code)
	}
}

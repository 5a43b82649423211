package ratelimit

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

const filterName = "envoy.filters.http.local_ratelimit"

func TestBucketFillsByElapsedIntervals(t *testing.T) {
	const iv = 100 * time.Millisecond
	b := newBucket(3, 2, iv)
	steps := []struct {
		at        time.Duration
		ok        bool
		remaining uint32
	}{
		{0, true, 2},
		{10 * time.Millisecond, true, 1},
		{20 * time.Millisecond, true, 0},
		{99 * time.Millisecond, false, 0},
		{100 * time.Millisecond, true, 1}, // one fill of 2
		{150 * time.Millisecond, true, 0},
		{150 * time.Millisecond, false, 0},
		{1000 * time.Millisecond, true, 2}, // many fills, capped at max_tokens
		{950 * time.Millisecond, true, 1},  // a late reader of the clock gets no fill
	}
	for i, s := range steps {
		ok, rem, reset := b.take(s.at)
		if ok != s.ok || rem != s.remaining {
			t.Fatalf("step %d at %v: got (%v,%d) want (%v,%d)", i, s.at, ok, rem, s.ok, s.remaining)
		}
		if reset <= 0 || reset > iv {
			t.Fatalf("step %d: reset %v out of (0,%v]", i, reset, iv)
		}
	}
}

func TestBucketConcurrentTakesNeverExceedTokens(t *testing.T) {
	b := newBucket(1000, 1, time.Hour)
	var got atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				if ok, _, _ := b.take(time.Second); ok {
					got.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got.Load() != 1000 {
		t.Fatalf("%d tokens taken from a bucket of 1000", got.Load())
	}
}

func TestCompile(t *testing.T) {
	tests := []struct {
		name string
		cfg  *lrlv3.LocalRateLimit
		want string // error substring; "" for success
	}{
		{"ok", limitCfg(10, 1, time.Second, 100, 100), ""},
		{"no prefix", &lrlv3.LocalRateLimit{}, "stat_prefix"},
		{"fast fill", limitCfg(10, 1, 10*time.Millisecond, 100, 100), "fill_interval"},
		{"zero tokens", limitCfg(0, 1, time.Second, 100, 100), "max_tokens"},
		{"descriptors", func() *lrlv3.LocalRateLimit {
			c := limitCfg(10, 1, time.Second, 100, 100)
			c.Descriptors = append(c.Descriptors, nil)
			return c
		}(), "descriptors"},
	}
	for _, tt := range tests {
		_, err := compile(tt.cfg)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.want)
		}
	}
	c, _ := compile(&lrlv3.LocalRateLimit{StatPrefix: "p", Status: &typev3.HttpStatus{Code: typev3.StatusCode_OK}})
	if c.status != 429 {
		t.Errorf("status below 400 gave %d, want 429", c.status)
	}
}

func TestApplyHeaders(t *testing.T) {
	ops, err := compileHeaders("h", []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: "x-a", Value: "1"}},
		{Header: &corev3.HeaderValue{Key: "x-b", Value: "2"}, Append: wrapperspb.Bool(false)},
		{Header: &corev3.HeaderValue{Key: "x-c", Value: "3"}, AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT},
		{Header: &corev3.HeaderValue{Key: "x-d", Value: "4"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"X-A": {"0"}, "X-B": {"0"}, "X-C": {"0"}}
	applyHeaders(h, ops)
	want := http.Header{"X-A": {"0", "1"}, "X-B": {"2"}, "X-C": {"0"}}
	for k, v := range want {
		if strings.Join(h[k], ",") != strings.Join(v, ",") {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
	if _, ok := h["X-D"]; ok {
		t.Error("OVERWRITE_IF_EXISTS added an absent header")
	}
}

// --- HTTP through a loopback harness ---

type fakeRoute map[string]any

func (r fakeRoute) FilterConfig(name string) any { return r[name] }

type harness struct {
	srv   *httptest.Server
	infos chan *stream.Info
	seen  chan http.Header // request headers the upstream saw
}

func newHarness(t *testing.T, mw filter.Middleware, route filter.Route) *harness {
	t.Helper()
	h := &harness{infos: make(chan *stream.Info, 256), seen: make(chan http.Header, 256)}
	chain := mw(filter.HandlerFunc(func(x *filter.Exchange) error {
		h.seen <- x.R.Header.Clone()
		x.W.WriteHeader(http.StatusOK)
		_, err := io.WriteString(x.W, "ok")
		return err
	}))
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &filter.Exchange{W: w, R: r, Info: &stream.Info{Start: time.Now()}, Route: route}
		if err := chain.Serve(x); err != nil {
			http.Error(w, err.Error(), 500)
		}
		h.infos <- x.Info
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) get(t *testing.T) (*http.Response, string, *stream.Info) {
	t.Helper()
	resp, err := h.srv.Client().Get(h.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	select {
	case i := <-h.infos:
		return resp, string(b), i
	case <-time.After(10 * time.Second):
		t.Fatal("no info recorded")
		return nil, "", nil
	}
}

func frac(n uint32) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: n}, RuntimeKey: "k"}
}

func limitCfg(max, perFill uint32, fill time.Duration, enabled, enforced uint32) *lrlv3.LocalRateLimit {
	return &lrlv3.LocalRateLimit{
		StatPrefix: "http_local_rate_limiter",
		TokenBucket: &typev3.TokenBucket{
			MaxTokens: max, TokensPerFill: wrapperspb.UInt32(perFill), FillInterval: durationpb.New(fill),
		},
		FilterEnabled:  frac(enabled),
		FilterEnforced: frac(enforced),
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

func buildMW(t *testing.T, cfg *lrlv3.LocalRateLimit) filter.Middleware {
	t.Helper()
	mw, err := filter.Build(filterName, mustAny(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

func TestHTTPLimitThenRefill(t *testing.T) {
	st := stats.New()
	UseStats(st)
	t.Cleanup(func() { UseStats(nil) })
	cfg := limitCfg(3, 3, 300*time.Millisecond, 100, 100)
	cfg.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-local-rate-limit", Value: "true"}}}
	cfg.EnableXRatelimitHeaders = ratelimitcommonv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
	h := newHarness(t, buildMW(t, cfg), nil)

	// The bucket may already have refilled between requests on a slow machine, so count
	// until the first 429 instead of asserting exactly three 200s in a row.
	passed := 0
	var limited *http.Response
	var limitedBody string
	var limitedInfo *stream.Info
	for range 50 {
		resp, b, info := h.get(t)
		if resp.StatusCode == http.StatusOK {
			passed++
			if resp.Header.Get("X-Ratelimit-Limit") != "3" {
				t.Errorf("x-ratelimit-limit %q", resp.Header.Get("X-Ratelimit-Limit"))
			}
			continue
		}
		limited, limitedBody, limitedInfo = resp, b, info
		break
	}
	if limited == nil || passed < 3 {
		t.Fatalf("passed %d, limited %v: want at least 3 passes then a 429", passed, limited != nil)
	}
	if limited.StatusCode != 429 || limitedBody != "local_rate_limited" {
		t.Errorf("limited response %d %q", limited.StatusCode, limitedBody)
	}
	if limited.Header.Get("X-Local-Rate-Limit") != "true" || limited.Header.Get("X-Envoy-Ratelimited") != "true" || limited.Header.Get("X-Ratelimit-Remaining") != "0" {
		t.Errorf("limited headers %v", limited.Header)
	}
	if !limitedInfo.Flags.Has(stream.RateLimited) || limitedInfo.ResponseDetails != "local_rate_limited" {
		t.Errorf("limited info flags %v details %q", limitedInfo.Flags, limitedInfo.ResponseDetails)
	}
	if v, _ := st.Value("http_local_rate_limiter.http_local_rate_limit.rate_limited"); v < 1 {
		t.Errorf("rate_limited = %d", v)
	}
	// Bounded wait for the refill.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _, _ := h.get(t)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bucket never refilled")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHTTPDisabledWhenNotEnabled(t *testing.T) {
	cfg := limitCfg(1, 1, time.Hour, 0, 100)
	cfg.FilterEnabled = nil // Envoy: unset means 0%
	h := newHarness(t, buildMW(t, cfg), nil)
	for i := range 5 {
		if resp, _, _ := h.get(t); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d with filter_enabled unset", i, resp.StatusCode)
		}
	}
}

func TestHTTPNotEnforced(t *testing.T) {
	cfg := limitCfg(1, 1, time.Hour, 100, 0)
	cfg.RequestHeadersToAddWhenNotEnforced = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-would-limit", Value: "yes"}}}
	h := newHarness(t, buildMW(t, cfg), nil)
	h.get(t)
	if s := <-h.seen; s.Get("X-Would-Limit") != "" {
		t.Error("first request marked as limited")
	}
	resp, _, info := h.get(t)
	if resp.StatusCode != 200 || info.Flags != 0 {
		t.Errorf("shadow-limited request: %d flags %v", resp.StatusCode, info.Flags)
	}
	if s := <-h.seen; s.Get("X-Would-Limit") != "yes" {
		t.Error("request_headers_to_add_when_not_enforced missing upstream")
	}
}

func TestHTTPPerRouteBuckets(t *testing.T) {
	// Filter-level config has no bucket (Istio's shape); each route brings its own.
	mw := buildMW(t, &lrlv3.LocalRateLimit{StatPrefix: "http_local_rate_limiter"})
	parse := func(max uint32) any {
		cfg, ok, err := filter.ParsePerRoute(filterName, mustAny(t, limitCfg(max, 1, time.Hour, 100, 100)))
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		return cfg
	}
	a := newHarness(t, mw, fakeRoute{filterName: parse(1)})
	b := newHarness(t, mw, fakeRoute{filterName: parse(2)})
	none := newHarness(t, mw, fakeRoute{})
	codes := func(h *harness, n int) string {
		var s []string
		for range n {
			resp, _, _ := h.get(t)
			s = append(s, http.StatusText(resp.StatusCode))
		}
		return strings.Join(s, ",")
	}
	if got := codes(a, 2); got != "OK,Too Many Requests" {
		t.Errorf("route a: %s", got)
	}
	if got := codes(b, 3); got != "OK,OK,Too Many Requests" {
		t.Errorf("route b: %s", got)
	}
	if got := codes(none, 3); got != "OK,OK,OK" {
		t.Errorf("route without config: %s", got)
	}
	d := newHarness(t, buildMW(t, limitCfg(1, 1, time.Hour, 100, 100)), fakeRoute{filterName: filter.Disabled})
	if got := codes(d, 3); got != "OK,OK,OK" {
		t.Errorf("disabled route: %s", got)
	}
}

func BenchmarkServe(b *testing.B) {
	b.ReportAllocs()
	run := serveBench(b)
	for b.Loop() {
		run()
	}
}

// TestServeBenchmarkTwin runs the benchmark body once.
func TestServeBenchmarkTwin(t *testing.T) { serveBench(t)() }

// serveBench is the request path of a limited route whose bucket never runs dry.
func serveBench(tb testing.TB) func() {
	c, err := compile(limitCfg(1<<30, 1<<20, time.Second, 100, 100))
	if err != nil {
		tb.Fatal(err)
	}
	f := &instance{name: "rl", base: c}
	next := filter.HandlerFunc(func(*filter.Exchange) error { return nil })
	x := &filter.Exchange{W: httptest.NewRecorder(), R: httptest.NewRequest(http.MethodGet, "/", nil), Info: &stream.Info{}}
	return func() {
		if err := f.serve(next, x); err != nil || x.Info.Flags != 0 {
			tb.Fatalf("err %v flags %v", err, x.Info.Flags)
		}
	}
}

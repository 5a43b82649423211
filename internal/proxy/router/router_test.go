package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/stream"
)

func oneVhost(routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{vhost("vh", []string{"*"}, routes...)}}
}

// echoRequest answers with what the upstream saw, in response headers.
func echoRequest(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Seen-Path", r.RequestURI)
	h.Set("Seen-Host", r.Host)
	for k, v := range r.Header {
		h.Set("Seen-"+k, strings.Join(v, "|"))
	}
	b, _ := io.ReadAll(r.Body)
	_, _ = w.Write(b)
}

func TestForwardRewritesAndHeaders(t *testing.T) {
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream-Private", "secret")
		echoRequest(w, r)
	})
	pre := prefixRoute("/pre/", "a")
	pre.GetRoute().PrefixRewrite = "/new/"
	pre.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "rewritten.example"}
	pre.GetRoute().AppendXForwardedHost = true
	re := routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/v[0-9]+/.*`)}}, "a")
	re.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regex(`^/v([0-9]+)/(.*)$`), Substitution: `/version\1/\2`}
	all := prefixRoute("/", "a")
	all.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		hdrAdd("x-client-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		hdrAdd("x-user-copy", "%REQ(x-user)%", 0),
	}
	all.RequestHeadersToRemove = []string{"x-secret"}
	all.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hdrAdd("x-resp", "yes", 0)}
	all.ResponseHeadersToRemove = []string{"x-upstream-private"}
	p := newProxy(t, oneVhost(pre, re, all), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})

	resp, _ := p.do("/pre/page?q=1", reqOpt{host: "orig.example:8080"})
	if got := resp.Header.Get("Seen-Path"); got != "/new/page?q=1" {
		t.Errorf("prefix rewrite: upstream saw %q", got)
	}
	if got := resp.Header.Get("Seen-Host"); got != "rewritten.example" {
		t.Errorf("host rewrite: upstream saw %q", got)
	}
	if got := resp.Header.Get("Seen-X-Envoy-Original-Path"); got != "/pre/page?q=1" {
		t.Errorf("x-envoy-original-path = %q", got)
	}
	if got := resp.Header.Get("Seen-X-Forwarded-Host"); got != "orig.example:8080" {
		t.Errorf("x-forwarded-host = %q", got)
	}
	if resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
		t.Errorf("no x-envoy-upstream-service-time")
	}
	if resp.Header.Get("Seen-X-Envoy-Expected-Rq-Timeout-Ms") != "15000" {
		t.Errorf("x-envoy-expected-rq-timeout-ms = %q", resp.Header.Get("Seen-X-Envoy-Expected-Rq-Timeout-Ms"))
	}
	info := p.nextInfo()
	if info.Cluster != "a" || info.UpstreamHost != up.addr || info.ResponseCode != 200 || info.ResponseDetails != "via_upstream" || info.Attempts != 1 {
		t.Errorf("info: %+v", info)
	}

	resp, _ = p.do("/v2/items/7", reqOpt{})
	if got := resp.Header.Get("Seen-Path"); got != "/version2/items/7" {
		t.Errorf("regex rewrite: upstream saw %q", got)
	}
	p.nextInfo()

	resp, body := p.do("/plain", reqOpt{method: "POST", body: "hello", header: map[string]string{
		"X-User": "jason", "X-Secret": "s", "Connection": "x-hop", "X-Hop": "1", "Keep-Alive": "timeout=5", "X-Envoy-Retry-On": "5xx",
	}})
	if body != "hello" {
		t.Errorf("body = %q", body)
	}
	if got := resp.Header.Get("Seen-X-Client-Ip"); got != "127.0.0.1" {
		t.Errorf("x-client-ip = %q", got)
	}
	if got := resp.Header.Get("Seen-X-User-Copy"); got != "jason" {
		t.Errorf("x-user-copy = %q", got)
	}
	for _, h := range []string{"Seen-X-Secret", "Seen-X-Hop", "Seen-Keep-Alive", "Seen-X-Envoy-Retry-On"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("%s reached the upstream: %q", strings.TrimPrefix(h, "Seen-"), v)
		}
	}
	if resp.Header.Get("X-Resp") != "yes" || resp.Header.Get("X-Upstream-Private") != "" {
		t.Errorf("response mutations: x-resp=%q x-upstream-private=%q", resp.Header.Get("X-Resp"), resp.Header.Get("X-Upstream-Private"))
	}
	p.nextInfo()
	// TE crosses only as "trailers": kept as it is when that is all it says (the
	// request then has no field to drop), cut down to it otherwise.
	for _, te := range []string{"trailers", "trailers, deflate"} {
		resp, _ = p.do("/plain", reqOpt{header: map[string]string{"Te": te}})
		if got := resp.Header.Get("Seen-Te"); got != "trailers" {
			t.Errorf("TE %q: upstream saw %q, want trailers", te, got)
		}
		p.nextInfo()
	}
	if got := p.counter("cluster.a.upstream_rq_200"); got != 5 {
		t.Errorf("cluster.a.upstream_rq_200 = %d, want 5", got)
	}
}

func TestWeightedClusters(t *testing.T) {
	a := startUpstream(t, "a", false, nil)
	b := startUpstream(t, "b", false, nil)
	r := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "a", Weight: wrapperspb.UInt32(90), RequestHeadersToAdd: []*corev3.HeaderValueOption{hdrAdd("x-split", "a", 0)}},
			{Name: "b", Weight: wrapperspb.UInt32(10), ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdrAdd("x-split", "b", 0)}},
		}}},
	}}}
	p := newProxy(t, oneVhost(r), []*clusterv3.Cluster{staticCluster(t, "a", a.addr), staticCluster(t, "b", b.addr)}, proxyOpt{})
	const n = 10000
	var wg sync.WaitGroup
	var failed atomic.Int64
	work := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		work <- struct{}{}
	}
	close(work)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				resp, err := p.client.Get(p.url + "/")
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), n)
	}
	share := float64(a.hits.Load()) / n * 100
	if math.Abs(share-90) > 2 {
		t.Fatalf("a got %.2f%% (a=%d b=%d), want 90±2", share, a.hits.Load(), b.hits.Load())
	}
	// The weighted cluster's own header mutations apply to its share only.
	p.drainInfos()
	seenB := false
	for i := 0; i < 200 && !seenB; i++ {
		resp, _ := p.do("/", reqOpt{})
		switch resp.Header.Get("X-Upstream") {
		case "b":
			seenB = resp.Header.Get("X-Split") == "b"
			if !seenB {
				t.Fatalf("b's response lacks its x-split header")
			}
		case "a":
			if resp.Header.Get("X-Split") != "" {
				t.Fatalf("a's response got b's header")
			}
		}
	}
	if !seenB {
		t.Fatalf("b never answered in 200 requests")
	}
}

func TestHeaderAndQueryRouting(t *testing.T) {
	a := startUpstream(t, "a", false, nil)
	b := startUpstream(t, "b", false, nil)
	hdr := routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
		{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("jason")}},
	}}, "b")
	q := routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, QueryParameters: []*routev3.QueryParameterMatcher{
		{Name: "canary", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("1")}},
	}}, "b")
	p := newProxy(t, oneVhost(hdr, q, prefixRoute("/", "a")), []*clusterv3.Cluster{staticCluster(t, "a", a.addr), staticCluster(t, "b", b.addr)}, proxyOpt{})
	cases := []struct {
		path, user, want string
	}{
		{"/", "", "a"}, {"/", "jason", "b"}, {"/", "mary", "a"}, {"/?canary=1", "", "b"}, {"/?canary=2", "mary", "a"},
	}
	for _, c := range cases {
		o := reqOpt{}
		if c.user != "" {
			o.header = map[string]string{"End-User": c.user}
		}
		resp, _ := p.do(c.path, o)
		if got := resp.Header.Get("X-Upstream"); got != c.want {
			t.Errorf("%s end-user=%q: reached %q, want %q", c.path, c.user, got, c.want)
		}
	}
}

func TestRedirectAndDirectResponse(t *testing.T) {
	redirect := func(prefix string, ra *routev3.RedirectAction) *routev3.Route {
		return &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}, Action: &routev3.Route_Redirect{Redirect: ra}}
	}
	direct := &routev3.Route{
		Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/direct"}},
		Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "hello direct"}}}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdrAdd("x-direct", "1", 0)},
	}
	unavailable := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/down"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 503, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("maintenance")}}}},
	}
	rc := oneVhost(
		redirect("/secure", &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}),
		redirect("/moved", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/elsewhere"}, StripQuery: true, ResponseCode: routev3.RedirectAction_FOUND}),
		redirect("/old/", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new/"}, HostRedirect: "new.example", ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}),
		redirect("/re/", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{Pattern: regex(`^/re/(.*)$`), Substitution: `/rx/\1`}}}),
		redirect("/port", &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}, PortRedirect: 8443}),
		direct, unavailable,
	)
	p := newProxy(t, rc, nil, proxyOpt{})
	cases := []struct {
		path, host string
		code       int
		location   string
	}{
		{"/secure/x?y=1", "h.example:80", 301, "https://h.example/secure/x?y=1"},
		{"/secure/x", "h.example:8080", 301, "https://h.example:8080/secure/x"},
		{"/moved?a=b", "h.example", 302, "http://h.example/elsewhere"},
		{"/old/page?k=v", "h.example", 308, "http://new.example/new/page?k=v"},
		{"/re/a/b", "h.example", 301, "http://h.example/rx/a/b"},
		{"/port/x", "h.example:80", 301, "https://h.example:8443/port/x"},
	}
	for _, c := range cases {
		resp, _ := p.do(c.path, reqOpt{host: c.host})
		if resp.StatusCode != c.code || resp.Header.Get("Location") != c.location {
			t.Errorf("%s (host %s): %d %q, want %d %q", c.path, c.host, resp.StatusCode, resp.Header.Get("Location"), c.code, c.location)
		}
		if info := p.nextInfo(); info.ResponseDetails != "direct_response" {
			t.Errorf("%s: details %q", c.path, info.ResponseDetails)
		}
	}
	resp, body := p.do("/direct", reqOpt{})
	if resp.StatusCode != 200 || body != "hello direct" || resp.Header.Get("X-Direct") != "1" {
		t.Errorf("direct response: %d %q x-direct=%q", resp.StatusCode, body, resp.Header.Get("X-Direct"))
	}
	p.nextInfo()
	// A gRPC client gets the direct 503 as a trailers-only UNAVAILABLE.
	resp, body = p.do("/down", reqOpt{method: "POST", header: map[string]string{"Content-Type": "application/grpc"}})
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get("Grpc-Message") != "maintenance" || body != "" {
		t.Errorf("gRPC direct response: %d grpc-status=%q grpc-message=%q body=%q", resp.StatusCode, resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message"), body)
	}
	if info := p.nextInfo(); info.GRPCStatus != "14" {
		t.Errorf("info grpc status %q", info.GRPCStatus)
	}
	resp, body = p.do("/down", reqOpt{})
	if resp.StatusCode != 503 || body != "maintenance" {
		t.Errorf("direct 503: %d %q", resp.StatusCode, body)
	}
}

func TestLocalErrors(t *testing.T) {
	up := startUpstream(t, "a", false, nil)
	notFound := prefixRoute("/nf", "missing")
	notFound.GetRoute().ClusterNotFoundResponseCode = routev3.RouteAction_NOT_FOUND
	hdrCluster := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/by-header"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}}}}
	rc := &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{vhost("vh", []string{"known"},
		notFound, hdrCluster,
		prefixRoute("/missing", "missing"),
		prefixRoute("/empty", "empty"),
		prefixRoute("/dead", "dead"),
		prefixRoute("/", "a"),
	)}}
	empty := staticCluster(t, "empty")
	p := newProxy(t, rc, []*clusterv3.Cluster{staticCluster(t, "a", up.addr), empty, staticCluster(t, "dead", deadAddr(t))}, proxyOpt{})
	cases := []struct {
		path, host string
		header     map[string]string
		code       int
		flag       stream.Flags
		details    string
		body       string
	}{
		{"/", "unknown-host", nil, 404, stream.NoRouteFound, "route_not_found", ""},
		{"/missing", "known", nil, 503, stream.NoClusterFound, "cluster_not_found", ""},
		{"/nf", "known", nil, 404, stream.NoClusterFound, "cluster_not_found", ""},
		{"/by-header", "known", map[string]string{"X-Cluster": "nope"}, 503, stream.NoClusterFound, "cluster_not_found", ""},
		{"/empty", "known", nil, 503, stream.NoHealthyUpstream, "no_healthy_upstream", "no healthy upstream"},
		{"/dead", "known", nil, 503, stream.UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}", "upstream connect error or disconnect/reset before headers. reset reason: connection failure"},
	}
	for _, c := range cases {
		resp, body := p.do(c.path, reqOpt{host: c.host, header: c.header})
		info := p.nextInfo()
		if resp.StatusCode != c.code || !info.Flags.Has(c.flag) || info.ResponseDetails != c.details || body != c.body {
			t.Errorf("%s: %d %q flags=%s details=%q; want %d %q %s %q", c.path, resp.StatusCode, body, info.Flags, info.ResponseDetails, c.code, c.body, c.flag, c.details)
		}
	}
	resp, _ := p.do("/by-header", reqOpt{host: "known", header: map[string]string{"X-Cluster": "a"}})
	if resp.Header.Get("X-Upstream") != "a" {
		t.Errorf("cluster_header did not reach a")
	}
	p.nextInfo()
	// gRPC: a local reply is a trailers-only response.
	resp, body := p.do("/", reqOpt{method: "POST", host: "unknown-host", header: map[string]string{"Content-Type": "application/grpc"}})
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "12" || resp.Header.Get("Content-Type") != "application/grpc" || body != "" {
		t.Errorf("gRPC no route: %d grpc-status=%q body=%q", resp.StatusCode, resp.Header.Get("Grpc-Status"), body)
	}
	if info := p.nextInfo(); !info.Flags.Has(stream.NoRouteFound) {
		t.Errorf("gRPC no route flags %s", info.Flags)
	}
}

func TestRetryRecovers(t *testing.T) {
	var calls atomic.Int64
	var mu sync.Mutex
	var seen []string
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Envoy-Attempt-Count")+":"+string(b))
		mu.Unlock()
		if calls.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	rt := prefixRoute("/", "a")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
	rc := &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{rt},
		IncludeRequestAttemptCount: true, IncludeAttemptCountInResponse: true}}}
	p := newProxy(t, rc, []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
	for i := 0; i < 10; i++ {
		resp, body := p.do("/flaky", reqOpt{method: "POST", body: fmt.Sprintf("payload-%d", i)})
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q, want 200 after one retry", i, resp.StatusCode, body)
		}
		if resp.Header.Get("X-Envoy-Attempt-Count") != "2" {
			t.Errorf("x-envoy-attempt-count in response = %q", resp.Header.Get("X-Envoy-Attempt-Count"))
		}
		info := p.nextInfo()
		if info.Attempts != 2 || info.Flags != 0 {
			t.Errorf("request %d: attempts %d flags %s", i, info.Attempts, info.Flags)
		}
	}
	if got := calls.Load(); got != 20 {
		t.Fatalf("upstream saw %d attempts, want 20", got)
	}
	mu.Lock()
	for i := 0; i < 10; i++ {
		want1, want2 := fmt.Sprintf("1:payload-%d", i), fmt.Sprintf("2:payload-%d", i)
		if seen[2*i] != want1 || seen[2*i+1] != want2 {
			t.Errorf("attempts of request %d saw %q %q, want %q %q (the body replayed)", i, seen[2*i], seen[2*i+1], want1, want2)
		}
	}
	mu.Unlock()
	if got := p.counter("cluster.a.upstream_rq_retry"); got != 10 {
		t.Errorf("upstream_rq_retry = %d, want 10", got)
	}
	if got := p.counter("cluster.a.upstream_rq_retry_success"); got != 10 {
		t.Errorf("upstream_rq_retry_success = %d, want 10", got)
	}
	if got := p.counter("cluster.a.upstream_rq_503"); got != 10 {
		t.Errorf("upstream_rq_503 = %d, want 10", got)
	}
}

func TestRetryFromRequestHeaders(t *testing.T) {
	var calls atomic.Int64
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusConflict)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	p := newProxy(t, oneVhost(prefixRoute("/", "a")), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
	resp, _ := p.do("/", reqOpt{header: map[string]string{"X-Envoy-Retry-On": "retriable-4xx", "X-Envoy-Max-Retries": "3"}})
	if resp.StatusCode != 200 || calls.Load() != 3 {
		t.Fatalf("x-envoy-retry-on: %d after %d calls, want 200 after 3", resp.StatusCode, calls.Load())
	}
	p.nextInfo()
	// Without the headers and without a route policy, no retry.
	calls.Store(0)
	resp, _ = p.do("/", reqOpt{})
	if resp.StatusCode != 409 || calls.Load() != 1 {
		t.Fatalf("no retry policy: %d after %d calls", resp.StatusCode, calls.Load())
	}
}

func TestPerTryTimeoutThenSuccess(t *testing.T) {
	var calls atomic.Int64
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		_, _ = io.WriteString(w, "second try")
	})
	rt := prefixRoute("/", "a")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1), PerTryTimeout: durationpb.New(300 * time.Millisecond)}
	p := newProxy(t, oneVhost(rt), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
	start := time.Now()
	resp, body := p.do("/", reqOpt{})
	if resp.StatusCode != 200 || body != "second try" {
		t.Fatalf("got %d %q, want the second try's answer", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %v: the per-try timeout did not cut the first attempt", d)
	}
	if info := p.nextInfo(); info.Attempts != 2 {
		t.Errorf("attempts = %d", info.Attempts)
	}
	if got := p.counter("cluster.a.upstream_rq_per_try_timeout"); got != 1 {
		t.Errorf("upstream_rq_per_try_timeout = %d, want 1", got)
	}
}

func TestRetriesExhausted(t *testing.T) {
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "down")
	})
	rt := prefixRoute("/", "a")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "gateway-error", NumRetries: wrapperspb.UInt32(2),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
	p := newProxy(t, oneVhost(rt), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
	resp, body := p.do("/", reqOpt{})
	if resp.StatusCode != 503 || body != "down" {
		t.Fatalf("got %d %q, want the upstream's last 503", resp.StatusCode, body)
	}
	info := p.nextInfo()
	if !info.Flags.Has(stream.UpstreamRetryLimitExceeded) || info.Attempts != 3 || up.hits.Load() != 3 {
		t.Fatalf("flags %s attempts %d hits %d, want URX after 3", info.Flags, info.Attempts, up.hits.Load())
	}
	if got := p.counter("cluster.a.upstream_rq_retry_limit_exceeded"); got != 1 {
		t.Errorf("upstream_rq_retry_limit_exceeded = %d", got)
	}
}

func TestRouteTimeout(t *testing.T) {
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	rt := prefixRoute("/", "a")
	rt.GetRoute().Timeout = durationpb.New(200 * time.Millisecond)
	grpcRoute := routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/pkg.Svc/"}}, "a")
	grpcRoute.GetRoute().Timeout = durationpb.New(0) // no route timeout: grpc-timeout decides
	grpcRoute.GetRoute().MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(0)}
	p := newProxy(t, oneVhost(grpcRoute, rt), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
	resp, body := p.do("/", reqOpt{})
	info := p.nextInfo()
	if resp.StatusCode != 504 || body != "upstream request timeout" || !info.Flags.Has(stream.UpstreamRequestTimeout) || info.ResponseDetails != "upstream_response_timeout" {
		t.Fatalf("got %d %q flags %s details %q, want 504 UT", resp.StatusCode, body, info.Flags, info.ResponseDetails)
	}
	if got := p.counter("cluster.a.upstream_rq_timeout"); got != 1 {
		t.Errorf("upstream_rq_timeout = %d", got)
	}
	// x-envoy-upstream-rq-timeout-ms overrides the route's timeout.
	resp, _ = p.do("/pkg.Svc/Method", reqOpt{method: "POST", header: map[string]string{"X-Envoy-Upstream-Rq-Timeout-Ms": "200"}})
	if resp.StatusCode != 504 {
		t.Fatalf("x-envoy-upstream-rq-timeout-ms: %d, want 504", resp.StatusCode)
	}
	p.nextInfo()
	resp, _ = p.do("/pkg.Svc/Method", reqOpt{method: "POST", header: map[string]string{"Content-Type": "application/grpc", "Grpc-Timeout": "200m"}})
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" {
		t.Fatalf("grpc-timeout: %d grpc-status %q, want a trailers-only UNAVAILABLE", resp.StatusCode, resp.Header.Get("Grpc-Status"))
	}
	if info := p.nextInfo(); !info.Flags.Has(stream.UpstreamRequestTimeout) {
		t.Errorf("grpc-timeout flags %s", info.Flags)
	}
}

func TestRetryConnectFailureOtherHost(t *testing.T) {
	up := startUpstream(t, "live", false, nil)
	rt := prefixRoute("/", "c")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(1),
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}},
		HostSelectionRetryMaxAttempts: 3}
	p := newProxy(t, oneVhost(rt), []*clusterv3.Cluster{staticCluster(t, "c", deadAddr(t), up.addr)}, proxyOpt{})
	for i := 0; i < 10; i++ {
		resp, _ := p.do("/", reqOpt{})
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		p.nextInfo()
	}
}

func TestLargeBodyIsNotRetried(t *testing.T) {
	var got atomic.Int64
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(n)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	rt := prefixRoute("/", "a")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3)}
	p := newProxy(t, oneVhost(rt), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
	big := strings.Repeat("x", DefaultBufferLimit+1)
	resp, _ := p.do("/", reqOpt{method: "POST", body: big})
	if resp.StatusCode != 503 || up.hits.Load() != 1 || got.Load() != int64(len(big)) {
		t.Fatalf("status %d hits %d body %d: a body over the buffer limit must go once, whole", resp.StatusCode, up.hits.Load(), got.Load())
	}
}

func TestGRPCStreamingWithTrailers(t *testing.T) {
	up := startUpstream(t, "grpc", true, func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2", 400)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Seen-Te", r.Header.Get("Te"))
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		// Echo each chunk as it arrives: the client waits for it before sending more,
		// which deadlocks if anything on the path buffers.
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				_ = rc.Flush()
			}
			if err != nil {
				break
			}
		}
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"X-End", "done")
	})
	p := newProxy(t, oneVhost(prefixRoute("/", "grpc")), []*clusterv3.Cluster{withHTTP2(t, staticCluster(t, "grpc", up.addr))}, proxyOpt{h2c: true})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", p.url+"/pkg.Echo/Stream", pr)
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		done <- result{resp, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatal("no response headers before the request body: headers were not flushed")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	resp := res.resp
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Seen-Te") != "trailers" {
		t.Fatalf("proto %d, upstream saw te=%q", resp.ProtoMajor, resp.Header.Get("Seen-Te"))
	}
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("msg-%d;", i)
		if _, err := io.WriteString(pw, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, got); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if string(got) != msg {
			t.Fatalf("echo %d = %q", i, got)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("end of stream: %q %v", rest, err)
	}
	if resp.Trailer.Get("X-End") != "done" || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("trailers lost: %v", resp.Trailer)
	}
	if info := p.nextInfo(); info.GRPCStatus != "0" || info.ResponseCode != 200 {
		t.Errorf("info grpc status %q code %d", info.GRPCStatus, info.ResponseCode)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	up := startUpstream(t, "ws", false, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !headerHasToken(r.Header.Get("Connection"), "upgrade") {
			http.Error(w, "not an upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Path: %s\r\n\r\n", r.URL.Path)
		_ = brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	p := newProxy(t, oneVhost(prefixRoute("/", "ws")), []*clusterv3.Cluster{staticCluster(t, "ws", up.addr)}, proxyOpt{})
	c, err := net.DialTimeout("tcp", p.srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	_, _ = fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("X-Path") != "/chat" {
		t.Fatalf("upgrade answered %d x-path %q", resp.StatusCode, resp.Header.Get("X-Path"))
	}
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("frame-%d", i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if string(got) != msg {
			t.Fatalf("echo %d = %q", i, got)
		}
	}
	// Half-close from the client: the upstream sees EOF and closes; so do we.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("after half-close: %v", err)
	}
	info := p.nextInfo()
	if info.UpstreamHost != up.addr || info.ResponseDetails != "via_upstream" || info.BytesReceived < 5 {
		t.Errorf("info: %+v", info)
	}
}

func TestMirror(t *testing.T) {
	type shadow struct{ host, body string }
	seen := make(chan shadow, 16)
	main := startUpstream(t, "main", false, echoRequest)
	mirror := startUpstream(t, "mirror", false, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- shadow{r.Host, string(b)}
		w.WriteHeader(500) // never seen by the client
	})
	rt := prefixRoute("/", "main")
	rt.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "mirror"}}
	p := newProxy(t, oneVhost(rt), []*clusterv3.Cluster{staticCluster(t, "main", main.addr), staticCluster(t, "mirror", mirror.addr)}, proxyOpt{})
	for _, c := range []struct{ method, body, host, wantHost string }{
		{"GET", "", "reviews:9080", "reviews-shadow:9080"},
		{"POST", "copy me", "ratings", "ratings-shadow"},
	} {
		resp, body := p.do("/x", reqOpt{method: c.method, body: c.body, host: c.host})
		if resp.StatusCode != 200 || body != c.body {
			t.Fatalf("%s main response %d %q", c.method, resp.StatusCode, body)
		}
		select {
		case s := <-seen:
			if s.host != c.wantHost || s.body != c.body {
				t.Errorf("%s: mirror saw host %q body %q, want %q %q", c.method, s.host, s.body, c.wantHost, c.body)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: the mirror got nothing", c.method)
		}
	}
}

func TestDownstreamDisconnect(t *testing.T) {
	canceled := make(chan struct{}, 1)
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			canceled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	})
	p := newProxy(t, oneVhost(prefixRoute("/", "a")), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.url+"/", nil)
	if _, err := p.client.Do(req); err == nil {
		t.Fatal("request succeeded")
	}
	info := p.nextInfo()
	if !info.Flags.Has(stream.DownstreamConnectionTermination) {
		t.Errorf("flags %s, want DC", info.Flags)
	}
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not canceled")
	}
}

func TestTruncatedUpstreamBodyResetsDownstream(t *testing.T) {
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "only ten b")
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	})
	p := newProxy(t, oneVhost(prefixRoute("/", "a")), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
	// The client must see a failure, before or after the headers, never a complete
	// (short) response.
	resp, err := p.client.Get(p.url + "/")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a truncated upstream body reached the client as a complete response")
	}
	if info := p.nextInfo(); !info.Flags.Has(stream.UpstreamConnectionTermination) {
		t.Errorf("flags %s, want UC", info.Flags)
	}
}

func TestHashPolicyIsSticky(t *testing.T) {
	var ups []*testUpstream
	var addrs []string
	for i := 0; i < 3; i++ {
		u := startUpstream(t, fmt.Sprintf("u%d", i), false, nil)
		ups = append(ups, u)
		addrs = append(addrs, u.addr)
	}
	c := staticCluster(t, "c", addrs...)
	c.LbPolicy = clusterv3.Cluster_MAGLEV
	rt := prefixRoute("/", "c")
	rt.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
	p := newProxy(t, oneVhost(rt), []*clusterv3.Cluster{c}, proxyOpt{})
	distinct := map[string]bool{}
	for u := 0; u < 12; u++ {
		user := fmt.Sprintf("user-%d", u)
		first := ""
		for i := 0; i < 5; i++ {
			resp, _ := p.do("/", reqOpt{header: map[string]string{"X-User": user}})
			got := resp.Header.Get("X-Upstream")
			if first == "" {
				first = got
			} else if got != first {
				t.Fatalf("%s went to %s then %s", user, first, got)
			}
		}
		distinct[first] = true
	}
	if len(distinct) < 2 {
		t.Errorf("12 users all hashed to %v", distinct)
	}
}

func TestHTTP2DownstreamToHTTP1Upstream(t *testing.T) {
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Seen-Proto", r.Proto)
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})
	p := newProxy(t, oneVhost(prefixRoute("/", "a")), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{h2c: true})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := c.Post(p.url+"/x", "text/plain", strings.NewReader("over h2"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Seen-Proto") != "HTTP/1.1" || string(b) != "over h2" {
		t.Fatalf("proto %d, upstream saw %q, body %q", resp.ProtoMajor, resp.Header.Get("Seen-Proto"), b)
	}
}

func TestOverflow(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
	})
	c := staticCluster(t, "a", up.addr)
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(1)}}}
	rt := prefixRoute("/", "a")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset", NumRetries: wrapperspb.UInt32(3)}
	p := newProxy(t, oneVhost(rt), []*clusterv3.Cluster{c}, proxyOpt{})
	held := make(chan int, 1)
	go func() {
		resp, err := p.client.Get(p.url + "/hold")
		if err != nil {
			held <- 0
			return
		}
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	select {
	case <-entered:
	case <-time.After(15 * time.Second):
		t.Fatal("held request never reached the upstream")
	}
	resp, body := p.do("/second", reqOpt{})
	close(release)
	if resp.StatusCode != 503 || resp.Header.Get("X-Envoy-Overloaded") != "true" || !strings.HasSuffix(body, "reset reason: overflow") {
		t.Fatalf("second request: %d %q overloaded=%q, want 503 overflow", resp.StatusCode, body, resp.Header.Get("X-Envoy-Overloaded"))
	}
	// The overflowed request is answered first; the held one finishes after release.
	var info *stream.Info
	for i := 0; i < 2; i++ {
		if in := p.nextInfo(); in.Flags.Has(stream.UpstreamOverflow) {
			info = in
		}
	}
	if info == nil || info.ResponseDetails != "upstream_reset_before_response_started{overflow}" || info.Attempts != 1 {
		t.Fatalf("overflow info: %+v (an overflow is never retried)", info)
	}
	if code := <-held; code != 200 {
		t.Fatalf("held request: %d", code)
	}
}

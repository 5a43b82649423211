package router

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/h1"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
)

// Options are the router filter's dependencies.
type Options struct {
	Clusters *upstream.Manager
	Stats    *stats.Store
	Log      *slog.Logger
	// Rand draws weighted clusters, runtime fractions and retry jitter; nil is a fast
	// goroutine-safe generator.
	Rand func() uint64
}

// maxMirrorsInFlight bounds shadow requests per router; more are dropped and counted.
const maxMirrorsInFlight = 64

// Router is the terminal HTTP filter (envoy.filters.http.router).
type Router struct {
	clusters         *upstream.Manager
	stats            *stats.Store
	log              *slog.Logger
	rand             func() uint64
	suppressHeaders  bool // suppress_envoy_headers
	respectExpected  bool // respect_expected_rq_timeout
	mirrorSlots      chan struct{}
	mirrorDropped    *stats.Counter
	clusterStatsByID sync.Map // cluster name -> *routerClusterStats
}

var _ filter.Handler = (*Router)(nil)

// routerClusterStats are the per-cluster counters the router owns (the upstream package
// owns upstream_rq_total, upstream_rq_<code>, upstream_rq_retry, upstream_rq_timeout and
// upstream_rq_retry_overflow).
type routerClusterStats struct {
	retrySuccess       *stats.Counter // upstream_rq_retry_success
	retryLimitExceeded *stats.Counter // upstream_rq_retry_limit_exceeded
	perTryTimeout      *stats.Counter // upstream_rq_per_try_timeout
}

// NewRouter builds the router filter from its typed_config (nil means defaults).
func NewRouter(cfg *routerv3.Router, opts Options) filter.Handler {
	rt := &Router{
		clusters:        opts.Clusters,
		stats:           opts.Stats,
		log:             opts.Log,
		rand:            opts.Rand,
		suppressHeaders: cfg.GetSuppressEnvoyHeaders(),
		respectExpected: cfg.GetRespectExpectedRqTimeout(),
		mirrorSlots:     make(chan struct{}, maxMirrorsInFlight),
	}
	if rt.stats == nil {
		rt.stats = stats.New()
	}
	if rt.log == nil {
		rt.log = slog.New(slog.DiscardHandler)
	}
	if rt.rand == nil {
		rt.rand = rand.Uint64
	}
	rt.mirrorDropped = rt.stats.Counter("http.router.shadow_dropped")
	return rt
}

func (rt *Router) clusterStats(name string) *routerClusterStats {
	if v, ok := rt.clusterStatsByID.Load(name); ok {
		return v.(*routerClusterStats)
	}
	t := stats.Tag{Key: "envoy_cluster_name", Value: name}
	cs := &routerClusterStats{
		retrySuccess:       rt.stats.Counter("cluster.upstream_rq_retry_success", t),
		retryLimitExceeded: rt.stats.Counter("cluster.upstream_rq_retry_limit_exceeded", t),
		perTryTimeout:      rt.stats.Counter("cluster.upstream_rq_per_try_timeout", t),
	}
	v, _ := rt.clusterStatsByID.LoadOrStore(name, cs)
	return v.(*routerClusterStats)
}

// Serve routes one request: a local answer for a missing route, a redirect or a direct
// response; otherwise it forwards upstream.
func (rt *Router) Serve(x *filter.Exchange) error {
	route, _ := x.Route.(*Route)
	if route == nil {
		LocalReply(x, http.StatusNotFound, "", stream.NoRouteFound, "route_not_found")
		return nil
	}
	if x.Info.RouteName == "" {
		x.Info.RouteName = route.name
	}
	if x.Info.VirtualHost == "" && route.vh != nil {
		x.Info.VirtualHost = route.vh.name
	}
	switch route.action {
	case actRedirect:
		rt.serveRedirect(x, route)
		return nil
	case actDirect:
		rt.serveDirect(x, route)
		return nil
	}
	return rt.forward(x, route)
}

func (rt *Router) applyLocalResponseHeaders(x *filter.Exchange, route *Route, status int) {
	if len(route.respOps) == 0 {
		return
	}
	c := fmtCtx{r: x.R, reqH: x.R.Header, respH: x.W.Header(), info: x.Info, status: status}
	route.respOps.apply(x.W.Header(), &c)
}

func (rt *Router) serveDirect(x *filter.Exchange, route *Route) {
	d := route.direct
	// Envoy sets Location on a 201 or 3xx direct response (RFC 7231 7.1.2).
	if d.status == http.StatusCreated || (d.status >= 300 && d.status < 400) {
		x.W.Header().Set("Location", requestScheme(x.R)+"://"+x.R.Host+requestPath(x.R))
	}
	rt.applyLocalResponseHeaders(x, route, d.status)
	LocalReply(x, d.status, d.body, 0, "direct_response")
}

func (rt *Router) serveRedirect(x *filter.Exchange, route *Route) {
	loc := route.redir.location(x.R, route)
	x.W.Header().Set("Location", loc)
	rt.applyLocalResponseHeaders(x, route, route.redir.code)
	LocalReply(x, route.redir.code, "", 0, "direct_response")
}

// location builds the redirect target from the request, as Envoy's RedirectAction does.
func (rd *redirectAction) location(r *http.Request, route *Route) string {
	origScheme := requestScheme(r)
	scheme := origScheme
	if rd.scheme != "" {
		scheme = strings.ToLower(rd.scheme)
	}
	host := r.Host
	if rd.host != "" {
		host = rd.host
	}
	hostOnly, port := splitHostPort(host)
	if rd.port != 0 {
		port = strconv.Itoa(int(rd.port))
	} else if scheme != origScheme && rd.host == "" && port == defaultPort(origScheme) {
		// A scheme change drops the old scheme's default port (http://a:80 -> https://a).
		port = ""
	}
	if port == defaultPort(scheme) {
		port = ""
	}
	if port != "" {
		host = hostOnly + ":" + port
	} else {
		host = hostOnly
	}

	path := r.URL.EscapedPath()
	query := r.URL.RawQuery
	switch {
	case rd.hasPath:
		p, q, hasQ := strings.Cut(rd.path, "?")
		path = p
		if hasQ {
			query = q
		}
	case rd.hasPrefix:
		path = rewritePrefix(path, route, rd.prefixRewrite)
	case rd.regex != nil:
		path = rd.regex.apply(path)
	}
	if rd.stripQuery {
		query = ""
	}
	loc := scheme + "://" + host + path
	if query != "" {
		loc += "?" + query
	}
	return loc
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

func splitHostPort(h string) (host, port string) {
	stripped := stripPort(h)
	if len(stripped) == len(h) {
		return h, ""
	}
	return stripped, h[len(stripped)+1:]
}

// rewritePrefix replaces the part of the path the route matched: the prefix for prefix
// and path_separated_prefix routes, the whole path for path and regex routes.
func rewritePrefix(path string, route *Route, with string) string {
	switch route.match.kind {
	case pathPrefix, pathSeparatedPrefix:
		n := len(route.match.path)
		if n > len(path) {
			n = len(path)
		}
		return with + path[n:]
	}
	return with
}

// failure classifies why an attempt produced no response.
type failure uint8

const (
	failNone failure = iota
	failConnect
	failReset       // connection terminated or stream reset
	failRefused     // HTTP/2 REFUSED_STREAM
	failOverflow    // a circuit breaker was full
	failPerTry      // per_try_timeout
	failGlobal      // the route timeout
	failDownstream  // the client went away
	failNoHost      // no healthy upstream
	failRemoteReset // stream reset by the upstream
)

var (
	errGlobalTimeout = errors.New("router: upstream request timeout")
	errPerTryTimeout = errors.New("router: per try timeout")
)

// hop-by-hop headers (RFC 9110 7.6.1) the proxy does not forward.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Transfer-Encoding", "Upgrade", "Te", "Trailer", "Http2-Settings"}

// isHopHeader reports whether k is one of hopHeaders, with a switch: the one-pass
// scans ask it of every field of every message.
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Transfer-Encoding", "Upgrade", "Te", "Trailer", "Http2-Settings":
		return true
	}
	return false
}

// controlHeaders are the request fields the router reads (or, Expect, answers) and
// does not forward. scanRequestHeads must know every one, and every hop-by-hop one.
var controlHeaders = []string{hdrRetryOn, hdrRetryGRPCOn, hdrMaxRetries, hdrRetriableCodes, hdrUpstreamTimeout, hdrPerTryTimeout, hdrHedgeOnPerTry, "Expect"}

// envoy control headers read by the router and not forwarded.
const (
	hdrRetryOn         = "X-Envoy-Retry-On"
	hdrRetryGRPCOn     = "X-Envoy-Retry-Grpc-On"
	hdrMaxRetries      = "X-Envoy-Max-Retries"
	hdrRetriableCodes  = "X-Envoy-Retriable-Status-Codes"
	hdrUpstreamTimeout = "X-Envoy-Upstream-Rq-Timeout-Ms"
	hdrPerTryTimeout   = "X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms"
	hdrExpectedTimeout = "X-Envoy-Expected-Rq-Timeout-Ms"
	hdrAttemptCount    = "X-Envoy-Attempt-Count"
	hdrOriginalPath    = "X-Envoy-Original-Path"
	hdrServiceTime     = "X-Envoy-Upstream-Service-Time"
	hdrOverloaded      = "X-Envoy-Overloaded"
	hdrRateLimited     = "X-Envoy-Ratelimited"
	hdrForwardedHost   = "X-Forwarded-Host"
	hdrGRPCTimeout     = "Grpc-Timeout"
	hdrGRPCStatus      = "Grpc-Status"
	hdrGRPCMessage     = "Grpc-Message"
	hdrHedgeOnPerTry   = "X-Envoy-Hedge-On-Per-Try-Timeout"
)

// effectiveRetry merges the route's policy with the x-envoy-retry-* request headers.
type effectiveRetry struct {
	p          *retryPolicy
	on         retryOn
	numRetries int
	extraCodes []int
}

func (rt *Router) retryFor(f *forward, hs *requestHeads) effectiveRetry {
	er := effectiveRetry{p: f.retry}
	if f.retry != nil {
		er.on, er.numRetries = f.retry.on, f.retry.numRetries
	}
	hdrOn := parseRetryOn(hs.retryOn) | parseRetryOn(hs.retryGRPCOn)
	if hdrOn != 0 {
		er.on |= hdrOn
		if er.p == nil {
			er.numRetries = 1
		}
	}
	if v := hs.maxRetries; v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			er.numRetries = n
		}
	}
	if v := hs.retriableCodes; v != "" {
		for s := range strings.SplitSeq(v, ",") {
			if c, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				er.extraCodes = append(er.extraCodes, c)
			}
		}
	}
	if er.on == 0 {
		er.numRetries = 0
	}
	return er
}

func (er *effectiveRetry) perTry() time.Duration {
	if er.p == nil {
		return 0
	}
	return er.p.perTry
}

// retriableFailure: connection-level failures.
func (er *effectiveRetry) retriableFailure(f failure) bool {
	switch f {
	case failConnect:
		return er.on&(ro5xx|roGatewayError|roReset|roConnectFailure) != 0
	case failReset, failRemoteReset, failPerTry:
		return er.on&(ro5xx|roGatewayError|roReset) != 0
	case failRefused:
		return er.on&(ro5xx|roGatewayError|roReset|roRefusedStream) != 0
	}
	return false
}

// retriableResponse: retry_on conditions on response headers.
func (er *effectiveRetry) retriableResponse(resp *http.Response) bool {
	if h1.FirstValue(resp.Header, hdrOverloaded) != "" {
		return false // Envoy never retries an overloaded upstream
	}
	code := resp.StatusCode
	on := er.on
	switch {
	case on&ro5xx != 0 && code >= 500:
		return true
	case on&roGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case on&roRetriable4xx != 0 && code == http.StatusConflict:
		return true
	case on&roEnvoyRateLimited != 0 && h1.FirstValue(resp.Header, hdrRateLimited) != "":
		return true
	}
	if on&roRetriableStatusCodes != 0 {
		if er.p != nil {
			for _, c := range er.p.codes {
				if c == code {
					return true
				}
			}
		}
		for _, c := range er.extraCodes {
			if c == code {
				return true
			}
		}
	}
	if on&roRetriableHeaders != 0 && er.p != nil && len(er.p.retriableHeaders) > 0 {
		fake := http.Request{Header: resp.Header}
		for i := range er.p.retriableHeaders {
			if er.p.retriableHeaders[i].matches(&fake) {
				return true
			}
		}
	}
	if on&(roGRPCCancelled|roGRPCDeadlineExceeded|roGRPCInternal|roGRPCResourceExhausted|roGRPCUnavailable) != 0 {
		if v := h1.FirstValue(resp.Header, hdrGRPCStatus); v != "" {
			switch s, _ := strconv.Atoi(v); {
			case s == grpcCancelled && on&roGRPCCancelled != 0,
				s == grpcDeadlineExceeded && on&roGRPCDeadlineExceeded != 0,
				s == grpcInternal && on&roGRPCInternal != 0,
				s == grpcResourceExhausted && on&roGRPCResourceExhausted != 0,
				s == grpcUnavailable && on&roGRPCUnavailable != 0:
				return true
			}
		}
	}
	return false
}

// requestAllowsRetry applies retriable_request_headers.
func (er *effectiveRetry) requestAllowsRetry(r *http.Request) bool {
	if er.p == nil || len(er.p.requestHeaders) == 0 {
		return true
	}
	for i := range er.p.requestHeaders {
		if er.p.requestHeaders[i].matches(r) {
			return true
		}
	}
	return false
}

// backoff is the delay before retry n (1-based): full jitter over an exponentially
// growing ceiling, capped at max_interval (Envoy's retry_back_off).
func (rt *Router) backoff(er *effectiveRetry, n int) time.Duration {
	base, maxI := defaultRetryBase, 10*defaultRetryBase
	if er.p != nil {
		base, maxI = er.p.base, er.p.max
	}
	ceil := base
	for i := 1; i < n && ceil < maxI; i++ {
		ceil *= 2
	}
	if ceil > maxI {
		ceil = maxI
	}
	if ceil <= 0 {
		return 0
	}
	return time.Duration(rt.rand() % uint64(ceil))
}

// pickCluster chooses the cluster: fixed, from a header, or one weighted draw over the
// precomputed cumulative weights.
func (rt *Router) pickCluster(f *forward, r *http.Request) (string, *weightedCluster) {
	switch {
	case f.cluster != "":
		return f.cluster, nil
	case f.clusterHeader != "":
		return r.Header.Get(f.clusterHeader), nil
	}
	v := rt.rand() % f.totalWeight
	i := sort.Search(len(f.cumWeights), func(i int) bool { return f.cumWeights[i] > v })
	if i >= len(f.weighted) {
		i = len(f.weighted) - 1
	}
	wc := &f.weighted[i]
	if wc.header != "" {
		return r.Header.Get(wc.header), wc
	}
	return wc.name, wc
}

// outcome is the result of the last attempt.
type outcome struct {
	resp   *http.Response
	fail   failure
	err    error
	host   *upstream.Host
	cancel context.CancelCauseFunc // ends the attempt
}

func noCancel(error) {}

func (rt *Router) forward(x *filter.Exchange, route *Route) error {
	f := route.fwd
	r := x.R
	info := x.Info

	clusterName, wc := rt.pickCluster(f, r)
	info.Cluster = clusterName
	var cl *upstream.Cluster
	if clusterName != "" && rt.clusters != nil {
		cl = rt.clusters.Get(clusterName)
	}
	if cl == nil {
		LocalReply(x, f.notFoundCode, "", stream.NoClusterFound, "cluster_not_found")
		return nil
	}
	cst := cl.Stats()
	rst := rt.clusterStats(clusterName)

	h := r.Header
	hs := scanRequestHeads(h)
	upgrade := f.websocket != -1 && hs.webSocketUpgrade(r.ProtoMajor)

	// Read the router's control headers, then drop what must not go upstream.
	er := rt.retryFor(f, &hs)
	timeout := f.timeout
	if f.useGRPCTimeout {
		if d, ok := parseGRPCTimeout(hs.grpcTimeout); ok {
			if f.grpcTimeoutMax > 0 && d > f.grpcTimeoutMax {
				d = f.grpcTimeoutMax
			}
			if f.grpcTimeoutOffset > 0 && d > f.grpcTimeoutOffset {
				d -= f.grpcTimeoutOffset
			}
			timeout = d
		}
	}
	if v := hs.upstreamTimeout; v != "" {
		if ms, err := strconv.Atoi(v); err == nil && ms >= 0 {
			timeout = time.Duration(ms) * time.Millisecond
		}
	} else if rt.respectExpected {
		if v := hs.expectedTimeout; v != "" {
			if ms, err := strconv.Atoi(v); err == nil && ms >= 0 {
				timeout = time.Duration(ms) * time.Millisecond
			}
		}
	}
	perTry := er.perTry()
	if v := hs.perTryTimeout; v != "" {
		if ms, err := strconv.Atoi(v); err == nil && ms >= 0 {
			perTry = time.Duration(ms) * time.Millisecond
		}
	}
	if hs.nDrop > 0 {
		// An Upgrade header survives only for a WebSocket upgrade; TE only as
		// "trailers".
		stripHopHeaders(h, &hs, upgrade)
		if hs.te != "" && h["Te"] == nil && headerHasToken(hs.te, "trailers") {
			h["Te"] = []string{"trailers"}
		}
	}

	// Path and authority rewrites.
	escPath := r.URL.EscapedPath()
	newPath := escPath
	switch {
	case f.hasPrefixRewrite:
		newPath = rewritePrefix(escPath, route, f.prefixRewrite)
	case f.regexRewrite != nil:
		newPath = f.regexRewrite.apply(escPath)
	}
	if newPath != escPath && !rt.suppressHeaders {
		h.Set(hdrOriginalPath, requestPath(r))
	}
	authority := r.Host
	switch {
	case wc != nil && wc.hostLiteral != "":
		authority = wc.hostLiteral
	case f.hostLiteral != "":
		authority = f.hostLiteral
	case f.hostHeader != "":
		if v := h.Get(f.hostHeader); v != "" {
			authority = v
		}
	case f.hostPathRegex != nil:
		authority = f.hostPathRegex.apply(escPath)
	}
	if f.appendXFH && authority != r.Host {
		h.Add(hdrForwardedHost, r.Host)
	}

	// Header mutations, least specific level last unless most_specific_header_mutations_wins.
	fc := fmtCtx{r: r, reqH: h, info: info}
	if wc != nil && !route.mostSpecificWins {
		wc.reqLevel.apply(h, &fc)
	}
	route.reqOps.apply(h, &fc)
	if wc != nil && route.mostSpecificWins {
		wc.reqLevel.apply(h, &fc)
	}
	if timeout > 0 && !rt.suppressHeaders {
		v := f.timeoutVal // the route's, formatted once at compile time
		if timeout != f.timeout {
			v = millisValue(int64(timeout / time.Millisecond))
		}
		h[hdrExpectedTimeoutKey] = v
	}
	// After the header mutations: a route may set the destination header.
	origDst, dstErr := originalDst(cl, h, info.DownstreamLocal)
	if dstErr != nil {
		rt.originalDstReply(x, dstErr)
		return nil
	}

	// The request's upstream state in one piece: the LB context escapes into the
	// cluster's picker, the URL into the upstream requests. It serves a later request
	// only when nothing can still hold it (release); registered first, that check runs
	// after the other deferred calls.
	fs := forwardStates.Get().(*forwardState)
	var done *http.Response // the response written downstream, if one was
	defer func() { fs.release(done, info) }()
	lbctx := &fs.lbctx
	var setCookie string
	if len(f.hash) > 0 {
		remote := "" // the source IP, for connection_properties hashing
		if info.Downstream.IsValid() {
			remote = info.Downstream.Addr().String()
		}
		lbctx.Hash, lbctx.HasHash, setCookie = f.requestHash(r, remote)
	}

	// The upstream URL carries the escaped path exactly as it will be sent.
	u := &fs.u
	*u = url.URL{Scheme: "http", Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if newPath != escPath {
		if p, err := url.PathUnescape(newPath); err == nil {
			u.Path, u.RawPath = p, newPath
		} else {
			u.Path, u.RawPath = newPath, ""
		}
	}

	// The route timeout bounds every attempt and the response body.
	ctx := r.Context()
	if timeout > 0 {
		fs.timeout = routeCtx{parent: ctx, deadline: time.Now().Add(timeout)}
		ctx = &fs.timeout
		defer fs.timeout.cancel()
	}

	if upgrade {
		return rt.serveUpgrade(ctx, x, route, cl, lbctx, origDst, u, authority, wc)
	}

	// Request body: streamed, with the first bytes kept for retries and mirrors.
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	var rb *replayBody
	limit := route.bufferLimit
	wantReplay := er.numRetries > 0 || len(f.mirrors) > 0
	if hasBody && wantReplay && limit > 0 && (r.ContentLength < 0 || r.ContentLength <= int64(limit)) {
		rb = newReplayBody(r.Body, limit, r.ContentLength)
	}
	if hasBody {
		info.BodyHeld = true // until release hears the transport let go of it
	}
	if hasBody && r.ProtoMajor == 1 {
		// Let the response start before the request body ends, as Envoy does.
		_ = http.NewResponseController(x.W).EnableFullDuplex()
	}

	// Mirrors of bodiless requests go now; with a body, once it has been read.
	if len(f.mirrors) > 0 && !hasBody {
		rt.mirror(x, f, h, authority, u, nil)
	}

	// Hosts already tried, only kept for the previous_hosts retry predicate.
	var tried *triedHosts
	if er.p != nil && er.p.previousHosts && er.numRetries > 0 {
		tried = &triedHosts{}
		lbctx.Exclude = tried.has
		lbctx.MaxExcludeAttempts = uint32(er.p.hostSelectAttempts)
	}

	var out outcome
	retriesLeft := er.numRetries
	retried := false
	retryWanted := false
	for attempt := 1; ; attempt++ {
		host, err := cl.Pick(lbctx, origDst)
		if err != nil || host == nil {
			out = outcome{fail: failNoHost, err: err}
			break
		}
		if tried != nil {
			tried.hosts = append(tried.hosts, host)
		}
		info.UpstreamHost = host.Addr()
		info.Attempts = attempt

		// An attempt needs a context of its own only when something may end it
		// before the request does: a per-try timeout. (A retried attempt is over
		// before the next starts: its response body was closed, or it failed.)
		actx, cancelAttempt := ctx, noCancel
		if perTry > 0 {
			actx, cancelAttempt = context.WithCancelCause(ctx)
		}
		var stopTry func() bool
		if perTry > 0 {
			t := time.AfterFunc(perTry, func() { cancelAttempt(errPerTryTimeout) })
			stopTry = t.Stop
		}
		hdr := h
		if f.attemptCountReq {
			hdr = h.Clone()
			hdr.Set(hdrAttemptCount, strconv.Itoa(attempt))
		}
		auth := authority
		if f.autoHost {
			if hn := hostnameOf(host); hn != "" {
				auth = hn
			}
		}
		// The upstream package dials the host; the URL carries the authority.
		u.Host = auth
		// The first attempt's request lives in fs: the copy WithContext makes of a zero
		// request stays on the stack. A later attempt has its own, since the transport
		// of a failed one may still read its request.
		var zero http.Request
		var req *http.Request
		if attempt == 1 {
			fs.req = *zero.WithContext(actx)
			req = &fs.req
		} else {
			req = zero.WithContext(actx)
		}
		req.Method = r.Method
		req.URL = u
		// The downstream protocol selects the pool under use_downstream_protocol_config.
		req.Proto, req.ProtoMajor, req.ProtoMinor = r.Proto, r.ProtoMajor, r.ProtoMinor
		req.Header = hdr
		req.Host = auth
		req.ContentLength = r.ContentLength
		if !hasBody {
			req.ContentLength = 0
		} else if rb != nil {
			req.Body = rb.attempt()
		} else {
			fs.body = passBody{r.Body}
			req.Body = &fs.body
		}
		if hasBody && r.Trailer != nil {
			// Filled when the downstream body ends, read when the upstream one does.
			req.Trailer = r.Trailer
		}

		resp, err := cl.RoundTrip(req, host)
		out = outcome{resp: resp, err: err, host: host, cancel: cancelAttempt}
		if err != nil {
			out.fail = rt.classify(err, actx, r.Context())
		}
		if stopTry != nil && out.fail != failPerTry {
			// The per-try timeout covers the wait for response headers.
			stopTry()
		}
		rt.observe(host, &out, cst, rst)

		// Decide on a retry.
		var wantRetry bool
		switch {
		case out.fail == failNone:
			wantRetry = er.numRetries > 0 && er.retriableResponse(resp)
		case out.fail == failOverflow, out.fail == failGlobal, out.fail == failDownstream:
			wantRetry = false
		default:
			wantRetry = er.numRetries > 0 && er.retriableFailure(out.fail)
		}
		if !wantRetry {
			retryWanted = false
			break
		}
		retryWanted = true
		if retriesLeft <= 0 || !er.requestAllowsRetry(r) || (hasBody && (rb == nil || !rb.replayable())) {
			break
		}
		release, ok := cl.TryRetry()
		if !ok {
			break
		}
		retriesLeft--
		retried = true
		if resp != nil {
			resp.Body.Close()
		}
		cancelAttempt(nil)
		wait := rt.backoff(&er, er.numRetries-retriesLeft)
		if wait > 0 {
			tm := time.NewTimer(wait)
			select {
			case <-tm.C:
			case <-ctx.Done():
			}
			tm.Stop()
		}
		release()
		if ctx.Err() != nil {
			out = outcome{fail: rt.ctxFailure(ctx, r.Context()), err: context.Cause(ctx)}
			break
		}
	}
	if out.cancel != nil {
		defer out.cancel(nil)
	}

	if out.resp == nil {
		if retryWanted {
			info.SetFlag(stream.UpstreamRetryLimitExceeded)
			rst.retryLimitExceeded.Inc()
		}
		rt.failureReply(x, &out, cst, rst)
		return nil
	}
	if retryWanted {
		info.SetFlag(stream.UpstreamRetryLimitExceeded)
		rst.retryLimitExceeded.Inc()
	} else if retried {
		rst.retrySuccess.Inc()
	}
	rt.writeResponse(ctx, x, route, wc, out.resp, cst, setCookie, f.attemptCountRsp)
	done = out.resp
	if len(f.mirrors) > 0 && hasBody && rb != nil {
		if body, ok := rb.complete(); ok {
			rt.mirror(x, f, h, authority, u, body)
		}
	}
	return nil
}

// originalDstError says why an ORIGINAL_DST cluster with use_http_header has no
// destination for a request.
type originalDstError struct {
	details string // response_code_details
	msg     string // body and upstream failure reason
}

func (e *originalDstError) Error() string { return e.msg }

// originalDst is the destination an ORIGINAL_DST cluster connects to: the downstream
// connection's original destination (local), or, when the cluster sets
// original_dst_lb_config.use_http_header, the IP:port in that header and nothing else.
//
// Envoy falls back to the connection's destination when the header is absent; weft does
// not. use_http_header is how an Explicit-mode sidecar (the application's HTTP proxy)
// passes requests through, and there the connection's local address is the sidecar's
// own listener: falling back would make the sidecar connect to itself, again and again.
// For the same reason a header naming the connection's own local address is refused.
func originalDst(cl *upstream.Cluster, h http.Header, local netip.AddrPort) (netip.AddrPort, *originalDstError) {
	if !cl.IsOriginalDst() {
		return local, nil
	}
	name := cl.OriginalDstHeader()
	if name == "" {
		return local, nil
	}
	v := h.Get(name)
	if v == "" {
		return netip.AddrPort{}, &originalDstError{
			details: "original_dst_header_missing",
			msg:     "cluster " + cl.Name() + " takes the destination from request header " + name + ", which is missing",
		}
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, &originalDstError{
			details: "original_dst_header_invalid",
			msg:     "cluster " + cl.Name() + " takes the destination from request header " + name + ", which is not an IP:port",
		}
	}
	if local.IsValid() && ap.Addr().Unmap() == local.Addr().Unmap() && ap.Port() == local.Port() {
		return netip.AddrPort{}, &originalDstError{
			details: "original_dst_is_self",
			msg:     "request header " + name + " names this listener's own address",
		}
	}
	return ap, nil
}

// originalDstReply answers a request whose ORIGINAL_DST destination is unusable: 503
// with flag UH (no upstream host can be chosen), the reason in the body, the details
// and the access log's upstream failure.
func (rt *Router) originalDstReply(x *filter.Exchange, e *originalDstError) {
	x.Info.UpstreamFailure = e.msg
	LocalReply(x, http.StatusServiceUnavailable, "no healthy upstream: "+e.msg, stream.NoHealthyUpstream, e.details)
}

type triedHosts struct{ hosts []lb.Host }

func (t *triedHosts) has(h lb.Host) bool {
	for _, x := range t.hosts {
		if x == h {
			return true
		}
	}
	return false
}

// hostnameOf is the host's DNS name for auto_host_rewrite, when the upstream package
// exposes one.
func hostnameOf(h *upstream.Host) string {
	if hn, ok := any(h).(interface{ Hostname() string }); ok {
		return hn.Hostname()
	}
	return ""
}

func (rt *Router) ctxFailure(ctx, downstream context.Context) failure {
	if downstream.Err() != nil {
		return failDownstream
	}
	if errors.Is(context.Cause(ctx), errGlobalTimeout) {
		return failGlobal
	}
	return failReset
}

// classify maps a round-trip error to a failure kind.
func (rt *Router) classify(err error, actx, downstream context.Context) failure {
	switch {
	case downstream.Err() != nil:
		return failDownstream
	case errors.Is(context.Cause(actx), errGlobalTimeout):
		return failGlobal
	case errors.Is(context.Cause(actx), errPerTryTimeout):
		return failPerTry
	case errors.Is(err, upstream.ErrOverflow):
		return failOverflow
	case errors.Is(err, upstream.ErrConnectFailure):
		return failConnect
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "REFUSED_STREAM"):
		return failRefused
	case strings.Contains(msg, "stream error"):
		return failRemoteReset
	}
	return failReset
}

// observe reports the attempt to outlier detection and counts its response code
// (upstream_rq_<code>, every attempt, as Envoy does) or per-try timeout.
func (rt *Router) observe(h *upstream.Host, out *outcome, cst *upstream.ClusterStats, rst *routerClusterStats) {
	switch out.fail {
	case failNone:
		h.Observe(out.resp.StatusCode, false)
		cst.RecordStatus(out.resp.StatusCode)
	case failConnect, failReset, failRemoteReset, failRefused, failGlobal:
		h.Observe(0, true)
	case failPerTry:
		rst.perTryTimeout.Inc()
		h.Observe(0, true)
	}
}

// failureReply answers a request that got no upstream response, with Envoy's codes,
// flags, details and bodies.
func (rt *Router) failureReply(x *filter.Exchange, out *outcome, cst *upstream.ClusterStats, rst *routerClusterStats) {
	info := x.Info
	if out.err != nil && out.fail != failDownstream {
		info.UpstreamFailure = out.err.Error()
	}
	const resetBody = "upstream connect error or disconnect/reset before headers. reset reason: "
	switch out.fail {
	case failNoHost:
		LocalReply(x, http.StatusServiceUnavailable, "no healthy upstream", stream.NoHealthyUpstream, "no_healthy_upstream")
	case failOverflow:
		if !rt.suppressHeaders {
			x.W.Header().Set(hdrOverloaded, "true")
		}
		LocalReply(x, http.StatusServiceUnavailable, resetBody+"overflow", stream.UpstreamOverflow, "upstream_reset_before_response_started{overflow}")
	case failConnect:
		LocalReply(x, http.StatusServiceUnavailable, resetBody+"connection failure", stream.UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}")
	case failRefused:
		LocalReply(x, http.StatusServiceUnavailable, resetBody+"remote refused stream reset", stream.UpstreamRemoteReset, "upstream_reset_before_response_started{remote_refused_stream_reset}")
	case failRemoteReset:
		LocalReply(x, http.StatusServiceUnavailable, resetBody+"remote reset", stream.UpstreamRemoteReset, "upstream_reset_before_response_started{remote_reset}")
	case failReset:
		LocalReply(x, http.StatusServiceUnavailable, resetBody+"connection termination", stream.UpstreamConnectionTermination, "upstream_reset_before_response_started{connection_termination}")
	case failGlobal:
		cst.UpstreamRqTimeout.Inc()
		LocalReply(x, http.StatusGatewayTimeout, "upstream request timeout", stream.UpstreamRequestTimeout, "upstream_response_timeout")
	case failPerTry:
		LocalReply(x, http.StatusGatewayTimeout, "upstream request timeout", stream.UpstreamRequestTimeout, "upstream_per_try_timeout")
	case failDownstream:
		// Nobody to answer: the connection manager logs DC.
		info.SetFlag(stream.DownstreamConnectionTermination)
		info.ResponseDetails = "downstream_remote_disconnect"
	}
}

// setContentLength sets Content-Length to n, keeping the upstream's value (and
// allocating nothing) when it already says n.
func setContentLength(h http.Header, n int64) {
	var b [20]byte
	v := strconv.AppendInt(b[:0], n, 10)
	if old := h["Content-Length"]; len(old) == 1 && old[0] == string(v) {
		return
	}
	h["Content-Length"] = []string{string(v)}
}

// The keys of the fields the router sets, as the codec interns them: its head writer
// knows them for valid names without reading them.
var (
	hdrServiceTimeKey     = h1.CanonicalKey(hdrServiceTime)
	hdrExpectedTimeoutKey = h1.CanonicalKey(hdrExpectedTimeout)
)

// millisSlices are shared header values for small durations in milliseconds: a
// one-element slice is never written into (append reallocates it).
var millisSlices = func() (s [256][]string) {
	for i := range s {
		s[i] = []string{strconv.Itoa(i)}
	}
	return
}()

func millisValue(ms int64) []string {
	if ms >= 0 && ms < int64(len(millisSlices)) {
		return millisSlices[ms]
	}
	return []string{strconv.FormatInt(ms, 10)}
}

// forwardState is the upstream side of a request that forward would otherwise
// allocate anew each time (576 bytes, half of what the proxy allocates per HTTP/1.1
// request).
type forwardState struct {
	req     http.Request // the first attempt's
	lbctx   lb.Context
	u       url.URL
	timeout routeCtx
	body    passBody // the downstream body, as every attempt reads it
}

var forwardStates = sync.Pool{New: func() any { return new(forwardState) }}

// releaser is a response body that knows when its transport let go of the request
// (the HTTP/1.1 pool's and the HTTP/2 client's); a recycler's response storage can
// serve a later response then (the HTTP/1.1 pool's).
type (
	releaser interface{ Released() bool }
	recycler interface{ Recycle() }
)

// release gives fs, and the response's storage, back for later requests when nothing
// can still hold them: one attempt, whose response was written downstream and whose
// transport reports the request released, and a route-timeout context that nothing
// ever waited on (no Done, so no AfterFunc and no goroutine of the context package
// has it). Anything else (a retry, a failure, an upgrade, net/http's transport, an
// upstream that answered before the request body was sent) leaves both to the
// collector: a transport may still read the request, its body or its context.
func (fs *forwardState) release(resp *http.Response, info *stream.Info) {
	if resp == nil || info.Attempts != 1 {
		return
	}
	r, ok := resp.Body.(releaser)
	if !ok || !r.Released() {
		return
	}
	info.BodyHeld = false // the one attempt's transport is done with the request body
	// Nothing reads the response after this; its header maps are not recycled here.
	if rc, ok := r.(recycler); ok {
		rc.Recycle()
	}
	if fs.timeout.real.Load() != nil {
		return
	}
	*fs = forwardState{}
	forwardStates.Put(fs)
}

// routeCtx is the context of a request under a route timeout, without a timer until
// something waits on it. Deadline, Err and Value answer from the deadline and the
// parent; the first Done (the upstream pool's watch of an exchange that runs long, an
// HTTP/2 round trip, a retry back-off) or an Err past the deadline makes the real
// context, context.WithDeadlineCause with errGlobalTimeout, and from then on everything
// is the real context's. Most exchanges end before anything waits: they cost no timer,
// no cancel propagation and no channel (context.WithTimeoutCause was 4 allocations on
// every request: BenchmarkProxyHTTP1 109 -> 105).
type routeCtx struct {
	parent   context.Context
	deadline time.Time
	mu       sync.Mutex
	real     atomic.Pointer[realCtx]
}

type realCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func (c *routeCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *routeCtx) Done() <-chan struct{} { return c.materialize().Done() }

func (c *routeCtx) Err() error {
	if r := c.real.Load(); r != nil {
		return r.ctx.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return c.materialize().Err() // context.Cause then finds errGlobalTimeout
	}
	return nil
}

// Value looks up in the real context once there is one: context.Cause and the
// contexts derived from this one find its cancellation there.
func (c *routeCtx) Value(key any) any {
	if r := c.real.Load(); r != nil {
		return r.ctx.Value(key)
	}
	return c.parent.Value(key)
}

func (c *routeCtx) materialize() context.Context {
	if r := c.real.Load(); r != nil {
		return r.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.real.Load(); r != nil {
		return r.ctx
	}
	ctx, cancel := context.WithDeadlineCause(c.parent, c.deadline, errGlobalTimeout)
	c.real.Store(&realCtx{ctx, cancel})
	return ctx
}

// cancel releases the real context, if one was made.
func (c *routeCtx) cancel() {
	if r := c.real.Load(); r != nil {
		r.cancel()
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// headerAdopter is a ResponseWriter that can take a response's header map as its own
// instead of a copy: the connection manager's HTTP/1.1 writer, before anything was set.
type headerAdopter interface{ AdoptHeader(http.Header) bool }

// writeResponse copies the upstream response downstream: headers (with the route's
// response mutations), the body (flushed as it arrives when streaming), then trailers.
func (rt *Router) writeResponse(ctx context.Context, x *filter.Exchange, route *Route, wc *weightedCluster, resp *http.Response, cst *upstream.ClusterStats, setCookie string, attemptCount bool) {
	info := x.Info
	defer resp.Body.Close()
	if !info.Start.IsZero() {
		info.UpstreamDuration = time.Since(info.Start)
	}
	info.ResponseCode = resp.StatusCode
	info.ResponseDetails = "via_upstream"

	// What the rest reads of the upstream's head, before the header ops may change it.
	rh := scanResponseHeads(resp.Header)
	ct, grpcStatus := rh.contentType, rh.grpcStatus
	// The downstream writer takes the upstream's header map as its own when it can
	// (HTTP/1.1, nothing set yet); else the fields are copied.
	var wh http.Header
	adopted := false
	if a, ok := x.W.(headerAdopter); ok && a.AdoptHeader(resp.Header) {
		wh, adopted = resp.Header, true
	} else {
		wh = x.W.Header()
		for k, vs := range resp.Header {
			wh[k] = vs
		}
	}
	if rh.hop || !adopted {
		for _, k := range hopHeaders {
			delete(wh, k)
		}
		for _, v := range rh.conn {
			for tok := range strings.SplitSeq(v, ",") {
				delete(wh, http.CanonicalHeaderKey(strings.TrimSpace(tok)))
			}
		}
	}
	if resp.ContentLength >= 0 && len(resp.TransferEncoding) == 0 && x.R.Method != http.MethodHead {
		setContentLength(wh, resp.ContentLength)
	}
	if grpcStatus != "" {
		info.GRPCStatus = grpcStatus
	}
	if len(route.respOps) > 0 || (wc != nil && len(wc.respLevel.add)+len(wc.respLevel.remove) > 0) {
		fc := fmtCtx{r: x.R, reqH: x.R.Header, respH: wh, info: info, status: resp.StatusCode}
		if wc != nil && !route.mostSpecificWins {
			wc.respLevel.apply(wh, &fc)
		}
		route.respOps.apply(wh, &fc)
		if wc != nil && route.mostSpecificWins {
			wc.respLevel.apply(wh, &fc)
		}
	}
	if setCookie != "" {
		wh.Add("Set-Cookie", setCookie)
	}
	if !rt.suppressHeaders {
		wh[hdrServiceTimeKey] = millisValue(int64(info.UpstreamDuration / time.Millisecond))
	}
	if attemptCount {
		wh.Set(hdrAttemptCount, strconv.Itoa(info.Attempts))
	}
	x.W.WriteHeader(resp.StatusCode)

	// A gRPC trailers-only response (grpc-status in the headers, no body) must leave as
	// one HEADERS frame with END_STREAM: flushing the headers first would turn them into
	// initial metadata and the client would miss the status. An HTTP/2 response that
	// ended with its HEADERS has ContentLength 0 and a body that is not http.NoBody.
	trailersOnly := resp.Body == http.NoBody || resp.ContentLength == 0 ||
		(isGRPCContentType(ct) && grpcStatus != "")
	// A response that is all here already (a unary gRPC answer, usually) is written in
	// one go: there is nothing for the client to wait for between its parts.
	streaming := !trailersOnly && (resp.ContentLength < 0 || isGRPCContentType(ct) || strings.HasPrefix(ct, "text/event-stream")) &&
		!h1.BodyBuffered(resp.Body)
	rc := http.NewResponseController(x.W)
	if streaming {
		// Headers go out at once: a gRPC or SSE client may wait for them.
		_ = rc.Flush()
	}
	bp := copyBufs.Get().(*[]byte)
	buf := *bp
	var readErr, writeErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := x.W.Write(buf[:n]); werr != nil {
				writeErr = werr
				break
			}
			if streaming {
				_ = rc.Flush()
			}
		}
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
	}
	copyBufs.Put(bp)

	switch {
	case writeErr != nil || x.R.Context().Err() != nil:
		info.SetFlag(stream.DownstreamConnectionTermination)
		info.ResponseDetails = "downstream_remote_disconnect"
		return
	case readErr != nil:
		// The upstream response broke off: reset the downstream stream rather than end it
		// cleanly, so the client sees a truncated response, as Envoy resets.
		if errors.Is(context.Cause(ctx), errGlobalTimeout) {
			info.SetFlag(stream.UpstreamRequestTimeout)
			info.ResponseDetails = "upstream_response_timeout"
			cst.UpstreamRqTimeout.Inc()
		} else {
			info.SetFlag(stream.UpstreamConnectionTermination)
			info.ResponseDetails = "upstream_reset_after_response_started"
		}
		info.UpstreamFailure = readErr.Error()
		panic(http.ErrAbortHandler)
	}
	for k, vs := range resp.Trailer {
		if len(vs) == 0 {
			continue
		}
		wh[trailerKey(k)] = vs
		if k == hdrGRPCStatus {
			info.GRPCStatus = vs[0]
		}
	}
	// The body is at its end, so the codec writes the trailer map no more, and only
	// its values are used from here on: the map serves a later head (the response's
	// own goes back with the exchange).
	h1.RecycleHeader(resp.Trailer)
	resp.Trailer = nil
}

// trailerKey is the response header's key for trailer k (http.TrailerPrefix+k), the
// ones every gRPC call ends with built once.
func trailerKey(k string) string {
	switch k {
	case hdrGRPCStatus:
		return http.TrailerPrefix + hdrGRPCStatus
	case hdrGRPCMessage:
		return http.TrailerPrefix + hdrGRPCMessage
	}
	return http.TrailerPrefix + k
}

// stripHopHeaders removes the hop-by-hop and control request headers the scan found,
// and those the Connection header names. Upgrade and Connection stay for a WebSocket
// upgrade.
func stripHopHeaders(h http.Header, hs *requestHeads, upgrade bool) {
	if !upgrade {
		for _, v := range hs.conn {
			for tok := range strings.SplitSeq(v, ",") {
				if tok = strings.TrimSpace(tok); tok != "" {
					delete(h, http.CanonicalHeaderKey(tok))
				}
			}
		}
	}
	if hs.nDrop <= len(hs.drop) {
		deleteFields(h, hs.drop[:hs.nDrop], upgrade)
	} else { // more than were noted: every name of both lists
		deleteFields(h, hopHeaders, upgrade)
		deleteFields(h, controlHeaders, upgrade)
	}
	if upgrade {
		h["Connection"] = []string{"Upgrade"}
	}
}

func deleteFields(h http.Header, keys []string, upgrade bool) {
	for _, k := range keys {
		if upgrade && (k == "Connection" || k == "Upgrade") {
			continue
		}
		delete(h, k)
	}
}

// responseHeads is what writeResponse reads of an upstream response's header fields,
// found in one pass over the map (see requestHeads).
type responseHeads struct {
	contentType, grpcStatus string
	conn                    []string
	hop                     bool // a hop-by-hop field is present
}

func scanResponseHeads(h http.Header) (rh responseHeads) {
	for k, v := range h {
		switch k {
		case "Content-Type":
			rh.contentType = first(v)
		case hdrGRPCStatus:
			rh.grpcStatus = first(v)
		case "Connection":
			rh.conn = v
			rh.hop = true
		default:
			rh.hop = rh.hop || isHopHeader(k)
		}
	}
	return rh
}

// requestHeads is what forward reads of a request's header fields, found in one pass
// over the map: the router's control headers and the hop-by-hop fields. A request
// rarely carries any of them, and a lookup of an absent name costs a map access as
// much as a present one: looked up one by one, the 20 names were as many map
// accesses per request, and deleted one by one, as many again.
type requestHeads struct {
	retryOn, retryGRPCOn, maxRetries, retriableCodes             string
	upstreamTimeout, perTryTimeout, expectedTimeout, grpcTimeout string
	te, upgrade                                                  string
	conn                                                         []string
	// drop: the fields forward removes that are present (hop-by-hop and control
	// ones), the first nDrop of them; TE as "trailers" alone stays.
	drop  [6]string
	nDrop int
}

func (hs *requestHeads) dropField(k string) {
	if hs.nDrop < len(hs.drop) {
		hs.drop[hs.nDrop] = k
	}
	hs.nDrop++
}

func scanRequestHeads(h http.Header) (hs requestHeads) {
	for k, v := range h {
		switch k {
		case hdrRetryOn:
			hs.retryOn = first(v)
		case hdrRetryGRPCOn:
			hs.retryGRPCOn = first(v)
		case hdrMaxRetries:
			hs.maxRetries = first(v)
		case hdrRetriableCodes:
			hs.retriableCodes = first(v)
		case hdrUpstreamTimeout:
			hs.upstreamTimeout = first(v)
		case hdrPerTryTimeout:
			hs.perTryTimeout = first(v)
		case hdrExpectedTimeout: // read, and forwarded (forward may replace it)
			hs.expectedTimeout = first(v)
			continue
		case hdrGRPCTimeout: // read, and forwarded
			hs.grpcTimeout = first(v)
			continue
		case "Te":
			hs.te = first(v)
			if len(v) == 1 && v[0] == "trailers" { // as forwarded: kept as it is
				continue
			}
		case "Upgrade":
			hs.upgrade = first(v)
		case "Connection":
			hs.conn = v
		case hdrHedgeOnPerTry, "Expect":
		default:
			if !isHopHeader(k) {
				continue
			}
		}
		hs.dropField(k)
	}
	return hs
}

func first(v []string) string {
	if len(v) > 0 {
		return v[0]
	}
	return ""
}

// webSocketUpgrade reports whether the request asks for a WebSocket upgrade
// (HTTP/1.1 Upgrade: websocket with Connection: upgrade).
func (hs *requestHeads) webSocketUpgrade(protoMajor int) bool {
	if protoMajor != 1 || !strings.EqualFold(hs.upgrade, "websocket") {
		return false
	}
	for _, v := range hs.conn {
		if headerHasToken(v, "upgrade") {
			return true
		}
	}
	return false
}

// headerHasToken reports whether a comma-separated header value holds token
// (case-insensitive).
func headerHasToken(v, token string) bool {
	for tok := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(tok), token) {
			return true
		}
	}
	return false
}

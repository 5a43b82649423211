package router

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
)

// DefaultTimeout is Envoy's route timeout when RouteAction.timeout is unset.
const DefaultTimeout = 15 * time.Second

// DefaultBufferLimit bounds how much of a request body is kept for retries and mirrors
// when per_request_buffer_limit_bytes is unset.
const DefaultBufferLimit = 64 << 10

// CorsFilterName is the per-filter config key the deprecated RouteAction/VirtualHost cors
// field is converted to.
const CorsFilterName = "envoy.filters.http.cors"

type actionKind uint8

const (
	actForward actionKind = iota
	actRedirect
	actDirect
)

// Route is a compiled route. It implements filter.Route.
type Route struct {
	name  string
	index int
	vh    *VirtualHost

	match  routeMatch
	action actionKind
	fwd    *forward
	redir  *redirectAction
	direct *directResponse

	// Header mutations of the route, its virtual host and route configuration, in the
	// order they apply; a weighted cluster's own level goes first unless
	// mostSpecificWins (Envoy: most_specific_header_mutations_wins).
	reqOps, respOps  headerOps
	mostSpecificWins bool
	filterCfg        map[string]any
	bufferLimit      int
}

var _ filter.Route = (*Route)(nil)

// Name is the route's name (may be empty).
func (r *Route) Name() string { return r.name }

// VirtualHost is the virtual host the route belongs to.
func (r *Route) VirtualHost() *VirtualHost { return r.vh }

// FilterConfig returns the per-route config for a filter instance: the route's
// typed_per_filter_config, else its virtual host's, else the route configuration's.
func (r *Route) FilterConfig(name string) any { return r.filterCfg[name] }

// Cluster is the route's fixed cluster, or "" for weighted, header-selected and
// non-forwarding routes.
func (r *Route) Cluster() string {
	if r.fwd == nil {
		return ""
	}
	return r.fwd.cluster
}

// IdleTimeout is RouteAction.idle_timeout, which overrides the connection manager's
// stream_idle_timeout for this route (0 disables it); ok is false when unset.
func (r *Route) IdleTimeout() (d time.Duration, ok bool) {
	if r.fwd == nil {
		return 0, false
	}
	return r.fwd.idleTimeout, r.fwd.hasIdleTimeout
}

// MaxStreamDuration is RouteAction.max_stream_duration.max_stream_duration, which
// overrides the connection manager's; ok is false when unset.
func (r *Route) MaxStreamDuration() (d time.Duration, ok bool) {
	if r.fwd == nil {
		return 0, false
	}
	return r.fwd.maxStreamDuration, r.fwd.hasMaxStreamDuration
}

// IsForward reports whether the route forwards upstream (RouteAction), as opposed to a
// redirect or direct response.
func (r *Route) IsForward() bool { return r.action == actForward }

type weightedCluster struct {
	name        string
	header      string // cluster_header (canonical)
	weight      uint64
	reqLevel    headerLevel
	respLevel   headerLevel
	hostLiteral string
}

type forward struct {
	cluster       string
	clusterHeader string // canonical key
	weighted      []weightedCluster
	cumWeights    []uint64
	totalWeight   uint64
	notFoundCode  int

	hasPrefixRewrite bool
	prefixRewrite    string
	regexRewrite     *regexRewrite
	hostLiteral      string
	autoHost         bool
	hostHeader       string // canonical key
	hostPathRegex    *regexRewrite
	appendXFH        bool

	timeout              time.Duration // 0: none
	timeoutVal           []string      // timeout in ms, x-envoy-expected-rq-timeout-ms's value (shared, as millisSlices)
	hasIdleTimeout       bool
	idleTimeout          time.Duration
	hasMaxStreamDuration bool
	maxStreamDuration    time.Duration
	useGRPCTimeout       bool // honour grpc-timeout
	grpcTimeoutMax       time.Duration
	grpcTimeoutOffset    time.Duration

	retry           *retryPolicy
	mirrors         []mirrorPolicy
	hash            []hashPolicy
	websocket       int8 // upgrade_configs "websocket": 0 default (allowed), 1 on, -1 off
	attemptCountReq bool // include_request_attempt_count
	attemptCountRsp bool // include_attempt_count_in_response
}

type redirectAction struct {
	scheme        string
	host          string
	port          uint32
	hasPath       bool
	path          string
	hasPrefix     bool
	prefixRewrite string
	regex         *regexRewrite
	code          int
	stripQuery    bool
}

type directResponse struct {
	status int
	body   string
}

// compileLevels is what every route inherits from the route configuration.
type compileLevels struct {
	mostSpecificWins bool
	rcReq, rcResp    headerLevel
	rcFilters        map[string]any
}

// vhostLevel is what every route of a virtual host inherits.
type vhostLevel struct {
	lv                  *compileLevels
	req, resp           headerLevel
	filters             map[string]any // merged over the route configuration's
	retry               *retryPolicy
	mirrors             []mirrorPolicy
	attemptReq, attempt bool
	bufferLimit         int
}

func compileVirtualHostLevel(v *routev3.VirtualHost, lv *compileLevels) (*vhostLevel, []error) {
	var errs []error
	vc := &vhostLevel{lv: lv, attemptReq: v.GetIncludeRequestAttemptCount(), attempt: v.GetIncludeAttemptCountInResponse(), bufferLimit: DefaultBufferLimit}
	var err error
	if vc.req, err = compileHeaderLevel(v.GetRequestHeadersToAdd(), v.GetRequestHeadersToRemove(), "request_headers_to_add", "request_headers_to_remove"); err != nil {
		errs = append(errs, err)
	}
	if vc.resp, err = compileHeaderLevel(v.GetResponseHeadersToAdd(), v.GetResponseHeadersToRemove(), "response_headers_to_add", "response_headers_to_remove"); err != nil {
		errs = append(errs, err)
	}
	if vc.filters, err = parseFilterConfigs(v.GetTypedPerFilterConfig(), v.GetCors()); err != nil {
		errs = append(errs, err)
	}
	vc.filters = mergeFilterConfigs(lv.rcFilters, vc.filters)
	if v.GetRetryPolicy() != nil {
		if vc.retry, err = compileRetryPolicy(v.GetRetryPolicy()); err != nil {
			errs = append(errs, fmt.Errorf("retry_policy: %w", err))
		}
	}
	if v.GetRetryPolicyTypedConfig() != nil {
		errs = append(errs, errors.New("retry_policy_typed_config: unsupported"))
	}
	if vc.mirrors, err = compileMirrors(v.GetRequestMirrorPolicies()); err != nil {
		errs = append(errs, err)
	}
	if l := v.GetPerRequestBufferLimitBytes(); l != nil {
		vc.bufferLimit = int(l.GetValue())
	}
	if l := v.GetRequestBodyBufferLimit(); l != nil {
		vc.bufferLimit = int(min(l.GetValue(), 1<<30))
	}
	if v.GetMatcher() != nil {
		errs = append(errs, errors.New("matcher: unsupported (use routes)"))
	}
	return vc, errs
}

// parseFilterConfigs compiles typed_per_filter_config with each filter's parser. A
// deprecated cors policy becomes the per-filter config of "envoy.filters.http.cors"
// unless that key is set; with no cors parser registered it is dropped.
func parseFilterConfigs(m map[string]*anypb.Any, cors *routev3.CorsPolicy) (map[string]any, error) {
	if len(m) == 0 && cors == nil {
		return nil, nil
	}
	out := make(map[string]any, len(m)+1)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report errors in a stable order
	var errs []error
	for _, k := range keys {
		cfg, ok, err := filter.ParsePerRoute(k, m[k])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			out[k] = cfg
		}
	}
	if _, set := m[CorsFilterName]; cors != nil && !set {
		cfg, err := convertCors(cors)
		if err != nil {
			errs = append(errs, fmt.Errorf("cors: %w", err))
		} else if cfg != nil {
			out[CorsFilterName] = cfg
		}
	}
	return out, errors.Join(errs...)
}

func convertCors(c *routev3.CorsPolicy) (any, error) {
	p := &corsv3.CorsPolicy{
		AllowOriginStringMatch:       c.GetAllowOriginStringMatch(),
		AllowMethods:                 c.GetAllowMethods(),
		AllowHeaders:                 c.GetAllowHeaders(),
		ExposeHeaders:                c.GetExposeHeaders(),
		MaxAge:                       c.GetMaxAge(),
		AllowCredentials:             c.GetAllowCredentials(),
		FilterEnabled:                c.GetFilterEnabled(),
		ShadowEnabled:                c.GetShadowEnabled(),
		AllowPrivateNetworkAccess:    c.GetAllowPrivateNetworkAccess(),
		ForwardNotMatchingPreflights: c.GetForwardNotMatchingPreflights(),
	}
	inner, err := anypb.New(p)
	if err != nil {
		return nil, err
	}
	// Wrapped as optional so a proxy built without the cors filter ignores it.
	wrapped, err := anypb.New(&routev3.FilterConfig{Config: inner, IsOptional: true})
	if err != nil {
		return nil, err
	}
	cfg, ok, err := filter.ParsePerRoute(CorsFilterName, wrapped)
	if err != nil || !ok {
		return nil, err
	}
	return cfg, nil
}

// mergeFilterConfigs overlays the more specific level on the less specific one.
func mergeFilterConfigs(base, over map[string]any) map[string]any {
	if len(over) == 0 {
		return base
	}
	if len(base) == 0 {
		return over
	}
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

func compileRoute(rp *routev3.Route, vh *VirtualHost, vc *vhostLevel, index int) (*Route, error) {
	r := &Route{name: rp.GetName(), index: index, vh: vh, mostSpecificWins: vc.lv.mostSpecificWins, bufferLimit: vc.bufferLimit}
	var errs []error
	var err error
	if r.match, err = compileRouteMatch(rp.GetMatch()); err != nil {
		errs = append(errs, err)
	}
	req, err := compileHeaderLevel(rp.GetRequestHeadersToAdd(), rp.GetRequestHeadersToRemove(), "request_headers_to_add", "request_headers_to_remove")
	if err != nil {
		errs = append(errs, err)
	}
	resp, err := compileHeaderLevel(rp.GetResponseHeadersToAdd(), rp.GetResponseHeadersToRemove(), "response_headers_to_add", "response_headers_to_remove")
	if err != nil {
		errs = append(errs, err)
	}
	// Envoy applies the least specific level last, so it wins, unless
	// most_specific_header_mutations_wins reverses the order.
	if r.mostSpecificWins {
		r.reqOps = nonEmpty(vc.lv.rcReq, vc.req, req)
		r.respOps = nonEmpty(vc.lv.rcResp, vc.resp, resp)
	} else {
		r.reqOps = nonEmpty(req, vc.req, vc.lv.rcReq)
		r.respOps = nonEmpty(resp, vc.resp, vc.lv.rcResp)
	}
	var cors *routev3.CorsPolicy
	if ra := rp.GetRoute(); ra != nil {
		cors = ra.GetCors()
	}
	rf, err := parseFilterConfigs(rp.GetTypedPerFilterConfig(), cors)
	if err != nil {
		errs = append(errs, err)
	}
	r.filterCfg = mergeFilterConfigs(vc.filters, rf)
	if l := rp.GetPerRequestBufferLimitBytes(); l != nil {
		r.bufferLimit = int(l.GetValue())
	}
	if l := rp.GetRequestBodyBufferLimit(); l != nil {
		r.bufferLimit = int(min(l.GetValue(), 1<<30))
	}

	switch a := rp.GetAction().(type) {
	case *routev3.Route_Route:
		r.action = actForward
		f, ferrs := compileForward(a.Route, vc)
		errs = append(errs, ferrs...)
		r.fwd = f
	case *routev3.Route_Redirect:
		r.action = actRedirect
		rd, err := compileRedirect(a.Redirect)
		if err != nil {
			errs = append(errs, fmt.Errorf("redirect.%w", err))
		}
		r.redir = rd
	case *routev3.Route_DirectResponse:
		r.action = actDirect
		d, err := compileDirect(a.DirectResponse)
		if err != nil {
			errs = append(errs, fmt.Errorf("direct_response.%w", err))
		}
		r.direct = d
	case *routev3.Route_NonForwardingAction:
		errs = append(errs, errors.New("non_forwarding_action: unsupported"))
	case *routev3.Route_FilterAction:
		errs = append(errs, errors.New("filter_action: unsupported"))
	default:
		errs = append(errs, errors.New("action: one of route, redirect or direct_response is required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

func nonEmpty(levels ...headerLevel) headerOps {
	var ops headerOps
	for _, lv := range levels {
		if len(lv.add) > 0 || len(lv.remove) > 0 {
			ops = append(ops, lv)
		}
	}
	return ops
}

func durationOf(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func compileForward(a *routev3.RouteAction, vc *vhostLevel) (*forward, []error) {
	f := &forward{timeout: DefaultTimeout, attemptCountReq: vc.attemptReq, attemptCountRsp: vc.attempt}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("route."+format, args...)) }

	switch c := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if c.Cluster == "" {
			fail("cluster: must not be empty")
		}
		f.cluster = c.Cluster
	case *routev3.RouteAction_ClusterHeader:
		if err := checkMutableHeader(c.ClusterHeader); err != nil {
			fail("cluster_header: %v", err)
		}
		f.clusterHeader = http.CanonicalHeaderKey(c.ClusterHeader)
	case *routev3.RouteAction_WeightedClusters:
		wcs := c.WeightedClusters
		if wcs.GetHeaderName() != "" || wcs.GetUseHashPolicy().GetValue() {
			fail("weighted_clusters.random_value_specifier: unsupported")
		}
		for i, cw := range wcs.GetClusters() {
			w := weightedCluster{name: cw.GetName(), weight: uint64(cw.GetWeight().GetValue()), hostLiteral: cw.GetHostRewriteLiteral()}
			if cw.GetClusterHeader() != "" {
				w.header = http.CanonicalHeaderKey(cw.GetClusterHeader())
			}
			if (w.name == "") == (w.header == "") {
				fail("weighted_clusters.clusters[%d]: exactly one of name or cluster_header is required", i)
			}
			var err error
			if w.reqLevel, err = compileHeaderLevel(cw.GetRequestHeadersToAdd(), cw.GetRequestHeadersToRemove(), "request_headers_to_add", "request_headers_to_remove"); err != nil {
				fail("weighted_clusters.clusters[%d].%w", i, err)
			}
			if w.respLevel, err = compileHeaderLevel(cw.GetResponseHeadersToAdd(), cw.GetResponseHeadersToRemove(), "response_headers_to_add", "response_headers_to_remove"); err != nil {
				fail("weighted_clusters.clusters[%d].%w", i, err)
			}
			if _, err := parseFilterConfigs(cw.GetTypedPerFilterConfig(), nil); err != nil {
				fail("weighted_clusters.clusters[%d].%w", i, err)
			}
			f.totalWeight += w.weight
			f.weighted = append(f.weighted, w)
			f.cumWeights = append(f.cumWeights, f.totalWeight)
		}
		if len(f.weighted) == 0 {
			fail("weighted_clusters.clusters: at least one cluster is required")
		} else if f.totalWeight == 0 {
			fail("weighted_clusters.clusters: the sum of weights must be greater than 0")
		}
	case *routev3.RouteAction_ClusterSpecifierPlugin, *routev3.RouteAction_InlineClusterSpecifierPlugin:
		fail("cluster_specifier_plugin: unsupported")
	default:
		fail("cluster_specifier: one of cluster, cluster_header or weighted_clusters is required")
	}
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_NOT_FOUND:
		f.notFoundCode = http.StatusNotFound
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		f.notFoundCode = http.StatusInternalServerError
	default:
		f.notFoundCode = http.StatusServiceUnavailable
	}

	if a.GetPrefixRewrite() != "" {
		f.hasPrefixRewrite, f.prefixRewrite = true, a.GetPrefixRewrite()
	}
	if a.GetRegexRewrite() != nil {
		if f.hasPrefixRewrite {
			fail("regex_rewrite: cannot be combined with prefix_rewrite")
		}
		rr, err := compileRegexRewrite(a.GetRegexRewrite())
		if err != nil {
			fail("regex_rewrite.%v", err)
		}
		f.regexRewrite = rr
	}
	if a.GetPathRewritePolicy() != nil || a.GetPathRewrite() != "" {
		fail("path_rewrite: unsupported")
	}
	switch h := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		f.hostLiteral = h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		f.autoHost = h.AutoHostRewrite.GetValue()
	case *routev3.RouteAction_HostRewriteHeader:
		f.hostHeader = http.CanonicalHeaderKey(h.HostRewriteHeader)
	case *routev3.RouteAction_HostRewritePathRegex:
		rr, err := compileRegexRewrite(h.HostRewritePathRegex)
		if err != nil {
			fail("host_rewrite_path_regex.%v", err)
		}
		f.hostPathRegex = rr
	case *routev3.RouteAction_HostRewrite:
		fail("host_rewrite: unsupported")
	}
	f.appendXFH = a.GetAppendXForwardedHost()

	if t := a.GetTimeout(); t != nil {
		f.timeout = t.AsDuration()
	}
	f.timeoutVal = []string{strconv.FormatInt(int64(f.timeout/time.Millisecond), 10)}
	if t := a.GetIdleTimeout(); t != nil {
		f.hasIdleTimeout, f.idleTimeout = true, t.AsDuration()
	}
	if t := a.GetMaxGrpcTimeout(); t != nil {
		f.useGRPCTimeout, f.grpcTimeoutMax = true, t.AsDuration()
		f.grpcTimeoutOffset = durationOf(a.GetGrpcTimeoutOffset())
	}
	if msd := a.GetMaxStreamDuration(); msd != nil {
		if msd.GetMaxStreamDuration() != nil {
			f.hasMaxStreamDuration, f.maxStreamDuration = true, msd.GetMaxStreamDuration().AsDuration()
		}
		if msd.GetGrpcTimeoutHeaderMax() != nil {
			f.useGRPCTimeout, f.grpcTimeoutMax = true, msd.GetGrpcTimeoutHeaderMax().AsDuration()
			f.grpcTimeoutOffset = durationOf(msd.GetGrpcTimeoutHeaderOffset())
		}
	}

	f.retry = vc.retry
	if a.GetRetryPolicy() != nil {
		rp, err := compileRetryPolicy(a.GetRetryPolicy())
		if err != nil {
			fail("retry_policy.%v", err)
		}
		f.retry = rp
	}
	if a.GetRetryPolicyTypedConfig() != nil {
		fail("retry_policy_typed_config: unsupported")
	}
	f.mirrors = vc.mirrors
	if len(a.GetRequestMirrorPolicies()) > 0 {
		ms, err := compileMirrors(a.GetRequestMirrorPolicies())
		if err != nil {
			fail("%v", err)
		}
		f.mirrors = ms
	}
	for i, hp := range a.GetHashPolicy() {
		h, err := compileHashPolicy(hp)
		if err != nil {
			fail("hash_policy[%d].%v", i, err)
			continue
		}
		if h.kind != hashIgnored {
			f.hash = append(f.hash, h)
		}
	}
	for i, uc := range a.GetUpgradeConfigs() {
		if uc.GetConnectConfig() != nil {
			fail("upgrade_configs[%d].connect_config: unsupported", i)
		}
		if equalFoldASCII(uc.GetUpgradeType(), "websocket") {
			f.websocket = 1
			if en := uc.GetEnabled(); en != nil && !en.GetValue() {
				f.websocket = -1
			}
		}
	}
	if a.GetInternalRedirectPolicy() != nil || a.GetInternalRedirectAction() != routev3.RouteAction_PASS_THROUGH_INTERNAL_REDIRECT {
		fail("internal_redirect_policy: unsupported")
	}
	return f, errs
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i]|0x20, b[i]|0x20
		if ca != cb {
			return false
		}
	}
	return true
}

func compileRedirect(rd *routev3.RedirectAction) (*redirectAction, error) {
	r := &redirectAction{host: rd.GetHostRedirect(), port: rd.GetPortRedirect(), stripQuery: rd.GetStripQuery()}
	switch s := rd.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			r.scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		r.scheme = s.SchemeRedirect
	}
	switch p := rd.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		r.hasPath, r.path = true, p.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		r.hasPrefix, r.prefixRewrite = true, p.PrefixRewrite
	case *routev3.RedirectAction_RegexRewrite:
		rr, err := compileRegexRewrite(p.RegexRewrite)
		if err != nil {
			return nil, fmt.Errorf("regex_rewrite.%w", err)
		}
		r.regex = rr
	case *routev3.RedirectAction_PathRewrite:
		return nil, errors.New("path_rewrite: unsupported")
	}
	switch rd.GetResponseCode() {
	case routev3.RedirectAction_FOUND:
		r.code = http.StatusFound
	case routev3.RedirectAction_SEE_OTHER:
		r.code = http.StatusSeeOther
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		r.code = http.StatusTemporaryRedirect
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		r.code = http.StatusPermanentRedirect
	default:
		r.code = http.StatusMovedPermanently
	}
	return r, nil
}

// maxDirectBody is Envoy's default max_direct_response_body_size_bytes.
const maxDirectBody = 4096

func compileDirect(d *routev3.DirectResponseAction) (*directResponse, error) {
	if d.GetStatus() < 200 || d.GetStatus() > 599 {
		return nil, fmt.Errorf("status: %d is not in [200, 599]", d.GetStatus())
	}
	out := &directResponse{status: int(d.GetStatus())}
	if d.GetBodyFormat() != nil {
		return nil, errors.New("body_format: unsupported")
	}
	if b := d.GetBody(); b != nil {
		body, err := dataSource(b)
		if err != nil {
			return nil, fmt.Errorf("body.%w", err)
		}
		if len(body) > maxDirectBody {
			return nil, fmt.Errorf("body: %d bytes exceeds %d", len(body), maxDirectBody)
		}
		out.body = body
	}
	return out, nil
}

func dataSource(ds *corev3.DataSource) (string, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return s.InlineString, nil
	case *corev3.DataSource_InlineBytes:
		return string(s.InlineBytes), nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return "", fmt.Errorf("filename: %w", err)
		}
		return string(b), nil
	case *corev3.DataSource_EnvironmentVariable:
		return os.Getenv(s.EnvironmentVariable), nil
	}
	return "", nil
}

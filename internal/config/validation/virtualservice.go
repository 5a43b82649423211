package validation

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

const meshGateway = "mesh"

// VirtualService follows Istio's ValidateVirtualService.
func VirtualService(m Meta, vs *networking.VirtualService) Result {
	var r Result
	p := Path("spec")
	delegate := len(vs.Hosts) == 0
	if delegate {
		// A VirtualService without hosts is a delegate: only HTTP routes make sense.
		if len(vs.Gateways) > 0 {
			r.Errorf(p.Field("gateways"), "delegate virtual service must have no gateways specified")
		}
		if len(vs.Tls) > 0 {
			r.Errorf(p.Field("tls"), "delegate virtual service must have no tls route specified")
		}
		if len(vs.Tcp) > 0 {
			r.Errorf(p.Field("tcp"), "delegate virtual service must have no tcp route specified")
		}
	}
	checkGatewayNames(&r, p.Field("gateways"), vs.Gateways)
	toGateway := appliesToGateway(vs.Gateways)
	toMesh := !toGateway

	allHostsValid := true
	for i, h := range vs.Hosts {
		hp := p.Field("hosts").Index(i)
		if err := ValidateWildcardDomain(h); err != nil {
			if !isIP(h) {
				invalidf(&r, hp, h, "%v", err)
				allHostsValid = false
			}
		} else if toMesh && h == "*" {
			invalidf(&r, hp, h, "wildcard host * is not allowed for virtual services bound to the mesh gateway")
			allHostsValid = false
		}
	}
	if allHostsValid {
		for i := range vs.Hosts {
			for j := i + 1; j < len(vs.Hosts); j++ {
				if hostsOverlap(vs.Hosts[i], vs.Hosts[j]) {
					r.Errorf(p.Field("hosts").Index(j), "Duplicate value: %q (overlaps %q)", vs.Hosts[j], vs.Hosts[i])
				}
			}
		}
	}
	if len(vs.Http) == 0 && len(vs.Tcp) == 0 && len(vs.Tls) == 0 {
		r.Errorf(p, "http, tcp or tls must be provided in virtual service")
	}
	for i, h := range vs.Http {
		hp := p.Field("http").Index(i)
		if h == nil {
			r.Errorf(hp, "http route may not be null")
			continue
		}
		checkHTTPRoute(&r, hp, h, delegate, toGateway)
	}
	for i, t := range vs.Tls {
		checkTLSRoute(&r, p.Field("tls").Index(i), t, vs)
	}
	for i, t := range vs.Tcp {
		tp := p.Field("tcp").Index(i)
		if t == nil {
			r.Errorf(tp, "tcp route may not be null")
			continue
		}
		for j, mt := range t.Match {
			mp := tp.Field("match").Index(j)
			if mt == nil {
				r.Errorf(mp, "tcp match may not be null")
				continue
			}
			for k, s := range mt.DestinationSubnets {
				r.err(mp.Field("destinationSubnets").Index(k), validateIPOrCIDR(s))
			}
			if mt.Port != 0 {
				checkPort(&r, mp.Field("port"), int64(mt.Port))
			}
			checkLabels(&r, mp.Field("sourceLabels"), mt.SourceLabels)
			checkGatewayNames(&r, mp.Field("gateways"), mt.Gateways)
		}
		if len(t.Route) == 0 {
			required(&r, tp.Field("route"))
		}
		checkRouteDestinations(&r, tp.Field("route"), t.Route)
	}
	checkExportTo(&r, p.Field("exportTo"), m.Namespace, vs.ExportTo, false)
	warnUnreachableHTTP(&r, p.Field("http"), vs.Http)
	return r
}

func appliesToGateway(gateways []string) bool {
	if len(gateways) == 0 {
		return false
	}
	for _, g := range gateways {
		if g == meshGateway {
			return false
		}
	}
	return true
}

// hostsOverlap reports whether two hosts could match the same name (Istio host.Name.Matches).
func hostsOverlap(a, b string) bool {
	if a == b {
		return true
	}
	return wildcardCovers(a, b) || wildcardCovers(b, a)
}

// wildcardCovers reports whether pattern (possibly "*" or "*.suffix") matches host.
func wildcardCovers(pattern, host string) bool {
	if pattern == "*" {
		return true
	}
	if !strings.HasPrefix(pattern, "*") {
		return false
	}
	return strings.HasSuffix(host, pattern[1:])
}

// checkGatewayNames follows Istio: "mesh", "namespace/name", or a legacy name (warned).
func checkGatewayNames(r *Result, p Path, names []string) {
	for i, g := range names {
		gp := p.Index(i)
		if g == meshGateway {
			continue
		}
		ns, name, slash := strings.Cut(g, "/")
		if !slash {
			if strings.Contains(g, ".") {
				parts := strings.Split(g, ".")
				r.Warnf(gp, "using legacy gatewayName format %q; prefer the <namespace>/<name> format: %q", g, parts[1]+"/"+parts[0])
			}
			if err := ValidateFQDN(g); err != nil {
				invalidf(r, gp, g, "%v", err)
			}
			continue
		}
		if ns == "" || name == "" {
			invalidf(r, gp, g, "config namespace and gateway name cannot be empty")
			continue
		}
		if !IsDNS1123Label(ns) {
			invalidf(r, gp, g, "invalid value for namespace: %q", ns)
		}
		if !IsDNS1123Label(name) {
			invalidf(r, gp, g, "invalid value for gateway name: %q", name)
		}
	}
}

func checkHTTPRoute(r *Result, p Path, h *networking.HTTPRoute, delegateVS, toGateway bool) {
	// Exactly one action: route, redirect, directResponse or delegate.
	actions := []string{}
	if len(h.Route) > 0 {
		actions = append(actions, "route")
	}
	if h.Redirect != nil {
		actions = append(actions, "redirect")
	}
	if h.DirectResponse != nil {
		actions = append(actions, "directResponse")
	}
	if h.Delegate != nil {
		actions = append(actions, "delegate")
		if delegateVS {
			r.Errorf(p.Field("delegate"), "delegate HTTP route cannot contain delegate")
		}
	}
	switch {
	case len(actions) == 0:
		r.Errorf(p, "HTTP route, redirect, directResponse or delegate is required")
	case len(actions) > 1:
		r.Errorf(p, "only one of route, redirect, directResponse or delegate may be set, found %s", strings.Join(actions, " and "))
	}
	if h.Redirect != nil || h.DirectResponse != nil {
		if h.Fault != nil {
			r.Errorf(p.Field("fault"), "HTTP route cannot contain both fault and %s", actions[0])
		}
		if h.Rewrite != nil {
			r.Errorf(p.Field("rewrite"), "HTTP route rule cannot contain both rewrite and %s", actions[0])
		}
	}
	if h.Delegate != nil && h.Delegate.Name == "" {
		required(r, p.Field("delegate").Field("name"))
	}

	for i, mt := range h.Match {
		checkHTTPMatch(r, p.Field("match").Index(i), mt, delegateVS, toGateway)
	}
	checkHeaderOps(r, p.Field("headers"), h.Headers)
	checkCORS(r, p.Field("corsPolicy"), h.CorsPolicy)
	checkFault(r, p.Field("fault"), h.Fault)

	if h.MirrorPercent != nil {
		if v := h.MirrorPercent.GetValue(); v > 100 {
			invalidf(r, p.Field("mirrorPercent"), v, "must be 0..100")
		}
		r.Warnf(p.Field("mirrorPercent"), `using deprecated setting "mirrorPercent", use "mirrorPercentage" instead`)
	}
	if h.MirrorPercentage != nil {
		checkPercentRange(r, p.Field("mirrorPercentage").Field("value"), h.MirrorPercentage.GetValue())
	}
	if h.Mirror != nil {
		checkDestination(r, p.Field("mirror"), h.Mirror)
		if len(h.Mirrors) > 0 {
			r.Errorf(p.Field("mirrors"), "HTTP route cannot contain both mirror and mirrors")
		}
	}
	for i, mp := range h.Mirrors {
		ip := p.Field("mirrors").Index(i)
		if mp == nil || mp.Destination == nil {
			required(r, ip.Field("destination"))
			continue
		}
		checkDestination(r, ip.Field("destination"), mp.Destination)
		if mp.Percentage != nil {
			checkPercentRange(r, ip.Field("percentage").Field("value"), mp.Percentage.GetValue())
		}
	}
	checkRedirect(r, p.Field("redirect"), h.Redirect)
	checkDirectResponse(r, p.Field("directResponse"), h.DirectResponse)
	checkRetries(r, p.Field("retries"), h.Retries)
	checkRewrite(r, p.Field("rewrite"), h.Rewrite, h.Headers)
	checkHTTPRouteDestinations(r, p.Field("route"), h.Route)
	checkDuration(r, p.Field("timeout"), h.Timeout)
}

func checkPercentRange(r *Result, p Path, v float64) {
	if v < 0 || v > 100 {
		invalidf(r, p, v, "percentage must be in range 0..100")
	}
}

// jwtClaimHeader is the header-match form Istio uses for JWT claim routing.
const jwtClaimHeader = "@request.auth.claims."

func checkHTTPMatch(r *Result, p Path, m *networking.HTTPMatchRequest, delegateVS, toGateway bool) {
	if m == nil {
		r.Errorf(p, "match may not be null")
		return
	}
	// Delegate routes are merged into the root's routes; regexes cannot be merged.
	check := func(fp Path, sm *networking.StringMatch) {
		if sm == nil {
			return
		}
		if re, ok := sm.MatchType.(*networking.StringMatch_Regex); ok {
			if delegateVS {
				r.Errorf(fp, "regex match is not supported in delegate virtual services")
				return
			}
			checkRegex(r, fp.Field("regex"), re.Regex)
		}
	}
	check(p.Field("uri"), m.Uri)
	check(p.Field("scheme"), m.Scheme)
	check(p.Field("method"), m.Method)
	check(p.Field("authority"), m.Authority)
	for _, field := range []struct {
		name string
		hdrs map[string]*networking.StringMatch
	}{{"headers", m.Headers}, {"withoutHeaders", m.WithoutHeaders}} {
		for _, k := range sortedStringKeys(field.hdrs) {
			kp := p.Field(field.name).Key(k)
			if field.hdrs[k] == nil {
				r.Errorf(kp, "header match %v cannot be null", k)
				continue
			}
			if strings.HasPrefix(k, jwtClaimHeader) {
				if !toGateway {
					r.Errorf(kp, "JWT claim based routing (key: %s) is only supported for gateway", k)
				}
				if strings.TrimPrefix(k, jwtClaimHeader) == "" {
					invalidf(r, kp, k, "claim name cannot be empty")
				}
			} else {
				checkHeaderName(r, kp, k)
			}
			check(kp, field.hdrs[k])
		}
	}
	for _, k := range sortedStringKeys(m.QueryParams) {
		kp := p.Field("queryParams").Key(k)
		if m.QueryParams[k] == nil {
			r.Errorf(kp, "query param match %v cannot be null", k)
			continue
		}
		check(kp, m.QueryParams[k])
	}
	if m.Port != 0 {
		checkPort(r, p.Field("port"), int64(m.Port))
	}
	checkLabels(r, p.Field("sourceLabels"), m.SourceLabels)
	checkGatewayNames(r, p.Field("gateways"), m.Gateways)
	if m.SourceNamespace != "" && !isK8sLabel(m.SourceNamespace) {
		invalidf(r, p.Field("sourceNamespace"), m.SourceNamespace, "sourceNamespace match is not a valid namespace name")
	}
}

// headerValueRE rejects control characters Envoy refuses in header values.
var headerValueRE = regexp.MustCompile("^[^\u0000-\u0008\u000A-\u001F\u007F]*$")

func checkHeaderValue(r *Result, p Path, v string) {
	if !headerValueRE.MatchString(v) {
		invalidf(r, p, v, "header value contains control characters")
		return
	}
	// Envoy expands %VAR% in header values; a lone '%' must be doubled.
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			i++
			continue
		}
		end := strings.IndexByte(v[i+1:], '%')
		if end < 0 {
			invalidf(r, p, v, "invalid header value: unterminated %% variable (write %%%% for a literal %%)")
			return
		}
		i += end + 1
	}
}

func checkHeaderOps(r *Result, p Path, h *networking.Headers) {
	if h == nil {
		return
	}
	side := func(sp Path, ops *networking.Headers_HeaderOperations, request bool) {
		if ops == nil {
			return
		}
		for _, set := range []struct {
			name string
			m    map[string]string
		}{{"set", ops.Set}, {"add", ops.Add}} {
			for _, k := range sortedStringKeys(set.m) {
				kp := sp.Field(set.name).Key(k)
				checkHeaderOpName(r, kp, k, request)
				checkHeaderValue(r, kp, set.m[k])
			}
		}
		for i, k := range ops.Remove {
			checkHeaderOpName(r, sp.Field("remove").Index(i), k, false)
		}
	}
	side(p.Field("request"), h.Request, true)
	side(p.Field("response"), h.Response, false)
}

// checkHeaderOpName: pseudo-headers and Host cannot be changed, except that a request may
// set the authority (Istio's ValidateHTTPHeaderWithAuthorityOperationName).
func checkHeaderOpName(r *Result, p Path, name string, authorityAllowed bool) {
	if name == "" {
		r.Errorf(p, "header name cannot be empty")
		return
	}
	authority := strings.EqualFold(name, ":authority") || strings.EqualFold(name, "host")
	if authorityAllowed && authority {
		return
	}
	if strings.EqualFold(name, "host") {
		invalidf(r, p, name, "cannot set Host header")
		return
	}
	if strings.HasPrefix(name, ":") {
		invalidf(r, p, name, `header cannot have ":" prefix`)
	}
}

var corsMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace}

func checkCORS(r *Result, p Path, c *networking.CorsPolicy) {
	if c == nil {
		return
	}
	for i, o := range c.AllowOrigins {
		op := p.Field("allowOrigins").Index(i)
		var v string
		switch t := o.GetMatchType().(type) {
		case *networking.StringMatch_Exact:
			v = t.Exact
		case *networking.StringMatch_Prefix:
			v = t.Prefix
		case *networking.StringMatch_Regex:
			v = t.Regex
			if v != "" {
				checkRegex(r, op.Field("regex"), v)
			}
		}
		if v == "" {
			r.Errorf(op, "'' is not a valid match type for CORS allow origins")
		}
	}
	if len(c.AllowOrigin) > 0 {
		r.Warnf(p.Field("allowOrigin"), `using deprecated setting "allowOrigin", use "allowOrigins" instead`)
	}
	for i, m := range c.AllowMethods {
		found := false
		for _, s := range corsMethods {
			found = found || s == m
		}
		if !found {
			r.Errorf(p.Field("allowMethods").Index(i), "Unsupported value: %q: not a supported HTTP method", m)
		}
	}
	for _, f := range []struct {
		name string
		vals []string
	}{{"allowHeaders", c.AllowHeaders}, {"exposeHeaders", c.ExposeHeaders}} {
		for i, h := range f.vals {
			if h == "*" {
				continue
			}
			checkHeaderName(r, p.Field(f.name).Index(i), h)
		}
	}
	if c.MaxAge != nil {
		checkDuration(r, p.Field("maxAge"), c.MaxAge)
		if c.MaxAge.Nanos > 0 {
			invalidf(r, p.Field("maxAge"), c.MaxAge.AsDuration().String(), "max_age duration is accurate only to seconds precision")
		}
	}
}

// gRPC status names accepted by Istio for fault aborts (grpc codes, upper snake case).
var grpcStatuses = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func checkFault(r *Result, p Path, f *networking.HTTPFaultInjection) {
	if f == nil {
		return
	}
	if f.Abort == nil && f.Delay == nil {
		r.Errorf(p, "HTTP fault injection must have an abort and/or a delay")
	}
	if a := f.Abort; a != nil {
		ap := p.Field("abort")
		checkFaultPercentage(r, ap.Field("percentage").Field("value"), a.Percentage)
		switch t := a.ErrorType.(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			checkHTTPStatus(r, ap.Field("httpStatus"), int64(t.HttpStatus))
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			ok := false
			for _, s := range grpcStatuses {
				ok = ok || s == t.GrpcStatus
			}
			if !ok {
				r.Errorf(ap.Field("grpcStatus"), "Unsupported value: %q: supported values are gRPC status names such as \"NOT_FOUND\"", t.GrpcStatus)
			}
		case *networking.HTTPFaultInjection_Abort_Http2Error:
			r.Errorf(ap.Field("http2Error"), "HTTP/2 abort fault injection not supported yet")
		default:
			r.Warnf(ap, "abort configured, but error type not set")
		}
	}
	if d := f.Delay; d != nil {
		dp := p.Field("delay")
		checkFaultPercentage(r, dp.Field("percentage").Field("value"), d.Percentage)
		if d.Percent != 0 {
			if d.Percent < 0 || d.Percent > 100 {
				invalidf(r, dp.Field("percent"), d.Percent, "percentage must be in range 0..100")
			}
			r.Warnf(dp.Field("percent"), `using deprecated setting "percent", use "percentage" instead`)
		}
		switch t := d.HttpDelayType.(type) {
		case *networking.HTTPFaultInjection_Delay_FixedDelay:
			checkDuration(r, dp.Field("fixedDelay"), t.FixedDelay)
		case *networking.HTTPFaultInjection_Delay_ExponentialDelay:
			r.Errorf(dp.Field("exponentialDelay"), "exponentialDelay not supported yet")
		default:
			required(r, dp.Field("fixedDelay"))
		}
	}
}

// checkFaultPercentage: 0, or in [0.0001, 100] (Envoy's fractional percent resolution).
func checkFaultPercentage(r *Result, p Path, pc *networking.Percent) {
	if pc == nil {
		return
	}
	v := pc.Value
	if v < 0 || v > 100 || (v > 0 && v < 0.0001) {
		invalidf(r, p, v, "percentage is neither 0.0, nor in range [0.0001, 100.0]")
	}
}

func checkHTTPStatus(r *Result, p Path, s int64) {
	if s < 200 || s > 599 {
		invalidf(r, p, s, "HTTP status must be in range 200-599")
	}
}

func checkRedirect(r *Result, p Path, rd *networking.HTTPRedirect) {
	if rd == nil {
		return
	}
	if rd.Uri == "" && rd.Authority == "" && rd.RedirectPort == nil && rd.Scheme == "" {
		r.Errorf(p, "redirect must specify URI, authority, scheme, or port")
	}
	if rd.RedirectCode != 0 && (rd.RedirectCode < 300 || rd.RedirectCode > 399) {
		invalidf(r, p.Field("redirectCode"), rd.RedirectCode, "must be a 3xx code")
	}
	if rd.Scheme != "" && rd.Scheme != "http" && rd.Scheme != "https" {
		r.Errorf(p.Field("scheme"), `Unsupported value: %q: supported values: "http", "https"`, rd.Scheme)
	}
	if port, ok := rd.RedirectPort.(*networking.HTTPRedirect_Port); ok {
		checkPort(r, p.Field("port"), int64(port.Port))
	}
}

func checkDirectResponse(r *Result, p Path, d *networking.HTTPDirectResponse) {
	if d == nil {
		return
	}
	checkHTTPStatus(r, p.Field("status"), int64(d.Status))
	size := 0
	switch b := d.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		size = len(b.String_)
	case *networking.HTTPBody_Bytes:
		size = len(b.Bytes)
	}
	switch {
	case size > 1<<20:
		r.Errorf(p.Field("body"), "large direct_responses may impact control plane performance, must be less than 1MB")
	case size > 100<<10:
		r.Warnf(p.Field("body"), "large direct_responses may impact control plane performance")
	}
}

// retryOn policies Envoy accepts in x-envoy-retry-on and x-envoy-retry-grpc-on
// (router filter docs), plus HTTP status codes.
var retryOnPolicies = []string{"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
	"retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
	"http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

func checkRetries(r *Result, p Path, rt *networking.HTTPRetry) {
	if rt == nil {
		return
	}
	if rt.Attempts < 0 {
		invalidf(r, p.Field("attempts"), rt.Attempts, "attempts cannot be negative")
	}
	if rt.Attempts == 0 && (rt.PerTryTimeout != nil || rt.RetryOn != "" || rt.RetryRemoteLocalities != nil) {
		r.Errorf(p, "http retry policy configured when attempts are set to 0 (disabled)")
	}
	checkDuration(r, p.Field("perTryTimeout"), rt.PerTryTimeout)
	checkDuration(r, p.Field("backoff"), rt.Backoff)
	if rt.RetryOn != "" {
		for _, pol := range strings.Split(rt.RetryOn, ",") {
			pol = strings.TrimSpace(pol)
			if n, err := strconv.Atoi(pol); err == nil && http.StatusText(n) != "" {
				continue
			}
			known := false
			for _, k := range retryOnPolicies {
				known = known || k == pol
			}
			if !known {
				r.Errorf(p.Field("retryOn"), "Unsupported value: %q: not a valid retryOn policy", pol)
			}
		}
	}
}

func checkRewrite(r *Result, p Path, rw *networking.HTTPRewrite, hdrs *networking.Headers) {
	if rw != nil {
		if rw.Uri != "" && rw.UriRegexRewrite != nil {
			r.Errorf(p, "rewrite may only contain one of uri or uriRegexRewrite")
		}
		if rw.Uri == "" && rw.UriRegexRewrite == nil && rw.Authority == "" {
			r.Errorf(p, "rewrite must specify at least one of uri, uriRegexRewrite, or authority")
		}
		if rr := rw.UriRegexRewrite; rr != nil {
			rp := p.Field("uriRegexRewrite")
			if rr.Match == "" {
				required(r, rp.Field("match"))
			} else {
				checkRegex(r, rp.Field("match"), rr.Match)
			}
			if rr.Rewrite == "" {
				required(r, rp.Field("rewrite"))
			}
		}
	}
	// The authority can be rewritten in one place only.
	current := rw.GetAuthority()
	for _, set := range []map[string]string{hdrs.GetRequest().GetSet(), hdrs.GetRequest().GetAdd()} {
		for _, k := range sortedStringKeys(set) {
			if !strings.EqualFold(k, ":authority") && !strings.EqualFold(k, "host") {
				continue
			}
			if current != "" {
				r.Errorf(Path(strings.TrimSuffix(string(p), ".rewrite")).Field("headers"),
					"authority header cannot be set multiple times: have %q, attempting to set %q", current, set[k])
			}
			current = set[k]
		}
	}
}

func checkDestination(r *Result, p Path, d *networking.Destination) {
	if d == nil {
		required(r, p)
		return
	}
	switch {
	case d.Host == "":
		required(r, p.Field("host"))
	case d.Host == "*":
		invalidf(r, p.Field("host"), d.Host, "invalid destination host")
	default:
		if err := ValidateWildcardDomain(d.Host); err != nil {
			invalidf(r, p.Field("host"), d.Host, "%v", err)
		}
	}
	if d.Subset != "" && !IsDNS1123Label(d.Subset) {
		invalidf(r, p.Field("subset"), d.Subset, "subset name is invalid")
	}
	if d.Port != nil {
		checkPort(r, p.Field("port").Field("number"), int64(d.Port.Number))
	}
}

func checkHTTPRouteDestinations(r *Result, p Path, ds []*networking.HTTPRouteDestination) {
	var total int64
	for i, d := range ds {
		ip := p.Index(i)
		if d == nil {
			r.Errorf(ip, "route destination may not be null")
			continue
		}
		checkDestination(r, ip.Field("destination"), d.Destination)
		checkHeaderOps(r, ip.Field("headers"), d.Headers)
		if d.Weight < 0 {
			invalidf(r, ip.Field("weight"), d.Weight, "must be >= 0")
		}
		total += int64(d.Weight)
	}
	checkTotalWeight(r, p, len(ds), total)
}

func checkRouteDestinations(r *Result, p Path, ds []*networking.RouteDestination) {
	var total int64
	for i, d := range ds {
		ip := p.Index(i)
		if d == nil {
			r.Errorf(ip, "route destination may not be null")
			continue
		}
		checkDestination(r, ip.Field("destination"), d.Destination)
		if d.Weight < 0 {
			invalidf(r, ip.Field("weight"), d.Weight, "must be >= 0")
		}
		total += int64(d.Weight)
	}
	checkTotalWeight(r, p, len(ds), total)
}

// checkTotalWeight: Istio once required weights to sum to 100; it now treats them as
// relative (normalising), and only rejects a split where every weight is 0.
func checkTotalWeight(r *Result, p Path, n int, total int64) {
	if n > 1 && total == 0 {
		r.Errorf(p, "total destination weight = 0")
	} else if n > 1 && total != 100 {
		r.Warnf(p, "destination weights sum to %d, not 100; they are treated as relative weights", total)
	}
}

func checkTLSRoute(r *Result, p Path, t *networking.TLSRoute, vs *networking.VirtualService) {
	if t == nil {
		r.Errorf(p, "tls route may not be null")
		return
	}
	if len(t.Match) == 0 {
		required(r, p.Field("match"))
	}
	for i, m := range t.Match {
		mp := p.Field("match").Index(i)
		if m == nil {
			r.Errorf(mp, "TLS match may not be null")
			continue
		}
		if len(m.SniHosts) == 0 {
			required(r, mp.Field("sniHosts"))
		}
		for j, sni := range m.SniHosts {
			checkSNIHost(r, mp.Field("sniHosts").Index(j), sni, vs)
		}
		for j, s := range m.DestinationSubnets {
			r.err(mp.Field("destinationSubnets").Index(j), validateIPOrCIDR(s))
		}
		if m.Port != 0 {
			checkPort(r, mp.Field("port"), int64(m.Port))
		}
		checkLabels(r, mp.Field("sourceLabels"), m.SourceLabels)
		checkGatewayNames(r, mp.Field("gateways"), m.Gateways)
	}
	if len(t.Route) == 0 {
		required(r, p.Field("route"))
	}
	checkRouteDestinations(r, p.Field("route"), t.Route)
}

func checkSNIHost(r *Result, p Path, sni string, vs *networking.VirtualService) {
	if err := ValidateWildcardDomain(sni); err != nil {
		if isIP(sni) {
			r.Warnf(p, "using an IP address (%q) goes against SNI spec and most clients do not support this", sni)
			return
		}
		invalidf(r, p, sni, "%v", err)
		return
	}
	for _, h := range vs.Hosts {
		if sni == h || wildcardCovers(h, sni) {
			return
		}
	}
	invalidf(r, p, sni, "SNI host is not a compatible subset of any of the virtual service hosts: [%s]", strings.Join(vs.Hosts, ", "))
}

// warnUnreachableHTTP reports rules that can never match (Istio's analyzeUnreachableHTTPRules,
// simplified to exact duplicates and catch-all rules that are not last).
func warnUnreachableHTTP(r *Result, p Path, routes []*networking.HTTPRoute) {
	catchAll := -1
	seen := map[string]int{}
	for i, h := range routes {
		if h == nil {
			continue
		}
		if len(h.Match) == 0 {
			if catchAll >= 0 {
				r.Warnf(p.Index(i), "rule not used: only the last rule can have no matches (rule %d already matches everything)", catchAll)
			}
			catchAll = i
			continue
		}
		if catchAll >= 0 {
			r.Warnf(p.Index(i), "rule not used: rule %d before it has no matches and matches everything", catchAll)
			continue
		}
		dups := 0
		for j, m := range h.Match {
			key := matchKey(m)
			if prev, ok := seen[key]; ok {
				r.Warnf(p.Index(i).Field("match").Index(j), "match is not used (duplicate of a match in rule %d)", prev)
				dups++
				continue
			}
			seen[key] = i
		}
		if dups == len(h.Match) && dups > 0 {
			r.Warnf(p.Index(i), "rule not used: all matches used by prior rules")
		}
	}
}

// matchKey is a canonical form of a match for duplicate detection (the name is excluded).
func matchKey(m *networking.HTTPMatchRequest) string {
	if m == nil {
		return "<nil>"
	}
	c := proto.Clone(m).(*networking.HTTPMatchRequest)
	c.Name = ""
	c.StatPrefix = ""
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	return string(b)
}

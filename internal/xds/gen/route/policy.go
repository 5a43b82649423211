package route

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/snapshot"
)

// Istio's default retry policy for routes without retries: two retries on connection
// failures, refused streams, gRPC unavailable/cancelled and HTTP 503, each to a host not
// tried before.
const (
	defaultRetryOn       = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
	defaultRetryAttempts = 2
	// hostSelectionAttempts bounds how often Envoy re-picks to avoid a previous host.
	hostSelectionAttempts = 5
)

// DefaultRetryPolicy is the retry policy of a route whose VirtualService says nothing
// about retries (Istio's default).
func DefaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:                       defaultRetryOn,
		NumRetries:                    wrapperspb.UInt32(defaultRetryAttempts),
		RetriableStatusCodes:          []uint32{503},
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{previousHosts()},
		HostSelectionRetryMaxAttempts: hostSelectionAttempts,
	}
}

func previousHosts() *routev3.RetryPolicy_RetryHostPredicate {
	return &routev3.RetryPolicy_RetryHostPredicate{
		Name:       "envoy.retry_host_predicates.previous_hosts",
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
	}
}

// retryPolicy translates HTTPRetry. attempts 0 disables retries (nil policy).
func retryPolicy(r *networking.HTTPRetry) *routev3.RetryPolicy {
	if r.GetAttempts() <= 0 {
		return nil
	}
	p := &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(uint32(r.GetAttempts()))}
	if r.GetRetryOn() == "" {
		p.RetryOn = defaultRetryOn
		p.RetriableStatusCodes = []uint32{503}
	} else {
		// Istio lets retryOn carry HTTP status codes among Envoy's conditions; they go
		// to retriable_status_codes, enabled by the retriable-status-codes condition.
		var conds []string
		hasCodes := false
		for _, c := range strings.Split(r.GetRetryOn(), ",") {
			c = strings.TrimSpace(c)
			if c == "" {
				continue
			}
			if code, err := strconv.ParseUint(c, 10, 32); err == nil {
				p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(code))
				continue
			}
			if c == "retriable-status-codes" {
				hasCodes = true
			}
			conds = append(conds, c)
		}
		if len(p.RetriableStatusCodes) > 0 && !hasCodes {
			conds = append(conds, "retriable-status-codes")
		}
		p.RetryOn = strings.Join(conds, ",")
	}
	if t := r.GetPerTryTimeout(); t != nil && t.AsDuration() > 0 {
		p.PerTryTimeout = durationpb.New(t.AsDuration())
	}
	if r.GetRetryIgnorePreviousHosts() == nil || r.GetRetryIgnorePreviousHosts().GetValue() {
		p.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{previousHosts()}
		p.HostSelectionRetryMaxAttempts = hostSelectionAttempts
	}
	if r.GetRetryRemoteLocalities().GetValue() {
		// Retry in other priorities (localities) than the ones already tried.
		p.RetryPriority = &routev3.RetryPolicy_RetryPriority{
			Name:       "envoy.retry_priorities.previous_priorities",
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})},
		}
	}
	if b := r.GetBackoff(); b != nil && b.AsDuration() > 0 {
		p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(b.AsDuration())}
	}
	return p
}

// faultConfig translates HTTPFaultInjection to the fault filter's per-route config.
// nil when nothing applies (exponential delays and HTTP/2 errors are not supported, as
// in Istio).
func faultConfig(f *networking.HTTPFaultInjection) *faultv3.HTTPFault {
	if f == nil {
		return nil
	}
	out := &faultv3.HTTPFault{}
	if d := f.GetDelay(); d != nil && d.GetFixedDelay() != nil {
		pct := percentage(d.GetPercentage())
		if d.GetPercentage() == nil && d.GetPercent() > 0 { // deprecated integer percent
			pct = &typev3.FractionalPercent{Numerator: uint32(min(d.GetPercent(), 100)), Denominator: typev3.FractionalPercent_HUNDRED}
		}
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d.GetFixedDelay().AsDuration())},
			Percentage:         pct,
		}
	}
	if a := f.GetAbort(); a != nil {
		abort := &faultv3.FaultAbort{Percentage: percentage(a.GetPercentage())}
		switch t := a.GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(t.HttpStatus)}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if code, ok := grpcCode(t.GrpcStatus); ok {
				abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}
			}
		}
		if abort.ErrorType != nil {
			out.Abort = abort
		}
	}
	if out.Delay == nil && out.Abort == nil {
		return nil
	}
	return out
}

// percentage is an Istio Percent (0-100, fractions allowed) as a fraction of a million.
// Unset means none, as Istio documents for faults.
func percentage(p *networking.Percent) *typev3.FractionalPercent {
	v := math.Max(0, math.Min(100, p.GetValue()))
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(v * 10000)), Denominator: typev3.FractionalPercent_MILLION}
}

// grpcCode reads a gRPC status name ("UNAVAILABLE") or number.
func grpcCode(s string) (uint32, bool) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil && n <= 16 {
		return uint32(n), true
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		// codes.Code's String is "Unavailable"; Istio spells it "UNAVAILABLE".
		name := strings.ToUpper(c.String())
		if c == codes.Canceled {
			name = "CANCELLED"
		}
		if strings.EqualFold(s, name) || strings.EqualFold(strings.ReplaceAll(s, "_", ""), name) {
			return uint32(c), true
		}
	}
	return 0, false
}

// corsPolicy translates CorsPolicy to the CORS filter's per-route config.
func corsPolicy(c *networking.CorsPolicy) *corsv3.CorsPolicy {
	if c == nil {
		return nil
	}
	out := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(c.GetAllowMethods(), ","),
		AllowHeaders:  strings.Join(c.GetAllowHeaders(), ","),
		ExposeHeaders: strings.Join(c.GetExposeHeaders(), ","),
		// Unmatched preflights go to the upstream unless Istio's IGNORE says otherwise.
		ForwardNotMatchingPreflights: wrapperspb.Bool(c.GetUnmatchedPreflights() != networking.CorsPolicy_IGNORE),
	}
	for _, o := range c.GetAllowOrigins() {
		if isPresenceMatch(o) {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, anyString())
			continue
		}
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, stringMatcher(o))
	}
	for _, o := range c.GetAllowOrigin() { // deprecated exact origins
		if o == "*" {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, anyString())
			continue
		}
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}})
	}
	if m := c.GetMaxAge(); m != nil {
		out.MaxAge = strconv.FormatInt(int64(m.AsDuration().Seconds()), 10)
	}
	if ac := c.GetAllowCredentials(); ac != nil {
		out.AllowCredentials = wrapperspb.Bool(ac.GetValue())
	}
	return out
}

func anyString() *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}
}

// mirrors translates mirror (with mirrorPercentage or the deprecated mirrorPercent)
// and mirrors; unset percentages mirror everything.
func (e *env) mirrors(vs *VirtualService, h *networking.HTTPRoute) []*routev3.RouteAction_RequestMirrorPolicy {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	add := func(d *networking.Destination, pct *typev3.FractionalPercent) {
		c := e.cluster(d, vs.Namespace)
		if c == "" {
			return
		}
		out = append(out, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster:         c,
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: pct},
		})
	}
	all := &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}
	if m := h.GetMirror(); m != nil {
		pct := all
		switch {
		case h.GetMirrorPercentage() != nil:
			pct = percentage(h.GetMirrorPercentage())
		case h.GetMirrorPercent() != nil:
			pct = &typev3.FractionalPercent{Numerator: min(h.GetMirrorPercent().GetValue(), 100), Denominator: typev3.FractionalPercent_HUNDRED}
		}
		add(m, pct)
	}
	for _, m := range h.GetMirrors() {
		pct := all
		if m.GetPercentage() != nil {
			pct = percentage(m.GetPercentage())
		}
		add(m.GetDestination(), pct)
	}
	return out
}

// DestinationRule is the DestinationRule that applies to host for the proxy, as
// Istio looks it up: visible rules in the proxy's namespace first, then the host's
// service's namespace, then the root namespace, then any other; within one namespace
// a rule naming the host exactly beats a wildcard, then the oldest. nil when none.
func (sc *Scope) DestinationRule(host string) *snapshot.Config[*networking.DestinationRule] {
	if dr, ok := sc.drFor[host]; ok {
		return dr
	}
	svcNs := ""
	if svc := sc.s.Service(host, sc.p.Namespace); svc != nil {
		svcNs = svc.Namespace
	}
	rank := func(e drEntry) int {
		switch e.c.Namespace {
		case sc.p.Namespace:
			return 0
		case svcNs:
			return 1
		case sc.s.Mesh.RootNamespace:
			return 2
		}
		return 3
	}
	var best *drEntry
	for i := range sc.drs {
		e := &sc.drs[i]
		if !HostMatch(e.host, host) {
			continue
		}
		if best == nil {
			best = e
			continue
		}
		if ra, rb := rank(*e), rank(*best); ra != rb {
			if ra < rb {
				best = e
			}
			continue
		}
		if we, wb := e.host != host, best.host != host; we != wb {
			if !we {
				best = e
			}
			continue
		}
		if createdBefore(e.c.Meta, best.c.Meta) {
			best = e
		}
	}
	var out *snapshot.Config[*networking.DestinationRule]
	if best != nil {
		out = best.c
	}
	sc.drFor[host] = out
	return out
}

// hashPolicy is the route hash policy for a destination from its DestinationRule's
// consistentHash load balancer: the subset's settings override the rule's, and port
// level settings override either (Istio's precedence).
func (e *env) hashPolicy(host, subset string, port uint32) []*routev3.RouteAction_HashPolicy {
	dr := e.sc.DestinationRule(host)
	if dr == nil {
		return nil
	}
	lb := lbFor(dr.Spec.GetTrafficPolicy(), port)
	for _, ss := range dr.Spec.GetSubsets() {
		if subset != "" && ss.GetName() == subset {
			if l := lbFor(ss.GetTrafficPolicy(), port); l != nil {
				lb = l
			}
		}
	}
	ch := lb.GetConsistentHash()
	if ch == nil {
		return nil
	}
	hp := &routev3.RouteAction_HashPolicy{}
	switch k := ch.GetHashKey().(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(k.HttpHeaderName)}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		ck := &routev3.RouteAction_HashPolicy_Cookie{Name: k.HttpCookie.GetName(), Path: k.HttpCookie.GetPath()}
		if t := k.HttpCookie.GetTtl(); t != nil {
			ck.Ttl = durationpb.New(t.AsDuration())
		}
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: ck}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: k.UseSourceIp}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: k.HttpQueryParameterName}}
	default:
		return nil
	}
	return []*routev3.RouteAction_HashPolicy{hp}
}

// lbFor is a traffic policy's load balancer for a port (port level first).
func lbFor(tp *networking.TrafficPolicy, port uint32) *networking.LoadBalancerSettings {
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == port && pl.GetLoadBalancer() != nil {
			return pl.GetLoadBalancer()
		}
	}
	return tp.GetLoadBalancer()
}

// sameHashPolicy is the hash policy of a route with several destinations: theirs when
// they all agree, else none (one request cannot hash two ways).
func sameHashPolicy(hs [][]*routev3.RouteAction_HashPolicy) []*routev3.RouteAction_HashPolicy {
	if len(hs) == 0 || hs[0] == nil {
		return nil
	}
	for _, h := range hs[1:] {
		if len(h) != len(hs[0]) || !proto.Equal(h[0], hs[0][0]) {
			return nil
		}
	}
	return hs[0]
}

// mustAny packs a message; the generated types always marshal.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("route: marshal %T: %v", m, err))
	}
	return a
}

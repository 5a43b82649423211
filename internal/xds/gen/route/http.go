package route

import (
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// HTTP filter names: the keys of typed_per_filter_config, equal to the names the
// listener generator gives the filters in the HTTP connection manager.
const (
	FaultFilter  = "envoy.filters.http.fault"
	CorsFilter   = "envoy.filters.http.cors"
	RouterFilter = "envoy.filters.http.router"
)

// env is where routes are being built: which gateway (Mesh for a sidecar), which port
// the virtual host serves (0 when it serves several), and which client reads them.
type env struct {
	sc      *Scope
	gateway string
	port    uint32
	// grpc: the client is grpc-go's xDS resolver, which NACKs per-filter configs of
	// filters it lacks (CORS) and has no use for retries on HTTP conditions.
	grpc bool
}

// virtualServiceRoutes translates a VirtualService's http routes for this env, in
// their order. Each match of an HTTPRoute becomes one Envoy route with the same
// action; matches that cannot apply here (another port, another gateway, source labels
// or namespace the proxy lacks) are dropped at generation time, and an HTTPRoute whose
// matches all drop is skipped.
func (e *env) virtualServiceRoutes(vs *VirtualService) []*routev3.Route {
	var out []*routev3.Route
	for _, h := range vs.Spec.GetHttp() {
		if h.GetDelegate() != nil {
			continue // delegate VirtualServices are not supported
		}
		if len(h.GetMatch()) == 0 {
			if r := e.route(vs, h, nil); r != nil {
				out = append(out, r)
			}
			continue
		}
		for _, m := range h.GetMatch() {
			if !e.applies(vs, m) {
				continue
			}
			if r := e.route(vs, h, m); r != nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// applies reports whether a match's non-HTTP conditions hold for this proxy and port.
func (e *env) applies(vs *VirtualService, m *networking.HTTPMatchRequest) bool {
	if m.GetPort() != 0 && m.GetPort() != e.port {
		return false
	}
	if len(m.GetSourceLabels()) > 0 && !snapshot.Matches(m.GetSourceLabels(), e.sc.p.Labels) {
		return false
	}
	if m.GetSourceNamespace() != "" && m.GetSourceNamespace() != e.sc.p.Namespace {
		return false
	}
	if len(m.GetGateways()) > 0 && !containsGateway(m.GetGateways(), vs.Namespace, e.gateway) {
		return false
	}
	return true
}

// route builds one Envoy route from an HTTPRoute and one of its matches (nil: none).
func (e *env) route(vs *VirtualService, h *networking.HTTPRoute, m *networking.HTTPMatchRequest) *routev3.Route {
	r := &routev3.Route{Name: routeName(h, m), Match: routeMatch(m)}
	var ra *routev3.RouteAction
	var single *networking.HTTPRouteDestination
	switch {
	case h.GetRedirect() != nil:
		r.Action = &routev3.Route_Redirect{Redirect: e.redirect(h.GetRedirect())}
	case h.GetDirectResponse() != nil:
		r.Action = &routev3.Route_DirectResponse{DirectResponse: directResponse(h.GetDirectResponse())}
	default:
		ra, single = e.routeAction(vs, h, m)
		if ra == nil {
			return nil
		}
		r.Action = &routev3.Route_Route{Route: ra}
	}
	// Route-level header operations, then those of a lone destination (with several,
	// each weighted cluster carries its own).
	for _, hdr := range []*networking.Headers{h.GetHeaders(), single.GetHeaders()} {
		if hdr == nil {
			continue
		}
		add, rm := headerOps(hdr.GetRequest())
		r.RequestHeadersToAdd, r.RequestHeadersToRemove = append(r.RequestHeadersToAdd, add...), append(r.RequestHeadersToRemove, rm...)
		add, rm = headerOps(hdr.GetResponse())
		r.ResponseHeadersToAdd, r.ResponseHeadersToRemove = append(r.ResponseHeadersToAdd, add...), append(r.ResponseHeadersToRemove, rm...)
		if host := hostRewrite(hdr.GetRequest()); host != "" && ra != nil {
			ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: host}
		}
	}
	pf := map[string]*anypb.Any{}
	if f := faultConfig(h.GetFault()); f != nil {
		pf[FaultFilter] = mustAny(f)
	}
	if c := corsPolicy(h.GetCorsPolicy()); c != nil && !e.grpc {
		pf[CorsFilter] = mustAny(c)
	}
	if len(pf) > 0 {
		r.TypedPerFilterConfig = pf
	}
	return r
}

// routeName is Istio's: the HTTPRoute's name, with the match's name after a dot.
func routeName(h *networking.HTTPRoute, m *networking.HTTPMatchRequest) string {
	switch {
	case h.GetName() != "" && m.GetName() != "":
		return h.GetName() + "." + m.GetName()
	case m.GetName() != "":
		return m.GetName()
	}
	return h.GetName()
}

// routeMatch translates an HTTPMatchRequest's request conditions.
func routeMatch(m *networking.HTTPMatchRequest) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{}
	switch u := m.GetUri().GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
	case *networking.StringMatch_Regex:
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: u.Regex}}
	default:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	}
	if m.GetIgnoreUriCase() {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, pseudo := range []struct {
		name string
		sm   *networking.StringMatch
	}{{":authority", m.GetAuthority()}, {":method", m.GetMethod()}, {":scheme", m.GetScheme()}} {
		if pseudo.sm != nil {
			rm.Headers = append(rm.Headers, headerMatcher(pseudo.name, pseudo.sm, false))
		}
	}
	for _, k := range sortedKeys(m.GetHeaders()) {
		rm.Headers = append(rm.Headers, headerMatcher(k, m.GetHeaders()[k], false))
	}
	for _, k := range sortedKeys(m.GetWithoutHeaders()) {
		rm.Headers = append(rm.Headers, headerMatcher(k, m.GetWithoutHeaders()[k], true))
	}
	for _, k := range sortedKeys(m.GetQueryParams()) {
		qm := &routev3.QueryParameterMatcher{Name: k}
		if sm := m.GetQueryParams()[k]; isPresenceMatch(sm) {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatcher(sm)}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm
}

// isPresenceMatch reports whether a StringMatch accepts any value, which Istio
// translates to a presence check: no match type, an empty prefix, or regex "*"/".*".
func isPresenceMatch(sm *networking.StringMatch) bool {
	switch t := sm.GetMatchType().(type) {
	case nil:
		return true
	case *networking.StringMatch_Prefix:
		return t.Prefix == ""
	case *networking.StringMatch_Regex:
		return t.Regex == "*" || t.Regex == ".*"
	}
	return false
}

// headerMatcher matches one header; invert for withoutHeaders.
func headerMatcher(name string, sm *networking.StringMatch, invert bool) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: strings.ToLower(name), InvertMatch: invert}
	if isPresenceMatch(sm) {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(sm)}
	}
	return hm
}

// stringMatcher translates an Istio StringMatch (exact, prefix, RE2 regex).
func stringMatcher(sm *networking.StringMatch) *matcherv3.StringMatcher {
	switch t := sm.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.Exact}}
	case *networking.StringMatch_Prefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: t.Prefix}}
	case *networking.StringMatch_Regex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: t.Regex}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}
}

// routeAction forwards to the HTTPRoute's destinations. nil when it has none.
// With one destination left it is returned too, for its headers.
func (e *env) routeAction(vs *VirtualService, h *networking.HTTPRoute, m *networking.HTTPMatchRequest) (*routev3.RouteAction, *networking.HTTPRouteDestination) {
	type dest struct {
		cluster string
		weight  uint32
		d       *networking.HTTPRouteDestination
	}
	var dests []dest
	zero := 0
	for _, d := range h.GetRoute() {
		c := e.cluster(d.GetDestination(), vs.Namespace)
		if c == "" {
			continue
		}
		w := d.GetWeight()
		if w <= 0 {
			zero++
			w = 0
		}
		dests = append(dests, dest{c, uint32(w), d})
	}
	if len(dests) > 1 {
		if zero == len(dests) {
			// No weights at all: Envoy needs a positive total, split evenly.
			for i := range dests {
				dests[i].weight = 1
			}
		} else {
			// A weight of 0 sends that destination nothing: leave it out.
			kept := dests[:0]
			for _, d := range dests {
				if d.weight > 0 {
					kept = append(kept, d)
				}
			}
			dests = kept
		}
	}
	if len(dests) == 0 {
		return nil, nil
	}
	ra := &routev3.RouteAction{Timeout: durationpb.New(0)}
	var single *networking.HTTPRouteDestination
	if len(dests) == 1 {
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: dests[0].cluster}
		single = dests[0].d
	} else {
		wc := &routev3.WeightedCluster{}
		for _, d := range dests {
			cw := &routev3.WeightedCluster_ClusterWeight{Name: d.cluster, Weight: wrapperspb.UInt32(d.weight)}
			if dh := d.d.GetHeaders(); dh != nil {
				cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = headerOps(dh.GetRequest())
				cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = headerOps(dh.GetResponse())
				if host := hostRewrite(dh.GetRequest()); host != "" {
					cw.HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: host}
				}
			}
			wc.Clusters = append(wc.Clusters, cw)
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if t := h.GetTimeout(); t != nil {
		ra.Timeout = durationpb.New(t.AsDuration())
	}
	if h.GetRetries() == nil {
		ra.RetryPolicy = DefaultRetryPolicy()
	} else {
		ra.RetryPolicy = retryPolicy(h.GetRetries())
	}
	if rw := h.GetRewrite(); rw != nil {
		applyRewrite(ra, rw, m)
	}
	ra.RequestMirrorPolicies = e.mirrors(vs, h)
	var hashes [][]*routev3.RouteAction_HashPolicy
	for _, d := range dests {
		port := d.d.GetDestination().GetPort().GetNumber()
		if _, p, _, _, ok := names.ParseCluster(d.cluster); ok {
			port = p
		}
		host := resolveHost(e.sc.s, d.d.GetDestination().GetHost(), vs.Namespace)
		hashes = append(hashes, e.hashPolicy(host, d.d.GetDestination().GetSubset(), port))
	}
	ra.HashPolicy = sameHashPolicy(hashes)
	return ra, single
}

// cluster names the outbound cluster of a destination. A destination without a port
// goes to the service's only port, else to the port of the virtual host being built.
func (e *env) cluster(d *networking.Destination, vsNamespace string) string {
	if d.GetHost() == "" {
		return ""
	}
	host := resolveHost(e.sc.s, d.GetHost(), vsNamespace)
	port := d.GetPort().GetNumber()
	if port == 0 {
		svc := e.sc.s.Service(host, e.sc.p.Namespace)
		switch {
		case svc != nil && len(svc.Ports) == 1:
			port = svc.Ports[0].Number
		case e.port != 0:
			port = e.port
		case svc != nil && len(svc.Ports) > 0:
			port = svc.Ports[0].Number
			for _, p := range svc.Ports {
				port = min(port, p.Number)
			}
		default:
			return ""
		}
	}
	return names.Cluster(names.Outbound, port, d.GetSubset(), host)
}

// applyRewrite sets the path and authority rewrites. Istio's rewrite.uri replaces the
// matched prefix when the match is a prefix (or there is no URI match, which is prefix
// "/"), and the whole path otherwise.
func applyRewrite(ra *routev3.RouteAction, rw *networking.HTTPRewrite, m *networking.HTTPMatchRequest) {
	if rw.GetUri() != "" {
		switch m.GetUri().GetMatchType().(type) {
		case *networking.StringMatch_Exact, *networking.StringMatch_Regex:
			ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: "^.*$"},
				Substitution: rw.GetUri(),
			}
		default:
			ra.PrefixRewrite = rw.GetUri()
		}
	}
	if rr := rw.GetUriRegexRewrite(); rr != nil && rr.GetMatch() != "" {
		ra.PrefixRewrite = ""
		ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: rr.GetMatch()},
			Substitution: rr.GetRewrite(),
		}
	}
	if rw.GetAuthority() != "" {
		ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.GetAuthority()}
	}
}

// redirect translates an HTTPRedirect.
func (e *env) redirect(rd *networking.HTTPRedirect) *routev3.RedirectAction {
	a := &routev3.RedirectAction{HostRedirect: rd.GetAuthority()}
	if rd.GetUri() != "" {
		a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.GetUri()}
	}
	if rd.GetScheme() != "" {
		a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.GetScheme()}
	}
	switch p := rd.GetRedirectPort().(type) {
	case *networking.HTTPRedirect_Port:
		a.PortRedirect = p.Port
	case *networking.HTTPRedirect_DerivePort:
		// Envoy cannot copy the request's port; the port the virtual host serves is it.
		// FROM_PROTOCOL_DEFAULT leaves the port out, as Envoy does for a scheme change.
		if p.DerivePort == networking.HTTPRedirect_FROM_REQUEST_PORT && e.port != 0 {
			a.PortRedirect = e.port
		}
	}
	switch rd.GetRedirectCode() {
	case 302:
		a.ResponseCode = routev3.RedirectAction_FOUND
	case 303:
		a.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		a.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		a.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		a.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	}
	return a
}

// directResponse translates an HTTPDirectResponse.
func directResponse(dr *networking.HTTPDirectResponse) *routev3.DirectResponseAction {
	a := &routev3.DirectResponseAction{Status: dr.GetStatus()}
	switch b := dr.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		a.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: b.String_}}
	case *networking.HTTPBody_Bytes:
		a.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b.Bytes}}
	}
	return a
}

// headerOps translates header operations: set overwrites (or adds), add appends,
// remove removes. The Host header and pseudo-headers cannot be mutated this way in
// Envoy; a set Host becomes a host rewrite (hostRewrite).
func headerOps(ops *networking.Headers_HeaderOperations) (add []*corev3.HeaderValueOption, remove []string) {
	if ops == nil {
		return nil, nil
	}
	for _, k := range sortedKeys(ops.GetSet()) {
		if mutable(k) {
			add = append(add, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: k, Value: ops.GetSet()[k]},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			})
		}
	}
	for _, k := range sortedKeys(ops.GetAdd()) {
		if mutable(k) {
			add = append(add, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: k, Value: ops.GetAdd()[k]},
				AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
			})
		}
	}
	for _, k := range ops.GetRemove() {
		if mutable(k) {
			remove = append(remove, k)
		}
	}
	sort.Strings(remove)
	return add, remove
}

func mutable(k string) bool {
	k = strings.ToLower(k)
	return k != "" && k != "host" && !strings.HasPrefix(k, ":")
}

// hostRewrite is a Host set by header operations (Istio rewrites the authority for it).
func hostRewrite(ops *networking.Headers_HeaderOperations) string {
	for _, k := range sortedKeys(ops.GetSet()) {
		if lk := strings.ToLower(k); lk == "host" || lk == ":authority" {
			return ops.GetSet()[k]
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

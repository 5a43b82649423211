// Package convert translates Gateway API and SMI resources into the Istio model (Gateway and
// VirtualService specs), as Istio's own gateway controller does, so that the xDS generators
// only need to understand one routing model.
//
// It is a pure function of its inputs: the snapshot builder calls it on store contents and
// keeps the results out of the store (the generated resources are not user configuration).
//
// Known differences from a full Gateway API implementation (reported, not hidden):
//   - routes are translated one at a time: precedence across several HTTPRoutes attached to
//     the same hostname (oldest first, then by name) is the caller's to apply when merging;
//   - ReferenceGrant is not read, so cross-namespace backendRefs are rejected;
//   - listener/route hostname intersection and sectionName/port parent selection are not
//     applied (the route binds to every listener of its Gateway);
//   - ExtensionRef and ExternalAuth filters, and SMI route-group matches, are unsupported.
package convert

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/internal/config"
	"github.com/weft-mesh/weft/internal/config/smi"
)

// Options configures translation.
type Options struct {
	// DomainSuffix completes service names: name.namespace.svc.<suffix> ("cluster.local").
	DomainSuffix string
}

func (o Options) suffix() string {
	if o.DomainSuffix == "" {
		return "cluster.local"
	}
	return o.DomainSuffix
}

func (o Options) serviceHost(name, ns string) string {
	return name + "." + ns + ".svc." + o.suffix()
}

// GatewayName is the Istio Gateway generated for a Gateway API Gateway; VirtualServices
// generated from routes refer to it as "<namespace>/<GatewayName(name)>".
func GatewayName(name string) string { return name + "-gateway-api" }

// GatewaySelectorLabel selects the proxies that implement a Gateway API Gateway (the label
// Gateway API implementations put on the gateway deployment).
const GatewaySelectorLabel = "gateway.networking.k8s.io/gateway-name"

func derived(src *config.Resource, kind config.Kind, name string, spec any) *config.Resource {
	return &config.Resource{
		Kind:       kind,
		APIVersion: config.GroupNetworking + "/v1",
		Name:       name,
		Namespace:  src.Namespace,
		Spec:       spec,
		Source:     src.Source,
		Annotations: map[string]string{
			"weft.dev/generated-from": src.String(),
		},
	}
}

// KubernetesGateway translates a gateway.networking.k8s.io Gateway into an Istio Gateway.
func KubernetesGateway(r *config.Resource) (*config.Resource, error) {
	g, ok := r.Spec.(*gwv1.GatewaySpec)
	if !ok {
		return nil, fmt.Errorf("convert: %s: not a Gateway API Gateway", r)
	}
	out := &networking.Gateway{Selector: map[string]string{GatewaySelectorLabel: r.Name}}
	var errs []string
	for i, l := range g.Listeners {
		host := "*"
		if l.Hostname != nil {
			host = string(*l.Hostname)
		}
		ns := "."
		if ar := l.AllowedRoutes; ar != nil && ar.Namespaces != nil && ar.Namespaces.From != nil {
			switch *ar.Namespaces.From {
			case gwv1.NamespacesFromAll, gwv1.NamespacesFromSelector:
				// Selector is approximated by "all": label selection is the snapshot's job.
				ns = "*"
			case gwv1.NamespacesFromNone:
				continue
			}
		}
		s := &networking.Server{
			Name:  string(l.Name),
			Port:  &networking.Port{Number: uint32(l.Port), Name: string(l.Name), Protocol: string(l.Protocol)},
			Hosts: []string{ns + "/" + host},
		}
		if t := l.TLS; t != nil {
			mode := gwv1.TLSModeTerminate
			if t.Mode != nil {
				mode = *t.Mode
			}
			if mode == gwv1.TLSModePassthrough {
				s.Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_PASSTHROUGH}
			} else {
				s.Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE}
				for _, c := range t.CertificateRefs {
					name := string(c.Name)
					if c.Namespace != nil && string(*c.Namespace) != r.Namespace {
						name = string(*c.Namespace) + "/" + name
					}
					s.Tls.CredentialNames = append(s.Tls.CredentialNames, name)
				}
				if len(s.Tls.CredentialNames) == 1 {
					s.Tls.CredentialName, s.Tls.CredentialNames = s.Tls.CredentialNames[0], nil
				}
			}
		}
		switch l.Protocol {
		case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType, gwv1.TLSProtocolType, gwv1.TCPProtocolType:
		default:
			errs = append(errs, fmt.Sprintf("spec.listeners[%d].protocol: %s is not supported", i, l.Protocol))
			continue
		}
		out.Servers = append(out.Servers, s)
	}
	res := derived(r, config.KindGateway, GatewayName(r.Name), out)
	if len(errs) > 0 {
		return res, fmt.Errorf("convert: %s: %s", r, strings.Join(errs, "; "))
	}
	return res, nil
}

// HTTPRoute translates an HTTPRoute into VirtualServices: one bound to the Gateways among
// its parents (hosts: the route's hostnames), and one per Service parent (GAMMA mesh
// routing: hosts: the service). Rules become VirtualService HTTP routes ordered by the
// Gateway API's match precedence, because a VirtualService is first-match.
func HTTPRoute(r *config.Resource, o Options) ([]*config.Resource, error) {
	s, ok := r.Spec.(*gwv1.HTTPRouteSpec)
	if !ok {
		return nil, fmt.Errorf("convert: %s: not an HTTPRoute", r)
	}
	var errs []string
	var routes []rankedRoute
	for i, rule := range s.Rules {
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		for j, m := range matches {
			for _, variant := range pathVariants(m.Path) {
				hr, err := httpRule(r, o, rule, m, variant, i)
				if err != nil {
					errs = append(errs, fmt.Sprintf("spec.rules[%d]: %v", i, err))
					break
				}
				routes = append(routes, rankedRoute{route: hr, rank: rankHTTP(m, variant), rule: i, match: j})
			}
		}
	}
	out := bindParents(r, o, s.ParentRefs, s.Hostnames, sortRoutes(routes))
	if len(errs) > 0 {
		return out, fmt.Errorf("convert: %s: %s", r, strings.Join(errs, "; "))
	}
	return out, nil
}

// pathMatch is one VirtualService path match derived from a Gateway API path match.
type pathMatch struct {
	kind  string // "exact", "prefix", "regex", "" (none)
	value string
	// prefix is the Gateway API prefix (without trailing slash) when this variant comes
	// from a PathPrefix match; rewrites need it.
	prefix string
}

// pathVariants expands a Gateway API path match. PathPrefix matches whole segments ("/foo"
// matches "/foo" and "/foo/x", not "/foobar"), which a VirtualService prefix cannot say, so
// it becomes two routes: exact "/foo" and prefix "/foo/".
func pathVariants(p *gwv1.HTTPPathMatch) []pathMatch {
	typ, val := gwv1.PathMatchPathPrefix, "/"
	if p != nil {
		if p.Type != nil {
			typ = *p.Type
		}
		if p.Value != nil {
			val = *p.Value
		}
	}
	switch typ {
	case gwv1.PathMatchExact:
		return []pathMatch{{kind: "exact", value: val}}
	case gwv1.PathMatchRegularExpression:
		return []pathMatch{{kind: "regex", value: val}}
	}
	trimmed := strings.TrimRight(val, "/")
	if trimmed == "" {
		return []pathMatch{{kind: "prefix", value: "/", prefix: ""}}
	}
	return []pathMatch{{kind: "exact", value: trimmed, prefix: trimmed}, {kind: "prefix", value: trimmed + "/", prefix: trimmed}}
}

func (pm pathMatch) stringMatch() *networking.StringMatch {
	switch pm.kind {
	case "exact":
		return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: pm.value}}
	case "prefix":
		if pm.value == "/" {
			return nil // matches everything
		}
		return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: pm.value}}
	case "regex":
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: pm.value}}
	}
	return nil
}

type rankedRoute struct {
	route       *networking.HTTPRoute
	rank        [5]int
	rule, match int
}

// rankHTTP orders matches by the Gateway API's precedence: exact path before prefix, longer
// paths first, then method, then more header matches, then more query matches.
func rankHTTP(m gwv1.HTTPRouteMatch, pm pathMatch) [5]int {
	exact := 0
	if pm.kind == "exact" {
		exact = 1
	}
	method := 0
	if m.Method != nil {
		method = 1
	}
	return [5]int{exact, len(pm.value), method, len(m.Headers), len(m.QueryParams)}
}

func sortRoutes(rs []rankedRoute) []*networking.HTTPRoute {
	slices.SortStableFunc(rs, func(a, b rankedRoute) int {
		for i := range a.rank {
			if a.rank[i] != b.rank[i] {
				return b.rank[i] - a.rank[i] // higher first
			}
		}
		if a.rule != b.rule {
			return a.rule - b.rule
		}
		return a.match - b.match
	})
	out := make([]*networking.HTTPRoute, len(rs))
	for i, r := range rs {
		out[i] = r.route
	}
	return out
}

func httpRule(r *config.Resource, o Options, rule gwv1.HTTPRouteRule, m gwv1.HTTPRouteMatch, pm pathMatch, idx int) (*networking.HTTPRoute, error) {
	hr := &networking.HTTPRoute{Name: fmt.Sprintf("%s.%s.%d", r.Namespace, r.Name, idx)}
	if rule.Name != nil {
		hr.Name = string(*rule.Name)
	}
	mr := &networking.HTTPMatchRequest{Uri: pm.stringMatch()}
	for _, h := range m.Headers {
		if mr.Headers == nil {
			mr.Headers = map[string]*networking.StringMatch{}
		}
		mr.Headers[strings.ToLower(string(h.Name))] = exactOrRegex(h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression, h.Value)
	}
	for _, q := range m.QueryParams {
		if mr.QueryParams == nil {
			mr.QueryParams = map[string]*networking.StringMatch{}
		}
		mr.QueryParams[string(q.Name)] = exactOrRegex(q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression, q.Value)
	}
	if m.Method != nil {
		mr.Method = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: string(*m.Method)}}
	}
	if mr.Uri != nil || mr.Headers != nil || mr.QueryParams != nil || mr.Method != nil {
		hr.Match = []*networking.HTTPMatchRequest{mr}
	}
	for _, f := range rule.Filters {
		if err := applyFilter(hr, r, o, f.Type, f.RequestHeaderModifier, f.ResponseHeaderModifier, f.RequestMirror, pm); err != nil {
			return nil, err
		}
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestRedirect:
			hr.Redirect = redirect(f.RequestRedirect, pm)
		case gwv1.HTTPRouteFilterURLRewrite:
			hr.Rewrite = rewrite(f.URLRewrite, pm)
		case gwv1.HTTPRouteFilterCORS:
			hr.CorsPolicy = cors(f.CORS)
		}
	}
	if t := rule.Timeouts; t != nil {
		if d, ok := gwDuration(t.Request); ok {
			hr.Timeout = d
		}
		if d, ok := gwDuration(t.BackendRequest); ok {
			if hr.Retries == nil {
				hr.Retries = &networking.HTTPRetry{}
			}
			hr.Retries.PerTryTimeout = d
		}
	}
	if rt := rule.Retry; rt != nil {
		if hr.Retries == nil {
			hr.Retries = &networking.HTTPRetry{}
		}
		if rt.Attempts != nil {
			hr.Retries.Attempts = int32(*rt.Attempts)
		}
		codes := make([]string, 0, len(rt.Codes))
		for _, c := range rt.Codes {
			codes = append(codes, strconv.Itoa(int(c)))
		}
		hr.Retries.RetryOn = strings.Join(codes, ",")
		if d, ok := gwDuration(rt.Backoff); ok {
			hr.Retries.Backoff = d
		}
	}
	if hr.Retries != nil && hr.Retries.Attempts == 0 && hr.Retries.RetryOn == "" {
		hr.Retries.Attempts = 1 // a per-try timeout alone means one attempt bounded by it
	}
	if hr.Redirect != nil {
		return hr, nil
	}
	var refs []backend
	for _, b := range rule.BackendRefs {
		be := backend{ref: b.BackendRef}
		for _, f := range b.Filters {
			be.filters = append(be.filters, filterParts{f.Type, f.RequestHeaderModifier, f.ResponseHeaderModifier, f.RequestMirror})
		}
		refs = append(refs, be)
	}
	return hr, setDestinations(hr, r, o, refs)
}

type filterParts struct {
	typ      gwv1.HTTPRouteFilterType
	req, rsp *gwv1.HTTPHeaderFilter
	mirror   *gwv1.HTTPRequestMirrorFilter
}

type backend struct {
	ref     gwv1.BackendRef
	filters []filterParts
}

// applyFilter handles the filters HTTP and gRPC routes share.
func applyFilter(hr *networking.HTTPRoute, r *config.Resource, o Options, typ gwv1.HTTPRouteFilterType,
	req, rsp *gwv1.HTTPHeaderFilter, mirror *gwv1.HTTPRequestMirrorFilter, _ pathMatch,
) error {
	switch typ {
	case gwv1.HTTPRouteFilterRequestHeaderModifier:
		hr.Headers = withHeaderOps(hr.Headers, req, true)
	case gwv1.HTTPRouteFilterResponseHeaderModifier:
		hr.Headers = withHeaderOps(hr.Headers, rsp, false)
	case gwv1.HTTPRouteFilterRequestMirror:
		if mirror == nil {
			return fmt.Errorf("requestMirror is required")
		}
		host, port, err := backendHost(r, o, mirror.BackendRef)
		if err != nil {
			return err
		}
		mp := &networking.HTTPMirrorPolicy{Destination: &networking.Destination{Host: host, Port: port}}
		switch {
		case mirror.Percent != nil:
			mp.Percentage = &networking.Percent{Value: float64(*mirror.Percent)}
		case mirror.Fraction != nil:
			den := int32(100)
			if mirror.Fraction.Denominator != nil {
				den = *mirror.Fraction.Denominator
			}
			mp.Percentage = &networking.Percent{Value: 100 * float64(mirror.Fraction.Numerator) / float64(den)}
		}
		hr.Mirrors = append(hr.Mirrors, mp)
	case gwv1.HTTPRouteFilterRequestRedirect, gwv1.HTTPRouteFilterURLRewrite, gwv1.HTTPRouteFilterCORS:
		// HTTP-only; handled by the caller.
	default:
		return fmt.Errorf("filter %s is not supported", typ)
	}
	return nil
}

func withHeaderOps(h *networking.Headers, f *gwv1.HTTPHeaderFilter, request bool) *networking.Headers {
	if f == nil {
		return h
	}
	if h == nil {
		h = &networking.Headers{}
	}
	ops := &networking.Headers_HeaderOperations{Remove: slices.Clone(f.Remove)}
	for _, s := range f.Set {
		if ops.Set == nil {
			ops.Set = map[string]string{}
		}
		ops.Set[strings.ToLower(string(s.Name))] = s.Value
	}
	for _, a := range f.Add {
		if ops.Add == nil {
			ops.Add = map[string]string{}
		}
		ops.Add[strings.ToLower(string(a.Name))] = a.Value
	}
	if request {
		h.Request = ops
	} else {
		h.Response = ops
	}
	return h
}

func exactOrRegex(regex bool, v string) *networking.StringMatch {
	if regex {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: v}}
	}
	return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: v}}
}

// replacedPrefix is what ReplacePrefixMatch yields for one path variant: the exact variant
// ("/foo") becomes the replacement, the "/foo/" variant the replacement with a slash.
func replacedPrefix(repl string, pm pathMatch) string {
	if pm.kind == "prefix" && pm.prefix != "" && !strings.HasSuffix(repl, "/") {
		return repl + "/"
	}
	return repl
}

func redirect(f *gwv1.HTTPRequestRedirectFilter, pm pathMatch) *networking.HTTPRedirect {
	rd := &networking.HTTPRedirect{}
	if f == nil {
		return rd
	}
	if f.Scheme != nil {
		rd.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		rd.Authority = string(*f.Hostname)
	}
	if f.Port != nil {
		rd.RedirectPort = &networking.HTTPRedirect_Port{Port: uint32(*f.Port)}
	} else if f.Scheme != nil {
		// The Gateway API uses the scheme's well-known port when only the scheme changes.
		rd.RedirectPort = &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_PROTOCOL_DEFAULT}
	}
	if f.StatusCode != nil {
		rd.RedirectCode = uint32(*f.StatusCode)
	} else {
		rd.RedirectCode = 302
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gwv1.FullPathHTTPPathModifier:
			if p.ReplaceFullPath != nil {
				rd.Uri = *p.ReplaceFullPath
			}
		case gwv1.PrefixMatchHTTPPathModifier:
			if p.ReplacePrefixMatch != nil {
				rd.PrefixRewrite = replacedPrefix(*p.ReplacePrefixMatch, pm)
			}
		}
	}
	if rd.Uri == "" && rd.Authority == "" && rd.RedirectPort == nil && rd.Scheme == "" && rd.PrefixRewrite == "" {
		// A bare redirect still has to say something for Envoy: keep the request's port.
		rd.RedirectPort = &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_REQUEST_PORT}
	}
	return rd
}

func rewrite(f *gwv1.HTTPURLRewriteFilter, pm pathMatch) *networking.HTTPRewrite {
	rw := &networking.HTTPRewrite{}
	if f == nil {
		return rw
	}
	if f.Hostname != nil {
		rw.Authority = string(*f.Hostname)
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gwv1.FullPathHTTPPathModifier:
			if p.ReplaceFullPath != nil {
				rw.UriRegexRewrite = &networking.RegexRewrite{Match: "/.*", Rewrite: *p.ReplaceFullPath}
			}
		case gwv1.PrefixMatchHTTPPathModifier:
			if p.ReplacePrefixMatch != nil {
				rw.Uri = replacedPrefix(*p.ReplacePrefixMatch, pm)
			}
		}
	}
	return rw
}

func cors(f *gwv1.HTTPCORSFilter) *networking.CorsPolicy {
	if f == nil {
		return nil
	}
	c := &networking.CorsPolicy{}
	for _, o := range f.AllowOrigins {
		s := string(o)
		switch {
		case s == "*":
			c.AllowOrigins = append(c.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: ".*"}})
		case strings.Contains(s, "*"):
			re := strings.ReplaceAll(regexpQuote(s), `\*`, "[^/]*")
			c.AllowOrigins = append(c.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: re}})
		default:
			c.AllowOrigins = append(c.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: s}})
		}
	}
	for _, m := range f.AllowMethods {
		c.AllowMethods = append(c.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		c.AllowHeaders = append(c.AllowHeaders, string(h))
	}
	for _, h := range f.ExposeHeaders {
		c.ExposeHeaders = append(c.ExposeHeaders, string(h))
	}
	if f.AllowCredentials != nil {
		c.AllowCredentials = wrapBool(*f.AllowCredentials)
	}
	if f.MaxAge > 0 {
		c.MaxAge = durationpb.New(secondsDuration(int64(f.MaxAge)))
	}
	return c
}

// backendHost resolves a backend reference to a service host and port.
func backendHost(r *config.Resource, o Options, b gwv1.BackendObjectReference) (string, *networking.PortSelector, error) {
	group, kind := "", "Service"
	if b.Group != nil {
		group = string(*b.Group)
	}
	if b.Kind != nil {
		kind = string(*b.Kind)
	}
	if (group != "" && group != "core") || kind != "Service" {
		return "", nil, fmt.Errorf("backend %s/%s %s is not supported (only Services)", group, kind, b.Name)
	}
	ns := r.Namespace
	if b.Namespace != nil && string(*b.Namespace) != r.Namespace {
		return "", nil, fmt.Errorf("backend %s/%s is in another namespace; ReferenceGrant is not supported", *b.Namespace, b.Name)
	}
	var port *networking.PortSelector
	if b.Port != nil {
		port = &networking.PortSelector{Number: uint32(*b.Port)}
	}
	return o.serviceHost(string(b.Name), ns), port, nil
}

// setDestinations fills the route's destinations; with no usable backend the Gateway API
// requires a 500 response.
func setDestinations(hr *networking.HTTPRoute, r *config.Resource, o Options, refs []backend) error {
	for _, b := range refs {
		w := int32(1)
		if b.ref.Weight != nil {
			w = *b.ref.Weight
		}
		if w == 0 {
			continue
		}
		host, port, err := backendHost(r, o, b.ref.BackendObjectReference)
		if err != nil {
			return err
		}
		d := &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: host, Port: port}, Weight: w}
		for _, f := range b.filters {
			switch f.typ {
			case gwv1.HTTPRouteFilterRequestHeaderModifier:
				d.Headers = withHeaderOps(d.Headers, f.req, true)
			case gwv1.HTTPRouteFilterResponseHeaderModifier:
				d.Headers = withHeaderOps(d.Headers, f.rsp, false)
			default:
				return fmt.Errorf("backendRef filter %s is not supported", f.typ)
			}
		}
		hr.Route = append(hr.Route, d)
	}
	if len(hr.Route) == 1 {
		hr.Route[0].Weight = 0 // a single destination takes everything
	}
	if len(hr.Route) == 0 {
		hr.Route = nil
		hr.DirectResponse = &networking.HTTPDirectResponse{Status: 500}
	}
	return nil
}

// bindParents splits a route's parents into the gateway-bound VirtualService and one per
// Service parent.
func bindParents(r *config.Resource, o Options, parents []gwv1.ParentReference, hostnames []gwv1.Hostname, routes []*networking.HTTPRoute) []*config.Resource {
	var out []*config.Resource
	var gateways []string
	for _, p := range parents {
		group, kind := gwv1.GroupName, "Gateway"
		if p.Group != nil {
			group = string(*p.Group)
		}
		if p.Kind != nil {
			kind = string(*p.Kind)
		}
		ns := r.Namespace
		if p.Namespace != nil {
			ns = string(*p.Namespace)
		}
		switch {
		case group == gwv1.GroupName && kind == "Gateway":
			g := ns + "/" + GatewayName(string(p.Name))
			if !slices.Contains(gateways, g) {
				gateways = append(gateways, g)
			}
		case (group == "" || group == "core") && kind == "Service":
			vs := &networking.VirtualService{
				Hosts:    []string{o.serviceHost(string(p.Name), ns)},
				Gateways: []string{"mesh"},
				Http:     cloneRoutes(routes),
			}
			out = append(out, derived(r, config.KindVirtualService, fmt.Sprintf("%s-%s-mesh", r.Name, p.Name), vs))
		}
	}
	if len(gateways) > 0 {
		hosts := make([]string, 0, len(hostnames))
		for _, h := range hostnames {
			hosts = append(hosts, string(h))
		}
		if len(hosts) == 0 {
			hosts = []string{"*"}
		}
		vs := &networking.VirtualService{Hosts: hosts, Gateways: gateways, Http: cloneRoutes(routes)}
		out = append([]*config.Resource{derived(r, config.KindVirtualService, r.Name+"-gateway", vs)}, out...)
	}
	return out
}

// GRPCRoute translates a GRPCRoute like an HTTPRoute: a method match is a path match on
// "/service/method".
func GRPCRoute(r *config.Resource, o Options) ([]*config.Resource, error) {
	s, ok := r.Spec.(*gwv1.GRPCRouteSpec)
	if !ok {
		return nil, fmt.Errorf("convert: %s: not a GRPCRoute", r)
	}
	var errs []string
	var routes []rankedRoute
	for i, rule := range s.Rules {
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}}
		}
		for j, m := range matches {
			hr := &networking.HTTPRoute{Name: fmt.Sprintf("%s.%s.%d", r.Namespace, r.Name, i)}
			mr := &networking.HTTPMatchRequest{Uri: grpcPath(m.Method)}
			for _, h := range m.Headers {
				if mr.Headers == nil {
					mr.Headers = map[string]*networking.StringMatch{}
				}
				mr.Headers[strings.ToLower(string(h.Name))] = exactOrRegex(h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression, h.Value)
			}
			if mr.Uri != nil || mr.Headers != nil {
				hr.Match = []*networking.HTTPMatchRequest{mr}
			}
			var err error
			for _, f := range rule.Filters {
				if err = applyFilter(hr, r, o, gwv1.HTTPRouteFilterType(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, f.RequestMirror, pathMatch{}); err != nil {
					break
				}
			}
			if err == nil {
				var refs []backend
				for _, b := range rule.BackendRefs {
					be := backend{ref: b.BackendRef}
					for _, f := range b.Filters {
						be.filters = append(be.filters, filterParts{gwv1.HTTPRouteFilterType(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, f.RequestMirror})
					}
					refs = append(refs, be)
				}
				err = setDestinations(hr, r, o, refs)
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("spec.rules[%d]: %v", i, err))
				break
			}
			rank := [5]int{0, 0, 0, len(m.Headers), 0}
			if mr.Uri != nil {
				if _, exact := mr.Uri.MatchType.(*networking.StringMatch_Exact); exact {
					rank[0] = 1
				}
				rank[1] = len(mr.Uri.GetExact() + mr.Uri.GetPrefix() + mr.Uri.GetRegex())
			}
			routes = append(routes, rankedRoute{route: hr, rank: rank, rule: i, match: j})
		}
	}
	out := bindParents(r, o, s.ParentRefs, s.Hostnames, sortRoutes(routes))
	if len(errs) > 0 {
		return out, fmt.Errorf("convert: %s: %s", r, strings.Join(errs, "; "))
	}
	return out, nil
}

func grpcPath(m *gwv1.GRPCMethodMatch) *networking.StringMatch {
	if m == nil || (m.Service == nil && m.Method == nil) {
		return nil
	}
	svc, method := "", ""
	if m.Service != nil {
		svc = *m.Service
	}
	if m.Method != nil {
		method = *m.Method
	}
	if m.Type != nil && *m.Type == gwv1.GRPCMethodMatchRegularExpression {
		if svc == "" {
			svc = "[^/]+"
		}
		if method == "" {
			method = "[^/]+"
		}
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: "/" + svc + "/" + method}}
	}
	switch {
	case svc != "" && method != "":
		return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: "/" + svc + "/" + method}}
	case svc != "":
		return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "/" + svc + "/"}}
	default:
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: "/[^/]+/" + regexpQuote(method)}}
	}
}

// TrafficSplit translates an SMI TrafficSplit into a mesh VirtualService for the root
// service with the backends' (normalised) weights.
func TrafficSplit(r *config.Resource, o Options) (*config.Resource, error) {
	ts, ok := r.Spec.(*smi.TrafficSplitSpec)
	if !ok {
		return nil, fmt.Errorf("convert: %s: not a TrafficSplit", r)
	}
	if len(ts.Matches) > 0 {
		return nil, fmt.Errorf("convert: %s: spec.matches (HTTPRouteGroup/TCPRoute references) is not supported", r)
	}
	host := func(name string) string {
		if strings.Contains(name, ".") {
			return name
		}
		return o.serviceHost(name, r.Namespace)
	}
	weights := ts.Normalize()
	// VirtualService weights are int32: scale down if the quantities are large.
	var maxW int64
	for _, w := range weights {
		maxW = max(maxW, w)
	}
	scale := int64(1)
	for maxW/scale > 1<<30 {
		scale *= 10
	}
	route := &networking.HTTPRoute{}
	for i, b := range ts.Backends {
		w := weights[i] / scale
		if w <= 0 {
			continue
		}
		route.Route = append(route.Route, &networking.HTTPRouteDestination{
			Destination: &networking.Destination{Host: host(b.Service)}, Weight: int32(w),
		})
	}
	if len(route.Route) == 0 {
		return nil, fmt.Errorf("convert: %s: no backend has a positive weight", r)
	}
	vs := &networking.VirtualService{Hosts: []string{host(ts.Service)}, Gateways: []string{"mesh"}, Http: []*networking.HTTPRoute{route}}
	return derived(r, config.KindVirtualService, r.Name+"-trafficsplit", vs), nil
}

func gwDuration(d *gwv1.Duration) (*durationpb.Duration, bool) {
	if d == nil {
		return nil, false
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v <= 0 {
		// "0s" disables the timeout in the Gateway API; the VirtualService has no field
		// for "none", so leave it unset.
		return nil, false
	}
	return durationpb.New(v), true
}

func cloneRoutes(rs []*networking.HTTPRoute) []*networking.HTTPRoute {
	out := make([]*networking.HTTPRoute, len(rs))
	for i, r := range rs {
		out[i] = proto.Clone(r).(*networking.HTTPRoute)
	}
	return out
}

func regexpQuote(s string) string { return regexp.QuoteMeta(s) }

func wrapBool(b bool) *wrapperspb.BoolValue { return wrapperspb.Bool(b) }

func secondsDuration(s int64) time.Duration { return time.Duration(s) * time.Second }

package validation

import (
	"fmt"
	"regexp"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The Gateway API's own rules (its CRD schemas and CEL), the cheap ones: required fields,
// enums, ranges, formats, and the cross-field rules users trip over.

var (
	gwDurationRE     = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)
	gwHeaderNameRE   = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]+$")
	gwHostnameRE     = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	gwSectionNameRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	gwGRPCServiceRE  = regexp.MustCompile(`^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`)
	gwGRPCMethodRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9]*$`)
	gwCustomProtoRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]+$`)
	gwHTTPMethods    = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
	gwRedirectCodes  = []int{301, 302, 303, 307, 308}
	gwMaxBackendWeig = int32(1000000)
)

func oneOf[T comparable](v T, set []T) bool {
	for _, s := range set {
		if s == v {
			return true
		}
	}
	return false
}

func unsupported(r *Result, p Path, v string, supported ...string) {
	q := make([]string, len(supported))
	for i, s := range supported {
		q[i] = fmt.Sprintf("%q", s)
	}
	r.Errorf(p, "Unsupported value: %q: supported values: %s", v, strings.Join(q, ", "))
}

func tooMany(r *Result, p Path, n, max int) {
	if n > max {
		r.Errorf(p, "Too many: %d: must have at most %d items", n, max)
	}
}

func checkGWHostname(r *Result, p Path, h string) {
	if isIP(h) {
		invalidf(r, p, h, "must be a DNS hostname, not an IP address")
		return
	}
	if len(h) > 253 || !gwHostnameRE.MatchString(h) {
		invalidf(r, p, h, "must be a lowercase DNS hostname, optionally prefixed with \"*.\"")
	}
}

func checkGWDuration(r *Result, p Path, d *gwv1.Duration) {
	if d != nil && !gwDurationRE.MatchString(string(*d)) {
		invalidf(r, p, string(*d), "must be a Gateway API duration such as \"10s\" or \"1h30m\" (%s)", gwDurationRE)
	}
}

// KubernetesGateway validates a gateway.networking.k8s.io Gateway.
func KubernetesGateway(_ Meta, g *gwv1.GatewaySpec) Result {
	var r Result
	p := Path("spec")
	if g.GatewayClassName == "" {
		required(&r, p.Field("gatewayClassName"))
	}
	if len(g.Listeners) == 0 {
		required(&r, p.Field("listeners"))
	}
	tooMany(&r, p.Field("listeners"), len(g.Listeners), 64)
	names := map[gwv1.SectionName]bool{}
	combos := map[string]bool{}
	for i, l := range g.Listeners {
		lp := p.Field("listeners").Index(i)
		switch {
		case l.Name == "":
			required(&r, lp.Field("name"))
		case names[l.Name]:
			r.Errorf(lp.Field("name"), "Duplicate value: %q: listener name must be unique within the Gateway", l.Name)
		case !gwSectionNameRE.MatchString(string(l.Name)):
			invalidf(&r, lp.Field("name"), string(l.Name), "must be a lowercase DNS subdomain")
		}
		names[l.Name] = true
		checkPort(&r, lp.Field("port"), int64(l.Port))
		proto := string(l.Protocol)
		switch {
		case proto == "":
			required(&r, lp.Field("protocol"))
		case oneOf(l.Protocol, []gwv1.ProtocolType{gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType, gwv1.TLSProtocolType,
			gwv1.TCPProtocolType, gwv1.UDPProtocolType}):
		case gwCustomProtoRE.MatchString(proto):
		default:
			unsupported(&r, lp.Field("protocol"), proto, "HTTP", "HTTPS", "TLS", "TCP", "UDP", "<domain>/<name>")
		}
		hostname := ""
		if l.Hostname != nil {
			hostname = string(*l.Hostname)
			checkGWHostname(&r, lp.Field("hostname"), hostname)
			if l.Protocol == gwv1.TCPProtocolType || l.Protocol == gwv1.UDPProtocolType {
				r.Errorf(lp.Field("hostname"), "hostname must not be specified for protocols ['TCP', 'UDP']")
			}
		}
		switch l.Protocol {
		case gwv1.HTTPProtocolType, gwv1.TCPProtocolType, gwv1.UDPProtocolType:
			if l.TLS != nil {
				r.Errorf(lp.Field("tls"), "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")
			}
		case gwv1.HTTPSProtocolType:
			if l.TLS == nil {
				r.Errorf(lp.Field("tls"), "tls must be specified for protocols ['HTTPS']")
			}
		}
		if t := l.TLS; t != nil {
			mode := gwv1.TLSModeTerminate
			if t.Mode != nil {
				mode = *t.Mode
			}
			if mode != gwv1.TLSModeTerminate && mode != gwv1.TLSModePassthrough {
				unsupported(&r, lp.Field("tls").Field("mode"), string(mode), "Terminate", "Passthrough")
			}
			if mode == gwv1.TLSModeTerminate && len(t.CertificateRefs) == 0 && len(t.Options) == 0 {
				r.Errorf(lp.Field("tls").Field("certificateRefs"), "certificateRefs or options must be specified when mode is Terminate")
			}
			if mode == gwv1.TLSModePassthrough && l.Protocol == gwv1.HTTPSProtocolType {
				r.Errorf(lp.Field("tls").Field("mode"), "Passthrough mode is not allowed for protocol HTTPS")
			}
			tooMany(&r, lp.Field("tls").Field("certificateRefs"), len(t.CertificateRefs), 64)
			for j, c := range t.CertificateRefs {
				if c.Name == "" {
					required(&r, lp.Field("tls").Field("certificateRefs").Index(j).Field("name"))
				}
			}
		}
		key := fmt.Sprintf("%d/%s/%s", l.Port, l.Protocol, hostname)
		if combos[key] {
			r.Errorf(lp, "Combination of port, protocol and hostname must be unique for each listener")
		}
		combos[key] = true
	}
	for i, a := range g.Addresses {
		ap := p.Field("addresses").Index(i)
		typ := gwv1.IPAddressType
		if a.Type != nil {
			typ = *a.Type
		}
		switch typ {
		case gwv1.IPAddressType:
			if !isIP(a.Value) {
				invalidf(&r, ap.Field("value"), a.Value, "must be a valid IP address")
			}
		case gwv1.HostnameAddressType:
			checkGWHostname(&r, ap.Field("value"), a.Value)
		}
	}
	return r
}

func checkParentRefs(r *Result, p Path, refs []gwv1.ParentReference) {
	tooMany(r, p, len(refs), 32)
	if len(refs) == 0 {
		r.Warnf(p, "route has no parentRefs; it is not attached to any Gateway or Service")
	}
	for i, ref := range refs {
		rp := p.Index(i)
		if ref.Name == "" {
			required(r, rp.Field("name"))
		}
		if ref.Port != nil {
			checkPort(r, rp.Field("port"), int64(*ref.Port))
		}
		if ref.SectionName != nil && !gwSectionNameRE.MatchString(string(*ref.SectionName)) {
			invalidf(r, rp.Field("sectionName"), string(*ref.SectionName), "must be a lowercase DNS subdomain")
		}
	}
}

func checkBackendObject(r *Result, p Path, b gwv1.BackendObjectReference) {
	if b.Name == "" {
		required(r, p.Field("name"))
	}
	group, kind := "", "Service"
	if b.Group != nil {
		group = string(*b.Group)
	}
	if b.Kind != nil {
		kind = string(*b.Kind)
	}
	if b.Port == nil {
		if (group == "" || group == "core") && kind == "Service" {
			r.Errorf(p.Field("port"), "Required value: must have port for Service reference")
		}
	} else {
		checkPort(r, p.Field("port"), int64(*b.Port))
	}
}

func checkBackendRef(r *Result, p Path, b gwv1.BackendRef) {
	checkBackendObject(r, p, b.BackendObjectReference)
	if b.Weight != nil && (*b.Weight < 0 || *b.Weight > gwMaxBackendWeig) {
		invalidf(r, p.Field("weight"), *b.Weight, "must be >= 0 and <= %d", gwMaxBackendWeig)
	}
}

func checkHeaderFilter(r *Result, p Path, f *gwv1.HTTPHeaderFilter) {
	if f == nil {
		required(r, p)
		return
	}
	if len(f.Set) == 0 && len(f.Add) == 0 && len(f.Remove) == 0 {
		r.Errorf(p, "one of set, add or remove must be specified")
	}
	seen := map[string]bool{}
	for _, l := range []struct {
		name string
		hs   []gwv1.HTTPHeader
	}{{"set", f.Set}, {"add", f.Add}} {
		for i, h := range l.hs {
			hp := p.Field(l.name).Index(i).Field("name")
			checkGWHeaderName(r, hp, string(h.Name))
			k := strings.ToLower(string(h.Name))
			if seen[k] {
				r.Errorf(hp, "Duplicate value: %q", h.Name)
			}
			seen[k] = true
		}
	}
	for i, h := range f.Remove {
		checkGWHeaderName(r, p.Field("remove").Index(i), h)
	}
}

func checkGWHeaderName(r *Result, p Path, name string) {
	if name == "" {
		required(r, p)
	} else if len(name) > 256 || !gwHeaderNameRE.MatchString(name) {
		invalidf(r, p, name, "must be a valid HTTP header name")
	}
}

func checkMirror(r *Result, p Path, m *gwv1.HTTPRequestMirrorFilter) {
	if m == nil {
		required(r, p)
		return
	}
	checkBackendObject(r, p.Field("backendRef"), m.BackendRef)
	if m.Percent != nil && m.Fraction != nil {
		r.Errorf(p, "only one of percent or fraction may be specified")
	}
	if m.Percent != nil && (*m.Percent < 0 || *m.Percent > 100) {
		invalidf(r, p.Field("percent"), *m.Percent, "must be in range 0..100")
	}
	if f := m.Fraction; f != nil {
		den := int32(100)
		if f.Denominator != nil {
			den = *f.Denominator
		}
		if den < 1 || f.Numerator < 0 || f.Numerator > den {
			invalidf(r, p.Field("fraction"), fmt.Sprintf("%d/%d", f.Numerator, den), "numerator must be in 0..denominator and denominator >= 1")
		}
	}
}

// HTTPRoute validates a gateway.networking.k8s.io HTTPRoute.
func HTTPRoute(_ Meta, s *gwv1.HTTPRouteSpec) Result {
	var r Result
	p := Path("spec")
	checkParentRefs(&r, p.Field("parentRefs"), s.ParentRefs)
	tooMany(&r, p.Field("hostnames"), len(s.Hostnames), 16)
	for i, h := range s.Hostnames {
		checkGWHostname(&r, p.Field("hostnames").Index(i), string(h))
	}
	tooMany(&r, p.Field("rules"), len(s.Rules), 16)
	for i, rule := range s.Rules {
		rp := p.Field("rules").Index(i)
		tooMany(&r, rp.Field("matches"), len(rule.Matches), 64)
		for j, m := range rule.Matches {
			checkHTTPRouteMatch(&r, rp.Field("matches").Index(j), m)
		}
		checkHTTPFilters(&r, rp.Field("filters"), rule.Filters, rule.Matches)
		tooMany(&r, rp.Field("backendRefs"), len(rule.BackendRefs), 16)
		redirect := false
		for _, f := range rule.Filters {
			redirect = redirect || f.Type == gwv1.HTTPRouteFilterRequestRedirect
		}
		if redirect && len(rule.BackendRefs) > 0 {
			r.Errorf(rp, "RequestRedirect filter must not be used together with backendRefs")
		}
		for j, b := range rule.BackendRefs {
			bp := rp.Field("backendRefs").Index(j)
			checkBackendRef(&r, bp, b.BackendRef)
			checkHTTPFilters(&r, bp.Field("filters"), b.Filters, nil)
		}
		if t := rule.Timeouts; t != nil {
			checkGWDuration(&r, rp.Field("timeouts").Field("request"), t.Request)
			checkGWDuration(&r, rp.Field("timeouts").Field("backendRequest"), t.BackendRequest)
		}
		if rt := rule.Retry; rt != nil {
			if rt.Attempts != nil && *rt.Attempts < 0 {
				invalidf(&r, rp.Field("retry").Field("attempts"), *rt.Attempts, "must be >= 0")
			}
			for j, c := range rt.Codes {
				if c < 400 || c > 599 {
					invalidf(&r, rp.Field("retry").Field("codes").Index(j), int(c), "must be in range 400-599")
				}
			}
			checkGWDuration(&r, rp.Field("retry").Field("backoff"), rt.Backoff)
		}
	}
	return r
}

func checkHTTPRouteMatch(r *Result, p Path, m gwv1.HTTPRouteMatch) {
	if pm := m.Path; pm != nil {
		typ := gwv1.PathMatchPathPrefix
		if pm.Type != nil {
			typ = *pm.Type
		}
		val := "/"
		if pm.Value != nil {
			val = *pm.Value
		}
		vp := p.Field("path").Field("value")
		switch typ {
		case gwv1.PathMatchExact, gwv1.PathMatchPathPrefix:
			switch {
			case !strings.HasPrefix(val, "/"):
				invalidf(r, vp, val, "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']")
			case strings.Contains(val, "//"), strings.Contains(val, "/./"), strings.Contains(val, "/../"),
				strings.Contains(strings.ToLower(val), "%2f"), strings.Contains(val, "#"),
				strings.HasSuffix(val, "/.."), strings.HasSuffix(val, "/."):
				invalidf(r, vp, val, "must not contain '//', '/./', '/../', '%%2f' or '#', nor end with '/..' or '/.'")
			}
		case gwv1.PathMatchRegularExpression:
			checkRegex(r, vp, val)
		default:
			unsupported(r, p.Field("path").Field("type"), string(typ), "Exact", "PathPrefix", "RegularExpression")
		}
	}
	names := map[string]bool{}
	for i, h := range m.Headers {
		hp := p.Field("headers").Index(i)
		checkGWHeaderName(r, hp.Field("name"), string(h.Name))
		k := strings.ToLower(string(h.Name))
		if names[k] {
			r.Errorf(hp.Field("name"), "Duplicate value: %q: header names must be unique within a match", h.Name)
		}
		names[k] = true
		if h.Type != nil {
			switch *h.Type {
			case gwv1.HeaderMatchExact:
			case gwv1.HeaderMatchRegularExpression:
				checkRegex(r, hp.Field("value"), h.Value)
			default:
				unsupported(r, hp.Field("type"), string(*h.Type), "Exact", "RegularExpression")
			}
		}
	}
	names = map[string]bool{}
	for i, q := range m.QueryParams {
		qp := p.Field("queryParams").Index(i)
		checkGWHeaderName(r, qp.Field("name"), string(q.Name))
		if names[string(q.Name)] {
			r.Errorf(qp.Field("name"), "Duplicate value: %q: query param names must be unique within a match", q.Name)
		}
		names[string(q.Name)] = true
		if q.Type != nil {
			switch *q.Type {
			case gwv1.QueryParamMatchExact:
			case gwv1.QueryParamMatchRegularExpression:
				checkRegex(r, qp.Field("value"), q.Value)
			default:
				unsupported(r, qp.Field("type"), string(*q.Type), "Exact", "RegularExpression")
			}
		}
	}
	if m.Method != nil && !oneOf(string(*m.Method), gwHTTPMethods) {
		unsupported(r, p.Field("method"), string(*m.Method), gwHTTPMethods...)
	}
}

func checkHTTPFilters(r *Result, p Path, fs []gwv1.HTTPRouteFilter, matches []gwv1.HTTPRouteMatch) {
	tooMany(r, p, len(fs), 16)
	count := map[gwv1.HTTPRouteFilterType]int{}
	for i, f := range fs {
		fp := p.Index(i)
		count[f.Type]++
		if count[f.Type] > 1 && f.Type != gwv1.HTTPRouteFilterRequestMirror && f.Type != gwv1.HTTPRouteFilterExtensionRef {
			r.Errorf(fp.Field("type"), "Duplicate value: %q: this filter type may appear at most once per rule", f.Type)
		}
		set := map[string]bool{
			"requestHeaderModifier": f.RequestHeaderModifier != nil, "responseHeaderModifier": f.ResponseHeaderModifier != nil,
			"requestMirror": f.RequestMirror != nil, "requestRedirect": f.RequestRedirect != nil,
			"urlRewrite": f.URLRewrite != nil, "cors": f.CORS != nil, "externalAuth": f.ExternalAuth != nil,
			"extensionRef": f.ExtensionRef != nil,
		}
		want := ""
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			want = "requestHeaderModifier"
			checkHeaderFilter(r, fp.Field(want), f.RequestHeaderModifier)
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			want = "responseHeaderModifier"
			checkHeaderFilter(r, fp.Field(want), f.ResponseHeaderModifier)
		case gwv1.HTTPRouteFilterRequestMirror:
			want = "requestMirror"
			checkMirror(r, fp.Field(want), f.RequestMirror)
		case gwv1.HTTPRouteFilterRequestRedirect:
			want = "requestRedirect"
			checkRedirectFilter(r, fp.Field(want), f.RequestRedirect, matches)
		case gwv1.HTTPRouteFilterURLRewrite:
			want = "urlRewrite"
			if f.URLRewrite == nil {
				required(r, fp.Field(want))
			} else {
				if f.URLRewrite.Hostname != nil {
					checkGWHostname(r, fp.Field(want).Field("hostname"), string(*f.URLRewrite.Hostname))
				}
				checkPathModifier(r, fp.Field(want).Field("path"), f.URLRewrite.Path, matches)
			}
		case gwv1.HTTPRouteFilterCORS:
			want = "cors"
		case gwv1.HTTPRouteFilterExternalAuth:
			want = "externalAuth"
		case gwv1.HTTPRouteFilterExtensionRef:
			want = "extensionRef"
		default:
			unsupported(r, fp.Field("type"), string(f.Type), "RequestHeaderModifier", "ResponseHeaderModifier",
				"RequestMirror", "RequestRedirect", "URLRewrite", "CORS", "ExternalAuth", "ExtensionRef")
			continue
		}
		if !set[want] {
			required(r, fp.Field(want))
		}
		for _, name := range sortedStringKeys(set) {
			if set[name] && name != want {
				r.Errorf(fp.Field(name), "must not be set when type is %s", f.Type)
			}
		}
	}
	if count[gwv1.HTTPRouteFilterRequestRedirect] > 0 && count[gwv1.HTTPRouteFilterURLRewrite] > 0 {
		r.Errorf(p, "may specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both")
	}
}

func checkRedirectFilter(r *Result, p Path, rd *gwv1.HTTPRequestRedirectFilter, matches []gwv1.HTTPRouteMatch) {
	if rd == nil {
		required(r, p)
		return
	}
	if rd.Scheme != nil && *rd.Scheme != "http" && *rd.Scheme != "https" {
		unsupported(r, p.Field("scheme"), *rd.Scheme, "http", "https")
	}
	if rd.Hostname != nil {
		checkGWHostname(r, p.Field("hostname"), string(*rd.Hostname))
	}
	if rd.Port != nil {
		checkPort(r, p.Field("port"), int64(*rd.Port))
	}
	if rd.StatusCode != nil && !oneOf(*rd.StatusCode, gwRedirectCodes) {
		r.Errorf(p.Field("statusCode"), "Unsupported value: %d: supported values: 301, 302, 303, 307, 308", *rd.StatusCode)
	}
	checkPathModifier(r, p.Field("path"), rd.Path, matches)
}

func checkPathModifier(r *Result, p Path, m *gwv1.HTTPPathModifier, matches []gwv1.HTTPRouteMatch) {
	if m == nil {
		return
	}
	switch m.Type {
	case gwv1.FullPathHTTPPathModifier:
		if m.ReplaceFullPath == nil {
			required(r, p.Field("replaceFullPath"))
		}
		if m.ReplacePrefixMatch != nil {
			r.Errorf(p.Field("replacePrefixMatch"), "must not be set when type is ReplaceFullPath")
		}
	case gwv1.PrefixMatchHTTPPathModifier:
		if m.ReplacePrefixMatch == nil {
			required(r, p.Field("replacePrefixMatch"))
		}
		if m.ReplaceFullPath != nil {
			r.Errorf(p.Field("replaceFullPath"), "must not be set when type is ReplacePrefixMatch")
		}
		for _, mt := range matches {
			if mt.Path != nil && mt.Path.Type != nil && *mt.Path.Type != gwv1.PathMatchPathPrefix {
				r.Errorf(p, "ReplacePrefixMatch must only be used with a PathPrefix path match")
				break
			}
		}
	default:
		unsupported(r, p.Field("type"), string(m.Type), "ReplaceFullPath", "ReplacePrefixMatch")
	}
}

// GRPCRoute validates a gateway.networking.k8s.io GRPCRoute.
func GRPCRoute(_ Meta, s *gwv1.GRPCRouteSpec) Result {
	var r Result
	p := Path("spec")
	checkParentRefs(&r, p.Field("parentRefs"), s.ParentRefs)
	for i, h := range s.Hostnames {
		checkGWHostname(&r, p.Field("hostnames").Index(i), string(h))
	}
	tooMany(&r, p.Field("rules"), len(s.Rules), 16)
	for i, rule := range s.Rules {
		rp := p.Field("rules").Index(i)
		for j, m := range rule.Matches {
			mp := rp.Field("matches").Index(j)
			if mm := m.Method; mm != nil {
				checkGRPCMethod(&r, mp.Field("method"), mm)
			}
			for k, h := range m.Headers {
				hp := mp.Field("headers").Index(k)
				checkGWHeaderName(&r, hp.Field("name"), string(h.Name))
				if h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression {
					checkRegex(&r, hp.Field("value"), h.Value)
				}
			}
		}
		checkGRPCFilters(&r, rp.Field("filters"), rule.Filters)
		tooMany(&r, rp.Field("backendRefs"), len(rule.BackendRefs), 16)
		for j, b := range rule.BackendRefs {
			bp := rp.Field("backendRefs").Index(j)
			checkBackendRef(&r, bp, b.BackendRef)
			checkGRPCFilters(&r, bp.Field("filters"), b.Filters)
		}
	}
	return r
}

func checkGRPCMethod(r *Result, p Path, m *gwv1.GRPCMethodMatch) {
	typ := gwv1.GRPCMethodMatchExact
	if m.Type != nil {
		typ = *m.Type
	}
	if m.Service == nil && m.Method == nil {
		r.Errorf(p, "one or both of 'service' or 'method' must be specified")
	}
	switch typ {
	case gwv1.GRPCMethodMatchExact:
		if m.Service != nil && !gwGRPCServiceRE.MatchString(*m.Service) {
			invalidf(r, p.Field("service"), *m.Service, "must be a valid fully qualified gRPC service name")
		}
		if m.Method != nil && !gwGRPCMethodRE.MatchString(*m.Method) {
			invalidf(r, p.Field("method"), *m.Method, "must be a valid gRPC method name")
		}
	case gwv1.GRPCMethodMatchRegularExpression:
		if m.Service != nil {
			checkRegex(r, p.Field("service"), *m.Service)
		}
		if m.Method != nil {
			checkRegex(r, p.Field("method"), *m.Method)
		}
	default:
		unsupported(r, p.Field("type"), string(typ), "Exact", "RegularExpression")
	}
}

func checkGRPCFilters(r *Result, p Path, fs []gwv1.GRPCRouteFilter) {
	tooMany(r, p, len(fs), 16)
	for i, f := range fs {
		fp := p.Index(i)
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier:
			checkHeaderFilter(r, fp.Field("requestHeaderModifier"), f.RequestHeaderModifier)
		case gwv1.GRPCRouteFilterResponseHeaderModifier:
			checkHeaderFilter(r, fp.Field("responseHeaderModifier"), f.ResponseHeaderModifier)
		case gwv1.GRPCRouteFilterRequestMirror:
			checkMirror(r, fp.Field("requestMirror"), f.RequestMirror)
		case gwv1.GRPCRouteFilterExtensionRef:
			if f.ExtensionRef == nil {
				required(r, fp.Field("extensionRef"))
			}
		default:
			unsupported(r, fp.Field("type"), string(f.Type), "RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef")
		}
	}
}

package validation

import (
	"encoding/json"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-jose/go-jose/v4"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
)

// checkTargets applies the rules shared by policies that attach either by workload
// selector or by targetRef(s) (CRD rules and Istio's validatePolicyTargetReference).
func checkTargets(r *Result, p Path, sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference,
	refs []*typev1beta1.PolicyTargetReference,
) {
	set := 0
	if sel != nil {
		set++
	}
	if ref != nil {
		set++
	}
	if len(refs) > 0 {
		set++
	}
	if set > 1 {
		invalidf(r, p, "object", "only one of targetRefs or selector can be set")
	}
	if sel != nil {
		checkSelectorLabels(r, p.Field("selector").Field("matchLabels"), sel.MatchLabels, "label")
		if len(sel.MatchLabels) == 0 {
			r.Warnf(p.Field("selector"), "workload selector specified without labels")
		}
	}
	checkTargetRef(r, p.Field("targetRef"), ref)
	if len(refs) > 16 {
		r.Errorf(p.Field("targetRefs"), "Too many: %d: must have at most 16 items", len(refs))
	}
	for i, tr := range refs {
		checkTargetRef(r, p.Field("targetRefs").Index(i), tr)
	}
}

func checkTargetRef(r *Result, p Path, ref *typev1beta1.PolicyTargetReference) {
	if ref == nil {
		return
	}
	if ref.Name == "" {
		required(r, p.Field("name"))
	}
	if ref.Kind == "" {
		required(r, p.Field("kind"))
	}
	if ref.Namespace != "" {
		invalidf(r, p.Field("namespace"), ref.Namespace, "cross namespace referencing is not currently supported")
	}
	switch {
	case ref.Group == "" && ref.Kind == "Service",
		ref.Group == "networking.istio.io" && ref.Kind == "ServiceEntry",
		ref.Group == "gateway.networking.k8s.io" && (ref.Kind == "Gateway" || ref.Kind == "GatewayClass"):
	default:
		if ref.Kind != "" {
			invalidf(r, p, ref.Group+"/"+ref.Kind, "targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway")
		}
	}
}

// PeerAuthentication follows Istio's ValidatePeerAuthentication and its CRD rules.
func PeerAuthentication(_ Meta, pa *security.PeerAuthentication) Result {
	var r Result
	p := Path("spec")
	if len(pa.PortLevelMtls) > 0 && len(pa.GetSelector().GetMatchLabels()) == 0 {
		invalidf(&r, p, "object", "portLevelMtls requires selector")
	}
	for port := range pa.PortLevelMtls {
		if port == 0 || port > 65535 {
			invalidf(&r, p.Field("portLevelMtls"), port, "port must be between 1-65535")
		}
	}
	if pa.Selector != nil {
		checkSelectorLabels(&r, p.Field("selector").Field("matchLabels"), pa.Selector.MatchLabels, "label")
	}
	return r
}

// AuthorizationPolicy follows Istio's ValidateAuthorizationPolicy and its CRD rules.
func AuthorizationPolicy(_ Meta, ap *security.AuthorizationPolicy) Result {
	var r Result
	p := Path("spec")
	checkTargets(&r, p, ap.Selector, ap.TargetRef, ap.TargetRefs)
	provider := ap.GetProvider()
	switch ap.Action {
	case security.AuthorizationPolicy_CUSTOM:
		if ap.Rules == nil {
			r.Errorf(p.Field("rules"), "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request")
		} else if provider.GetName() == "" {
			required(&r, p.Field("provider").Field("name"))
		}
	case security.AuthorizationPolicy_DENY:
		if ap.Rules == nil {
			r.Errorf(p.Field("rules"), "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request")
		}
	}
	if provider != nil && ap.Action != security.AuthorizationPolicy_CUSTOM {
		r.Errorf(p.Field("provider"), "`provider` must not be with non CUSTOM action, found %s", ap.Action)
	}
	for i, rule := range ap.Rules {
		rp := p.Field("rules").Index(i)
		if rule == nil {
			r.Errorf(rp, "rule must not be null")
			continue
		}
		checkAuthzRule(&r, rp, rule, ap.Action)
	}
	return r
}

func checkAuthzRule(r *Result, p Path, rule *security.Rule, action security.AuthorizationPolicy_Action) {
	custom := action == security.AuthorizationPolicy_CUSTOM
	if rule.From != nil && len(rule.From) == 0 {
		r.Errorf(p.Field("from"), "`from` must not be empty")
	}
	tcpFrom, tcpTo, fromSet, toSet := false, false, false, false
	for i, f := range rule.From {
		fp := p.Field("from").Index(i)
		if f == nil || f.Source == nil {
			required(r, fp.Field("source"))
			continue
		}
		fromSet = true
		s := f.Source
		sp := fp.Field("source")
		lists := []struct {
			name string
			v    []string
		}{
			{"principals", s.Principals}, {"notPrincipals", s.NotPrincipals},
			{"requestPrincipals", s.RequestPrincipals}, {"notRequestPrincipals", s.NotRequestPrincipals},
			{"namespaces", s.Namespaces}, {"notNamespaces", s.NotNamespaces},
			{"serviceAccounts", s.ServiceAccounts}, {"notServiceAccounts", s.NotServiceAccounts},
			{"ipBlocks", s.IpBlocks}, {"notIpBlocks", s.NotIpBlocks},
			{"remoteIpBlocks", s.RemoteIpBlocks}, {"notRemoteIpBlocks", s.NotRemoteIpBlocks},
			{"trustDomains", s.TrustDomains}, {"notTrustDomains", s.NotTrustDomains},
		}
		empty := true
		for _, l := range lists {
			empty = empty && len(l.v) == 0
			checkNoEmptyValues(r, sp.Field(l.name), l.v)
		}
		if empty {
			r.Errorf(sp, "`from.source` must not be empty")
		}
		if (len(s.ServiceAccounts) > 0 || len(s.NotServiceAccounts) > 0) &&
			(len(s.Principals) > 0 || len(s.NotPrincipals) > 0 || len(s.Namespaces) > 0 || len(s.NotNamespaces) > 0) {
			invalidf(r, sp, "object", "Cannot set serviceAccounts with namespaces or principals")
		}
		checkServiceAccounts(r, sp.Field("serviceAccounts"), s.ServiceAccounts)
		checkServiceAccounts(r, sp.Field("notServiceAccounts"), s.NotServiceAccounts)
		for _, l := range []struct {
			name string
			v    []string
		}{{"ipBlocks", s.IpBlocks}, {"notIpBlocks", s.NotIpBlocks}, {"remoteIpBlocks", s.RemoteIpBlocks}, {"notRemoteIpBlocks", s.NotRemoteIpBlocks}} {
			checkIPs(r, sp.Field(l.name), l.v)
		}
		if custom {
			for _, l := range lists[:6] {
				if len(l.v) > 0 {
					r.Errorf(sp.Field(l.name), "%s is currently not supported with CUSTOM action", l.name)
				}
			}
		}
		if s.Principals != nil || s.NotPrincipals != nil || s.IpBlocks != nil || s.NotIpBlocks != nil ||
			s.Namespaces != nil || s.NotNamespaces != nil || s.RemoteIpBlocks != nil || s.NotRemoteIpBlocks != nil {
			tcpFrom = true
		}
	}
	if rule.To != nil && len(rule.To) == 0 {
		r.Errorf(p.Field("to"), "`to` must not be empty")
	}
	for i, t := range rule.To {
		tp := p.Field("to").Index(i)
		if t == nil || t.Operation == nil {
			required(r, tp.Field("operation"))
			continue
		}
		toSet = true
		op := t.Operation
		opp := tp.Field("operation")
		empty := true
		for _, l := range []struct {
			name string
			v    []string
		}{{"hosts", op.Hosts}, {"notHosts", op.NotHosts}, {"ports", op.Ports}, {"notPorts", op.NotPorts},
			{"methods", op.Methods}, {"notMethods", op.NotMethods}, {"paths", op.Paths}, {"notPaths", op.NotPaths}} {
			empty = empty && len(l.v) == 0
			checkNoEmptyValues(r, opp.Field(l.name), l.v)
		}
		if empty {
			r.Errorf(opp, "`to.operation` must not be empty")
		}
		checkPortStrings(r, opp.Field("ports"), op.Ports)
		checkPortStrings(r, opp.Field("notPorts"), op.NotPorts)
		checkPathTemplates(r, opp.Field("paths"), op.Paths)
		checkPathTemplates(r, opp.Field("notPaths"), op.NotPaths)
		if op.Ports != nil || op.NotPorts != nil {
			tcpTo = true
		}
	}
	for i, c := range rule.When {
		cp := p.Field("when").Index(i)
		if c == nil {
			r.Errorf(cp, "when condition must not be null")
			continue
		}
		if c.Key == "" {
			required(r, cp.Field("key"))
			continue
		}
		if len(c.Values) == 0 && len(c.NotValues) == 0 {
			r.Errorf(cp, "at least one of `values` or `notValues` must be set for key %s", c.Key)
		} else {
			checkAttribute(r, cp.Field("values"), c.Key, c.Values)
			checkAttribute(r, cp.Field("notValues"), c.Key, c.NotValues)
		}
		if custom && (c.Key == "source.namespace" || c.Key == "source.principal" || strings.HasPrefix(c.Key, "request.auth.")) {
			invalidf(r, cp.Field("key"), c.Key, "%s is currently not supported with CUSTOM action", c.Key)
		}
	}
	if action == security.AuthorizationPolicy_DENY && ((fromSet && !toSet && !tcpFrom) || (toSet && !tcpTo)) {
		r.Warnf(p, "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port")
	}
}

func checkNoEmptyValues(r *Result, p Path, vs []string) {
	for i, v := range vs {
		if v == "" {
			invalidf(r, p.Index(i), v, "empty value not allowed")
		}
	}
}

func checkServiceAccounts(r *Result, p Path, vs []string) {
	if len(vs) > 16 {
		r.Errorf(p, "Too many: %d: must have at most 16 items", len(vs))
	}
	for i, v := range vs {
		ip := p.Index(i)
		switch {
		case strings.Contains(v, "*"):
			invalidf(r, ip, v, "wildcard not allowed")
		case strings.Count(v, "/") > 1:
			invalidf(r, ip, v, "expected format 'serviceAccount' or 'namespace/serviceAccount'")
		case len(v) > 320:
			invalidf(r, ip, v, "value cannot exceed 320 characters")
		default:
			ns, sa, slash := strings.Cut(v, "/")
			if (slash && ns == "") || (slash && sa == "") {
				invalidf(r, ip, v, "expected format 'serviceAccount' or 'namespace/serviceAccount'")
			}
		}
	}
}

func checkIPs(r *Result, p Path, vs []string) {
	for i, v := range vs {
		if strings.Contains(v, "/") {
			if _, err := netip.ParsePrefix(v); err != nil {
				invalidf(r, p.Index(i), v, "bad CIDR range: %v", err)
			}
		} else if !isIP(v) {
			invalidf(r, p.Index(i), v, "bad IP address")
		}
	}
}

func checkPortStrings(r *Result, p Path, vs []string) {
	for i, v := range vs {
		if n, err := strconv.ParseUint(v, 10, 32); err != nil || n > 65535 {
			invalidf(r, p.Index(i), v, "bad port: must be a number in 0..65535")
		}
	}
}

// pathLiteralRE is RFC 3986 pchar, which Envoy requires of path template literals.
var pathLiteralRE = regexp.MustCompile(`^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$`)

// checkPathTemplates accepts "{*}" (one segment) and "{**}" (the rest, last) templates.
func checkPathTemplates(r *Result, p Path, paths []string) {
	for i, path := range paths {
		if msg := pathTemplateErr(path); msg != "" {
			invalidf(r, p.Index(i), path, "invalid or unsupported path: %s", msg)
		}
	}
}

func pathTemplateErr(path string) string {
	tmpl := strings.Contains(path, "{*}") || strings.Contains(path, "{**}")
	anySeen := false
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		switch {
		case seg == "{*}" || seg == "{**}":
			if anySeen {
				return "{**} is not the last operator"
			}
			anySeen = seg == "{**}"
		case strings.ContainsAny(seg, "{}"):
			return "contains '{' or '}' beyond a supported path template"
		case tmpl && !pathLiteralRE.MatchString(seg):
			return "segment " + strconv.Quote(seg) + " is not a valid string literal"
		}
	}
	return ""
}

// checkAttribute validates a `when` condition (Istio's supported condition keys).
func checkAttribute(r *Result, p Path, key string, values []string) {
	checkNoEmptyValues(r, p, values)
	mapKey := func() {
		open := strings.Index(key, "[")
		if !strings.HasSuffix(key, "]") || open <= 0 || open >= len(key)-2 {
			invalidf(r, p, key, "bad key %s: should have format a[b]", key)
		}
	}
	switch {
	case strings.HasPrefix(key, "request.headers"), strings.HasPrefix(key, "request.experimental.inline.headers"),
		strings.HasPrefix(key, "request.auth.claims"), strings.HasPrefix(key, "experimental.envoy.filters."):
		mapKey()
	case key == "source.ip", key == "remote.ip", key == "destination.ip":
		checkIPs(r, p, values)
	case key == "destination.port":
		checkPortStrings(r, p, values)
	case key == "source.serviceAccount":
		checkServiceAccounts(r, p, values)
	case key == "source.namespace", key == "source.principal", key == "request.auth.principal",
		key == "request.auth.audiences", key == "request.auth.presenter", key == "connection.sni",
		key == "source.trustDomain":
	case key == "destination.namespace":
		invalidf(r, p, key, "attribute %s is replaced by the metadata.namespace", key)
	case strings.HasPrefix(key, "destination.labels"):
		invalidf(r, p, key, "attribute %s is replaced by the workload selector", key)
	case key == "destination.name", key == "destination.user":
		invalidf(r, p, key, "deprecated attribute %s: only supported in v1alpha1", key)
	default:
		invalidf(r, p, key, "unknown attribute: %s", key)
	}
}

// RequestAuthentication follows Istio's ValidateRequestAuthentication and its CRD rules.
func RequestAuthentication(_ Meta, ra *security.RequestAuthentication) Result {
	var r Result
	p := Path("spec")
	checkTargets(&r, p, ra.Selector, ra.TargetRef, ra.TargetRefs)
	for i, rule := range ra.JwtRules {
		jp := p.Field("jwtRules").Index(i)
		if rule == nil {
			r.Errorf(jp, "jwt rule must not be null")
			continue
		}
		if rule.Issuer == "" {
			required(&r, jp.Field("issuer"))
		}
		checkNoEmptyValues(&r, jp.Field("audiences"), rule.Audiences)
		if rule.JwksUri != "" && rule.Jwks != "" {
			invalidf(&r, jp, "object", "only one of jwks or jwksUri can be set")
		}
		if rule.JwksUri != "" {
			u, err := url.Parse(rule.JwksUri)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				invalidf(&r, jp.Field("jwksUri"), rule.JwksUri, "url must have scheme http:// or https://")
			}
		}
		if rule.Jwks != "" {
			var set jose.JSONWebKeySet
			if err := json.Unmarshal([]byte(rule.Jwks), &set); err != nil {
				invalidf(&r, jp.Field("jwks"), "...", "jwks parse error: %v", err)
			}
		}
		for j, h := range rule.FromHeaders {
			if h == nil || h.Name == "" {
				required(&r, jp.Field("fromHeaders").Index(j).Field("name"))
			}
		}
		checkNoEmptyValues(&r, jp.Field("fromParams"), rule.FromParams)
		checkNoEmptyValues(&r, jp.Field("fromCookies"), rule.FromCookies)
		checkNoEmptyValues(&r, jp.Field("spaceDelimitedClaims"), rule.SpaceDelimitedClaims)
		if len(rule.SpaceDelimitedClaims) > 64 {
			r.Errorf(jp.Field("spaceDelimitedClaims"), "Too many: %d: must have at most 64 items", len(rule.SpaceDelimitedClaims))
		}
		for j, c := range rule.OutputClaimToHeaders {
			cp := jp.Field("outputClaimToHeaders").Index(j)
			if c == nil {
				r.Errorf(cp, "outputClaimToHeaders must not be null")
				continue
			}
			if c.Claim == "" {
				required(&r, cp.Field("claim"))
			}
			if c.Header == "" {
				required(&r, cp.Field("header"))
			} else if !headerNameRE.MatchString(c.Header) {
				invalidf(&r, cp.Field("header"), c.Header, "header in body should match '%s'", headerNameRE)
			}
		}
		if rule.OutputPayloadToHeader != "" && !headerNameRE.MatchString(rule.OutputPayloadToHeader) {
			invalidf(&r, jp.Field("outputPayloadToHeader"), rule.OutputPayloadToHeader, "header name must match %s", headerNameRE)
		}
		checkDuration(&r, jp.Field("timeout"), rule.Timeout)
	}
	return r
}

package security

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/wrapperspb"
	security "istio.io/api/security/v1beta1"
)

// Keys of the dynamic metadata Istio's RBAC reads (namespace istio_authn); weft's
// jwt_authn filter answers them (internal/proxy/filter/jwtauthn).
const (
	istioAuthn       = "istio_authn"
	keyReqPrincipal  = "request.auth.principal"
	keyReqAudiences  = "request.auth.audiences"
	keyReqPresenter  = "request.auth.presenter"
	keyReqClaims     = "request.auth.claims"
	spiffePrefix     = "spiffe://"
	experimentalPfx  = "experimental."
	headersKey       = "request.headers"
	inlineHeadersKey = "request.experimental.inline.headers"
)

// errHTTPOnly marks a field a connection (network RBAC) has no value for.
var errHTTPOnly = errors.New("only HTTP requests have it")

// ruleTranslator turns one rule of an AuthorizationPolicy into an Envoy RBAC policy.
type ruleTranslator struct {
	ns  string // the policy's namespace: "sa" in serviceAccounts means ns/sa
	tcp bool   // for a network RBAC: HTTP-only fields cannot be evaluated
	// dropHTTP: on a connection, HTTP-only fields are left out of the rule (DENY and
	// audit: the rule matches more, so it denies more); otherwise such a field fails
	// the rule with errHTTPOnly (ALLOW: the rule is dropped, so it allows less).
	dropHTTP bool
	// dropped, when set, collects the fields dropHTTP left out.
	dropped *[]string
}

// kind is one Istio attribute: how a value of it becomes a principal or a permission.
type kind struct {
	httpOnly bool
	prin     func(v string) ([]*rbacv3.Principal, error) // principal side, or
	perm     func(v string) ([]*rbacv3.Permission, error)
}

// translate builds the policy of a rule: the OR of its `from` sources (each the AND of
// its fields) as principals, the OR of its `to` operations as permissions, every `when`
// condition ANDed into each (Istio's model: a condition on a principal attribute joins
// every principal, on a permission attribute every permission).
func (t ruleTranslator) translate(r *security.Rule) (*rbacv3.Policy, error) {
	if r == nil {
		return nil, errors.New("rule must not be null")
	}
	var basePrin []*rbacv3.Principal
	var basePerm []*rbacv3.Permission
	for i, c := range r.GetWhen() {
		path := fmt.Sprintf("when[%d]", i)
		if c == nil {
			return nil, fmt.Errorf("%s: must not be null", path)
		}
		k, err := t.condition(c.GetKey())
		if err != nil {
			return nil, fmt.Errorf("%s.key: %w", path, err)
		}
		prins, perms, err := t.field(path+".values", path+".notValues", k, c.GetValues(), c.GetNotValues())
		if err != nil {
			return nil, err
		}
		basePrin = append(basePrin, prins...)
		basePerm = append(basePerm, perms...)
	}

	var principals []*rbacv3.Principal
	if len(r.GetFrom()) == 0 {
		principals = append(principals, andIDs(basePrin))
	}
	for i, f := range r.GetFrom() {
		ids := append([]*rbacv3.Principal(nil), basePrin...)
		more, err := t.source(fmt.Sprintf("from[%d].source", i), f.GetSource())
		if err != nil {
			return nil, err
		}
		principals = append(principals, andIDs(append(ids, more...)))
	}
	var permissions []*rbacv3.Permission
	if len(r.GetTo()) == 0 {
		permissions = append(permissions, andRules(basePerm))
	}
	for i, to := range r.GetTo() {
		rules := append([]*rbacv3.Permission(nil), basePerm...)
		more, err := t.operation(fmt.Sprintf("to[%d].operation", i), to.GetOperation())
		if err != nil {
			return nil, err
		}
		permissions = append(permissions, andRules(append(rules, more...)))
	}
	return &rbacv3.Policy{Permissions: permissions, Principals: principals}, nil
}

func (t ruleTranslator) source(path string, s *security.Source) ([]*rbacv3.Principal, error) {
	fields := []struct {
		name        string
		k           kind
		values, not []string
	}{
		{"principals", t.principalKind(), s.GetPrincipals(), s.GetNotPrincipals()},
		{"requestPrincipals", metaKind(keyReqPrincipal, false), s.GetRequestPrincipals(), s.GetNotRequestPrincipals()},
		{"namespaces", namespaceKind(), s.GetNamespaces(), s.GetNotNamespaces()},
		{"serviceAccounts", t.serviceAccountKind(), s.GetServiceAccounts(), s.GetNotServiceAccounts()},
		{"trustDomains", trustDomainKind(), s.GetTrustDomains(), s.GetNotTrustDomains()},
		{"ipBlocks", ipKind(false), s.GetIpBlocks(), s.GetNotIpBlocks()},
		{"remoteIpBlocks", ipKind(true), s.GetRemoteIpBlocks(), s.GetNotRemoteIpBlocks()},
	}
	var out []*rbacv3.Principal
	for _, f := range fields {
		prins, _, err := t.field(path+"."+f.name, path+"."+notName(f.name), f.k, f.values, f.not)
		if err != nil {
			return nil, err
		}
		out = append(out, prins...)
	}
	return out, nil
}

func (t ruleTranslator) operation(path string, o *security.Operation) ([]*rbacv3.Permission, error) {
	fields := []struct {
		name        string
		k           kind
		values, not []string
	}{
		{"hosts", hostKind(), o.GetHosts(), o.GetNotHosts()},
		{"ports", portKind(), o.GetPorts(), o.GetNotPorts()},
		{"methods", methodKind(), o.GetMethods(), o.GetNotMethods()},
		{"paths", pathKind(), o.GetPaths(), o.GetNotPaths()},
	}
	var out []*rbacv3.Permission
	for _, f := range fields {
		_, perms, err := t.field(path+"."+f.name, path+"."+notName(f.name), f.k, f.values, f.not)
		if err != nil {
			return nil, err
		}
		out = append(out, perms...)
	}
	return out, nil
}

// field translates one attribute's values (OR) and notValues (NOT of their OR) into
// conjuncts of the rule: none when both are empty. valuesPath and notPath name the two
// lists in errors.
func (t ruleTranslator) field(valuesPath, notPath string, k kind, values, not []string) ([]*rbacv3.Principal, []*rbacv3.Permission, error) {
	if len(values) == 0 && len(not) == 0 {
		return nil, nil, nil
	}
	if t.tcp && k.httpOnly {
		path := valuesPath
		if len(values) == 0 {
			path = notPath
		}
		if t.dropHTTP {
			if t.dropped != nil {
				*t.dropped = append(*t.dropped, path)
			}
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("%s: %w", path, errHTTPOnly)
	}
	var prins []*rbacv3.Principal
	var perms []*rbacv3.Permission
	for _, l := range []struct {
		path   string
		vs     []string
		negate bool
	}{{valuesPath, values, false}, {notPath, not, true}} {
		if len(l.vs) == 0 {
			continue
		}
		var ids []*rbacv3.Principal
		var rules []*rbacv3.Permission
		for i, v := range l.vs {
			var err error
			var id []*rbacv3.Principal
			var rule []*rbacv3.Permission
			if k.prin != nil {
				id, err = k.prin(v)
			} else {
				rule, err = k.perm(v)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("%s[%d]: %w", l.path, i, err)
			}
			ids, rules = append(ids, id...), append(rules, rule...)
		}
		if k.prin != nil {
			id := orIDs(ids)
			if l.negate {
				id = &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: id}}
			}
			prins = append(prins, id)
			continue
		}
		rule := orRules(rules)
		if l.negate {
			rule = &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: rule}}
		}
		perms = append(perms, rule)
	}
	return prins, perms, nil
}

// notName is the negative list of a field: "paths" -> "notPaths".
func notName(name string) string { return "not" + strings.ToUpper(name[:1]) + name[1:] }

// condition maps a `when` key to its attribute (Istio's condition keys).
func (t ruleTranslator) condition(key string) (kind, error) {
	switch key {
	case "source.ip":
		return ipKind(false), nil
	case "remote.ip":
		return ipKind(true), nil
	case "source.namespace":
		return namespaceKind(), nil
	case "source.principal":
		return t.principalKind(), nil
	case "source.serviceAccount":
		return t.serviceAccountKind(), nil
	case "source.trustDomain":
		return trustDomainKind(), nil
	case keyReqPrincipal, keyReqAudiences, keyReqPresenter:
		return metaKind(key, false), nil
	case "destination.ip":
		return kind{perm: func(v string) ([]*rbacv3.Permission, error) {
			r, err := cidr(v)
			if err != nil {
				return nil, err
			}
			return []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: r}}}, nil
		}}, nil
	case "destination.port":
		return portKind(), nil
	case "connection.sni":
		return kind{perm: func(v string) ([]*rbacv3.Permission, error) {
			return []*rbacv3.Permission{{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: wildcard(v, "")}}}, nil
		}}, nil
	}
	switch {
	case strings.HasPrefix(key, headersKey+"["):
		name, err := oneKey(key, headersKey)
		if err != nil {
			return kind{}, err
		}
		return headerKind(name, true), nil
	case strings.HasPrefix(key, inlineHeadersKey+"["):
		name, err := oneKey(key, inlineHeadersKey)
		if err != nil {
			return kind{}, err
		}
		return headerKind(name, false), nil
	case strings.HasPrefix(key, keyReqClaims+"["):
		claims, err := bracketKeys(key[len(keyReqClaims):])
		if err != nil {
			return kind{}, fmt.Errorf("%q: %w", key, err)
		}
		return metaKind(keyReqClaims, true, claims...), nil
	case strings.HasPrefix(key, experimentalPfx+"envoy.filters.") && strings.Contains(key, "["):
		open := strings.IndexByte(key, '[')
		filter := key[len(experimentalPfx):open]
		keys, err := bracketKeys(key[open:])
		if err != nil || len(keys) != 1 {
			return kind{}, fmt.Errorf("%q: must be experimental.envoy.filters.<filter>[<key>]", key)
		}
		// Weft's filters put nothing but jwt_authn's payload in other namespaces; on a
		// connection there is no metadata at all, so this is HTTP-only here.
		return kind{httpOnly: true, perm: func(v string) ([]*rbacv3.Permission, error) {
			return []*rbacv3.Permission{{Rule: &rbacv3.Permission_Metadata{Metadata: metadata(filter, keys, stringValue(wildcard(v, "")))}}}, nil
		}}, nil
	}
	return kind{}, fmt.Errorf("unknown attribute %q", key)
}

// oneKey reads "prefix[name]".
func oneKey(key, prefix string) (string, error) {
	keys, err := bracketKeys(key[len(prefix):])
	if err != nil || len(keys) != 1 {
		return "", fmt.Errorf("%q: must be %s[<name>]", key, prefix)
	}
	return keys[0], nil
}

// bracketKeys reads "[a][b]" into [a b].
func bracketKeys(s string) ([]string, error) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, errors.New("want [key]")
		}
		end := strings.IndexByte(s, ']')
		if end <= 1 {
			return nil, errors.New("want a non-empty [key]")
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	if len(out) == 0 {
		return nil, errors.New("want [key]")
	}
	return out, nil
}

// --- attributes ---

func authenticated(sm *matcherv3.StringMatcher) []*rbacv3.Principal {
	return []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: sm}}}}
}

// principalKind: the peer certificate's SPIFFE ID; Istio writes it without the scheme
// ("cluster.local/ns/default/sa/productpage").
func (t ruleTranslator) principalKind() kind {
	return kind{prin: func(v string) ([]*rbacv3.Principal, error) {
		return authenticated(wildcard(v, spiffePrefix)), nil
	}}
}

// namespaceKind: the namespace segment of the peer's SPIFFE ID.
func namespaceKind() kind {
	return kind{prin: func(v string) ([]*rbacv3.Principal, error) {
		return authenticated(regexMatch(".*/ns/" + globRegex(v) + "/.*")), nil
	}}
}

// serviceAccountKind: "ns/sa", or "sa" in the policy's namespace, in any trust domain.
func (t ruleTranslator) serviceAccountKind() kind {
	return kind{prin: func(v string) ([]*rbacv3.Principal, error) {
		ns, sa, ok := strings.Cut(v, "/")
		if !ok {
			ns, sa = t.ns, v
		}
		if ns == "" || sa == "" || strings.ContainsAny(v, "*") || strings.Contains(sa, "/") {
			return nil, fmt.Errorf("%q: must be <serviceAccount> or <namespace>/<serviceAccount>", v)
		}
		return authenticated(regexMatch(regexp.QuoteMeta(spiffePrefix) + "[^/]+/ns/" + regexp.QuoteMeta(ns) + "/sa/" + regexp.QuoteMeta(sa))), nil
	}}
}

// trustDomainKind: the trust domain of the peer's SPIFFE ID.
func trustDomainKind() kind {
	return kind{prin: func(v string) ([]*rbacv3.Principal, error) {
		switch {
		case v == "*":
			return authenticated(regexMatch(regexp.QuoteMeta(spiffePrefix) + "[^/]+/.*")), nil
		case strings.HasPrefix(v, "*"):
			return authenticated(regexMatch(regexp.QuoteMeta(spiffePrefix) + "[^/]*" + regexp.QuoteMeta(v[1:]) + "/.*")), nil
		case strings.HasSuffix(v, "*"):
			return authenticated(prefixMatch(spiffePrefix + v[:len(v)-1])), nil
		}
		return authenticated(prefixMatch(spiffePrefix + v + "/")), nil
	}}
}

// ipKind: source.ip is the peer of the connection (direct_remote_ip); remote.ip the
// client as X-Forwarded-For names it (remote_ip).
func ipKind(remote bool) kind {
	return kind{prin: func(v string) ([]*rbacv3.Principal, error) {
		r, err := cidr(v)
		if err != nil {
			return nil, err
		}
		if remote {
			return []*rbacv3.Principal{{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: r}}}, nil
		}
		return []*rbacv3.Principal{{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: r}}}, nil
	}}
}

func cidrRange(addr string, bits int) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: addr, PrefixLen: wrapperspb.UInt32(uint32(bits))}
}

// metaKind: a request.auth.* attribute the JWT filter verified. Claims are lists in the
// metadata (list_match), the others strings.
func metaKind(key string, list bool, claim ...string) kind {
	path := append([]string{key}, claim...)
	return kind{httpOnly: true, prin: func(v string) ([]*rbacv3.Principal, error) {
		val := stringValue(wildcard(v, ""))
		if list {
			val = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
				MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: val}}}}
		}
		return []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Metadata{Metadata: metadata(istioAuthn, path, val)}}}, nil
	}}
}

func stringValue(sm *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm}}
}

func metadata(filter string, path []string, v *matcherv3.ValueMatcher) *matcherv3.MetadataMatcher {
	m := &matcherv3.MetadataMatcher{Filter: filter, Value: v}
	for _, k := range path {
		m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return m
}

// headerKind: a request header. Envoy (and weft) match a repeated header against its
// values joined by ","; split ("request.headers") matches any one of them, as Istio's
// regular expression does; inline ("request.experimental.inline.headers") the whole.
func headerKind(name string, split bool) kind {
	return kind{httpOnly: true, prin: func(v string) ([]*rbacv3.Principal, error) {
		if err := checkHeaderName(name); err != nil {
			return nil, err
		}
		return []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Header{Header: headerValue(name, v, split)}}}, nil
	}}
}

// checkHeaderName refuses what a proxy cannot match a request header by: it has no
// value for pseudo-headers other than these four, and would reject the whole listener.
func checkHeaderName(name string) error {
	if strings.HasPrefix(name, ":") {
		switch strings.ToLower(name) {
		case ":authority", ":path", ":method", ":scheme":
			return nil
		}
		return fmt.Errorf("header %q: unsupported pseudo-header", name)
	}
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("header %q: not a header name", name)
	}
	return nil
}

func headerValue(name, v string, split bool) *routev3.HeaderMatcher {
	if v == "*" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	if !split {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: wildcard(v, "")}}
	}
	one := globRegex(v)
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{
		Regex: "(?:.*,)?" + one + "(?:,.*)?",
	}}}
}

func headerPerm(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

// hostKind: the request's :authority, case-insensitive, with or without a port (a
// client may send "reviews:9080" for "reviews").
func hostKind() kind {
	return kind{httpOnly: true, perm: func(v string) ([]*rbacv3.Permission, error) {
		hm := func(sm *matcherv3.StringMatcher) *rbacv3.Permission {
			sm.IgnoreCase = true
			return headerPerm(&routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}})
		}
		withPort := func(re string) *rbacv3.Permission {
			return headerPerm(&routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{
				SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "(?i)" + re + ":[0-9]+"}}})
		}
		switch {
		case v == "*":
			return []*rbacv3.Permission{headerPerm(&routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})}, nil
		case strings.HasSuffix(v, "*"):
			return []*rbacv3.Permission{hm(prefixMatch(v[:len(v)-1]))}, nil // a port follows the prefix
		case hasPort(v):
			return []*rbacv3.Permission{hm(exact(v))}, nil
		case strings.HasPrefix(v, "*"):
			return []*rbacv3.Permission{hm(suffixMatch(v[1:])), withPort(".*" + regexp.QuoteMeta(v[1:]))}, nil
		}
		return []*rbacv3.Permission{hm(exact(v)), withPort(regexp.QuoteMeta(v))}, nil
	}}
}

// hasPort: "host:80", "[::1]:80".
func hasPort(h string) bool {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || i == len(h)-1 || (strings.Count(h, ":") > 1 && !strings.Contains(h[:i], "]")) {
		return false
	}
	_, err := strconv.ParseUint(h[i+1:], 10, 16)
	return err == nil
}

func portKind() kind {
	return kind{perm: func(v string) ([]*rbacv3.Permission, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n > 65535 {
			return nil, fmt.Errorf("%q is not a port", v)
		}
		return []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}}, nil
	}}
}

func methodKind() kind {
	return kind{httpOnly: true, perm: func(v string) ([]*rbacv3.Permission, error) {
		return []*rbacv3.Permission{headerPerm(headerValue(":method", v, false))}, nil
	}}
}

// pathKind: the normalized path without the query (url_path). "{*}" and "{**}" path
// templates become regular expressions: "{*}" one non-empty segment, "{**}" anything.
func pathKind() kind {
	return kind{httpOnly: true, perm: func(v string) ([]*rbacv3.Permission, error) {
		var sm *matcherv3.StringMatcher
		if strings.Contains(v, "{*}") || strings.Contains(v, "{**}") {
			re, err := pathTemplate(v)
			if err != nil {
				return nil, err
			}
			sm = regexMatch(re)
		} else {
			sm = wildcard(v, "")
		}
		return []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}}, nil
	}}
}

func pathTemplate(v string) (string, error) {
	var b strings.Builder
	sawAll := false
	for i, seg := range strings.Split(v, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		switch {
		case seg == "{*}":
			if sawAll {
				return "", fmt.Errorf("%q: {**} must be the last operator", v)
			}
			b.WriteString("[^/]+")
		case seg == "{**}":
			if sawAll {
				return "", fmt.Errorf("%q: {**} must be the last operator", v)
			}
			sawAll = true
			b.WriteString(".*")
		case strings.ContainsAny(seg, "{}*"):
			return "", fmt.Errorf("%q: a segment holds a path operator and other characters", v)
		default:
			b.WriteString(regexp.QuoteMeta(seg))
		}
	}
	return b.String(), nil
}

// --- combinators ---

func andIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	if len(ids) == 0 {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func orIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func andRules(rules []*rbacv3.Permission) *rbacv3.Permission {
	if len(rules) == 0 {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: rules}}}
}

func orRules(rules []*rbacv3.Permission) *rbacv3.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rules}}}
}

// matchAll is a policy every request or connection matches.
func matchAll() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
	}
}

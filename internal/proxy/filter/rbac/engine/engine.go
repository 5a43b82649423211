// Package engine evaluates Envoy RBAC policies (envoy.config.rbac.v3.RBAC), the form
// Istio's AuthorizationPolicy compiles to. The HTTP RBAC filter (package rbac) runs it per
// request and the network RBAC filter (package netrbac) once per connection.
//
// Policies are compiled once, when the config arrives; a request only walks the compiled
// tree, and on the common path (no repeated headers, clean path) it allocates nothing.
// Anything the engine cannot evaluate faithfully (CEL conditions, matcher extensions,
// filter state, route metadata, matcher trees, and on connections the HTTP-only matchers)
// is rejected by Compile with the field path, so such a config is NACKed and never
// evaluated as a silent "no match", which would open a DENY policy.
package engine

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Action is the RBAC action (envoy.config.rbac.v3.RBAC.action).
type Action uint8

const (
	Allow Action = iota // allowed iff some policy matches
	Deny                // denied iff some policy matches
	Log                 // always allowed; a match is only reported
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "ALLOW"
	case Deny:
		return "DENY"
	}
	return "LOG"
}

// Options tune compilation.
type Options struct {
	// Network compiles for the network filter: header and url_path matchers, which only
	// HTTP requests have, are rejected.
	Network bool
}

// Engine is one compiled RBAC. It is immutable and safe for concurrent use.
type Engine struct {
	action   Action
	policies []policy // in lexicographic order of name, as Envoy evaluates them
}

type policy struct {
	name        string
	permissions []node // OR
	principals  []node // OR
}

type nodeKind uint8

const (
	nAny nodeKind = iota
	nAnd
	nOr
	nNot
	nHeader
	nURLPath
	nDestIP
	nDestPort
	nDestPortRange
	nSNI
	nMetadata
	nAuthenticated
	nRemoteIP // remote_ip and the deprecated source_ip
	nDirectRemoteIP
)

// node is one compiled Permission or Principal.
type node struct {
	kind   nodeKind
	kids   []node // and, or; not has one
	header *HeaderMatcher
	str    *StringMatcher // url_path, requested_server_name, authenticated (nil: any TLS peer)
	prefix netip.Prefix
	lo, hi uint32 // destination_port (lo == hi - 1), destination_port_range [lo, hi)
	meta   *metadataMatcher
}

// Compile compiles an RBAC. It collects every unsupported or invalid field and returns them
// together, each with its path (policies["name"].permissions[0].header: ...).
func Compile(m *rbacv3.RBAC, opts Options) (*Engine, error) {
	if m == nil {
		return nil, errors.New("rules: is required")
	}
	e := &Engine{}
	switch m.GetAction() {
	case rbacv3.RBAC_ALLOW:
		e.action = Allow
	case rbacv3.RBAC_DENY:
		e.action = Deny
	case rbacv3.RBAC_LOG:
		e.action = Log
	default:
		return nil, fmt.Errorf("action: unsupported %v", m.GetAction())
	}
	names := make([]string, 0, len(m.GetPolicies()))
	for n := range m.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	c := &compiler{opts: opts}
	for _, n := range names {
		p := m.GetPolicies()[n]
		path := fmt.Sprintf("policies[%q]", n)
		if p == nil {
			c.errorf(path, "is required")
			continue
		}
		if p.GetCondition() != nil {
			c.errorf(path+".condition", "CEL conditions are not supported")
		}
		if p.GetCheckedCondition() != nil {
			c.errorf(path+".checked_condition", "CEL conditions are not supported")
		}
		if len(p.GetPermissions()) == 0 {
			c.errorf(path+".permissions", "at least one is required")
		}
		if len(p.GetPrincipals()) == 0 {
			c.errorf(path+".principals", "at least one is required")
		}
		pol := policy{name: n}
		for i, perm := range p.GetPermissions() {
			pol.permissions = append(pol.permissions, c.permission(perm, fmt.Sprintf("%s.permissions[%d]", path, i)))
		}
		for i, pr := range p.GetPrincipals() {
			pol.principals = append(pol.principals, c.principal(pr, fmt.Sprintf("%s.principals[%d]", path, i)))
		}
		e.policies = append(e.policies, pol)
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return e, nil
}

type compiler struct {
	opts Options
	errs []error
}

func (c *compiler) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (c *compiler) fail(path string, err error) {
	c.errs = append(c.errs, fmt.Errorf("%s: %w", path, err))
}

func (c *compiler) httpOnly(path, field string) bool {
	if c.opts.Network {
		c.errorf(path+"."+field, "only HTTP requests have it; a network RBAC cannot evaluate it")
		return true
	}
	return false
}

// never is what a rejected entry compiles to; Compile fails, so it is never evaluated.
var never = node{kind: nNot, kids: []node{{kind: nAny}}}

func (c *compiler) permission(p *rbacv3.Permission, path string) node {
	if p == nil {
		c.errorf(path, "is required")
		return never
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			c.errorf(path+".any", "must be true")
		}
		return node{kind: nAny}
	case *rbacv3.Permission_AndRules:
		return c.permissionSet(nAnd, r.AndRules.GetRules(), path+".and_rules.rules")
	case *rbacv3.Permission_OrRules:
		return c.permissionSet(nOr, r.OrRules.GetRules(), path+".or_rules.rules")
	case *rbacv3.Permission_NotRule:
		return node{kind: nNot, kids: []node{c.permission(r.NotRule, path+".not_rule")}}
	case *rbacv3.Permission_Header:
		return c.header(r.Header, path)
	case *rbacv3.Permission_UrlPath:
		return c.urlPath(r.UrlPath, path)
	case *rbacv3.Permission_DestinationIp:
		return c.cidr(nDestIP, r.DestinationIp, path+".destination_ip")
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort > 65535 {
			c.errorf(path+".destination_port", "%d is not a port", r.DestinationPort)
		}
		return node{kind: nDestPort, lo: r.DestinationPort, hi: r.DestinationPort + 1}
	case *rbacv3.Permission_DestinationPortRange:
		rg := r.DestinationPortRange
		if rg == nil || rg.GetStart() < 0 || rg.GetEnd() > 65536 || rg.GetStart() >= rg.GetEnd() {
			c.errorf(path+".destination_port_range", "must be a range [start, end) within 0..65536 with start < end")
			return never
		}
		return node{kind: nDestPortRange, lo: uint32(rg.GetStart()), hi: uint32(rg.GetEnd())}
	case *rbacv3.Permission_RequestedServerName:
		sm, err := CompileString(r.RequestedServerName)
		if err != nil {
			c.fail(path+".requested_server_name", err)
			return never
		}
		return node{kind: nSNI, str: &sm}
	case *rbacv3.Permission_Metadata:
		return c.metadata(r.Metadata, path+".metadata")
	case *rbacv3.Permission_SourcedMetadata:
		return c.sourcedMetadata(r.SourcedMetadata, path+".sourced_metadata")
	case *rbacv3.Permission_Matcher:
		c.errorf(path+".matcher", "matcher extensions are not supported")
	case *rbacv3.Permission_UriTemplate:
		c.errorf(path+".uri_template", "uri templates are not supported")
	case nil:
		c.errorf(path, "rule: one of the permission rules is required")
	default:
		c.errorf(path, "unsupported permission %T", r)
	}
	return never
}

func (c *compiler) permissionSet(kind nodeKind, rules []*rbacv3.Permission, path string) node {
	if len(rules) == 0 {
		c.errorf(path, "at least one is required")
		return never
	}
	n := node{kind: kind, kids: make([]node, 0, len(rules))}
	for i, r := range rules {
		n.kids = append(n.kids, c.permission(r, fmt.Sprintf("%s[%d]", path, i)))
	}
	return n
}

func (c *compiler) principal(p *rbacv3.Principal, path string) node {
	if p == nil {
		c.errorf(path, "is required")
		return never
	}
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			c.errorf(path+".any", "must be true")
		}
		return node{kind: nAny}
	case *rbacv3.Principal_AndIds:
		return c.principalSet(nAnd, id.AndIds.GetIds(), path+".and_ids.ids")
	case *rbacv3.Principal_OrIds:
		return c.principalSet(nOr, id.OrIds.GetIds(), path+".or_ids.ids")
	case *rbacv3.Principal_NotId:
		return node{kind: nNot, kids: []node{c.principal(id.NotId, path+".not_id")}}
	case *rbacv3.Principal_Authenticated_:
		n := node{kind: nAuthenticated}
		if pn := id.Authenticated.GetPrincipalName(); pn != nil {
			sm, err := CompileString(pn)
			if err != nil {
				c.fail(path+".authenticated.principal_name", err)
				return never
			}
			n.str = &sm
		}
		return n
	case *rbacv3.Principal_SourceIp:
		return c.cidr(nRemoteIP, id.SourceIp, path+".source_ip")
	case *rbacv3.Principal_RemoteIp:
		return c.cidr(nRemoteIP, id.RemoteIp, path+".remote_ip")
	case *rbacv3.Principal_DirectRemoteIp:
		return c.cidr(nDirectRemoteIP, id.DirectRemoteIp, path+".direct_remote_ip")
	case *rbacv3.Principal_Header:
		return c.header(id.Header, path)
	case *rbacv3.Principal_UrlPath:
		return c.urlPath(id.UrlPath, path)
	case *rbacv3.Principal_Metadata:
		return c.metadata(id.Metadata, path+".metadata")
	case *rbacv3.Principal_SourcedMetadata:
		return c.sourcedMetadata(id.SourcedMetadata, path+".sourced_metadata")
	case *rbacv3.Principal_FilterState:
		c.errorf(path+".filter_state", "filter state is not supported")
	case *rbacv3.Principal_Custom:
		c.errorf(path+".custom", "principal extensions are not supported")
	case nil:
		c.errorf(path, "identifier: one of the principal identifiers is required")
	default:
		c.errorf(path, "unsupported principal %T", id)
	}
	return never
}

func (c *compiler) principalSet(kind nodeKind, ids []*rbacv3.Principal, path string) node {
	if len(ids) == 0 {
		c.errorf(path, "at least one is required")
		return never
	}
	n := node{kind: kind, kids: make([]node, 0, len(ids))}
	for i, id := range ids {
		n.kids = append(n.kids, c.principal(id, fmt.Sprintf("%s[%d]", path, i)))
	}
	return n
}

func (c *compiler) header(h *routev3.HeaderMatcher, path string) node {
	if c.httpOnly(path, "header") {
		return never
	}
	hm, err := CompileHeader(h)
	if err != nil {
		c.fail(path+".header", err)
		return never
	}
	return node{kind: nHeader, header: &hm}
}

func (c *compiler) urlPath(pm *matcherv3.PathMatcher, path string) node {
	if c.httpOnly(path, "url_path") {
		return never
	}
	if pm == nil {
		c.errorf(path+".url_path", "is required")
		return never
	}
	m, err := CompileString(pm.GetPath())
	if err != nil {
		c.fail(path+".url_path.path", err)
		return never
	}
	return node{kind: nURLPath, str: &m}
}

func (c *compiler) cidr(kind nodeKind, r *corev3.CidrRange, path string) node {
	p, err := compileCIDR(r)
	if err != nil {
		c.fail(path, err)
		return never
	}
	return node{kind: kind, prefix: p}
}

func (c *compiler) metadata(m *matcherv3.MetadataMatcher, path string) node {
	mm, err := compileMetadata(m)
	if err != nil {
		c.fail(path, err)
		return never
	}
	return node{kind: nMetadata, meta: mm}
}

func (c *compiler) sourcedMetadata(s *rbacv3.SourcedMetadata, path string) node {
	if s == nil {
		c.errorf(path, "is required")
		return never
	}
	if s.GetMetadataSource() != rbacv3.MetadataSource_DYNAMIC {
		c.errorf(path+".metadata_source", "only DYNAMIC metadata is supported")
		return never
	}
	return c.metadata(s.GetMetadataMatcher(), path+".metadata_matcher")
}

// compileCIDR follows Envoy's CidrRange: prefix_len defaults to 0 when unset.
func compileCIDR(r *corev3.CidrRange) (netip.Prefix, error) {
	if r == nil {
		return netip.Prefix{}, errors.New("is required")
	}
	a, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address_prefix: %w", err)
	}
	a = a.Unmap()
	n := int(r.GetPrefixLen().GetValue())
	if n > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix_len: %d is longer than the address (%d bits)", n, a.BitLen())
	}
	return a.Prefix(n)
}

// Attrs are what a request or connection offers to the policies. The caller fills it on
// its stack; the engine reads it and caches the normalized path in it.
type Attrs struct {
	Source       netip.AddrPort // remote_ip, source_ip
	DirectSource netip.AddrPort // direct_remote_ip: the physical peer
	Destination  netip.AddrPort // destination_ip, destination_port (original destination when captured)
	TLS          bool           // the proxy terminated TLS from the peer
	Principal    string         // URI SAN of the verified peer certificate ("spiffe://...")
	SNI          string         // requested_server_name

	// HTTP only: nil for connections, and header and url_path then never match.
	Request  *http.Request
	Metadata Metadata // dynamic metadata; may be nil

	path     string
	pathDone bool
}

func (a *Attrs) urlPath() string {
	if !a.pathDone {
		a.path = NormalizePath(a.Request.URL.Path)
		a.pathDone = true
	}
	return a.path
}

// pathHeader is :path as RBAC sees it: the normalized path and the raw query.
func (a *Attrs) pathHeader() string {
	p := a.urlPath()
	if q := a.Request.URL.RawQuery; q != "" {
		return p + "?" + q
	}
	return p
}

// sourceAttr answers Istio's istio_authn source.* keys from the peer certificate: the
// SPIFFE ID without its scheme ("cluster.local/ns/default/sa/x") and its namespace.
func (a *Attrs) sourceAttr(key string) (string, bool) {
	if !a.TLS || !strings.HasPrefix(a.Principal, spiffePrefix) {
		return "", false
	}
	id := a.Principal[len(spiffePrefix):]
	if key != keySourceNamespace {
		return id, true
	}
	_, rest, ok := strings.Cut(id, "/ns/")
	if !ok {
		return "", false
	}
	ns, _, _ := strings.Cut(rest, "/")
	return ns, ns != ""
}

// Action reports the engine's action.
func (e *Engine) Action() Action { return e.action }

// Policies lists the policy names in evaluation order.
func (e *Engine) Policies() []string {
	out := make([]string, len(e.policies))
	for i := range e.policies {
		out[i] = e.policies[i].name
	}
	return out
}

// Match returns the first policy, in name order, that matches the attributes.
func (e *Engine) Match(a *Attrs) (policy string, ok bool) {
	for i := range e.policies {
		p := &e.policies[i]
		if anyMatch(p.permissions, a) && anyMatch(p.principals, a) {
			return p.name, true
		}
	}
	return "", false
}

// Decide applies the action to the attributes: whether they are allowed, and the policy
// that matched ("" when none did).
func (e *Engine) Decide(a *Attrs) (allowed bool, policy string) {
	name, matched := e.Match(a)
	switch e.action {
	case Allow:
		return matched, name
	case Deny:
		return !matched, name
	}
	return true, name
}

func anyMatch(ns []node, a *Attrs) bool {
	for i := range ns {
		if ns[i].match(a) {
			return true
		}
	}
	return false
}

func (n *node) match(a *Attrs) bool {
	switch n.kind {
	case nAny:
		return true
	case nAnd:
		for i := range n.kids {
			if !n.kids[i].match(a) {
				return false
			}
		}
		return true
	case nOr:
		return anyMatch(n.kids, a)
	case nNot:
		return !n.kids[0].match(a)
	case nHeader:
		if a.Request == nil {
			return false
		}
		path := ""
		if n.header.pseudo == pseudoPath {
			path = a.pathHeader()
		}
		return n.header.Match(a.Request, path, a.TLS || a.Request.TLS != nil)
	case nURLPath:
		return a.Request != nil && n.str.Match(a.urlPath())
	case nDestIP:
		return a.Destination.IsValid() && n.prefix.Contains(a.Destination.Addr().Unmap())
	case nDestPort, nDestPortRange:
		p := uint32(a.Destination.Port())
		return a.Destination.IsValid() && p >= n.lo && p < n.hi
	case nSNI:
		return n.str.Match(a.SNI)
	case nMetadata:
		return n.meta.match(a)
	case nAuthenticated:
		// Envoy: principal_name unset matches any TLS peer; set, it matches the URI SAN.
		if !a.TLS {
			return false
		}
		return n.str == nil || n.str.Match(a.Principal)
	case nRemoteIP:
		return a.Source.IsValid() && n.prefix.Contains(a.Source.Addr().Unmap())
	case nDirectRemoteIP:
		return a.DirectSource.IsValid() && n.prefix.Contains(a.DirectSource.Addr().Unmap())
	}
	return false
}

// Package router is the proxy's terminal HTTP filter and its route tables.
//
// A RouteConfiguration (inline in the HTTP connection manager, or from RDS through Store)
// is compiled once into an immutable Table: virtual hosts indexed by domain, routes with
// their matchers, header mutations and per-filter configs parsed ahead of time. The HTTP
// connection manager matches each request against the table it started with (Table.Match)
// and puts the route on the filter.Exchange; the filters run; the router (NewRouter) then
// answers locally (redirect, direct response, errors) or forwards upstream through the
// cluster manager, with weighted clusters, rewrites, timeouts, retries, mirrors and
// WebSocket upgrades, as Envoy's router filter does.
package router

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Table is a compiled RouteConfiguration. It is immutable and safe for concurrent use.
type Table struct {
	name       string
	vhosts     []*VirtualHost
	exact      map[string]*VirtualHost
	suffix     map[string]*VirtualHost // "*.foo.com" is stored as ".foo.com"
	suffixLens []int                   // distinct key lengths, longest first
	prefix     map[string]*VirtualHost // "foo.*" is stored as "foo."
	prefixLens []int
	any        *VirtualHost // "*"

	ignorePort      bool   // ignore_port_in_host_matching
	vhostHeader     string // vhost_header (canonical key); "" means :authority
	stripPathParams bool   // ignore_path_parameters_in_path_matching
	internalOnly    []string
	// digest is the SHA-256 of the configuration's deterministic encoding, for the
	// store to tell an unchanged configuration; the message is not kept (a sidecar told
	// about a whole mesh has one virtual host per service).
	digest [sha256.Size]byte
}

// Name is the route configuration's name.
func (t *Table) Name() string { return t.name }

// VirtualHosts lists the virtual hosts in config order.
func (t *Table) VirtualHosts() []*VirtualHost { return t.vhosts }

// InternalOnlyHeaders are the route configuration's internal_only_headers (canonical
// keys): the connection manager strips them from requests that come from outside.
func (t *Table) InternalOnlyHeaders() []string { return t.internalOnly }

// VirtualHost is a compiled virtual host.
type VirtualHost struct {
	name    string
	domains []string
	routes  []*Route
	table   *Table
	// require_tls: requests that did not arrive over TLS get tlsRedirect (a 301 to
	// https). EXTERNAL_ONLY spares requests marked x-envoy-internal.
	requireTLS  routev3.VirtualHost_TlsRequirementType
	tlsRedirect *Route
}

// Name is the virtual host's name.
func (v *VirtualHost) Name() string { return v.name }

// Domains are the virtual host's domains, lowercased.
func (v *VirtualHost) Domains() []string { return v.domains }

// Routes lists the routes in config order.
func (v *VirtualHost) Routes() []*Route { return v.routes }

// Table is the table the virtual host belongs to.
func (v *VirtualHost) Table() *Table { return v.table }

// Compile compiles a RouteConfiguration. Every violation is reported, each naming the
// route configuration, virtual host, route and field.
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	if rc == nil {
		return nil, errors.New("router: route configuration is nil")
	}
	t := &Table{
		name:            rc.GetName(),
		exact:           map[string]*VirtualHost{},
		suffix:          map[string]*VirtualHost{},
		prefix:          map[string]*VirtualHost{},
		ignorePort:      rc.GetIgnorePortInHostMatching(),
		stripPathParams: rc.GetIgnorePathParametersInPathMatching(),
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("route config %q: "+format, append([]any{rc.GetName()}, args...)...))
	}
	if h := rc.GetVhostHeader(); h != "" {
		if ps, ok := pseudoOf(h); ok && ps == notPseudo {
			t.vhostHeader = http.CanonicalHeaderKey(h)
		} else if !ok || ps != pseudoAuthority {
			fail("vhost_header: unsupported header %q", h)
		}
	}
	for _, h := range rc.GetInternalOnlyHeaders() {
		t.internalOnly = append(t.internalOnly, http.CanonicalHeaderKey(h))
	}
	if rc.GetVhds() != nil {
		fail("vhds: unsupported")
	}
	if len(rc.GetClusterSpecifierPlugins()) > 0 {
		fail("cluster_specifier_plugins: unsupported")
	}
	if len(rc.GetRequestMirrorPolicies()) > 0 {
		fail("request_mirror_policies: unsupported at route configuration level")
	}

	// Route configuration level pieces shared by every route.
	rcLevelReq, err := compileHeaderLevel(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(), "request_headers_to_add", "request_headers_to_remove")
	if err != nil {
		fail("%w", err)
	}
	rcLevelResp, err := compileHeaderLevel(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove(), "response_headers_to_add", "response_headers_to_remove")
	if err != nil {
		fail("%w", err)
	}
	rcFilters, err := parseFilterConfigs(rc.GetTypedPerFilterConfig(), nil)
	if err != nil {
		fail("%w", err)
	}
	levels := compileLevels{
		mostSpecificWins: rc.GetMostSpecificHeaderMutationsWins(),
		rcReq:            rcLevelReq,
		rcResp:           rcLevelResp,
		rcFilters:        rcFilters,
	}

	seen := map[string]string{} // domain -> vhost name
	names := map[string]bool{}
	for vi, vpb := range rc.GetVirtualHosts() {
		vpath := fmt.Sprintf("virtual_hosts[%d] (%q)", vi, vpb.GetName())
		if vpb.GetName() == "" {
			fail("%s.name: is required", vpath)
		} else if names[vpb.GetName()] {
			fail("%s.name: duplicate virtual host name", vpath)
		}
		names[vpb.GetName()] = true
		vh := &VirtualHost{name: vpb.GetName(), table: t, requireTLS: vpb.GetRequireTls()}
		if vh.requireTLS != routev3.VirtualHost_NONE {
			vh.tlsRedirect = &Route{name: "require_tls", vh: vh, action: actRedirect, redir: &redirectAction{scheme: "https", code: http.StatusMovedPermanently}}
		}
		if len(vpb.GetDomains()) == 0 {
			fail("%s.domains: at least one domain is required", vpath)
		}
		for di, d := range vpb.GetDomains() {
			d = strings.ToLower(d)
			if prev, dup := seen[d]; dup {
				fail("%s.domains[%d]: %q is already used by virtual host %q", vpath, di, d, prev)
				continue
			}
			seen[d] = vh.name
			if err := t.addDomain(d, vh); err != nil {
				fail("%s.domains[%d]: %w", vpath, di, err)
				continue
			}
			vh.domains = append(vh.domains, d)
		}
		vc, verrs := compileVirtualHostLevel(vpb, &levels)
		for _, e := range verrs {
			fail("%s: %w", vpath, e)
		}
		for ri, rpb := range vpb.GetRoutes() {
			r, err := compileRoute(rpb, vh, vc, ri)
			if err != nil {
				fail("%s: routes[%d]%s: %w", vpath, ri, routeLabel(rpb), err)
				continue
			}
			vh.routes = append(vh.routes, r)
		}
		t.vhosts = append(t.vhosts, vh)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("router: %w", errors.Join(errs...))
	}
	t.suffixLens = sortedLens(t.suffix)
	t.prefixLens = sortedLens(t.prefix)
	return t, nil
}

func routeLabel(r *routev3.Route) string {
	if r.GetName() == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", r.GetName())
}

// addDomain indexes one domain, with Envoy's rules: "*" alone, a wildcard only as the
// first or last character.
func (t *Table) addDomain(d string, vh *VirtualHost) error {
	switch {
	case d == "":
		return errors.New("domain must not be empty")
	case d == "*":
		t.any = vh
	case strings.HasPrefix(d, "*"):
		if strings.Contains(d[1:], "*") {
			return fmt.Errorf("domain %q: a wildcard may only be the first or last character", d)
		}
		t.suffix[d[1:]] = vh
	case strings.HasSuffix(d, "*"):
		if strings.Contains(d[:len(d)-1], "*") {
			return fmt.Errorf("domain %q: a wildcard may only be the first or last character", d)
		}
		t.prefix[d[:len(d)-1]] = vh
	default:
		if strings.Contains(d, "*") {
			return fmt.Errorf("domain %q: a wildcard may only be the first or last character", d)
		}
		t.exact[d] = vh
	}
	return nil
}

func sortedLens(m map[string]*VirtualHost) []int {
	var lens []int
	for k := range m {
		if !slices.Contains(lens, len(k)) {
			lens = append(lens, len(k))
		}
	}
	slices.SortFunc(lens, func(a, b int) int { return b - a })
	return lens
}

// Match finds the virtual host and route for a request. The route is nil when none
// matches (the router answers 404 NR); the virtual host is nil when no domain matches.
// Match reads r.Host (the :authority), r.Method, r.URL (escaped path and raw query),
// r.Header and r.TLS; it does not modify r and does not allocate in the common case.
func (t *Table) Match(r *http.Request) (*Route, *VirtualHost) {
	vh := t.findVirtualHost(r)
	if vh == nil {
		return nil, nil
	}
	if vh.tlsRedirect != nil && !secure(r, vh.requireTLS) {
		return vh.tlsRedirect, vh
	}
	path := r.URL.EscapedPath()
	if t.stripPathParams {
		path = stripPathParams(path)
	}
	for _, rt := range vh.routes {
		if rt.match.matches(r, path) {
			return rt, vh
		}
	}
	return nil, vh
}

// secure reports whether a request satisfies require_tls. Like Envoy it trusts
// x-forwarded-proto, which the connection manager sets from the downstream connection.
func secure(r *http.Request, req routev3.VirtualHost_TlsRequirementType) bool {
	if req == routev3.VirtualHost_EXTERNAL_ONLY && r.Header.Get("X-Envoy-Internal") == "true" {
		return true
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		return strings.EqualFold(p, "https")
	}
	return r.TLS != nil
}

func (t *Table) findVirtualHost(r *http.Request) *VirtualHost {
	host := r.Host
	if t.vhostHeader != "" {
		host = r.Header.Get(t.vhostHeader)
	}
	host = strings.ToLower(host) // no allocation when already lower case
	if t.ignorePort {
		host = stripPort(host)
	}
	if vh := t.lookupHost(host); vh != nil {
		return vh
	}
	// Domains without a port match an authority with one (Istio lists both "reviews"
	// and "reviews:9080"; a plain "reviews" entry should still catch "reviews:9080").
	if h := stripPort(host); len(h) != len(host) {
		if vh := t.lookupHost(h); vh != nil {
			return vh
		}
	}
	return t.any
}

// lookupHost applies Envoy's order: exact, then suffix wildcards (longest first), then
// prefix wildcards (longest first). The wildcard must match at least one character.
func (t *Table) lookupHost(host string) *VirtualHost {
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	for _, l := range t.suffixLens {
		if len(host) > l {
			if vh, ok := t.suffix[host[len(host)-l:]]; ok {
				return vh
			}
		}
	}
	for _, l := range t.prefixLens {
		if len(host) > l {
			if vh, ok := t.prefix[host[:l]]; ok {
				return vh
			}
		}
	}
	return nil
}

// stripPort removes a trailing ":port" from a host (keeping IPv6 brackets).
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return host
	}
	if strings.IndexByte(host, ']') > i { // "[::1]" without port
		return host
	}
	if strings.Count(host, ":") > 1 && !strings.HasPrefix(host, "[") { // bare IPv6
		return host
	}
	for _, c := range host[i+1:] {
		if c < '0' || c > '9' {
			return host
		}
	}
	return host[:i]
}

// stripPathParams removes ";params" from each path segment
// (ignore_path_parameters_in_path_matching).
func stripPathParams(p string) string {
	if !strings.Contains(p, ";") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return strings.Join(segs, "/")
}

package simtest

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Sim sends described requests through a proxy's generated configuration.
type Sim struct {
	Listeners []*listenerv3.Listener
	Routes    map[string]*routev3.RouteConfiguration
}

// New builds a simulator over listeners and route configurations (by name).
func New(ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration) *Sim {
	s := &Sim{Listeners: ls, Routes: map[string]*routev3.RouteConfiguration{}}
	for _, rc := range rcs {
		s.Routes[rc.GetName()] = rc
	}
	return s
}

// Request describes one connection and, for HTTP, its request.
type Request struct {
	// Address and Port are where the client connects (the original destination when
	// traffic is captured).
	Address string
	Port    uint32
	// Inbound: the connection comes from outside to the workload (captured to the
	// inbound capture listener in Redirect mode).
	Inbound bool
	// Listener picks a listener by name (a proxyless client's API listener).
	Listener string
	// TLS connections carry SNI and ALPN (read only when the listener has a
	// tls_inspector, as in Envoy).
	TLS  bool
	SNI  string
	ALPN []string
	// TCP: the client does not speak HTTP.
	TCP bool
	// The HTTP request.
	Host, Method, Path, Scheme string
	Headers                    map[string]string
}

// Result is where the request went.
type Result struct {
	Listener    string
	FilterChain string
	// TerminatesTLS: the chain has a transport socket.
	TerminatesTLS bool
	// HTTP
	HTTPFilters    []string
	RouteConfig    string
	VirtualHost    string
	RouteName      string
	Route          *routev3.Route
	Redirect       *routev3.RedirectAction
	DirectResponse *routev3.DirectResponseAction
	Fault          *faultv3.HTTPFault
	Cors           *corsv3.CorsPolicy
	// Cluster is the one cluster of a forwarding route or TCP proxy; Weighted the
	// weights of weighted clusters.
	Cluster  string
	Weighted map[string]uint32
}

// Run sends a request.
func (s *Sim) Run(r Request) (Result, error) {
	var res Result
	l, err := s.listener(r)
	if err != nil {
		return res, err
	}
	res.Listener = l.GetName()
	if api := l.GetApiListener(); api != nil {
		h := &hcmv3.HttpConnectionManager{}
		if err := api.GetApiListener().UnmarshalTo(h); err != nil {
			return res, fmt.Errorf("listener %s: api_listener: %w", l.GetName(), err)
		}
		return s.http(res, h, r)
	}
	fc, err := chooseChain(l, r)
	if err != nil {
		return res, err
	}
	res.FilterChain = fc.GetName()
	res.TerminatesTLS = fc.GetTransportSocket() != nil
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return res, fmt.Errorf("listener %s chain %s: no filters", l.GetName(), fc.GetName())
	}
	last := filters[len(filters)-1]
	switch tc := last.GetTypedConfig(); {
	case tc.MessageIs(&hcmv3.HttpConnectionManager{}):
		if r.TCP {
			return res, fmt.Errorf("listener %s chain %s: a TCP client reached an HTTP connection manager", l.GetName(), fc.GetName())
		}
		h := &hcmv3.HttpConnectionManager{}
		if err := tc.UnmarshalTo(h); err != nil {
			return res, err
		}
		return s.http(res, h, r)
	case tc.MessageIs(&tcpproxyv3.TcpProxy{}):
		tp := &tcpproxyv3.TcpProxy{}
		if err := tc.UnmarshalTo(tp); err != nil {
			return res, err
		}
		if c := tp.GetCluster(); c != "" {
			res.Cluster = c
		} else {
			res.Weighted = map[string]uint32{}
			for _, w := range tp.GetWeightedClusters().GetClusters() {
				res.Weighted[w.GetName()] = w.GetWeight()
			}
		}
		return res, nil
	default:
		return res, fmt.Errorf("listener %s chain %s: terminal filter %s not simulated", l.GetName(), fc.GetName(), last.GetName())
	}
}

// MustRun is Run for tests that expect success.
func (s *Sim) MustRun(r Request) Result {
	res, err := s.Run(r)
	if err != nil {
		panic(err)
	}
	return res
}

func sockAddr(l *listenerv3.Listener) (string, uint32) {
	sa := l.GetAddress().GetSocketAddress()
	return sa.GetAddress(), sa.GetPortValue()
}

func bound(l *listenerv3.Listener) bool {
	return l.GetBindToPort() == nil || l.GetBindToPort().GetValue()
}

// listener finds the listener a connection lands on: a bound listener on its address
// (exact, then 0.0.0.0); else, under capture, the capture listener, which hands the
// connection to the listener of the original destination when it has use_original_dst
// (exact address, then 0.0.0.0), as Envoy does.
func (s *Sim) listener(r Request) (*listenerv3.Listener, error) {
	if r.Listener != "" {
		for _, l := range s.Listeners {
			if l.GetName() == r.Listener {
				return l, nil
			}
		}
		return nil, fmt.Errorf("no listener named %q", r.Listener)
	}
	find := func(addr string, port uint32, mustBind bool) *listenerv3.Listener {
		for _, want := range []string{addr, "0.0.0.0"} {
			for _, l := range s.Listeners {
				a, p := sockAddr(l)
				if a == want && p == port && (!mustBind || bound(l)) {
					return l
				}
			}
		}
		return nil
	}
	if l := find(r.Address, r.Port, true); l != nil {
		return l, nil
	}
	capturePort := uint32(15001)
	if r.Inbound {
		capturePort = 15006
	}
	capture := find("0.0.0.0", capturePort, true)
	if capture == nil {
		return nil, fmt.Errorf("no listener for %s:%d and no capture listener", r.Address, r.Port)
	}
	if capture.GetUseOriginalDst().GetValue() {
		if l := find(r.Address, r.Port, false); l != nil && l != capture {
			return l, nil
		}
	}
	return capture, nil
}

func hasListenerFilter(l *listenerv3.Listener, name string) bool {
	for _, f := range l.GetListenerFilters() {
		if f.GetName() == name {
			return true
		}
	}
	return false
}

// chooseChain applies Envoy's filter chain match order: destination port, destination
// IP (longest prefix), server name (exact, then longest wildcard), transport protocol,
// application protocols; at each step the chains that name the connection's value
// win over those that leave the field empty.
func chooseChain(l *listenerv3.Listener, r Request) (*listenerv3.FilterChain, error) {
	transport := "raw_buffer"
	var sni string
	var alpn []string
	if r.TLS && hasListenerFilter(l, "envoy.filters.listener.tls_inspector") {
		transport, sni, alpn = "tls", r.SNI, r.ALPN
	}
	if !r.TLS && !r.TCP && hasListenerFilter(l, "envoy.filters.listener.http_inspector") {
		alpn = []string{"http/1.1"}
	}
	dst, _ := netip.ParseAddr(r.Address)
	cands := append([]*listenerv3.FilterChain(nil), l.GetFilterChains()...)
	for _, c := range cands {
		m := c.GetFilterChainMatch()
		if len(m.GetSourcePrefixRanges()) > 0 || len(m.GetDirectSourcePrefixRanges()) > 0 || len(m.GetSourcePorts()) > 0 || m.GetSourceType() != listenerv3.FilterChainMatch_ANY || m.GetAddressSuffix() != "" {
			return nil, fmt.Errorf("listener %s chain %s: match fields not simulated", l.GetName(), c.GetName())
		}
	}
	// stage keeps the chains scoring best (>0), else those scoring 0 (field empty);
	// -1 means the field is set and does not match.
	stage := func(score func(*listenerv3.FilterChainMatch) int) {
		best := 0
		for _, c := range cands {
			best = max(best, score(c.GetFilterChainMatch()))
		}
		kept := cands[:0]
		for _, c := range cands {
			if score(c.GetFilterChainMatch()) == best {
				kept = append(kept, c)
			}
		}
		cands = kept
	}
	stage(func(m *listenerv3.FilterChainMatch) int {
		if m.GetDestinationPort() == nil {
			return 0
		}
		if m.GetDestinationPort().GetValue() == r.Port {
			return 1
		}
		return -1
	})
	stage(func(m *listenerv3.FilterChainMatch) int {
		if len(m.GetPrefixRanges()) == 0 {
			return 0
		}
		best := -1
		for _, cr := range m.GetPrefixRanges() {
			a, err := netip.ParseAddr(cr.GetAddressPrefix())
			if err != nil {
				continue
			}
			pfx := netip.PrefixFrom(a, int(cr.GetPrefixLen().GetValue()))
			if dst.IsValid() && pfx.Contains(dst) {
				best = max(best, 1+pfx.Bits())
			}
		}
		return best
	})
	stage(func(m *listenerv3.FilterChainMatch) int {
		if len(m.GetServerNames()) == 0 {
			return 0
		}
		best := -1
		for _, n := range m.GetServerNames() {
			switch {
			case n == sni:
				best = max(best, 1<<20)
			case strings.HasPrefix(n, "*") && len(sni) > len(n)-1 && strings.HasSuffix(sni, n[1:]):
				best = max(best, len(n))
			}
		}
		return best
	})
	stage(func(m *listenerv3.FilterChainMatch) int {
		switch m.GetTransportProtocol() {
		case "":
			return 0
		case transport:
			return 1
		}
		return -1
	})
	stage(func(m *listenerv3.FilterChainMatch) int {
		if len(m.GetApplicationProtocols()) == 0 {
			return 0
		}
		for _, p := range m.GetApplicationProtocols() {
			for _, a := range alpn {
				if p == a {
					return 1
				}
			}
		}
		return -1
	})
	switch {
	case len(cands) == 1:
		return cands[0], nil
	case len(cands) > 1:
		var ns []string
		for _, c := range cands {
			ns = append(ns, c.GetName())
		}
		return nil, fmt.Errorf("listener %s: ambiguous filter chains %v (Envoy rejects equal matches)", l.GetName(), ns)
	case l.GetDefaultFilterChain() != nil:
		return l.GetDefaultFilterChain(), nil
	}
	return nil, fmt.Errorf("listener %s: no filter chain for %s:%d tls=%v sni=%q", l.GetName(), r.Address, r.Port, r.TLS, sni)
}

func (s *Sim) http(res Result, h *hcmv3.HttpConnectionManager, r Request) (Result, error) {
	chain := map[string]bool{}
	for i, f := range h.GetHttpFilters() {
		res.HTTPFilters = append(res.HTTPFilters, f.GetName())
		chain[f.GetName()] = true
		if f.GetName() == "envoy.filters.http.router" && i != len(h.GetHttpFilters())-1 {
			return res, fmt.Errorf("router filter is not last: %v", res.HTTPFilters)
		}
	}
	if len(res.HTTPFilters) == 0 || res.HTTPFilters[len(res.HTTPFilters)-1] != "envoy.filters.http.router" {
		return res, fmt.Errorf("no router filter last: %v", res.HTTPFilters)
	}
	var rc *routev3.RouteConfiguration
	switch {
	case h.GetRds() != nil:
		res.RouteConfig = h.GetRds().GetRouteConfigName()
		rc = s.Routes[res.RouteConfig]
		if rc == nil {
			return res, fmt.Errorf("route configuration %q not generated", res.RouteConfig)
		}
	case h.GetRouteConfig() != nil:
		rc = h.GetRouteConfig()
		res.RouteConfig = rc.GetName()
	default:
		return res, fmt.Errorf("connection manager without routes")
	}
	return routeResult(res, rc, r, chain)
}

// RunRoute sends an HTTP request through one route configuration (no listener).
func RunRoute(rc *routev3.RouteConfiguration, r Request) (Result, error) {
	return routeResult(Result{RouteConfig: rc.GetName()}, rc, r, nil)
}

// routeResult matches a request in a route configuration; chain (nil: not checked)
// holds the HTTP filters a per-filter config may name.
func routeResult(res Result, rc *routev3.RouteConfiguration, r Request, chain map[string]bool) (Result, error) {
	vh := SelectVirtualHost(rc, r.Host)
	if vh == nil {
		return res, fmt.Errorf("route configuration %s: no virtual host for %q", rc.GetName(), r.Host)
	}
	res.VirtualHost = vh.GetName()
	rt := MatchRoute(vh, r)
	if rt == nil {
		return res, fmt.Errorf("route configuration %s virtual host %s: no route for %s %s", rc.GetName(), vh.GetName(), r.Method, r.Path)
	}
	res.Route, res.RouteName = rt, rt.GetName()
	for name, cfg := range rt.GetTypedPerFilterConfig() {
		if chain != nil && !chain[name] {
			return res, fmt.Errorf("route %q: per-filter config for %s, which is not in the filter chain %v", rt.GetName(), name, res.HTTPFilters)
		}
		switch name {
		case "envoy.filters.http.fault":
			res.Fault = &faultv3.HTTPFault{}
			if err := cfg.UnmarshalTo(res.Fault); err != nil {
				return res, err
			}
		case "envoy.filters.http.cors":
			res.Cors = &corsv3.CorsPolicy{}
			if err := cfg.UnmarshalTo(res.Cors); err != nil {
				return res, err
			}
		}
	}
	switch a := rt.GetAction().(type) {
	case *routev3.Route_Route:
		if c := a.Route.GetCluster(); c != "" {
			res.Cluster = c
		} else {
			res.Weighted = map[string]uint32{}
			for _, w := range a.Route.GetWeightedClusters().GetClusters() {
				res.Weighted[w.GetName()] = w.GetWeight().GetValue()
			}
		}
	case *routev3.Route_Redirect:
		res.Redirect = a.Redirect
	case *routev3.Route_DirectResponse:
		res.DirectResponse = a.DirectResponse
	default:
		return res, fmt.Errorf("route %q: action %T not simulated", rt.GetName(), a)
	}
	return res, nil
}

// SelectVirtualHost picks the virtual host for a Host as Envoy does: an exact domain,
// then the longest suffix wildcard ("*.foo.com"), then the longest prefix wildcard
// ("foo.*"), then "*". Domains compare case-insensitively; the port is part of Host.
func SelectVirtualHost(rc *routev3.RouteConfiguration, host string) *routev3.VirtualHost {
	host = strings.ToLower(host)
	var exact, any *routev3.VirtualHost
	var suffix, prefix *routev3.VirtualHost
	suffixLen, prefixLen := 0, 0
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if any == nil {
					any = vh
				}
			case d == host:
				if exact == nil {
					exact = vh
				}
			case strings.HasPrefix(d, "*"):
				if s := d[1:]; len(host) > len(s) && strings.HasSuffix(host, s) && len(s) > suffixLen {
					suffix, suffixLen = vh, len(s)
				}
			case strings.HasSuffix(d, "*"):
				if p := d[:len(d)-1]; len(host) > len(p) && strings.HasPrefix(host, p) && len(p) > prefixLen {
					prefix, prefixLen = vh, len(p)
				}
			}
		}
	}
	for _, vh := range []*routev3.VirtualHost{exact, suffix, prefix, any} {
		if vh != nil {
			return vh
		}
	}
	return nil
}

// MatchRoute is the first route of the virtual host whose match accepts the request.
func MatchRoute(vh *routev3.VirtualHost, r Request) *routev3.Route {
	for _, rt := range vh.GetRoutes() {
		if matches(rt.GetMatch(), r) {
			return rt
		}
	}
	return nil
}

func matches(m *routev3.RouteMatch, r Request) bool {
	path, query, _ := strings.Cut(r.Path, "?")
	if path == "" {
		path = "/"
	}
	ci := m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	cmpPath, fold := path, func(s string) string { return s }
	if ci {
		cmpPath, fold = strings.ToLower(path), strings.ToLower
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		if !strings.HasPrefix(cmpPath, fold(ps.Prefix)) {
			return false
		}
	case *routev3.RouteMatch_Path:
		if cmpPath != fold(ps.Path) {
			return false
		}
	case *routev3.RouteMatch_SafeRegex:
		if !fullMatch(ps.SafeRegex.GetRegex(), path) {
			return false
		}
	case *routev3.RouteMatch_PathSeparatedPrefix:
		p := fold(ps.PathSeparatedPrefix)
		if cmpPath != p && !strings.HasPrefix(cmpPath, p+"/") {
			return false
		}
	default:
		return false
	}
	hdrs := map[string]string{}
	for k, v := range r.Headers {
		hdrs[lower(k)] = v
	}
	method, scheme := r.Method, r.Scheme
	if method == "" {
		method = "GET"
	}
	if scheme == "" {
		scheme = "http"
	}
	hdrs[":authority"], hdrs[":method"], hdrs[":path"], hdrs[":scheme"] = r.Host, method, r.Path, scheme
	for _, hm := range m.GetHeaders() {
		v, ok := hdrs[lower(hm.GetName())]
		var hit bool
		switch spec := hm.GetHeaderMatchSpecifier().(type) {
		case *routev3.HeaderMatcher_PresentMatch:
			hit = ok == spec.PresentMatch
		case *routev3.HeaderMatcher_StringMatch:
			hit = ok && stringMatch(spec.StringMatch, v)
		case *routev3.HeaderMatcher_ExactMatch:
			hit = ok && v == spec.ExactMatch
		case *routev3.HeaderMatcher_PrefixMatch:
			hit = ok && strings.HasPrefix(v, spec.PrefixMatch)
		case *routev3.HeaderMatcher_SafeRegexMatch:
			hit = ok && fullMatch(spec.SafeRegexMatch.GetRegex(), v)
		case nil:
			hit = ok
		default:
			return false
		}
		if hit == hm.GetInvertMatch() {
			return false
		}
	}
	params := map[string]string{}
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := params[k]; !dup {
			params[k] = v
		}
	}
	for _, qm := range m.GetQueryParameters() {
		v, ok := params[qm.GetName()]
		switch spec := qm.GetQueryParameterMatchSpecifier().(type) {
		case *routev3.QueryParameterMatcher_PresentMatch:
			if ok != spec.PresentMatch {
				return false
			}
		case *routev3.QueryParameterMatcher_StringMatch:
			if !ok || !stringMatch(spec.StringMatch, v) {
				return false
			}
		default:
			if !ok {
				return false
			}
		}
	}
	if m.GetRuntimeFraction() != nil || m.GetGrpc() != nil || len(m.GetDynamicMetadata()) > 0 || m.GetTlsContext() != nil {
		return false // not simulated: never silently claim a match
	}
	return true
}

func stringMatch(sm *matcherv3.StringMatcher, v string) bool {
	if sm.GetIgnoreCase() {
		v = strings.ToLower(v)
	}
	fold := func(s string) string {
		if sm.GetIgnoreCase() {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == fold(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, fold(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, fold(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(v, fold(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		return fullMatch(p.SafeRegex.GetRegex(), v)
	}
	return false
}

var regexCache sync.Map // string -> *regexp.Regexp

// fullMatch is Envoy's safe_regex semantics: the whole value must match (RE2).
func fullMatch(re, v string) bool {
	if rx, ok := regexCache.Load(re); ok {
		return rx.(*regexp.Regexp).MatchString(v)
	}
	rx, err := regexp.Compile("^(?:" + re + ")$")
	if err != nil {
		return false
	}
	regexCache.Store(re, rx)
	return rx.MatchString(v)
}

// Domains lists the domains of every virtual host of a route configuration, sorted,
// failing on duplicates (Envoy rejects them).
func Domains(rc *routev3.RouteConfiguration) ([]string, error) {
	seen := map[string]string{}
	var out []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			if prev, ok := seen[strings.ToLower(d)]; ok {
				return nil, fmt.Errorf("route configuration %s: domain %q in virtual hosts %s and %s", rc.GetName(), d, prev, vh.GetName())
			}
			seen[strings.ToLower(d)] = vh.GetName()
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out, nil
}

// ListenerAddress is a listener's "ip:port".
func ListenerAddress(l *listenerv3.Listener) string {
	a, p := sockAddr(l)
	return fmt.Sprintf("%s:%d", a, p)
}

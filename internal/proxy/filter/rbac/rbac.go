// Package rbac is the proxy's HTTP RBAC filter (Envoy's envoy.filters.http.rbac), the
// filter Istio's AuthorizationPolicy compiles to: it allows or denies each request by the
// policies of package engine, before the request reaches the router. Istio chains several
// instances (CUSTOM, DENY, then ALLOW); each instance decides on its own, in config order.
//
// It fails closed: a config holding anything the engine cannot evaluate is rejected when it
// is built (the listener is NACKed and the old config keeps serving), and a request whose
// evaluation fails is denied.
package rbac

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/filter/jwtauthn"
	"github.com/weft-mesh/weft/internal/proxy/filter/rbac/engine"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// Config types: the filter's typed_config and its per-route config.
const (
	ConfigType   = "envoy.extensions.filters.http.rbac.v3.RBAC"
	PerRouteType = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
)

// Body is the body of a denied request, as Envoy answers it.
const Body = "RBAC: access denied"

// DetailsPrefix starts %RESPONSE_CODE_DETAILS% of a denied request; the matched DENY
// policy's name (or "none" when no ALLOW policy matched) follows in brackets.
const DetailsPrefix = "rbac_access_denied_matched_policy"

func init() { filter.Register(factory{}) }

type factory struct{}

var (
	_ filter.Factory        = factory{}
	_ filter.PerRouteParser = factory{}
)

func (factory) ConfigType() string      { return ConfigType }
func (factory) New() proto.Message      { return new(rbacv3.RBAC) }
func (factory) PerRouteTypes() []string { return []string{PerRouteType} }

func (factory) Build(name string, cfg proto.Message) (filter.Middleware, error) {
	m, ok := cfg.(*rbacv3.RBAC)
	if !ok {
		return nil, fmt.Errorf("rbac: config is %T, want RBAC", cfg)
	}
	c, err := compile(m)
	if err != nil {
		return nil, err
	}
	f := &instance{name: name, base: c}
	return func(next filter.Handler) filter.Handler {
		return filter.HandlerFunc(func(x *filter.Exchange) error { return f.serve(next, x) })
	}, nil
}

// ParsePerRoute compiles RBACPerRoute: its rbac replaces the filter-level config on the
// route; with no rbac, the filter is off for the route (Envoy's semantics).
func (factory) ParsePerRoute(a *anypb.Any) (any, error) {
	var m rbacv3.RBACPerRoute
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	if m.GetRbac() == nil {
		return filter.Disabled, nil
	}
	c, err := compile(m.GetRbac())
	if err != nil {
		return nil, fmt.Errorf("rbac: rbac.%w", err)
	}
	return c, nil
}

// config is one compiled filter-level or per-route RBAC.
type config struct {
	enforce *engine.Engine // nil: no enforcement (rules absent)
	shadow  *engine.Engine // nil: no shadow rules
	st      *Stats
}

func compile(m *rbacv3.RBAC) (*config, error) {
	var errs []string
	if m.GetMatcher() != nil {
		errs = append(errs, "matcher: matcher trees are not supported; use rules")
	}
	if m.GetShadowMatcher() != nil {
		errs = append(errs, "shadow_matcher: matcher trees are not supported; use shadow_rules")
	}
	c := &config{st: counters(m.GetRulesStatPrefix(), m.GetShadowRulesStatPrefix())}
	if r := m.GetRules(); r != nil {
		e, err := engine.Compile(r, engine.Options{})
		if err != nil {
			errs = append(errs, prefixLines("rules.", err))
		} else {
			c.enforce = e
		}
	}
	if r := m.GetShadowRules(); r != nil {
		e, err := engine.Compile(r, engine.Options{})
		if err != nil {
			errs = append(errs, prefixLines("shadow_rules.", err))
		} else {
			c.shadow = e
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("rbac: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// prefixLines puts the field prefix before each of the engine's joined errors.
func prefixLines(prefix string, err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "; ")
}

// Stats are the RBAC filter's counters, named as Envoy's http.<prefix>.rbac.* without the
// connection manager's prefix, which the filter API does not give a filter;
// rules_stat_prefix and shadow_rules_stat_prefix go where Envoy puts them.
type Stats struct {
	Allowed       *stats.Counter // http.rbac.allowed
	Denied        *stats.Counter // http.rbac.denied
	ShadowAllowed *stats.Counter // http.rbac.shadow_allowed
	ShadowDenied  *stats.Counter // http.rbac.shadow_denied
}

var statStore atomic.Pointer[stats.Store]

// UseStats makes filters built from now on count into s. Call it once at start-up,
// before the first config is compiled; filters built before keep their old counters.
func UseStats(s *stats.Store) { statStore.Store(s) }

var fallback = stats.New()

func counters(rules, shadow string) *Stats {
	s := statStore.Load()
	if s == nil {
		s = fallback
	}
	return &Stats{
		Allowed:       s.Counter("http.rbac." + rules + "allowed"),
		Denied:        s.Counter("http.rbac." + rules + "denied"),
		ShadowAllowed: s.Counter("http.rbac." + shadow + "shadow_allowed"),
		ShadowDenied:  s.Counter("http.rbac." + shadow + "shadow_denied"),
	}
}

// instance is one RBAC filter in one listener's chain.
type instance struct {
	name string
	base *config
}

func (f *instance) serve(next filter.Handler, x *filter.Exchange) error {
	c := f.base
	if x.Route != nil {
		if rc := x.Route.FilterConfig(f.name); rc != nil {
			if filter.IsDisabled(rc) {
				return next.Serve(x)
			}
			if cc, ok := rc.(*config); ok {
				c = cc
			}
		}
	}
	if c.enforce == nil && c.shadow == nil {
		return next.Serve(x)
	}
	allowed, policy := c.decide(x)
	if !allowed {
		deny(x, policy)
		return nil
	}
	return next.Serve(x)
}

// decide evaluates the shadow rules (counted, never enforced) and the rules. A panic in
// evaluation, which would be a bug, denies the request rather than letting it through.
func (c *config) decide(x *filter.Exchange) (allowed bool, policy string) {
	defer func() {
		if r := recover(); r != nil {
			slog.Error("rbac: evaluation failed; denying the request", "panic", r, "path", x.Info.Path)
			c.st.Denied.Inc()
			allowed, policy = false, "none"
		}
	}()
	a := engine.Attrs{
		Source:       x.Info.Downstream,
		DirectSource: x.Info.Downstream,
		Destination:  x.Info.DownstreamLocal,
		TLS:          x.Info.DownstreamTLS,
		Principal:    x.Info.PeerPrincipal,
		SNI:          x.Info.RequestedServer,
		Request:      x.R,
	}
	if !a.Source.IsValid() {
		// Without a connection (a test, an internal request), fall back to net/http's view.
		a.Source = addrPort(x.R.RemoteAddr)
		a.DirectSource = a.Source
	}
	if res := jwtauthn.FromRequest(x.R); res != nil {
		a.Metadata = res
	}
	if c.shadow != nil {
		if ok, _ := c.shadow.Decide(&a); ok {
			c.st.ShadowAllowed.Inc()
		} else {
			c.st.ShadowDenied.Inc()
		}
	}
	if c.enforce == nil {
		return true, ""
	}
	allowed, policy = c.enforce.Decide(&a)
	if allowed {
		c.st.Allowed.Inc()
		return true, policy
	}
	c.st.Denied.Inc()
	if policy == "" {
		policy = "none"
	}
	return false, policy
}

// deny answers 403 as Envoy does; a gRPC request gets a trailers-only PERMISSION_DENIED.
func deny(x *filter.Exchange, policy string) {
	details := DetailsPrefix + "[" + policy + "]"
	if isGRPC(x.R) {
		x.Info.SetFlag(stream.UnauthorizedRBAC)
		x.Info.ResponseDetails = details
		x.Info.GRPCStatus = "7"
		h := x.W.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", "7")
		h.Set("Grpc-Message", Body)
		x.W.WriteHeader(http.StatusOK)
		return
	}
	x.LocalReply(http.StatusForbidden, Body, stream.UnauthorizedRBAC, details)
}

func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	const g = "application/grpc"
	return len(ct) >= len(g) && ct[:len(g)] == g && (len(ct) == len(g) || ct[len(g)] == '+' || ct[len(g)] == ';')
}

func addrPort(s string) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(s)
	return ap
}

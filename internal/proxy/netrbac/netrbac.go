// Package netrbac is the proxy's network RBAC filter (Envoy's envoy.filters.network.rbac),
// which Istio's AuthorizationPolicy compiles to on TCP filter chains. It sits before the
// chain's terminal filter (tcp_proxy, or the HTTP connection manager) as a listener
// WrapperFactory, and decides once per connection, on the connection's attributes (source
// and destination address and port, peer principal, SNI), with the policy engine the HTTP
// RBAC filter uses (package engine). A denied connection is closed.
//
// It fails closed: HTTP-only matchers (header, url_path) and anything else the engine
// cannot evaluate are rejected when the chain is built, never treated as "no match".
package netrbac

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/filter/rbac/engine"
	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/stats"
)

// ConfigType is the typed_config the filter is built from.
const ConfigType = "envoy.extensions.filters.network.rbac.v3.RBAC"

// ConnAttrs are what a connection offers to the policies.
type ConnAttrs struct {
	Source      netip.AddrPort // the peer
	Destination netip.AddrPort // the original destination when captured
	TLS         bool           // the proxy terminated TLS
	Principal   string         // the peer certificate's URI SAN
	SNI         string
}

// AttrsOf reads a connection's attributes.
func AttrsOf(c *listener.Conn) ConnAttrs {
	return ConnAttrs{Source: c.Remote, Destination: c.Local, TLS: c.TLS, Principal: c.PeerPrincipal, SNI: c.SNI}
}

// Policy is one compiled network RBAC config. It is immutable.
type Policy struct {
	enforce    *engine.Engine // nil: rules absent, no enforcement
	shadow     *engine.Engine
	delayDeny  time.Duration
	st         *Stats
	statPrefix string
}

// Stats are the filter's counters, named as Envoy's <stat_prefix>.rbac.* (Istio's
// stat_prefix "tcp." gives tcp.rbac.allowed).
type Stats struct {
	Allowed       *stats.Counter
	Denied        *stats.Counter
	ShadowAllowed *stats.Counter
	ShadowDenied  *stats.Counter
}

// Compile compiles a network RBAC config, counting into s (a private store when nil).
func Compile(m *rbacv3.RBAC, s *stats.Store) (*Policy, error) {
	if m == nil {
		return nil, errors.New("network rbac: config is required")
	}
	var errs []string
	if m.GetMatcher() != nil {
		errs = append(errs, "matcher: matcher trees are not supported; use rules")
	}
	if m.GetShadowMatcher() != nil {
		errs = append(errs, "shadow_matcher: matcher trees are not supported; use shadow_rules")
	}
	if m.GetStatPrefix() == "" {
		errs = append(errs, "stat_prefix: is required")
	}
	p := &Policy{statPrefix: m.GetStatPrefix()}
	if d := m.GetDelayDeny(); d != nil {
		if p.delayDeny = d.AsDuration(); p.delayDeny < 0 {
			errs = append(errs, "delay_deny: must not be negative")
		}
	}
	opts := engine.Options{Network: true}
	if r := m.GetRules(); r != nil {
		e, err := engine.Compile(r, opts)
		if err != nil {
			errs = append(errs, prefixLines("rules.", err))
		}
		p.enforce = e
	}
	if r := m.GetShadowRules(); r != nil {
		e, err := engine.Compile(r, opts)
		if err != nil {
			errs = append(errs, prefixLines("shadow_rules.", err))
		}
		p.shadow = e
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("network rbac: %s", strings.Join(errs, "; "))
	}
	if s == nil {
		s = stats.New()
	}
	base := join(m.GetStatPrefix(), "rbac.")
	p.st = &Stats{
		Allowed:       s.Counter(base + "allowed"),
		Denied:        s.Counter(base + "denied"),
		ShadowAllowed: s.Counter(base + m.GetShadowRulesStatPrefix() + "shadow_allowed"),
		ShadowDenied:  s.Counter(base + m.GetShadowRulesStatPrefix() + "shadow_denied"),
	}
	return p, nil
}

// join puts a dot between a stat prefix and the rest, as Envoy's statPrefixJoin does.
func join(prefix, rest string) string {
	if prefix == "" || strings.HasSuffix(prefix, ".") {
		return prefix + rest
	}
	return prefix + "." + rest
}

func prefixLines(prefix string, err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "; ")
}

// Check decides a connection: whether it is allowed, and the policy that matched ("" when
// none did). Shadow rules are evaluated and counted, never enforced.
func (p *Policy) Check(c ConnAttrs) (allowed bool, policy string) {
	a := engine.Attrs{
		Source:       c.Source,
		DirectSource: c.Source,
		Destination:  c.Destination,
		TLS:          c.TLS,
		Principal:    c.Principal,
		SNI:          c.SNI,
	}
	if p.shadow != nil {
		if ok, _ := p.shadow.Decide(&a); ok {
			p.st.ShadowAllowed.Inc()
		} else {
			p.st.ShadowDenied.Inc()
		}
	}
	if p.enforce == nil {
		return true, ""
	}
	allowed, policy = p.enforce.Decide(&a)
	if allowed {
		p.st.Allowed.Inc()
	} else {
		p.st.Denied.Inc()
	}
	return allowed, policy
}

// Stats returns the policy's counters.
func (p *Policy) Stats() *Stats { return p.st }

// Factory builds the filter for the listener manager (listener.Options.Wrappers).
type Factory struct {
	stats *stats.Store
	log   *slog.Logger
}

var _ listener.WrapperFactory = (*Factory)(nil)

// NewFactory returns the factory; s receives the counters, log the denials (debug).
func NewFactory(s *stats.Store, log *slog.Logger) *Factory {
	if log == nil {
		log = slog.Default()
	}
	return &Factory{stats: s, log: log}
}

func (*Factory) ConfigType() string { return ConfigType }

// Wrap compiles the config and puts the filter in front of next.
func (f *Factory) Wrap(typed *anypb.Any, chain listener.ChainInfo, next listener.NetworkFilter) (listener.NetworkFilter, error) {
	var m rbacv3.RBAC
	if err := typed.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("network rbac: %w", err)
	}
	p, err := Compile(&m, f.stats)
	if err != nil {
		return nil, err
	}
	return &Filter{Policy: p, next: next, log: f.log.With("listener", chain.Listener, "chain", chain.Chain)}, nil
}

// Filter is the filter in a chain: it passes allowed connections to the next filter.
type Filter struct {
	*Policy
	next listener.NetworkFilter
	log  *slog.Logger
}

var _ listener.NetworkFilter = (*Filter)(nil)

func (f *Filter) ServeConn(ctx context.Context, c *listener.Conn) {
	allowed, policy := f.check(c)
	if allowed {
		f.next.ServeConn(ctx, c)
		return
	}
	f.log.Debug("network rbac: connection denied", "src", c.Remote, "dst", c.Local, "principal", c.PeerPrincipal, "policy", policy)
	if f.delayDeny > 0 {
		t := time.NewTimer(f.delayDeny)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	_ = c.Close()
}

// check runs Check; a panic in evaluation, which would be a bug, denies.
func (f *Filter) check(c *listener.Conn) (allowed bool, policy string) {
	defer func() {
		if r := recover(); r != nil {
			f.log.Error("network rbac: evaluation failed; denying the connection", "panic", r)
			f.st.Denied.Inc()
			allowed, policy = false, ""
		}
	}()
	return f.Check(AttrsOf(c))
}

func (f *Filter) Drain(ctx context.Context) error { return f.next.Drain(ctx) }

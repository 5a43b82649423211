// Package jwtauthn is the proxy's JWT authentication filter (Envoy's
// envoy.filters.http.jwt_authn), the filter Istio's RequestAuthentication compiles to. It
// reads tokens from the request, verifies them against each provider's JWKS (inline, or
// fetched over HTTP and cached) and applies the route's requirement; a request that fails
// it is answered 401 (403 for a disallowed audience), as Envoy answers.
//
// What passed is stored on the request's context as a Result (FromRequest), which the RBAC
// filter reads for Istio's request.auth.* attributes and for the payload_in_metadata
// keys. Nothing unverified is ever stored. Signatures are checked with go-jose.
//
// It fails closed: a JWKS that cannot be fetched verifies no token (a request without a
// token still passes a requirement that allows a missing one), and config the filter
// cannot honour (filter_state_rules, extract_only_without_validation, unsupported rule
// matches) is rejected when built.
package jwtauthn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/filter/rbac/engine"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// Config types: the filter's typed_config and its per-route config.
const (
	ConfigType   = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
	PerRouteType = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"
)

// DetailsPrefix starts %RESPONSE_CODE_DETAILS% of a rejected request; the failure, with
// spaces as underscores, follows in braces (jwt_authn_access_denied{Jwt_is_expired}).
const DetailsPrefix = "jwt_authn_access_denied"

func init() { filter.Register(factory{}) }

type factory struct{}

var (
	_ filter.Factory        = factory{}
	_ filter.PerRouteParser = factory{}
)

func (factory) ConfigType() string      { return ConfigType }
func (factory) New() proto.Message      { return new(jwtv3.JwtAuthentication) }
func (factory) PerRouteTypes() []string { return []string{PerRouteType} }

func (factory) Build(name string, cfg proto.Message) (filter.Middleware, error) {
	m, ok := cfg.(*jwtv3.JwtAuthentication)
	if !ok {
		return nil, fmt.Errorf("jwt_authn: config is %T, want JwtAuthentication", cfg)
	}
	c, err := compile(m)
	if err != nil {
		return nil, err
	}
	f := &instance{name: name, c: c}
	return func(next filter.Handler) filter.Handler {
		return filter.HandlerFunc(func(x *filter.Exchange) error { return f.serve(next, x) })
	}, nil
}

// perRoute is a compiled PerRouteConfig naming an entry of requirement_map; the filter
// instance resolves it, since the map is part of the filter-level config.
type perRoute struct{ requirement string }

func (factory) ParsePerRoute(a *anypb.Any) (any, error) {
	var m jwtv3.PerRouteConfig
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("jwt_authn: %w", err)
	}
	switch s := m.GetRequirementSpecifier().(type) {
	case *jwtv3.PerRouteConfig_Disabled:
		if !s.Disabled {
			return nil, errors.New("jwt_authn: disabled: must be true when set")
		}
		return filter.Disabled, nil
	case *jwtv3.PerRouteConfig_RequirementName:
		if s.RequirementName == "" {
			return nil, errors.New("jwt_authn: requirement_name: must not be empty")
		}
		return &perRoute{requirement: s.RequirementName}, nil
	}
	return nil, errors.New("jwt_authn: one of disabled or requirement_name is required")
}

// config is one compiled JwtAuthentication.
type config struct {
	providers  []*provider // in name order
	byName     map[string]int
	locs       []location
	rules      []rule
	reqMap     map[string]*root
	bypassCORS bool
	strip      bool     // strip_failure_response
	outHeaders []string // headers the filter writes: removed from every incoming request
	st         *Stats
}

type rule struct {
	match *ruleMatch
	req   *root // nil: the rule requires nothing
}

func compile(m *jwtv3.JwtAuthentication) (*config, error) {
	c := &config{byName: map[string]int{}, bypassCORS: m.GetBypassCorsPreflight(), strip: m.GetStripFailureResponse()}
	c.st = counters(m.GetStatPrefix())
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if m.GetFilterStateRules() != nil {
		fail("filter_state_rules: not supported")
	}
	names := make([]string, 0, len(m.GetProviders()))
	for n := range m.GetProviders() {
		names = append(names, n)
	}
	sort.Strings(names)
	out := map[string]bool{}
	for _, n := range names {
		p, err := compileProvider(n, m.GetProviders()[n], c, c.st)
		if err != nil {
			fail("providers[%q].%w", n, err)
			continue
		}
		c.byName[n] = len(c.providers)
		c.providers = append(c.providers, p)
		if p.payloadHdr != "" {
			out[p.payloadHdr] = true
		}
		for _, ch := range p.claimHdrs {
			out[ch.header] = true
		}
	}
	for h := range out {
		c.outHeaders = append(c.outHeaders, h)
	}
	sort.Strings(c.outHeaders)
	if len(errs) > 0 {
		return nil, fmt.Errorf("jwt_authn: %w", errors.Join(errs...))
	}
	reqNames := make([]string, 0, len(m.GetRequirementMap()))
	for n := range m.GetRequirementMap() {
		reqNames = append(reqNames, n)
	}
	sort.Strings(reqNames)
	c.reqMap = make(map[string]*root, len(reqNames))
	for _, n := range reqNames {
		rt, err := c.compileRoot(m.GetRequirementMap()[n])
		if err != nil {
			fail("requirement_map[%q].%w", n, err)
			continue
		}
		c.reqMap[n] = rt
	}
	for i, r := range m.GetRules() {
		rm, err := compileRuleMatch(r.GetMatch())
		if err != nil {
			fail("rules[%d].%w", i, err)
			continue
		}
		ru := rule{match: rm}
		switch t := r.GetRequirementType().(type) {
		case *jwtv3.RequirementRule_Requires:
			if ru.req, err = c.compileRoot(t.Requires); err != nil {
				fail("rules[%d].requires.%w", i, err)
			}
		case *jwtv3.RequirementRule_RequirementName:
			rt, ok := c.reqMap[t.RequirementName]
			if !ok {
				fail("rules[%d].requirement_name: no requirement %q in requirement_map", i, t.RequirementName)
			}
			ru.req = rt
		}
		c.rules = append(c.rules, ru)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("jwt_authn: %w", errors.Join(errs...))
	}
	return c, nil
}

// location returns the index of l among the config's token locations, adding it.
func (c *config) location(l location) int {
	for i := range c.locs {
		if c.locs[i] == l {
			return i
		}
	}
	c.locs = append(c.locs, l)
	return len(c.locs) - 1
}

// Stats are the filter's counters, named as Envoy's http.<prefix>.jwt_authn.* without the
// connection manager's prefix; the config's stat_prefix goes where Envoy puts it.
type Stats struct {
	Allowed               *stats.Counter // http.jwt_authn.allowed
	Denied                *stats.Counter // http.jwt_authn.denied
	CORSPreflightBypassed *stats.Counter // http.jwt_authn.cors_preflight_bypassed
	JwksFetchSuccess      *stats.Counter // http.jwt_authn.jwks_fetch_success
	JwksFetchFailed       *stats.Counter // http.jwt_authn.jwks_fetch_failed
}

var statStore atomic.Pointer[stats.Store]

// UseStats makes filters built from now on count into s. Call it once at start-up,
// before the first config is compiled; filters built before keep their old counters.
func UseStats(s *stats.Store) { statStore.Store(s) }

var fallback = stats.New()

func counters(prefix string) *Stats {
	s := statStore.Load()
	if s == nil {
		s = fallback
	}
	p := "http.jwt_authn."
	if prefix != "" {
		p = "http." + prefix + ".jwt_authn."
	}
	return &Stats{
		Allowed:               s.Counter(p + "allowed"),
		Denied:                s.Counter(p + "denied"),
		CORSPreflightBypassed: s.Counter(p + "cors_preflight_bypassed"),
		JwksFetchSuccess:      s.Counter(p + "jwks_fetch_success"),
		JwksFetchFailed:       s.Counter(p + "jwks_fetch_failed"),
	}
}

// instance is one jwt_authn filter in one listener's chain.
type instance struct {
	name string
	c    *config
}

func (f *instance) serve(next filter.Handler, x *filter.Exchange) error {
	c := f.c
	h := x.R.Header
	// Headers this filter writes carry verified data only: a client's own copy of them
	// is dropped before anything else, whether or not a requirement applies.
	for _, name := range c.outHeaders {
		delete(h, name)
	}
	rt, st := c.requirementFor(f.name, x)
	if st != stOK {
		c.st.Denied.Inc()
		c.reject(x, st)
		return nil
	}
	if rt == nil {
		return next.Serve(x)
	}
	if c.bypassCORS && x.R.Method == http.MethodOptions && h.Get("Origin") != "" && h.Get("Access-Control-Request-Method") != "" {
		c.st.CORSPreflightBypassed.Inc()
		return next.Serve(x)
	}

	toks := c.verify(x.R, rt)
	if st := c.eval(rt.req, toks); st != stOK {
		c.st.Denied.Inc()
		c.reject(x, st)
		return nil
	}
	c.st.Allowed.Inc()
	c.apply(x, toks)
	return next.Serve(x)
}

// requirementFor picks the requirement: the route's per-route config when it has one
// (disabled, or an entry of requirement_map), else the first rule that matches.
func (c *config) requirementFor(name string, x *filter.Exchange) (*root, status) {
	if x.Route != nil {
		if rc := x.Route.FilterConfig(name); rc != nil {
			if filter.IsDisabled(rc) {
				return nil, stOK
			}
			if pr, ok := rc.(*perRoute); ok {
				rt, found := c.reqMap[pr.requirement]
				if !found {
					// The route names a requirement this filter does not have: the
					// route asked for authentication, so it is not skipped.
					return nil, stRequirementNotFound
				}
				return rt, stOK
			}
		}
	}
	if len(c.rules) == 0 {
		return nil, stOK
	}
	path := engine.NormalizePath(x.R.URL.Path)
	for i := range c.rules {
		if c.rules[i].match.matches(x.R, path) {
			return c.rules[i].req, stOK
		}
	}
	return nil, stOK
}

// verify reads the requirement's token locations and verifies each token found under
// every provider of the requirement that reads that location and accepts its issuer
// (usually one; several when providers share an issuer, as Envoy tries each).
func (c *config) verify(r *http.Request, rt *root) []found {
	var toks []found
	now := time.Now()
	ctx := r.Context()
	var buf [2]string
	for _, li := range rt.locs {
		for _, raw := range extract(r, &c.locs[li], buf[:0]) {
			toks = c.verifyOne(ctx, toks, li, raw, rt, now)
		}
	}
	return toks
}

// verifyOne parses one token read at location li and verifies it under every provider
// of the requirement that reads li and accepts its issuer.
func (c *config) verifyOne(ctx context.Context, toks []found, li int, raw string, rt *root, now time.Time) []found {
	f := found{loc: li, raw: raw}
	if f.jwt, f.st = parseJWT(raw); f.st == stOK {
		for i, p := range c.providers {
			if !rt.providers[i] || !p.reads(li) || (p.issuer != "" && p.issuer != f.jwt.iss) {
				continue
			}
			cd := cand{prov: i, base: p.check(f.jwt, now, func() (*keySet, bool) { return p.keys.get(ctx) })}
			cd.st = cd.base
			if cd.st == stOK && !p.audienceAllowed(f.jwt.aud) {
				cd.st = stAudienceNotAllowed
			}
			f.cands = append(f.cands, cd)
		}
		if len(f.cands) == 0 {
			f.st = stUnknownIssuer
		}
	}
	return append(toks, f)
}

// apply does what verified tokens ask (remove the token, forward the payload, copy
// claims to headers) and stores the Result for the filters after this one.
func (c *config) apply(x *filter.Exchange, toks []found) {
	var verified []Token
	clear := false
	for i := range toks {
		f := &toks[i]
		st, prov := f.outcome()
		if st != stOK {
			continue
		}
		p := c.providers[prov]
		verified = append(verified, p.token(f.jwt))
		h := x.R.Header
		if !p.forward {
			removeToken(x.R, &c.locs[f.loc])
		}
		if p.payloadHdr != "" {
			v := f.jwt.payloadB64
			if p.padPayload {
				if n := len(v) % 4; n != 0 {
					v += strings.Repeat("=", 4-n)
				}
			}
			h.Set(p.payloadHdr, v)
		}
		for _, ch := range p.claimHdrs {
			if cv, ok := walk(f.jwt.claims, ch.path); ok {
				if s, ok := claimValue(cv); ok {
					h.Set(ch.header, s)
				}
			}
		}
		clear = clear || (p.clearRoute && (len(p.claimHdrs) > 0 || p.payloadHdr != ""))
	}
	if res := newResult(verified); res != nil {
		x.R = withResult(x.R, res)
	}
	if clear {
		x.ClearRoute()
	}
}

// reject answers as Envoy does: 401 with the failure as body and a Bearer challenge
// naming the request URL (403 when only the audience is wrong); a gRPC request gets a
// trailers-only UNAUTHENTICATED (PERMISSION_DENIED for 403).
func (c *config) reject(x *filter.Exchange, st status) {
	code, grpc := http.StatusUnauthorized, "16"
	if st == stAudienceNotAllowed {
		code, grpc = http.StatusForbidden, "7"
	}
	msg := st.String()
	details := DetailsPrefix + "{" + strings.ReplaceAll(msg, " ", "_") + "}"
	scheme := "http"
	if x.Info.DownstreamTLS || x.R.TLS != nil {
		scheme = "https"
	}
	challenge := `Bearer realm="` + scheme + "://" + x.R.Host + x.R.URL.EscapedPath() + `"`
	if st != stMissing {
		challenge += `, error="invalid_token"`
	}
	hdr := x.W.Header()
	hdr.Set("Www-Authenticate", challenge)
	body := msg
	if c.strip {
		body = ""
	}
	if ct := x.R.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/grpc") {
		x.Info.ResponseDetails = details
		x.Info.GRPCStatus = grpc
		hdr.Set("Content-Type", "application/grpc")
		hdr.Set("Grpc-Status", grpc)
		hdr.Set("Grpc-Message", body)
		x.W.WriteHeader(http.StatusOK)
		return
	}
	x.LocalReply(code, body, stream.Flags(0), details)
}

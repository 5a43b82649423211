package jwtauthn

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/weft-mesh/weft/internal/proxy/filter/rbac/engine"
)

type reqKind uint8

const (
	rProvider reqKind = iota
	rAny
	rAll
	rAllowMissing
	rAllowMissingOrFailed
)

// requirement is a compiled JwtRequirement.
type requirement struct {
	kind      reqKind
	provider  int      // rProvider: index into config.providers
	audiences []string // provider_and_audiences: replaces the provider's audiences; nil keeps them
	kids      []*requirement
}

// root is a requirement as a rule or a route applies it, with the token locations it
// reads: those of every provider it names (all providers when it names none, as a bare
// allow_missing does).
type root struct {
	req       *requirement
	providers []bool // by provider index: may verify tokens for this requirement
	locs      []int
}

func (c *config) compileRoot(r *jwtv3.JwtRequirement) (*root, error) {
	req, err := c.compileRequirement(r)
	if err != nil {
		return nil, err
	}
	rt := &root{req: req, providers: make([]bool, len(c.providers))}
	named := false
	var visit func(q *requirement)
	visit = func(q *requirement) {
		if q.kind == rProvider {
			rt.providers[q.provider], named = true, true
		}
		for _, k := range q.kids {
			visit(k)
		}
	}
	visit(req)
	if !named {
		for i := range rt.providers {
			rt.providers[i] = true
		}
	}
	seen := make([]bool, len(c.locs))
	for i, use := range rt.providers {
		if !use {
			continue
		}
		for _, l := range c.providers[i].locs {
			if !seen[l] {
				seen[l] = true
				rt.locs = append(rt.locs, l)
			}
		}
	}
	return rt, nil
}

func (c *config) compileRequirement(r *jwtv3.JwtRequirement) (*requirement, error) {
	if r == nil {
		return nil, errors.New("is required")
	}
	switch t := r.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		i, ok := c.byName[t.ProviderName]
		if !ok {
			return nil, fmt.Errorf("provider_name: no provider %q", t.ProviderName)
		}
		return &requirement{kind: rProvider, provider: i}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		i, ok := c.byName[t.ProviderAndAudiences.GetProviderName()]
		if !ok {
			return nil, fmt.Errorf("provider_and_audiences.provider_name: no provider %q", t.ProviderAndAudiences.GetProviderName())
		}
		q := &requirement{kind: rProvider, provider: i}
		for _, a := range t.ProviderAndAudiences.GetAudiences() {
			q.audiences = append(q.audiences, normalizeAudience(a))
		}
		return q, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		return c.compileList(rAny, t.RequiresAny.GetRequirements(), "requires_any")
	case *jwtv3.JwtRequirement_RequiresAll:
		return c.compileList(rAll, t.RequiresAll.GetRequirements(), "requires_all")
	case *jwtv3.JwtRequirement_AllowMissing:
		return &requirement{kind: rAllowMissing}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return &requirement{kind: rAllowMissingOrFailed}, nil
	case *jwtv3.JwtRequirement_ExtractOnlyWithoutValidation:
		// Unverified claims must never reach RBAC.
		return nil, errors.New("extract_only_without_validation: not supported")
	case nil:
		return nil, errors.New("requires_type: one is required")
	default:
		return nil, fmt.Errorf("unsupported requirement %T", t)
	}
}

func (c *config) compileList(kind reqKind, rs []*jwtv3.JwtRequirement, field string) (*requirement, error) {
	if len(rs) < 2 {
		return nil, fmt.Errorf("%s.requirements: at least 2 are required", field)
	}
	q := &requirement{kind: kind}
	for i, r := range rs {
		k, err := c.compileRequirement(r)
		if err != nil {
			return nil, fmt.Errorf("%s.requirements[%d].%w", field, i, err)
		}
		q.kids = append(q.kids, k)
	}
	return q, nil
}

// found is one token read from the request, with its verification outcome for each
// provider that could own it.
type found struct {
	loc   int
	raw   string
	st    status // stOK once parsed; the parse failure, or stUnknownIssuer when no provider fits
	jwt   *jwt
	cands []cand
}

// cand is the outcome of a token under one provider whose issuer and location fit it.
type cand struct {
	prov int
	base status // without the audience check
	st   status // with the provider's audiences
}

// outcome is the token's result for requirements that do not name a provider: OK when
// some provider verified it, else its first failure.
func (f *found) outcome() (status, int) {
	if f.st != stOK {
		return f.st, -1
	}
	for _, c := range f.cands {
		if c.st == stOK {
			return stOK, c.prov
		}
	}
	return f.cands[0].st, -1
}

// eval decides the requirement over the tokens found.
func (c *config) eval(q *requirement, toks []found) status {
	switch q.kind {
	case rProvider:
		// Every token at the provider's locations must verify, not just one (Envoy's
		// authenticator since envoyproxy/envoy#12089): otherwise a valid token in one
		// place carries a forged one in another to the upstream, which may read that one.
		p := c.providers[q.provider]
		fail, ok, other := stMissing, false, false
		for i := range toks {
			f := &toks[i]
			if !p.reads(f.loc) {
				continue
			}
			st := f.st
			if st == stOK {
				cd := f.cand(q.provider)
				if cd == nil {
					// A token of another issuer at a shared location: it does not
					// satisfy this provider, and it must verify under its own.
					if st, _ = f.outcome(); st == stOK {
						other = true
						continue
					}
				} else {
					st = cd.st
					if q.audiences != nil && cd.base == stOK {
						st = stOK
						if !audienceIn(q.audiences, f.jwt.aud) {
							st = stAudienceNotAllowed
						}
					}
				}
			}
			if st == stOK {
				ok = true
				continue
			}
			if fail == stMissing {
				fail = st
			}
		}
		switch {
		case fail != stMissing:
			return fail
		case ok:
			return stOK
		case other:
			return stUnknownIssuer
		}
		return stMissing
	case rAny:
		fail := stMissing
		for _, k := range q.kids {
			st := c.eval(k, toks)
			if st == stOK {
				return stOK
			}
			if fail == stMissing {
				fail = st
			}
		}
		return fail
	case rAll:
		for _, k := range q.kids {
			if st := c.eval(k, toks); st != stOK {
				return st
			}
		}
		return stOK
	case rAllowMissing:
		// Envoy: satisfied when no token is present; a token present must verify.
		for i := range toks {
			if st, _ := toks[i].outcome(); st != stOK {
				return st
			}
		}
		return stOK
	case rAllowMissingOrFailed:
		return stOK
	}
	return stVerificationFail
}

func (f *found) cand(prov int) *cand {
	for i := range f.cands {
		if f.cands[i].prov == prov {
			return &f.cands[i]
		}
	}
	return nil
}

func (p *provider) reads(loc int) bool {
	for _, l := range p.locs {
		if l == loc {
			return true
		}
	}
	return false
}

// extract appends the tokens at a location to dst: every value of the header (that has
// the prefix), of the query parameter and of the cookie, not only the first. Each one is
// verified, because the upstream may read any of them (Envoy checks every value of a
// header since 1.28); with forward set they all reach it.
func extract(r *http.Request, l *location, dst []string) []string {
	switch l.kind {
	case locHeader:
		for _, v := range r.Header[l.name] {
			if l.prefix != "" {
				if len(v) < len(l.prefix) || !strings.EqualFold(v[:len(l.prefix)], l.prefix) {
					continue
				}
				v = v[len(l.prefix):]
			}
			if v = strings.TrimSpace(v); v != "" {
				dst = append(dst, v)
			}
		}
	case locParam:
		dst = queryValues(r.URL.RawQuery, l.name, dst)
	case locCookie:
		if _, err := r.Cookie(l.name); err == nil {
			for _, c := range r.CookiesNamed(l.name) {
				dst = append(dst, c.Value)
			}
		}
	}
	return dst
}

// queryValues appends the values of a query parameter to dst without parsing the whole
// query. A value whose percent-encoding is broken is kept as it is, so it fails
// verification rather than pass as no token.
func queryValues(raw, name string, dst []string) []string {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if strings.ContainsAny(v, "%+") {
			if uv, err := url.QueryUnescape(v); err == nil {
				v = uv
			}
		}
		if v != "" {
			dst = append(dst, v)
		}
	}
	return dst
}

// removeToken takes a verified token out of the request when the provider does not
// forward it (Envoy removes the header, or the query parameter).
func removeToken(r *http.Request, l *location) {
	switch l.kind {
	case locHeader:
		r.Header.Del(l.name)
	case locParam:
		q := r.URL.RawQuery
		var b strings.Builder
		for q != "" {
			var kv string
			kv, q, _ = strings.Cut(q, "&")
			k, _, _ := strings.Cut(kv, "=")
			if uk, err := url.QueryUnescape(k); err == nil && uk == l.name {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(kv)
		}
		r.URL.RawQuery = b.String()
		r.RequestURI = r.URL.RequestURI()
	}
}

// ruleMatch is a compiled RequirementRule.match: the path forms and headers of a
// RouteMatch. Other RouteMatch fields are rejected when compiled, so a rule is never
// broader or narrower than its config says.
type ruleMatch struct {
	kind       uint8 // 0 prefix, 1 path, 2 regex, 3 path_separated_prefix
	value      string
	re         *regexp.Regexp
	ignoreCase bool
	headers    []engine.HeaderMatcher
}

func compileRuleMatch(m *routev3.RouteMatch) (*ruleMatch, error) {
	if m == nil {
		return nil, errors.New("match: is required")
	}
	rm := &ruleMatch{ignoreCase: m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = 0, p.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = 1, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return nil, fmt.Errorf("match.safe_regex: %w", err)
		}
		rm.kind, rm.re = 2, re
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rm.kind, rm.value = 3, p.PathSeparatedPrefix
	default:
		return nil, fmt.Errorf("match: unsupported path specifier %T", p)
	}
	switch {
	case len(m.GetQueryParameters()) > 0:
		return nil, errors.New("match.query_parameters: not supported")
	case len(m.GetCookies()) > 0:
		return nil, errors.New("match.cookies: not supported")
	case m.GetGrpc() != nil:
		return nil, errors.New("match.grpc: not supported")
	case m.GetRuntimeFraction() != nil:
		return nil, errors.New("match.runtime_fraction: not supported")
	case m.GetTlsContext() != nil:
		return nil, errors.New("match.tls_context: not supported")
	case len(m.GetDynamicMetadata()) > 0:
		return nil, errors.New("match.dynamic_metadata: not supported")
	case len(m.GetFilterState()) > 0:
		return nil, errors.New("match.filter_state: not supported")
	}
	for i, h := range m.GetHeaders() {
		hm, err := engine.CompileHeader(h)
		if err != nil {
			return nil, fmt.Errorf("match.headers[%d]: %w", i, err)
		}
		rm.headers = append(rm.headers, hm)
	}
	return rm, nil
}

// matches tests the normalized path, so "/public/../secure" meets the rule for "/secure".
func (m *ruleMatch) matches(r *http.Request, path string) bool {
	ok := false
	switch m.kind {
	case 0:
		ok = hasPrefix(path, m.value, m.ignoreCase)
	case 1:
		ok = path == m.value || (m.ignoreCase && strings.EqualFold(path, m.value))
	case 2:
		ok = m.re.MatchString(path)
	case 3:
		ok = hasPrefix(path, m.value, m.ignoreCase) && (len(path) == len(m.value) || path[len(m.value)] == '/')
	}
	if !ok {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].MatchRequest(r) {
			return false
		}
	}
	return true
}

func hasPrefix(s, prefix string, fold bool) bool {
	if len(s) < len(prefix) {
		return false
	}
	if fold {
		return strings.EqualFold(s[:len(prefix)], prefix)
	}
	return s[:len(prefix)] == prefix
}

package router

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
	pathConnect
)

// routeMatch is a compiled RouteMatch. Every condition must hold.
type routeMatch struct {
	kind            pathKind
	path            string // prefix or exact path
	caseInsensitive bool   // case_sensitive: false (not for safe_regex, as in Envoy)
	re              *regexp.Regexp
	headers         []headerMatcher
	query           []queryMatcher
	cookies         []cookieMatcher
	grpc            bool
	tlsPresented    int8 // 0 any, 1 must, -1 must not
	tlsValidated    int8
	// runtime_fraction default_value, as numerator out of denominator; 0 denominator: none.
	fracNum, fracDen uint64
}

func compileRouteMatch(m *routev3.RouteMatch) (routeMatch, error) {
	var rm routeMatch
	if m == nil {
		return rm, errors.New("match: is required")
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		rm.caseInsensitive = true
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.path = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.path = pathExact, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(p.SafeRegex, true)
		if err != nil {
			return rm, fmt.Errorf("match.safe_regex: %w", err)
		}
		rm.kind, rm.re, rm.caseInsensitive = pathRegex, re, false
	case *routev3.RouteMatch_PathSeparatedPrefix:
		if strings.ContainsAny(p.PathSeparatedPrefix, "?#") || strings.HasSuffix(p.PathSeparatedPrefix, "/") {
			return rm, fmt.Errorf("match.path_separated_prefix: %q must not contain ? or # nor end with /", p.PathSeparatedPrefix)
		}
		rm.kind, rm.path = pathSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_ConnectMatcher_:
		rm.kind = pathConnect
	case *routev3.RouteMatch_PathMatchPolicy:
		return rm, errors.New("match.path_match_policy: unsupported")
	default:
		return rm, errors.New("match.path_specifier: is required")
	}
	for i, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return rm, fmt.Errorf("match.headers[%d]: %w", i, err)
		}
		rm.headers = append(rm.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm := queryMatcher{name: q.GetName()}
		if qm.name == "" {
			return rm, fmt.Errorf("match.query_parameters[%d].name: is required", i)
		}
		switch s := q.GetQueryParameterMatchSpecifier().(type) {
		case *routev3.QueryParameterMatcher_StringMatch:
			sm, err := compileStringMatcher(s.StringMatch)
			if err != nil {
				return rm, fmt.Errorf("match.query_parameters[%d].string_match: %w", i, err)
			}
			qm.sm = &sm
		case *routev3.QueryParameterMatcher_PresentMatch:
			qm.present = s.PresentMatch
		default:
			// No specifier: the parameter must be present, as Envoy treats it.
			qm.present = true
		}
		rm.query = append(rm.query, qm)
	}
	for i, c := range m.GetCookies() {
		sm, err := compileStringMatcher(c.GetStringMatch())
		if err != nil {
			return rm, fmt.Errorf("match.cookies[%d].string_match: %w", i, err)
		}
		if c.GetName() == "" {
			return rm, fmt.Errorf("match.cookies[%d].name: is required", i)
		}
		rm.cookies = append(rm.cookies, cookieMatcher{name: c.GetName(), sm: sm, invert: c.GetInvertMatch()})
	}
	rm.grpc = m.GetGrpc() != nil
	if t := m.GetTlsContext(); t != nil {
		rm.tlsPresented = triState(t.GetPresented())
		rm.tlsValidated = triState(t.GetValidated())
	}
	if rf := m.GetRuntimeFraction(); rf != nil && rf.GetDefaultValue() != nil {
		rm.fracNum, rm.fracDen = fraction(rf.GetDefaultValue())
	}
	if len(m.GetDynamicMetadata()) > 0 {
		return rm, errors.New("match.dynamic_metadata: unsupported")
	}
	if len(m.GetFilterState()) > 0 {
		return rm, errors.New("match.filter_state: unsupported")
	}
	return rm, nil
}

// triState maps an optional bool to 0 (unset), 1 (true) or -1 (false).
func triState(b *wrapperspb.BoolValue) int8 {
	switch {
	case b == nil:
		return 0
	case b.GetValue():
		return 1
	}
	return -1
}

// fraction converts a FractionalPercent to numerator/denominator.
func fraction(f *typev3.FractionalPercent) (num, den uint64) {
	den = 100
	switch f.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10000
	case typev3.FractionalPercent_MILLION:
		den = 1000000
	}
	num = uint64(f.GetNumerator())
	if num > den {
		num = den
	}
	return num, den
}

// matches reports whether the request matches. path is the request's path without the
// query string, as Envoy matches it.
func (m *routeMatch) matches(r *http.Request, path string) bool {
	switch m.kind {
	case pathPrefix:
		if !hasPrefix(path, m.path, m.caseInsensitive) {
			return false
		}
	case pathExact:
		if m.caseInsensitive {
			if !strings.EqualFold(path, m.path) {
				return false
			}
		} else if path != m.path {
			return false
		}
	case pathRegex:
		if !m.re.MatchString(path) {
			return false
		}
	case pathSeparatedPrefix:
		if !hasPrefix(path, m.path, m.caseInsensitive) {
			return false
		}
		if len(path) > len(m.path) && path[len(m.path)] != '/' {
			return false
		}
	case pathConnect:
		if r.Method != http.MethodConnect {
			return false
		}
	}
	if m.grpc && !isGRPCContentType(r.Header.Get("Content-Type")) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].matches(r) {
			return false
		}
	}
	if len(m.query) > 0 {
		for i := range m.query {
			if !m.query[i].matches(r.URL.RawQuery) {
				return false
			}
		}
	}
	for i := range m.cookies {
		v, ok := cookieValue(r.Header, m.cookies[i].name)
		if !ok || m.cookies[i].sm.match(v) == m.cookies[i].invert {
			return false
		}
	}
	if m.tlsPresented != 0 || m.tlsValidated != 0 {
		presented := r.TLS != nil && len(r.TLS.PeerCertificates) > 0
		validated := r.TLS != nil && len(r.TLS.VerifiedChains) > 0
		if m.tlsPresented != 0 && (m.tlsPresented == 1) != presented {
			return false
		}
		if m.tlsValidated != 0 && (m.tlsValidated == 1) != validated {
			return false
		}
	}
	if m.fracDen != 0 && rand.Uint64N(m.fracDen) >= m.fracNum {
		return false
	}
	return true
}

func isGRPCContentType(ct string) bool {
	const g = "application/grpc"
	return len(ct) >= len(g) && ct[:len(g)] == g && (len(ct) == len(g) || ct[len(g)] == '+' || ct[len(g)] == ';')
}

type pseudoHeader uint8

const (
	notPseudo pseudoHeader = iota
	pseudoAuthority
	pseudoPath
	pseudoMethod
	pseudoScheme
)

func pseudoOf(name string) (pseudoHeader, bool) {
	switch strings.ToLower(name) {
	case ":authority", "host":
		return pseudoAuthority, true
	case ":path":
		return pseudoPath, true
	case ":method":
		return pseudoMethod, true
	case ":scheme":
		return pseudoScheme, true
	}
	if strings.HasPrefix(name, ":") {
		return notPseudo, false
	}
	return notPseudo, true
}

type headerKind uint8

const (
	hmPresent headerKind = iota
	hmString
	hmRange
)

// headerMatcher is a compiled HeaderMatcher.
type headerMatcher struct {
	key          string // canonical header key, when not a pseudo-header
	pseudo       pseudoHeader
	kind         headerKind
	sm           stringMatcher
	start, end   int64 // range_match: [start, end)
	present      bool  // present_match value
	invert       bool
	missingEmpty bool // treat_missing_header_as_empty
}

func compileHeaderMatcher(h *routev3.HeaderMatcher) (headerMatcher, error) {
	hm := headerMatcher{invert: h.GetInvertMatch(), missingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	name := h.GetName()
	if name == "" {
		return hm, errors.New("name: is required")
	}
	ps, ok := pseudoOf(name)
	if !ok {
		return hm, fmt.Errorf("name: unsupported pseudo-header %q", name)
	}
	hm.pseudo = ps
	if ps == notPseudo {
		hm.key = http.CanonicalHeaderKey(name)
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		hm.kind, hm.sm = hmString, stringMatcher{kind: smExact, value: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.kind, hm.sm = hmString, stringMatcher{kind: smPrefix, value: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.kind, hm.sm = hmString, stringMatcher{kind: smSuffix, value: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.kind, hm.sm = hmString, stringMatcher{kind: smContains, value: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileRegex(s.SafeRegexMatch, true)
		if err != nil {
			return hm, fmt.Errorf("safe_regex_match: %w", err)
		}
		hm.kind, hm.sm = hmString, stringMatcher{kind: smRegex, re: re}
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := compileStringMatcher(s.StringMatch)
		if err != nil {
			return hm, fmt.Errorf("string_match: %w", err)
		}
		hm.kind, hm.sm = hmString, sm
	case *routev3.HeaderMatcher_RangeMatch:
		if s.RangeMatch == nil || s.RangeMatch.GetStart() >= s.RangeMatch.GetEnd() {
			return hm, errors.New("range_match: start must be less than end")
		}
		hm.kind, hm.start, hm.end = hmRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_PresentMatch:
		hm.kind, hm.present = hmPresent, s.PresentMatch
	default:
		// No specifier: the header must be present, as Envoy treats it.
		hm.kind, hm.present = hmPresent, true
	}
	return hm, nil
}

func (hm *headerMatcher) matches(r *http.Request) bool {
	v, ok := hm.value(r)
	if hm.kind == hmPresent {
		return (ok == hm.present) != hm.invert
	}
	if !ok {
		if !hm.missingEmpty {
			// A missing header fails the rule even when inverted (HeaderMatcher docs).
			return false
		}
		v = ""
	}
	var m bool
	switch hm.kind {
	case hmString:
		m = hm.sm.match(v)
	case hmRange:
		n, err := strconv.ParseInt(v, 10, 64)
		m = err == nil && n >= hm.start && n < hm.end
	}
	return m != hm.invert
}

// value is the header's value for matching; several values are joined with ",", as Envoy
// does.
func (hm *headerMatcher) value(r *http.Request) (string, bool) {
	switch hm.pseudo {
	case pseudoAuthority:
		return r.Host, r.Host != ""
	case pseudoPath:
		return requestPath(r), true
	case pseudoMethod:
		return r.Method, true
	case pseudoScheme:
		return requestScheme(r), true
	}
	vs := r.Header[hm.key]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// requestPath is the :path pseudo-header: the escaped path and query.
func requestPath(r *http.Request) string {
	p := r.URL.EscapedPath()
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		return p + "?" + r.URL.RawQuery
	}
	return p
}

// requestScheme is the :scheme pseudo-header. The connection manager may set r.URL.Scheme;
// otherwise it follows the downstream connection.
func requestScheme(r *http.Request) string {
	if r.URL.Scheme != "" {
		return r.URL.Scheme
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

type queryMatcher struct {
	name    string
	sm      *stringMatcher
	present bool
}

func (q *queryMatcher) matches(rawQuery string) bool {
	v, ok := queryValue(rawQuery, q.name)
	if q.sm == nil {
		return ok == q.present
	}
	return ok && q.sm.match(v)
}

// queryValue finds the first value of a query parameter, decoded, without allocating
// unless a key or value is escaped.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			dk, err := url.QueryUnescape(k)
			if err != nil {
				continue
			}
			k = dk
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			dv, err := url.QueryUnescape(v)
			if err != nil {
				return v, true
			}
			v = dv
		}
		return v, true
	}
	return "", false
}

type cookieMatcher struct {
	name   string
	sm     stringMatcher
	invert bool
}

// cookieValue finds a cookie in the Cookie headers without allocating.
func cookieValue(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

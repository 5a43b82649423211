package engine

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

// StringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type StringMatcher struct {
	kind       strKind
	value      string
	ignoreCase bool // ignore_case; no effect on safe_regex, as in Envoy
	re         *regexp.Regexp
}

// CompileString compiles a StringMatcher. A nil matcher or one with no pattern is an
// error: an absent pattern cannot be evaluated, and treating it as "match all" would open
// a policy.
func CompileString(m *matcherv3.StringMatcher) (StringMatcher, error) {
	if m == nil {
		return StringMatcher{}, errors.New("string matcher is required")
	}
	sm := StringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = strExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = strPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = strSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = strContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return StringMatcher{}, fmt.Errorf("safe_regex: %w", err)
		}
		sm.kind, sm.re = strRegex, re
	case *matcherv3.StringMatcher_Custom:
		return StringMatcher{}, errors.New("custom: unsupported string matcher extension")
	default:
		return StringMatcher{}, errors.New("match_pattern is required")
	}
	return sm, nil
}

// compileRegex anchors the expression: Envoy's safe_regex (RE2) must match the whole value.
// Go's regexp is RE2 syntax too.
func compileRegex(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m == nil {
		return nil, errors.New("regex matcher is required")
	}
	re, err := regexp.Compile(`^(?:` + m.GetRegex() + `)$`)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", m.GetRegex(), err)
	}
	return re, nil
}

// Match reports whether s matches. It does not allocate.
func (m *StringMatcher) Match(s string) bool {
	switch m.kind {
	case strExact:
		if m.ignoreCase {
			return strings.EqualFold(s, m.value)
		}
		return s == m.value
	case strPrefix:
		if len(s) < len(m.value) {
			return false
		}
		if m.ignoreCase {
			return strings.EqualFold(s[:len(m.value)], m.value)
		}
		return s[:len(m.value)] == m.value
	case strSuffix:
		if len(s) < len(m.value) {
			return false
		}
		if m.ignoreCase {
			return strings.EqualFold(s[len(s)-len(m.value):], m.value)
		}
		return s[len(s)-len(m.value):] == m.value
	case strContains:
		if m.ignoreCase {
			return containsFold(s, m.value)
		}
		return strings.Contains(s, m.value)
	case strRegex:
		return m.re.MatchString(s)
	}
	return false
}

// containsFold is strings.Contains under Unicode case folding, without allocating.
func containsFold(s, sub string) bool {
	if sub == "" {
		return true
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

type pseudo uint8

const (
	notPseudo pseudo = iota
	pseudoAuthority
	pseudoPath
	pseudoMethod
	pseudoScheme
)

type headerKind uint8

const (
	hdrPresent headerKind = iota
	hdrString
	hdrRange
)

// HeaderMatcher is a compiled envoy.config.route.v3.HeaderMatcher over an HTTP request.
type HeaderMatcher struct {
	key          string // canonical MIME key, when not a pseudo-header
	pseudo       pseudo
	kind         headerKind
	sm           StringMatcher
	start, end   int64 // range_match [start, end)
	present      bool  // present_match
	invert       bool
	missingEmpty bool // treat_missing_header_as_empty
}

// CompileHeader compiles a HeaderMatcher. Pseudo-headers other than :authority, :path,
// :method and :scheme are rejected: the proxy has no value for them, and matching them as
// absent could open a DENY policy.
func CompileHeader(h *routev3.HeaderMatcher) (HeaderMatcher, error) {
	if h == nil {
		return HeaderMatcher{}, errors.New("header matcher is required")
	}
	hm := HeaderMatcher{invert: h.GetInvertMatch(), missingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	name := h.GetName()
	switch strings.ToLower(name) {
	case "":
		return hm, errors.New("name: is required")
	case ":authority", "host":
		hm.pseudo = pseudoAuthority
	case ":path":
		hm.pseudo = pseudoPath
	case ":method":
		hm.pseudo = pseudoMethod
	case ":scheme":
		hm.pseudo = pseudoScheme
	default:
		if strings.HasPrefix(name, ":") {
			return hm, fmt.Errorf("name: unsupported pseudo-header %q", name)
		}
		hm.key = http.CanonicalHeaderKey(name)
	}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		hm.kind, hm.sm = hdrString, StringMatcher{kind: strExact, value: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.kind, hm.sm = hdrString, StringMatcher{kind: strPrefix, value: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.kind, hm.sm = hdrString, StringMatcher{kind: strSuffix, value: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.kind, hm.sm = hdrString, StringMatcher{kind: strContains, value: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		var re *regexp.Regexp
		if re, err = compileRegex(s.SafeRegexMatch); err != nil {
			return hm, fmt.Errorf("header %q: safe_regex_match: %w", name, err)
		}
		hm.kind, hm.sm = hdrString, StringMatcher{kind: strRegex, re: re}
	case *routev3.HeaderMatcher_StringMatch:
		if hm.sm, err = CompileString(s.StringMatch); err != nil {
			return hm, fmt.Errorf("header %q: string_match: %w", name, err)
		}
		hm.kind = hdrString
	case *routev3.HeaderMatcher_RangeMatch:
		if s.RangeMatch == nil || s.RangeMatch.GetStart() >= s.RangeMatch.GetEnd() {
			return hm, fmt.Errorf("header %q: range_match: start must be less than end", name)
		}
		hm.kind, hm.start, hm.end = hdrRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_PresentMatch:
		hm.kind, hm.present = hdrPresent, s.PresentMatch
	case nil:
		// No specifier: Envoy matches on presence.
		hm.kind, hm.present = hdrPresent, true
	default:
		return hm, fmt.Errorf("header %q: unsupported match %T", name, s)
	}
	return hm, nil
}

// Match follows Envoy's HeaderMatcher: a missing header fails every value match (even
// inverted) unless treat_missing_header_as_empty; present_match compares presence.
// path is the value of :path (see Attrs.pathHeader); secure tells :scheme.
func (hm *HeaderMatcher) Match(r *http.Request, path string, secure bool) bool {
	v, ok := hm.value(r, path, secure)
	if hm.kind == hdrPresent {
		return (ok == hm.present) != hm.invert
	}
	if !ok {
		if !hm.missingEmpty {
			return false
		}
		v = ""
	}
	var m bool
	if hm.kind == hdrRange {
		n, err := strconv.ParseInt(v, 10, 64)
		m = err == nil && n >= hm.start && n < hm.end
	} else {
		m = hm.sm.Match(v)
	}
	return m != hm.invert
}

// MatchRequest is Match with :path and :scheme taken from the request itself.
func (hm *HeaderMatcher) MatchRequest(r *http.Request) bool {
	path := ""
	if hm.pseudo == pseudoPath {
		path = r.RequestURI
		if path == "" {
			path = r.URL.RequestURI()
		}
	}
	return hm.Match(r, path, r.TLS != nil)
}

func (hm *HeaderMatcher) value(r *http.Request, path string, secure bool) (string, bool) {
	switch hm.pseudo {
	case pseudoAuthority:
		return r.Host, r.Host != ""
	case pseudoPath:
		return path, true
	case pseudoMethod:
		return r.Method, true
	case pseudoScheme:
		if secure {
			return "https", true
		}
		return "http", true
	}
	vs, ok := r.Header[hm.key]
	switch len(vs) {
	case 0:
		return "", ok
	case 1:
		return vs[0], true
	}
	// Envoy matches repeated headers against their comma-joined value. Rare; it allocates.
	return strings.Join(vs, ","), true
}

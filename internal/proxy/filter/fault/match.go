package fault

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// headerMatcher is a compiled envoy.config.route.v3.HeaderMatcher. The fault filter only
// needs the request-header forms Istio and Envoy users write; this is kept local because
// the filter API has no shared matcher package yet.
type headerMatcher struct {
	name          string // canonical MIME header key
	present       *bool  // present_match
	str           *stringMatcher
	rng           *[2]int64 // range_match [start, end)
	invert        bool
	missingAsNone bool // treat_missing_header_as_empty
}

func compileHeaderMatcher(m *routev3.HeaderMatcher) (headerMatcher, error) {
	hm := headerMatcher{
		name:          http.CanonicalHeaderKey(m.GetName()),
		invert:        m.GetInvertMatch(),
		missingAsNone: m.GetTreatMissingHeaderAsEmpty(),
	}
	if m.GetName() == "" {
		return hm, fmt.Errorf("name: must not be empty")
	}
	var err error
	switch s := m.GetHeaderMatchSpecifier().(type) {
	case nil:
		// No specifier: Envoy matches on presence.
		t := true
		hm.present = &t
	case *routev3.HeaderMatcher_PresentMatch:
		p := s.PresentMatch
		hm.present = &p
	case *routev3.HeaderMatcher_ExactMatch:
		hm.str = &stringMatcher{kind: matchExact, s: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.str = &stringMatcher{kind: matchPrefix, s: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.str = &stringMatcher{kind: matchSuffix, s: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.str = &stringMatcher{kind: matchContains, s: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		var re *regexp.Regexp
		re, err = compileRegex(s.SafeRegexMatch.GetRegex())
		hm.str = &stringMatcher{kind: matchRegex, re: re}
	case *routev3.HeaderMatcher_RangeMatch:
		hm.rng = &[2]int64{s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()}
	case *routev3.HeaderMatcher_StringMatch:
		var sm stringMatcher
		sm, err = compileStringMatcher(s.StringMatch)
		hm.str = &sm
	default:
		err = fmt.Errorf("unsupported header match %T", s)
	}
	if err != nil {
		return hm, fmt.Errorf("header %q: %w", m.GetName(), err)
	}
	return hm, nil
}

// match follows Envoy's HeaderMatcher: a missing header fails every value match unless
// treat_missing_header_as_empty, and invert_match does not rescue it; present_match
// compares presence and may be inverted.
func (m *headerMatcher) match(h http.Header) bool {
	vals, ok := h[m.name]
	if m.present != nil {
		return (ok == *m.present) != m.invert
	}
	if !ok && !m.missingAsNone {
		return false
	}
	v := ""
	switch len(vals) {
	case 0:
	case 1:
		v = vals[0]
	default:
		// Envoy matches repeated headers against their comma-joined value.
		v = strings.Join(vals, ",")
	}
	var r bool
	if m.rng != nil {
		n, err := strconv.ParseInt(v, 10, 64)
		r = err == nil && n >= m.rng[0] && n < m.rng[1]
	} else {
		r = m.str.match(v)
	}
	return r != m.invert
}

func matchAll(ms []headerMatcher, h http.Header) bool {
	for i := range ms {
		if !ms[i].match(h) {
			return false
		}
	}
	return true
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
	matchContains
	matchRegex
)

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind       matchKind
	s          string
	ignoreCase bool
	re         *regexp.Regexp
}

func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.s = matchExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.s = matchPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.s = matchSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.s = matchContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex())
		if err != nil {
			return sm, err
		}
		sm.kind, sm.re = matchRegex, re
	default:
		return sm, fmt.Errorf("string_match: unsupported pattern %T", p)
	}
	if sm.ignoreCase {
		sm.s = strings.ToLower(sm.s)
	}
	return sm, nil
}

// compileRegex anchors the pattern: Envoy's safe_regex must match the whole value.
func compileRegex(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("safe_regex %q: %w", expr, err)
	}
	return re, nil
}

func (m *stringMatcher) match(v string) bool {
	switch m.kind {
	case matchRegex:
		return m.re.MatchString(v)
	case matchExact:
		if m.ignoreCase {
			return strings.EqualFold(v, m.s)
		}
		return v == m.s
	}
	if m.ignoreCase {
		v = strings.ToLower(v)
	}
	switch m.kind {
	case matchPrefix:
		return strings.HasPrefix(v, m.s)
	case matchSuffix:
		return strings.HasSuffix(v, m.s)
	default:
		return strings.Contains(v, m.s)
	}
}

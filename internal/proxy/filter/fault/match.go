package fault

import (
	"fmt"
	"github.com/weft-mesh/weft/internal/proxy/matcher"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// headerMatcher is a compiled envoy.config.route.v3.HeaderMatcher. The fault filter only
// needs the request-header forms Istio and Envoy users write; string values use the
// shared internal/proxy/matcher.
type headerMatcher struct {
	name          string // canonical MIME header key
	present       *bool  // present_match
	str           *matcher.String
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
		hm.str = &matcher.String{Kind: matcher.Exact, S: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.str = &matcher.String{Kind: matcher.Prefix, S: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.str = &matcher.String{Kind: matcher.Suffix, S: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.str = &matcher.String{Kind: matcher.Contains, S: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		var re *regexp.Regexp
		re, err = matcher.CompileRegex(s.SafeRegexMatch.GetRegex())
		hm.str = &matcher.String{Kind: matcher.Regex, Re: re}
	case *routev3.HeaderMatcher_RangeMatch:
		hm.rng = &[2]int64{s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()}
	case *routev3.HeaderMatcher_StringMatch:
		var sm matcher.String
		sm, err = matcher.CompileString(s.StringMatch)
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
		r = m.str.Match(v)
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

package cors

import (
	"fmt"
	"regexp"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// The string matcher below mirrors the fault filter's: the filter API has no shared
// matcher package yet, and each filter is meant to stand alone.

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

// Package matcher compiles Envoy's envoy.type.matcher.v3.StringMatcher once, at config
// time, for the HTTP filters that match request values (cors origins, fault header
// matches). Matching allocates nothing, ignore_case included.
package matcher

import (
	"fmt"
	"regexp"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Kind is the form of a String matcher.
type Kind uint8

const (
	Exact Kind = iota
	Prefix
	Suffix
	Contains
	Regex
)

// String is a compiled string matcher.
type String struct {
	Kind       Kind
	S          string
	IgnoreCase bool
	Re         *regexp.Regexp
}

// CompileString compiles an Envoy StringMatcher.
func CompileString(m *matcherv3.StringMatcher) (String, error) {
	sm := String{IgnoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.Kind, sm.S = Exact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.Kind, sm.S = Prefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.Kind, sm.S = Suffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.Kind, sm.S = Contains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := CompileRegex(p.SafeRegex.GetRegex())
		if err != nil {
			return sm, err
		}
		sm.Kind, sm.Re = Regex, re
	default:
		return sm, fmt.Errorf("string_match: unsupported pattern %T", p)
	}
	return sm, nil
}

// CompileRegex anchors the pattern: Envoy's safe_regex must match the whole value.
func CompileRegex(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("safe_regex %q: %w", expr, err)
	}
	return re, nil
}

// Match reports whether v matches.
func (m *String) Match(v string) bool {
	switch m.Kind {
	case Regex:
		return m.Re.MatchString(v)
	case Exact:
		if m.IgnoreCase {
			return strings.EqualFold(v, m.S)
		}
		return v == m.S
	case Prefix:
		return len(v) >= len(m.S) && equal(v[:len(m.S)], m.S, m.IgnoreCase)
	case Suffix:
		return len(v) >= len(m.S) && equal(v[len(v)-len(m.S):], m.S, m.IgnoreCase)
	default:
		if !m.IgnoreCase {
			return strings.Contains(v, m.S)
		}
		for i := 0; i+len(m.S) <= len(v); i++ {
			if strings.EqualFold(v[i:i+len(m.S)], m.S) {
				return true
			}
		}
		return false
	}
}

func equal(a, b string, fold bool) bool {
	if fold {
		return strings.EqualFold(a, b)
	}
	return a == b
}

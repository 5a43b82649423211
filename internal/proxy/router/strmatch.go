package router

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

type strKind uint8

const (
	smExact strKind = iota
	smPrefix
	smSuffix
	smContains
	smRegex
)

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind       strKind
	value      string
	ignoreCase bool // StringMatcher.ignore_case; no effect on safe_regex, as in Envoy
	re         *regexp.Regexp
}

func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	if m == nil {
		return stringMatcher{}, errors.New("string matcher is required")
	}
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = smExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = smPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = smSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = smContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex, true)
		if err != nil {
			return stringMatcher{}, fmt.Errorf("safe_regex: %w", err)
		}
		sm.kind, sm.re = smRegex, re
	case *matcherv3.StringMatcher_Custom:
		return stringMatcher{}, errors.New("custom: unsupported")
	default:
		return stringMatcher{}, errors.New("match_pattern is required")
	}
	return sm, nil
}

func (m *stringMatcher) match(s string) bool {
	switch m.kind {
	case smExact:
		if m.ignoreCase {
			return strings.EqualFold(s, m.value)
		}
		return s == m.value
	case smPrefix:
		return hasPrefix(s, m.value, m.ignoreCase)
	case smSuffix:
		if len(s) < len(m.value) {
			return false
		}
		if m.ignoreCase {
			return strings.EqualFold(s[len(s)-len(m.value):], m.value)
		}
		return strings.HasSuffix(s, m.value)
	case smContains:
		if m.ignoreCase {
			return containsFold(s, m.value)
		}
		return strings.Contains(s, m.value)
	case smRegex:
		return m.re.MatchString(s)
	}
	return false
}

func hasPrefix(s, prefix string, ignoreCase bool) bool {
	if len(s) < len(prefix) {
		return false
	}
	if ignoreCase {
		return strings.EqualFold(s[:len(prefix)], prefix)
	}
	return s[:len(prefix)] == prefix
}

// containsFold is a case-insensitive strings.Contains that does not allocate.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// compileRegex compiles an RE2 RegexMatcher. Envoy's safe_regex matchers match the whole
// value (RE2::FullMatch); anchored says so. Go's regexp is RE2 syntax.
func compileRegex(m *matcherv3.RegexMatcher, anchored bool) (*regexp.Regexp, error) {
	if m == nil {
		return nil, errors.New("regex matcher is required")
	}
	expr := m.GetRegex()
	if anchored {
		expr = `^(?:` + expr + `)$`
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", m.GetRegex(), err)
	}
	return re, nil
}

// regexRewrite is a compiled RegexMatchAndSubstitute: every match of the (unanchored)
// pattern is replaced, as RE2::GlobalReplace does.
type regexRewrite struct {
	re  *regexp.Regexp
	sub string // in Go's Expand syntax
}

func compileRegexRewrite(m *matcherv3.RegexMatchAndSubstitute) (*regexRewrite, error) {
	if m == nil {
		return nil, nil
	}
	re, err := compileRegex(m.GetPattern(), false)
	if err != nil {
		return nil, fmt.Errorf("pattern: %w", err)
	}
	return &regexRewrite{re: re, sub: re2Substitution(m.GetSubstitution())}, nil
}

func (rr *regexRewrite) apply(s string) string { return rr.re.ReplaceAllString(s, rr.sub) }

// re2Substitution turns an RE2 rewrite string (\0..\9 name groups, \\ is a backslash) into
// Go's template syntax (${N}, $$ is a dollar).
func re2Substitution(s string) string {
	if !strings.ContainsAny(s, `\$`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			b.WriteString("${")
			b.WriteByte(s[i+1])
			b.WriteByte('}')
			i++
		case c == '\\' && i+1 < len(s) && s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

package engine

import (
	"errors"
	"fmt"
	"math"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Metadata is the dynamic metadata of a request, as filters before RBAC left it (Envoy's
// StreamInfo dynamic metadata). Values are JSON-shaped, as encoding/json decodes into any:
// string, float64, bool, nil, []any, map[string]any.
type Metadata interface {
	// Lookup returns the value at path under the filter's namespace.
	Lookup(filter string, path []string) (any, bool)
}

// Istio's authn namespace (Istio's authn filter writes it; weft's jwtauthn filter and this
// engine provide it directly). The source.* keys come from the peer certificate; the
// engine answers them itself from Attrs.Principal, so they cannot be forged by a filter.
const (
	IstioAuthn         = "istio_authn"
	keySourcePrincipal = "source.principal"
	keySourceUser      = "source.user"
	keySourceNamespace = "source.namespace"
	spiffePrefix       = "spiffe://"
)

// metadataMatcher is a compiled envoy.type.matcher.v3.MetadataMatcher.
type metadataMatcher struct {
	filter string
	path   []string
	value  valueMatcher
	invert bool
	source string // istio_authn source.* key answered from the peer certificate; "" otherwise
}

func compileMetadata(m *matcherv3.MetadataMatcher) (*metadataMatcher, error) {
	if m == nil {
		return nil, errors.New("metadata matcher is required")
	}
	mm := &metadataMatcher{filter: m.GetFilter(), invert: m.GetInvert()}
	if mm.filter == "" {
		return nil, errors.New("filter: is required")
	}
	if len(m.GetPath()) == 0 {
		return nil, errors.New("path: at least one segment is required")
	}
	for i, s := range m.GetPath() {
		k := s.GetKey()
		if k == "" {
			return nil, fmt.Errorf("path[%d].key: is required", i)
		}
		mm.path = append(mm.path, k)
	}
	v, err := compileValue(m.GetValue())
	if err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	mm.value = v
	if mm.filter == IstioAuthn && len(mm.path) == 1 {
		switch mm.path[0] {
		case keySourcePrincipal, keySourceUser, keySourceNamespace:
			mm.source = mm.path[0]
		}
	}
	return mm, nil
}

func (m *metadataMatcher) match(a *Attrs) bool {
	if m.source != "" {
		s, ok := a.sourceAttr(m.source)
		if !ok {
			return m.value.match(nil, false) != m.invert
		}
		return m.value.matchString(s) != m.invert
	}
	if a.Metadata == nil {
		return m.value.match(nil, false) != m.invert
	}
	v, ok := a.Metadata.Lookup(m.filter, m.path)
	return m.value.match(v, ok) != m.invert
}

type valueKind uint8

const (
	valNull valueKind = iota
	valDoubleExact
	valDoubleRange
	valString
	valBool
	valPresent
	valList
	valOr
)

// valueMatcher is a compiled envoy.type.matcher.v3.ValueMatcher.
type valueMatcher struct {
	kind    valueKind
	exact   float64
	lo, hi  float64 // range [lo, hi)
	str     StringMatcher
	boolean bool
	present bool
	sub     []valueMatcher // list one_of (1), or_match (n)
}

func compileValue(m *matcherv3.ValueMatcher) (valueMatcher, error) {
	if m == nil {
		return valueMatcher{}, errors.New("is required")
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		return valueMatcher{kind: valNull}, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		switch d := p.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Exact:
			return valueMatcher{kind: valDoubleExact, exact: d.Exact}, nil
		case *matcherv3.DoubleMatcher_Range:
			return valueMatcher{kind: valDoubleRange, lo: d.Range.GetStart(), hi: d.Range.GetEnd()}, nil
		}
		return valueMatcher{}, errors.New("double_match: match_pattern is required")
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := CompileString(p.StringMatch)
		if err != nil {
			return valueMatcher{}, fmt.Errorf("string_match: %w", err)
		}
		return valueMatcher{kind: valString, str: sm}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		return valueMatcher{kind: valBool, boolean: p.BoolMatch}, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		return valueMatcher{kind: valPresent, present: p.PresentMatch}, nil
	case *matcherv3.ValueMatcher_ListMatch:
		one := p.ListMatch.GetOneOf()
		if one == nil {
			return valueMatcher{}, errors.New("list_match.one_of: is required")
		}
		sub, err := compileValue(one)
		if err != nil {
			return valueMatcher{}, fmt.Errorf("list_match.one_of: %w", err)
		}
		return valueMatcher{kind: valList, sub: []valueMatcher{sub}}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		vm := valueMatcher{kind: valOr}
		if len(p.OrMatch.GetValueMatchers()) < 2 {
			return valueMatcher{}, errors.New("or_match.value_matchers: at least 2 are required")
		}
		for i, s := range p.OrMatch.GetValueMatchers() {
			sub, err := compileValue(s)
			if err != nil {
				return valueMatcher{}, fmt.Errorf("or_match.value_matchers[%d]: %w", i, err)
			}
			vm.sub = append(vm.sub, sub)
		}
		return vm, nil
	}
	return valueMatcher{}, errors.New("match_pattern is required")
}

// match follows Envoy's ValueMatcher with one widening that Istio's generated policies
// rely on: a scalar matcher (string, double, bool) also matches a list holding a matching
// element, and list_match also accepts a scalar as a one-element list. Istio's authn
// filter stores claims as lists and its RBAC uses list_match on them, but it uses
// string_match on request.auth.audiences, which a token may carry as a list.
func (m *valueMatcher) match(v any, ok bool) bool {
	switch m.kind {
	case valNull:
		return ok && v == nil
	case valPresent:
		// As Envoy evaluates it: a value at the path matches present_match: true; nothing
		// matches present_match: false (use the MetadataMatcher's invert for absence).
		return m.present && ok
	case valOr:
		for i := range m.sub {
			if m.sub[i].match(v, ok) {
				return true
			}
		}
		return false
	}
	if !ok {
		return false
	}
	if l, isList := v.([]any); isList {
		if m.kind == valList {
			for _, e := range l {
				if m.sub[0].match(e, true) {
					return true
				}
			}
			return false
		}
		for _, e := range l {
			if _, nested := e.([]any); !nested && m.scalar(e) {
				return true
			}
		}
		return false
	}
	if m.kind == valList {
		return m.sub[0].match(v, true)
	}
	return m.scalar(v)
}

func (m *valueMatcher) scalar(v any) bool {
	switch m.kind {
	case valString:
		s, ok := v.(string)
		return ok && m.str.Match(s)
	case valBool:
		b, ok := v.(bool)
		return ok && b == m.boolean
	case valDoubleExact:
		f, ok := number(v)
		return ok && f == m.exact
	case valDoubleRange:
		f, ok := number(v)
		return ok && f >= m.lo && f < m.hi
	case valList, valOr, valNull, valPresent:
		return m.match(v, true)
	}
	return false
}

// matchString is match for a string value, without boxing it.
func (m *valueMatcher) matchString(s string) bool {
	switch m.kind {
	case valString:
		return m.str.Match(s)
	case valPresent:
		return m.present
	case valList:
		return m.sub[0].matchString(s)
	case valOr:
		for i := range m.sub {
			if m.sub[i].matchString(s) {
				return true
			}
		}
	}
	return false
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, !math.IsNaN(n)
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	}
	return 0, false
}

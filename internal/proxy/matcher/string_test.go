package matcher

import (
	"testing"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

func TestString(t *testing.T) {
	cases := []struct {
		m    *matcherv3.StringMatcher
		in   string
		want bool
	}{
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Foo"}}, "Foo", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Foo"}}, "foo", false},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Foo"}, IgnoreCase: true}, "fOO", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "https://"}}, "https://a", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "HTTPS://"}, IgnoreCase: true}, "https://a", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "https://"}}, "http", false},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example.com"}}, "a.example.com", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".EXAMPLE.com"}, IgnoreCase: true}, "a.example.COM", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example.com"}}, "com", false},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "mid"}}, "amidst", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "MID"}, IgnoreCase: true}, "amidst", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "mid"}}, "amdist", false},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "v[0-9]+"}}}, "v12", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "v[0-9]+"}}}, "xv12", false},
	}
	for i, c := range cases {
		sm, err := CompileString(c.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := sm.Match(c.in); got != c.want {
			t.Errorf("case %d: Match(%q) = %v, want %v", i, c.in, got, c.want)
		}
	}
	if _, err := CompileString(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}); err == nil {
		t.Error("bad regex compiled")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	sm, _ := CompileString(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "EXAMPLE"}, IgnoreCase: true})
	if n := testing.AllocsPerRun(100, func() { sm.Match("https://www.example.com") }); n != 0 {
		t.Fatalf("%v allocations per ignore-case match", n)
	}
}

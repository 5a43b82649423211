package engine

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// istioLike is the shape Istio generates for a few AuthorizationPolicy rules: principals,
// methods, paths, a header condition and a JWT principal.
func istioLike(action rbacv3.RBAC_Action, n int) *rbacv3.RBAC {
	m := &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
	for i := 0; i < n; i++ {
		m.Policies[fmt.Sprintf("ns[default]-policy[p%d]-rule[0]", i)] = &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
					permHeader(":method", exact("GET")), permHeader(":method", exact("HEAD"))}}}},
				{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
					permPath(prefix(fmt.Sprintf("/api/v%d/", i))), permPath(exact("/healthz"))}}}},
				{Rule: &rbacv3.Permission_NotRule{NotRule: permHeader(":authority", prefix("admin."))}},
			}}}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
				{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
					{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: exact("spiffe://cluster.local/ns/default/sa/productpage")}}},
					{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: regex(`spiffe://cluster\.local/ns/test/.*`)}}},
				}}}},
				{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("192.168.0.0", 16)}}}},
				{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-tenant", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}},
			}}}}},
		}
	}
	return m
}

func FuzzRBACMatch(f *testing.F) {
	f.Add("GET", "/api/v0/items?x=1", "x-tenant", "acme", "spiffe://cluster.local/ns/default/sa/productpage", []byte{10, 1, 2, 3}, true)
	f.Add("POST", "/healthz", "x-other", "", "", []byte{192, 168, 1, 1}, false)
	f.Add("GET", "/a/../api/v1//x", "X-Tenant", "\x00", "spiffe://cluster.local/ns/test/sa/x", []byte{}, true)
	f.Add("HEAD", "//%2e%2e/%61pi/v2/", ":path", "", "spiffe://", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, true)
	allow, err := Compile(istioLike(rbacv3.RBAC_ALLOW, 3), Options{})
	if err != nil {
		f.Fatal(err)
	}
	deny, err := Compile(istioLike(rbacv3.RBAC_DENY, 3), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, target, hname, hvalue, principal string, ip []byte, tls bool) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: method, URL: u, RequestURI: target, Host: "svc.default", Header: http.Header{}}
		if hname != "" {
			r.Header[http.CanonicalHeaderKey(hname)] = []string{hvalue}
		}
		src, _ := netip.AddrFromSlice(ip)
		a := Attrs{Source: netip.AddrPortFrom(src, 1234), DirectSource: netip.AddrPortFrom(src, 1234),
			TLS: tls, Principal: principal, Request: r}
		b := a
		okA, polA := allow.Decide(&a)
		okA2, polA2 := allow.Decide(&b)
		if okA != okA2 || polA != polA2 {
			t.Fatalf("not deterministic: %v/%q then %v/%q", okA, polA, okA2, polA2)
		}
		c := Attrs{Source: a.Source, DirectSource: a.DirectSource, TLS: tls, Principal: principal, Request: r}
		okD, polD := deny.Decide(&c)
		// The same policies under ALLOW and DENY decide opposite ways on the same policy.
		if okA == okD || polA != polD {
			t.Fatalf("ALLOW %v/%q vs DENY %v/%q", okA, polA, okD, polD)
		}
	})
}

func benchAttrs() Attrs {
	r := request("GET", "/api/v0/items", map[string]string{"X-Tenant": "acme"})
	return Attrs{
		Source:       netip.MustParseAddrPort("10.1.2.3:40000"),
		DirectSource: netip.MustParseAddrPort("10.1.2.3:40000"),
		Destination:  netip.MustParseAddrPort("10.9.0.5:8080"),
		TLS:          true,
		Principal:    "spiffe://cluster.local/ns/default/sa/productpage",
		Request:      r,
	}
}

func benchmarkDecide(b *testing.B, n int) {
	e, err := Compile(istioLike(rbacv3.RBAC_ALLOW, n), Options{})
	if err != nil {
		b.Fatal(err)
	}
	base := benchAttrs()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := base
		if ok, _ := e.Decide(&a); !ok {
			b.Fatal("denied")
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) { benchmarkDecide(b, n) })
	}
}

// TestDecideNoAllocs is the benchmark's size-1 twin (the same policy and request, run a
// fixed number of times): the common path allocates nothing.
func TestDecideNoAllocs(t *testing.T) {
	e, err := Compile(istioLike(rbacv3.RBAC_ALLOW, 3), Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := benchAttrs()
	allocs := testing.AllocsPerRun(100, func() {
		a := base
		if ok, _ := e.Decide(&a); !ok {
			t.Fatal("denied")
		}
	})
	if allocs != 0 {
		t.Fatalf("Decide allocates %v times per request", allocs)
	}
}

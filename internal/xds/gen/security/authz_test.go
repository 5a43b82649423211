package security

import (
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
)

type check struct {
	name string
	r    req
	tcp  bool
	want bool
}

// TestAuthorizationSemantics evaluates the RBAC generated from Istio AuthorizationPolicy
// snippets with the proxy's engine: who may do what on reviews-v1.
func TestAuthorizationSemantics(t *testing.T) {
	pp := func(method, path string) req { return req{principal: productpageID, method: method, path: path} }
	tests := []struct {
		name   string
		yaml   string
		checks []check
	}{
		{"no policy allows everything", ``, []check{
			{"plaintext", req{}, false, true},
			{"tcp", req{}, true, true},
		}},
		{"productpage may GET reviews", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/reviews/*"]}}]
`, []check{
			{"productpage GET /reviews/0", pp("GET", "/reviews/0"), false, true},
			{"productpage POST", pp("POST", "/reviews/0"), false, false},
			{"productpage other path", pp("GET", "/ratings/0"), false, false},
			{"ratings GET", req{principal: ratingsID, path: "/reviews/0"}, false, false},
			{"plaintext GET", req{path: "/reviews/0"}, false, false},
			// dot segments are normalized before matching
			{"normalized path", pp("GET", "/reviews/../reviews/1"), false, true},
			// TCP: the rule has HTTP fields, so it is dropped: nothing is allowed.
			{"tcp from productpage", req{principal: productpageID}, true, false},
		}},
		{"deny before allow", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-ns}
spec:
  rules: [{from: [{source: {namespaces: ["default"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin", "/admin/*"]}}]}]
`, []check{
			{"default ns /x", pp("GET", "/x"), false, true},
			{"default ns /admin", pp("GET", "/admin"), false, false},
			{"default ns /admin/users", pp("DELETE", "/admin/users"), false, false},
			{"other ns", req{principal: otherNSID}, false, false},
			// TCP: the DENY rule keeps no field it can evaluate: it denies every connection.
			{"tcp from default ns", req{principal: productpageID}, true, false},
		}},
		{"empty ALLOW policy denies all", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec: {}
`, []check{
			{"productpage", pp("GET", "/"), false, false},
			{"tcp", req{principal: productpageID}, true, false},
		}},
		{"rules [{}] allows all", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all}
spec: {rules: [{}]}
`, []check{
			{"plaintext", req{method: "PUT", path: "/anything"}, false, true},
			{"tcp", req{}, true, true},
		}},
		{"deny all", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all}
spec: {rules: [{}]}
`, []check{
			{"productpage", pp("GET", "/"), false, false},
			{"tcp", req{}, true, false},
		}},
		{"notPaths and notMethods", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: public}
spec:
  rules: [{to: [{operation: {notPaths: ["/private/*", "*.key"], notMethods: ["DELETE"]}}]}]
`, []check{
			{"/public", req{path: "/public"}, false, true},
			{"/private/x", req{path: "/private/x"}, false, false},
			{"suffix", req{path: "/a/b.key"}, false, false},
			{"DELETE", req{method: "DELETE", path: "/public"}, false, false},
		}},
		{"hosts ignore case and port", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: hosts}
spec:
  rules: [{to: [{operation: {hosts: ["reviews", "*.example.com", "api.*"]}}]}]
`, []check{
			{"reviews:9080", req{host: "reviews:9080"}, false, true},
			{"REVIEWS", req{host: "REVIEWS"}, false, true},
			{"reviews.default", req{host: "reviews.default:9080"}, false, false},
			{"suffix with port", req{host: "a.Example.com:8443"}, false, true},
			{"prefix", req{host: "api.internal"}, false, true},
			{"other", req{host: "ratings:9080"}, false, false},
		}},
		{"when conditions", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: when}
spec:
  rules:
  - when:
    - {key: "request.headers[x-token]", values: ["abc", "pre-*"]}
    - {key: source.namespace, values: ["default"]}
    - {key: destination.port, values: ["9080"]}
    - {key: source.ip, notValues: ["10.9.0.0/16"]}
`, []check{
			{"all hold", req{principal: productpageID, headers: map[string]string{"x-token": "abc"}}, false, true},
			{"prefix header", req{principal: productpageID, headers: map[string]string{"x-token": "pre-1"}}, false, true},
			{"header among repeated values", req{principal: productpageID, headers: map[string]string{"x-token": "zzz,abc"}}, false, true},
			{"wrong header", req{principal: productpageID, headers: map[string]string{"x-token": "abcd"}}, false, false},
			{"no header", req{principal: productpageID}, false, false},
			{"other namespace", req{principal: otherNSID, headers: map[string]string{"x-token": "abc"}}, false, false},
			{"other port", req{principal: productpageID, headers: map[string]string{"x-token": "abc"}, dst: "127.2.0.3:9081"}, false, false},
			{"excluded source", req{principal: productpageID, headers: map[string]string{"x-token": "abc"}, src: "10.9.1.1:5000"}, false, false},
		}},
		{"more when keys", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: when2}
spec:
  rules:
  - when:
    - {key: source.principal, values: ["cluster.local/ns/default/sa/bookinfo-*"]}
    - {key: remote.ip, values: ["192.168.0.0/16"]}
    - {key: destination.ip, values: ["127.2.0.3"]}
    - {key: connection.sni, values: ["*.svc.cluster.local"]}
    - {key: source.serviceAccount, values: ["default/bookinfo-productpage", "bookinfo-ratings"]}
    - {key: source.trustDomain, values: ["cluster.local"]}
`, []check{
			{"productpage", req{principal: productpageID, xffSrc: "192.168.1.2:1", sni: "reviews.default.svc.cluster.local"}, false, true},
			{"ratings", req{principal: ratingsID, xffSrc: "192.168.1.2:1", sni: "reviews.default.svc.cluster.local"}, false, true},
			{"tcp", req{principal: productpageID, xffSrc: "192.168.1.2:1", sni: "reviews.default.svc.cluster.local"}, true, true},
			{"remote outside", req{principal: productpageID, xffSrc: "10.1.1.1:1", sni: "reviews.default.svc.cluster.local"}, false, false},
			{"no sni", req{principal: productpageID, xffSrc: "192.168.1.2:1"}, false, false},
			{"other trust domain", req{principal: "spiffe://example.org/ns/default/sa/bookinfo-productpage", xffSrc: "192.168.1.2:1", sni: "reviews.default.svc.cluster.local"}, false, false},
		}},
		{"requestPrincipals and claims through JWT metadata", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["testing@secure.istio.io/*"]}}]
    when:
    - {key: "request.auth.claims[groups]", values: ["group1"]}
    - {key: "request.auth.claims[org][team]", values: ["mesh"]}
    - {key: request.auth.audiences, values: ["bookinfo"]}
`, []check{
			{"token with group", req{meta: fakeMeta{
				"request.auth.principal": "testing@secure.istio.io/alice", "request.auth.audiences": []any{"x", "bookinfo"},
				"request.auth.claims": map[string]any{"groups": []any{"group0", "group1"}, "org": map[string]any{"team": "mesh"}}}}, false, true},
			{"claim as a string", req{meta: fakeMeta{
				"request.auth.principal": "testing@secure.istio.io/alice", "request.auth.audiences": []any{"bookinfo"},
				"request.auth.claims": map[string]any{"groups": "group1", "org": map[string]any{"team": "mesh"}}}}, false, true},
			{"other group", req{meta: fakeMeta{
				"request.auth.principal": "testing@secure.istio.io/alice", "request.auth.audiences": []any{"bookinfo"},
				"request.auth.claims": map[string]any{"groups": []any{"group2"}, "org": map[string]any{"team": "mesh"}}}}, false, false},
			{"other issuer", req{meta: fakeMeta{
				"request.auth.principal": "evil.example/alice", "request.auth.audiences": []any{"bookinfo"},
				"request.auth.claims": map[string]any{"groups": []any{"group1"}, "org": map[string]any{"team": "mesh"}}}}, false, false},
			{"no token", req{principal: productpageID}, false, false},
			{"tcp", req{principal: productpageID}, true, false},
		}},
		{"unknown when key: DENY fails closed, ALLOW rule dropped", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-deny}
spec:
  action: DENY
  rules: [{when: [{key: request.bogus, values: ["x"]}]}]
`, []check{
			{"anything", pp("GET", "/"), false, false},
			{"tcp", req{principal: productpageID}, true, false},
		}},
		{"unknown when key in ALLOW drops only that rule", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-allow}
spec:
  rules:
  - when: [{key: request.bogus, values: ["x"]}]
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
`, []check{
			{"productpage", pp("GET", "/"), false, true},
			{"ratings", req{principal: ratingsID}, false, false},
			{"tcp productpage", req{principal: productpageID}, true, true},
		}},
		{"a pseudo-header the proxy has no value for fails closed, not the listener", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: pseudo}
spec: {action: DENY, rules: [{when: [{key: "request.headers[:status]", values: ["200"]}]}]}
`, []check{
			{"anything", pp("GET", "/"), false, false},
		}},
		{"wildcards", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wild}
spec:
  rules:
  - from: [{source: {principals: ["*/sa/bookinfo-productpage"], notNamespaces: ["other*"]}}]
    to: [{operation: {methods: ["G*"], ports: ["9080"]}}]
  - from: [{source: {principals: ["*"], notPrincipals: ["cluster.local/ns/default/sa/bookinfo-p*"]}}]
    to: [{operation: {methods: ["*"], paths: ["*"], hosts: ["*"]}}]
`, []check{
			{"productpage GET", pp("GET", "/"), false, true},
			{"productpage PUT", pp("PUT", "/"), false, false},
			{"ratings anything", req{principal: ratingsID, method: "PUT", path: "/x"}, false, true},
			{"plaintext", req{}, false, false},
			// both rules have HTTP fields (methods): dropped on TCP
			{"tcp productpage", req{principal: productpageID}, true, false},
			{"tcp ratings", req{principal: ratingsID}, true, false},
		}},
		{"ip blocks", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ips}
spec:
  rules: [{from: [{source: {ipBlocks: ["10.0.0.0/8", "192.168.1.1"], notIpBlocks: ["10.66.0.0/16"], remoteIpBlocks: ["10.0.0.0/8"]}}]}]
`, []check{
			{"inside", req{src: "10.1.2.3:1"}, false, true},
			{"single host", req{src: "192.168.1.1:1", xffSrc: "10.2.2.2:2"}, false, true},
			{"excluded", req{src: "10.66.1.1:1"}, false, false},
			{"outside", req{src: "172.16.0.1:1"}, false, false},
			{"tcp inside", req{src: "10.1.2.3:1"}, true, true},
		}},
		{"path templates", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: templates}
spec:
  rules: [{to: [{operation: {paths: ["/users/{*}/profile", "/files/{**}"]}}]}]
`, []check{
			{"one segment", req{path: "/users/42/profile"}, false, true},
			{"two segments", req{path: "/users/4/2/profile"}, false, false},
			{"rest", req{path: "/files/a/b/c.txt"}, false, true},
			{"other", req{path: "/users/42"}, false, false},
		}},
		{"dry-run is never enforced", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry, annotations: {"istio.io/dry-run": "true"}}
spec: {action: DENY, rules: [{}]}
`, []check{
			{"anything", pp("GET", "/"), false, true},
			{"tcp", req{}, true, true},
		}},
		{"audit never denies", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit}
spec: {action: AUDIT, rules: [{to: [{operation: {paths: ["/"]}}]}]}
`, []check{
			{"audited", pp("GET", "/"), false, true},
		}},
		{"CUSTOM without an authorizer denies what it covers", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext}
spec:
  action: CUSTOM
  provider: {name: my-ext-authz}
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
`, []check{
			{"covered", pp("GET", "/admin/x"), false, false},
			{"not covered", pp("GET", "/x"), false, true},
			{"tcp", req{}, true, false},
		}},
		{"policies of other workloads and namespaces do not apply", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-only}
spec: {selector: {matchLabels: {app: ratings}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: other}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-ref}
spec: {targetRefs: [{kind: Service, group: "", name: reviews}]}
`, []check{
			{"anything", pp("GET", "/"), false, true},
		}},
		{"mesh-wide policy in the root namespace", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {methods: ["DELETE"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-v1, namespace: istio-system}
spec: {selector: {matchLabels: {version: v1}}, action: DENY, rules: [{to: [{operation: {methods: ["PUT"]}}]}]}
`, []check{
			{"GET", pp("GET", "/"), false, true},
			{"DELETE", pp("DELETE", "/"), false, false},
			{"PUT on v1", pp("PUT", "/"), false, false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := bookinfo(tc.yaml)
			for _, c := range tc.checks {
				if got := allowed(t, s, reviews(), c.r, c.tcp); got != c.want {
					t.Errorf("%s (tcp=%v): allowed=%v, want %v", c.name, c.tcp, got, c.want)
				}
			}
		})
	}
	// A policy's selector picks the workload: ratings does not see the reviews policy.
	s := bookinfo(tests[1].yaml)
	if !allowed(t, s, simtest.SidecarProxy("ratings-v1", node.Explicit), req{principal: ratingsID, method: "POST"}, false) {
		t.Error("the reviews policy applied to ratings")
	}
}

// TestAllowNothingShape: an ALLOW policy without rules is an ALLOW filter with no
// policy (denies all); a DENY policy without rules is a DENY filter with no policy
// (denies nothing); no policy is no filter.
func TestAllowNothingShape(t *testing.T) {
	s := bookinfo(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec: {}
`)
	if f := HTTPRBAC(s, reviews(), Allow); f == nil || f.GetRules() == nil || len(f.GetRules().GetPolicies()) != 0 || f.GetRules().GetAction().String() != "ALLOW" {
		t.Fatalf("allow-nothing: %v", f)
	}
	for _, a := range []Action{Audit, Deny} {
		if f := HTTPRBAC(s, reviews(), a); f != nil {
			t.Fatalf("%v filter without a %v policy: %v", a, a, f)
		}
	}
	if f := NetworkRBAC(s, reviews(), Allow); f.GetStatPrefix() != "tcp." || f.GetRules() == nil {
		t.Fatalf("network: %v", f)
	}
}

// TestPolicyNames: Istio's names, so RESPONSE_CODE_DETAILS and stats read the same.
func TestPolicyNames(t *testing.T) {
	s := bookinfo(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-some}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/a"]}}]}, {to: [{operation: {paths: ["/b"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext}
spec: {action: CUSTOM, provider: {name: x}, rules: [{}]}
`)
	var got []string
	for n := range HTTPRBAC(s, reviews(), Deny).GetRules().GetPolicies() {
		got = append(got, n)
	}
	want := "ns[default]-policy[deny-some]-rule[0] ns[default]-policy[deny-some]-rule[1] ns[default]-policy[ext]-rule[0]-custom-unavailable"
	if strings.Join(sorted(got), " ") != want {
		t.Fatalf("names %v", got)
	}
}

// TestDryRunShape: dry-run policies are shadow rules with Istio's stat prefix.
func TestDryRunShape(t *testing.T) {
	s := bookinfo(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry, annotations: {"istio.io/dry-run": "true"}}
spec: {rules: [{}]}
`)
	f := HTTPRBAC(s, reviews(), Allow)
	if f.GetRules() != nil || len(f.GetShadowRules().GetPolicies()) != 1 || f.GetShadowRulesStatPrefix() != "istio_dry_run_allow_" {
		t.Fatalf("dry run: %v", f)
	}
}

// TestDiagnose reports what translation changed.
func TestDiagnose(t *testing.T) {
	s := bookinfo(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad}
spec: {action: DENY, rules: [{when: [{key: request.bogus, values: ["x"]}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: http-allow}
spec: {rules: [{to: [{operation: {methods: ["GET"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec: {jwtRules: [{issuer: "no-keys.example"}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/debug"]}}]}]}
`)
	got := strings.Join(Diagnose(s, reviews()), "\n")
	for _, want := range []string{
		`AuthorizationPolicy bad: rules[0]: when[0].key: unknown attribute "request.bogus": denying every request`,
		`AuthorizationPolicy http-allow: rules[0]: to[0].operation.methods: only HTTP requests have it: not applied to TCP traffic`,
		`RequestAuthentication jwt: jwtRules issuer "no-keys.example": neither jwks nor jwksUri`,
		`AuthorizationPolicy deny-debug: rules[0]: on TCP traffic without to[0].operation.paths (only HTTP requests have them): it denies more connections`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

func sorted(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

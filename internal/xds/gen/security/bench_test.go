package security

import (
	"fmt"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/snapshot"
)

// manyPolicies is n AuthorizationPolicies over n namespaces (one in the workload's),
// and n RequestAuthentications: what a sidecar's generation scans.
func manyPolicies(n int) *snapshot.Snapshot {
	var b strings.Builder
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("ns%d", i)
		if i == 0 {
			ns = "default"
		}
		fmt.Fprintf(&b, `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p%d, namespace: %s}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/%s/sa/a", "cluster.local/ns/%s/sa/b*"]}}]
    to: [{operation: {methods: [GET, POST], paths: ["/api/*", "/v%d"]}}]
    when: [{key: "request.headers[x-tenant]", values: ["t%d"]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: r%d, namespace: %s}
spec: {jwtRules: [{issuer: "iss%d.example", jwksUri: "https://iss%d.example/jwks"}]}
`, i, ns, ns, ns, i, i, i, ns, i, i)
	}
	return bookinfo(b.String())
}

func benchmarkSecurity(b *testing.B, n int) {
	s := manyPolicies(n)
	p := reviews()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, a := range Actions {
			_ = HTTPRBAC(s, p, a)
			_ = NetworkRBAC(s, p, a)
		}
		_ = JWTAuthn(s, p)
		_ = PeerMode(s, p, 9080)
	}
}

// BenchmarkSecurity1000: one sidecar's security filters in a mesh of 1000 policies.
func BenchmarkSecurity1000(b *testing.B) { benchmarkSecurity(b, 1000) }

// TestBenchmarkSecurity is the benchmark's size-1 twin, so it cannot rot.
func TestBenchmarkSecurity(t *testing.T) {
	r := testing.Benchmark(func(b *testing.B) { benchmarkSecurity(b, 1) })
	if r.N == 0 {
		t.Fatal("benchmark did not run")
	}
	if f := HTTPRBAC(manyPolicies(1), reviews(), Allow); len(f.GetRules().GetPolicies()) != 1 {
		t.Fatalf("policies %v", f)
	}
}

package security

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/security/securitytest"
)

const mixed = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"], namespaces: [default]}}, {source: {ipBlocks: [10.0.0.0/8]}}]
    to: [{operation: {methods: [GET, HEAD], paths: ["/reviews/*"]}}, {operation: {ports: ["9080"]}}]
    when: [{key: "request.headers[x-a]", values: [a, b]}, {key: destination.port, values: ["9080"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: c}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: r1}
spec: {jwtRules: [{issuer: a.example, jwksUri: "https://a.example/jwks"}, {issuer: b.example, jwksUri: "http://b.example:8080/k"}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: r0, namespace: istio-system}
spec: {jwtRules: [{issuer: c.example, jwksUri: "https://c.example/jwks"}]}
`

// TestDeterministic: the same policies give the same bytes, whatever order they arrive
// in (DESIGN: pushes only on real change).
func TestDeterministic(t *testing.T) {
	base := simtest.BookinfoInput()
	securitytest.MustParse(mixed).AddTo(&base)
	gen := func(s *snapshot.Snapshot) []byte {
		var out []byte
		mo := proto.MarshalOptions{Deterministic: true}
		add := func(m proto.Message) {
			b, err := mo.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
			out = append(out, '|')
		}
		for _, a := range Actions {
			add(HTTPRBAC(s, reviews(), a))
			add(NetworkRBAC(s, reviews(), a))
		}
		add(JWTAuthn(s, reviews()))
		return out
	}
	want := gen(snapshot.Build(base))
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20; i++ {
		in := base
		in.AuthorizationPolicies = shuffled(rng, base.AuthorizationPolicies)
		in.RequestAuthentications = shuffled(rng, base.RequestAuthentications)
		if got := gen(snapshot.Build(in)); !bytes.Equal(got, want) {
			t.Fatalf("shuffle %d: output depends on input order", i)
		}
	}
	j := JWTAuthn(snapshot.Build(base), reviews())
	if j.GetProviders()["origins-2"].GetRemoteJwks().GetHttpUri().GetCluster() != "outbound|443||c.example" ||
		j.GetProviders()["origins-1"].GetRemoteJwks().GetHttpUri().GetCluster() != "outbound|8080||b.example" {
		t.Fatalf("providers in policy order: %v", j.GetProviders())
	}
}

func shuffled[T any](rng *rand.Rand, in []T) []T {
	out := append([]T(nil), in...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

package rbac

import (
	"net/http"
	"net/netip"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// decideStep returns one request's decisions as Istio chains them (DENY on DELETE, then
// ALLOW for one principal on /api paths), for an allowed request.
func decideStep(tb testing.TB) func() {
	deny, err := compile(&rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{
		"deny-delete": pol([]*rbacconfigv3.Permission{methodPerm("DELETE")}, []*rbacconfigv3.Principal{anyPrin()}),
	})})
	if err != nil {
		tb.Fatal(err)
	}
	allow, err := compile(&rbacv3.RBAC{Rules: rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"allow-productpage": pol([]*rbacconfigv3.Permission{pathPerm(prefix("/api/"))}, []*rbacconfigv3.Principal{authPrin("spiffe://cluster.local/ns/default/sa/productpage")}),
	})})
	if err != nil {
		tb.Fatal(err)
	}
	r, _ := http.NewRequest(http.MethodGet, "http://reviews:9080/api/v1/reviews/0", nil)
	r.RequestURI = "/api/v1/reviews/0"
	x := &filter.Exchange{R: r, Info: &stream.Info{
		Downstream:      netip.MustParseAddrPort("10.0.0.7:40000"),
		DownstreamLocal: netip.MustParseAddrPort("10.0.0.9:9080"),
		DownstreamTLS:   true,
		PeerPrincipal:   "spiffe://cluster.local/ns/default/sa/productpage",
	}}
	return func() {
		if ok, _ := deny.decide(x); !ok {
			tb.Fatal("denied by DENY")
		}
		if ok, _ := allow.decide(x); !ok {
			tb.Fatal("denied by ALLOW")
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	step := decideStep(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step()
	}
}

// TestDecideAllocs is BenchmarkDecide's size-1 twin, and holds the filter's common path
// to zero allocations.
func TestDecideAllocs(t *testing.T) {
	step := decideStep(t)
	step()
	if a := testing.AllocsPerRun(100, step); a != 0 {
		t.Fatalf("%v allocations per request", a)
	}
}

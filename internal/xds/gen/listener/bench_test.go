package listener

import (
	"fmt"
	"testing"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

// bigMesh is Bookinfo plus n services in n namespaces, each with a VirtualService
// (header match + weights) and a DestinationRule with two subsets.
func bigMesh(n int) *snapshot.Snapshot {
	var yaml string
	in := simtest.BookinfoInput()
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("ns%d", i%50)
		name := fmt.Sprintf("svc%d", i)
		in.Services = append(in.Services, &registry.Service{
			Hostname: name + "." + ns + ".svc.cluster.local", Name: name, Namespace: ns,
			Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)},
			Ports: []registry.Port{{Name: "http", Number: 8080, Protocol: registry.HTTP}, {Name: "grpc", Number: 9090, Protocol: registry.GRPC},
				{Name: "tcp", Number: 5432, Protocol: registry.TCP}},
		})
		yaml += fmt.Sprintf(`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  hosts: [%[1]s]
  http:
  - match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /api}}]
    route: [{destination: {host: %[1]s, subset: v2}}]
  - route:
    - {destination: {host: %[1]s, subset: v1}, weight: 90}
    - {destination: {host: %[1]s, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  host: %[1]s
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`, name, ns)
	}
	c := simtest.MustParse(yaml)
	in.VirtualServices, in.DestinationRules = c.VirtualServices, c.DestinationRules
	return snapshot.Build(in)
}

// sidecarOnce is the benchmarked work: a sidecar's listeners and routes.
func sidecarOnce(s *snapshot.Snapshot, p *node.Proxy) error {
	if len(Sidecar(s, p)) == 0 || len(route.Outbound(s, p)) == 0 || len(route.Inbound(s, p)) == 0 {
		return fmt.Errorf("nothing generated")
	}
	return nil
}

func benchSidecar(b *testing.B, n int, mode node.Interception) {
	s := bigMesh(n)
	p := simtest.SidecarProxy("productpage-v1", mode)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := sidecarOnce(s, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSidecarExplicit1000(b *testing.B) { benchSidecar(b, 1000, node.Explicit) }
func BenchmarkSidecarRedirect1000(b *testing.B) { benchSidecar(b, 1000, node.Redirect) }

// TestBenchmarkSize1 runs the benchmarks' code at size 1 so it cannot rot, and checks
// what it generates.
func TestBenchmarkSize1(t *testing.T) {
	s := bigMesh(1)
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		p := simtest.SidecarProxy("productpage-v1", mode)
		ls, rcs := generate(t, s, p)
		sim := simtest.New(ls, rcs)
		r := simtest.Request{Address: "10.0.0.0", Port: 8080, Host: "svc0.ns0:8080", Path: "/api/x", Headers: map[string]string{"end-user": "jason"}}
		if mode == node.Explicit {
			r.Address, r.Port = p.IP.String(), 15001
		}
		res, err := sim.Run(r)
		if err != nil || res.Cluster != "outbound|8080|v2|svc0.ns0.svc.cluster.local" {
			t.Fatalf("%s: %q %v", mode, res.Cluster, err)
		}
	}
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		if err := sidecarOnce(s, simtest.SidecarProxy("productpage-v1", mode)); err != nil {
			t.Fatal(err)
		}
	}
}

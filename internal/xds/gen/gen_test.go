package gen

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds"
	"github.com/weft-mesh/weft/internal/xds/gen/cluster"
	"github.com/weft-mesh/weft/internal/xds/gen/listener"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

// selectorConfigs makes every label selector the class key must honour matter: a
// Sidecar for reviews-v2 only, a VirtualService match on sourceLabels, a
// DestinationRule with a workloadSelector and one with failoverPriority on a label.
const selectorConfigs = `
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-v2, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews, version: v2}}
  egress: [{hosts: [default/ratings.default.svc.cluster.local]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{sourceLabels: {version: v3}}]
    route: [{destination: {host: ratings, subset: v1}}]
  - route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details-selected, namespace: default}
spec:
  host: details
  workloadSelector: {matchLabels: {app: productpage}}
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s}
    loadBalancer:
      localityLbSetting: {enabled: true, failoverPriority: [version]}
`

// direct is what the generators give for p without the class cache.
func direct(s *snapshot.Snapshot, p *node.Proxy) xds.Resources {
	cs := cluster.Sidecar(s, p)
	return xds.Resources{
		resourcev3.ClusterType:  sortedByName(cs, func(c *clusterv3.Cluster) string { return c.GetName() }),
		resourcev3.ListenerType: sortedByName(listener.Sidecar(s, p), func(l *listenerv3.Listener) string { return l.GetName() }),
		resourcev3.RouteType: sortedByName(append(route.Outbound(s, p), route.Inbound(s, p)...),
			func(r *routev3.RouteConfiguration) string { return r.GetName() }),
		resourcev3.EndpointType: sortedByName(cluster.Endpoints(s, p, cs),
			func(e *endpointv3.ClusterLoadAssignment) string { return e.GetClusterName() }),
	}
}

func encode(t *testing.T, rs []types.Resource) []string {
	t.Helper()
	var out []string
	for _, r := range rs {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cachev3.GetResourceName(r)+"\x00"+string(b))
	}
	return out
}

// TestClassSharedEqualsDirect: with the class cache, every sidecar gets exactly the
// bytes the generators give it alone, whatever selectors look at its labels, in both
// interception modes.
func TestClassSharedEqualsDirect(t *testing.T) {
	s := simtest.Bookinfo(simtest.MustParse(selectorConfigs))
	g := New(s)
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		for _, w := range simtest.BookinfoWorkloads {
			p := simtest.SidecarProxy(w.Name, mode)
			t.Run(fmt.Sprintf("%s/%s", mode, w.Name), func(t *testing.T) {
				got, err := g.Generate(p)
				if err != nil {
					t.Fatal(err)
				}
				want := direct(s, p)
				for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.EndpointType} {
					if g, w := encode(t, got[typ]), encode(t, want[typ]); !slices.Equal(g, w) {
						t.Errorf("%s: %d resources differ from the direct generation (%d)", xds.ShortName(typ), len(g), len(w))
					}
				}
			})
		}
	}
}

// TestClassSharing: proxies alike in everything the key names share their outbound
// resources (the same pointers); a selector-named label that differs splits them.
func TestClassSharing(t *testing.T) {
	s := simtest.Bookinfo(simtest.MustParse(selectorConfigs))
	g := New(s)
	outbound := func(p *node.Proxy) types.Resource {
		res, err := g.Generate(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res[resourcev3.ClusterType] {
			if cachev3.GetResourceName(r) == "outbound|9080||details.default.svc.cluster.local" {
				return r
			}
		}
		t.Fatalf("%s: no details cluster", p.ID)
		return nil
	}
	// Two reviews-v1 pods: they differ in workload, address and a label no selector
	// names.
	a := simtest.SidecarProxy("reviews-v1", node.Explicit)
	b := simtest.SidecarProxy("reviews-v1", node.Explicit)
	b.ID, b.Workload, b.Labels["pod-template-hash"] = "other", "reviews-v1-b", "abc"
	b.IP, b.AppIP = netip.MustParseAddr("127.2.0.33"), netip.MustParseAddr("127.1.0.33")
	if outbound(a) != outbound(b) {
		t.Errorf("proxies differing only in an unselected label do not share")
	}
	c := simtest.SidecarProxy("productpage-v1", node.Explicit) // selected by details-selected
	if outbound(a) == outbound(c) {
		t.Errorf("proxies with different selected labels share")
	}
	// A new snapshot starts new classes: nothing built from the old one is reused.
	before := outbound(a)
	g.Set(simtest.Bookinfo(simtest.MustParse(selectorConfigs)))
	if outbound(a) == before {
		t.Errorf("a new snapshot reused the old snapshot's class")
	}
}

// bigService is the i-th extra service of the benchmark mesh, with two endpoints.
func bigService(i int) *registry.Service {
	name := fmt.Sprintf("svc-%d", i)
	return &registry.Service{
		Hostname: name + ".default.svc.cluster.local", Name: name, Namespace: "default",
		Ports: []registry.Port{{Name: "http", Number: 8080, Protocol: registry.HTTP}},
	}
}

// BenchmarkGenerateSidecars generates 100 sidecars of one namespace over a mesh of 1,000
// services (what a push does), sharing their class.
func BenchmarkGenerateSidecars(b *testing.B) {
	benchGenerate(b, 1000, 100)
}

// TestBenchmarkGenerateSidecarsTwin is the size-1 twin.
func TestBenchmarkGenerateSidecarsTwin(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchGenerate(b, 1, 1) })
	if res.N == 0 {
		t.Fatal("benchmark did not run")
	}
}

func benchGenerate(b *testing.B, services, proxies int) {
	in := simtest.BookinfoInput()
	for i := range services {
		in.Services = append(in.Services, bigService(i))
	}
	s := snapshot.Build(in)
	ps := make([]*node.Proxy, proxies)
	for i := range ps {
		p := simtest.SidecarProxy("reviews-v1", node.Explicit)
		p.ID = fmt.Sprintf("p%d", i)
		ps[i] = p
	}
	g := New(s)
	b.ReportAllocs()
	for b.Loop() {
		g.Set(snapshot.Build(in)) // a push: a new snapshot
		for _, p := range ps {
			if _, err := g.Generate(p); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestClassReuseAcrossSnapshots: a snapshot whose registry and DestinationRules are the
// previous one's objects reuses the previous clusters and endpoints (a VirtualService
// change rebuilds only routes); a changed DestinationRule rebuilds them; either way the
// output equals a fresh generation.
func TestClassReuseAcrossSnapshots(t *testing.T) {
	base := simtest.BookinfoInput(simtest.MustParse(selectorConfigs))
	p := simtest.SidecarProxy("reviews-v1", node.Explicit)
	g := New(snapshot.Build(base))
	first, err := g.Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, in snapshot.Input, wantReuse bool) {
		t.Helper()
		s := snapshot.Build(in)
		g.Set(s)
		got, err := g.Generate(p)
		if err != nil {
			t.Fatal(err)
		}
		reused := got[resourcev3.ClusterType][0] == first[resourcev3.ClusterType][0] &&
			got[resourcev3.EndpointType][0] == first[resourcev3.EndpointType][0]
		if reused != wantReuse {
			t.Errorf("%s: clusters reused %v, want %v", name, reused, wantReuse)
		}
		// The workload's own listeners follow the same rule here (the changes touch
		// neither its ports nor its security).
		if lr := got[resourcev3.ListenerType][0] == first[resourcev3.ListenerType][0]; lr != wantReuse {
			t.Errorf("%s: listeners reused %v, want %v", name, lr, wantReuse)
		}
		want := direct(s, p)
		for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.EndpointType} {
			if a, b := encode(t, got[typ]), encode(t, want[typ]); !slices.Equal(a, b) {
				t.Errorf("%s: %s differs from a fresh generation", name, xds.ShortName(typ))
			}
		}
	}
	vs := base
	vs.VirtualServices = append(slices.Clip(base.VirtualServices), simtest.MustParse(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: default}
spec:
  hosts: [details]
  http: [{route: [{destination: {host: details}}], timeout: 3s}]
`).VirtualServices...)
	// The Sidecar resource in selectorConfigs makes VirtualServices cluster inputs too
	// (they widen egress scopes), so drop it to see the reuse.
	noSidecar := base
	noSidecar.Sidecars = nil
	g.Set(snapshot.Build(noSidecar))
	if first, err = g.Generate(p); err != nil {
		t.Fatal(err)
	}
	vsNoSidecar := vs
	vsNoSidecar.Sidecars = nil
	check("VirtualService added", vsNoSidecar, true)
	check("VirtualService added, with a Sidecar resource", vs, false)
	dr := noSidecar
	dr.DestinationRules = append(slices.Clip(base.DestinationRules), simtest.MustParse(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: productpage, namespace: default}
spec: {host: productpage, trafficPolicy: {connectionPool: {tcp: {maxConnections: 9}}}}
`).DestinationRules...)
	check("DestinationRule added", dr, false)
}

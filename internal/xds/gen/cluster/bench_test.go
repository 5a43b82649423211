package cluster

import (
	"fmt"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// largeMesh has n services with three versioned instances each and a DestinationRule
// with three subsets per service.
func largeMesh(n int) *snapshot.Snapshot {
	in := snapshot.Input{Mesh: snapshot.DefaultMeshConfig()}
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		host := name + ".default.svc.cluster.local"
		in.Services = append(in.Services, &registry.Service{
			Hostname: host, Name: name, Namespace: "default",
			Ports: []registry.Port{{Name: "http", Number: 8080, Protocol: registry.HTTP}},
		})
		var subsets []*networking.Subset
		for v := range 3 {
			version := fmt.Sprintf("v%d", v+1)
			in.Instances = append(in.Instances, &registry.Instance{
				Service: host, ServicePort: 8080, Address: fmt.Sprintf("127.4.%d.%d", i/200, i%200*3+v+1), Port: 8080,
				Namespace: "default", Labels: map[string]string{"app": name, "version": version},
				ServiceAccount: name, Weight: 1, Healthy: true, Sidecar: true,
			})
			subsets = append(subsets, &networking.Subset{Name: version, Labels: map[string]string{"version": version}})
		}
		in.DestinationRules = append(in.DestinationRules, snapshot.Config[*networking.DestinationRule]{
			Meta: snapshot.Meta{Name: name, Namespace: "default"},
			Spec: &networking.DestinationRule{Host: name, Subsets: subsets},
		})
	}
	return snapshot.Build(in)
}

// sidecarOnce generates a sidecar's clusters and endpoints and checks their count.
func sidecarOnce(tb testing.TB, s *snapshot.Snapshot, n int) {
	p := sidecarProxy()
	cs := Sidecar(s, p)
	eps := Endpoints(s, p, cs)
	if len(cs) < 4*n || len(eps) != 4*n {
		tb.Fatalf("%d clusters, %d assignments for %d services", len(cs), len(eps), n)
	}
}

func BenchmarkSidecar100(b *testing.B) {
	s := largeMesh(100)
	b.ReportAllocs()
	for b.Loop() {
		sidecarOnce(b, s, 100)
	}
}

// TestBenchmarkSidecarTwin is the size-1 twin of BenchmarkSidecar100.
func TestBenchmarkSidecarTwin(t *testing.T) {
	sidecarOnce(t, largeMesh(1), 1)
}

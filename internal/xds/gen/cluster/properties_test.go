package cluster

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand"
	"net"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// TestValidateAll: every generated Cluster and ClusterLoadAssignment of every golden
// scenario passes the protos' own validation (what Envoy checks first).
func TestValidateAll(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			cs, eps := generate(snapshot.Build(sc.input(t)), sc.proxy())
			if len(cs) == 0 {
				t.Fatal("no clusters")
			}
			for _, c := range cs {
				if err := c.ValidateAll(); err != nil {
					t.Errorf("cluster %q: %v", c.GetName(), err)
				}
			}
			for _, e := range eps {
				if err := e.ValidateAll(); err != nil {
					t.Errorf("endpoints %q: %v", e.GetClusterName(), err)
				}
			}
		})
	}
}

// TestEveryEDSClusterHasEndpoints: one ClusterLoadAssignment per EDS cluster, named by
// its service_name; none for other clusters; every locality has a Locality, a non-zero
// weight and contiguous priorities (what grpc-go requires).
func TestEveryEDSClusterHasEndpoints(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			cs, eps := generate(snapshot.Build(sc.input(t)), sc.proxy())
			var want []string
			for _, c := range cs {
				if c.GetType() == clusterv3.Cluster_EDS {
					want = append(want, c.GetEdsClusterConfig().GetServiceName())
				}
			}
			var got []string
			for _, e := range eps {
				got = append(got, e.GetClusterName())
				checkLocalities(t, e)
			}
			for _, c := range cs {
				if la := c.GetLoadAssignment(); la != nil {
					checkLocalities(t, la)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("assignments %v, want one per EDS cluster %v", got, want)
			}
		})
	}
}

func checkLocalities(t *testing.T, e *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	var maxPrio uint32
	prios := map[uint32]bool{}
	for i, l := range e.GetEndpoints() {
		if l.GetLocality() == nil {
			t.Errorf("%s: endpoints[%d]: no locality", e.GetClusterName(), i)
		}
		if l.GetLoadBalancingWeight().GetValue() == 0 {
			t.Errorf("%s: endpoints[%d]: zero locality weight", e.GetClusterName(), i)
		}
		prios[l.GetPriority()] = true
		maxPrio = max(maxPrio, l.GetPriority())
	}
	if len(e.GetEndpoints()) > 0 && int(maxPrio)+1 != len(prios) {
		t.Errorf("%s: priorities %v are not contiguous from 0", e.GetClusterName(), prios)
	}
}

// TestDeterministic: the same mesh given in any order yields the same bytes.
func TestDeterministic(t *testing.T) {
	mo := proto.MarshalOptions{Deterministic: true}
	encode := func(cs []*clusterv3.Cluster, eps []*endpointv3.ClusterLoadAssignment) []byte {
		var buf bytes.Buffer
		for _, c := range cs {
			b, err := mo.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(b)
		}
		for _, e := range eps {
			b, err := mo.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(b)
		}
		return buf.Bytes()
	}
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			want := encode(generate(snapshot.Build(sc.input(t)), sc.proxy()))
			for seed := int64(1); seed <= 5; seed++ {
				in := sc.input(t)
				r := rand.New(rand.NewSource(seed))
				shuffle(r, in.Services)
				shuffle(r, in.Instances)
				shuffle(r, in.DestinationRules)
				shuffle(r, in.ServiceEntries)
				shuffle(r, in.VirtualServices)
				shuffle(r, in.Sidecars)
				if got := encode(generate(snapshot.Build(in), sc.proxy())); !bytes.Equal(got, want) {
					t.Fatalf("seed %d: output differs from the unshuffled input's", seed)
				}
			}
		})
	}
}

func shuffle[T any](r *rand.Rand, s []T) {
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
}

func clusterNames(cs []*clusterv3.Cluster) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.GetName())
	}
	return out
}

// TestSidecarScoping: a Sidecar resource with egress hosts limits the outbound
// clusters to those hosts (and the special and inbound clusters).
func TestSidecarScoping(t *testing.T) {
	cases := []struct {
		name    string
		sidecar string
		want    []string
	}{
		{
			name: "reviews only",
			sidecar: `
kind: Sidecar
metadata:
  name: default
spec:
  egress:
  - hosts: ["./reviews.default.svc.cluster.local"]
`,
			want: []string{"BlackHoleCluster", "PassthroughCluster", "inbound|9080||",
				"outbound|9080|v1|reviews.default.svc.cluster.local", "outbound|9080|v2|reviews.default.svc.cluster.local",
				"outbound|9080|v3|reviews.default.svc.cluster.local", "outbound|9080||reviews.default.svc.cluster.local"},
		},
		{
			name: "other namespace imports nothing",
			sidecar: `
kind: Sidecar
metadata:
  name: default
spec:
  egress:
  - hosts: ["istio-system/*"]
`,
			want: []string{"BlackHoleCluster", "PassthroughCluster", "inbound|9080||"},
		},
		{
			name: "mesh default in the root namespace reads . as the workload's namespace",
			sidecar: `
kind: Sidecar
metadata:
  name: default
  namespace: istio-system
spec:
  egress:
  - hosts: ["./ratings.default.svc.cluster.local"]
`,
			want: []string{"BlackHoleCluster", "PassthroughCluster", "inbound|9080||",
				"outbound|9080|v1|ratings.default.svc.cluster.local", "outbound|9080|v2-mysql-vm|ratings.default.svc.cluster.local",
				"outbound|9080|v2-mysql|ratings.default.svc.cluster.local", "outbound|9080|v2|ratings.default.svc.cluster.local",
				"outbound|9080||ratings.default.svc.cluster.local"},
		},
		{
			name: "a selected VirtualService's destinations come along",
			sidecar: `
kind: Sidecar
metadata:
  name: default
spec:
  egress:
  - hosts: ["./details.default.svc.cluster.local"]
---
kind: VirtualService
metadata:
  name: details-to-ratings
spec:
  hosts: [details]
  http:
  - route:
    - destination:
        host: ratings
        subset: v1
`,
			want: []string{"BlackHoleCluster", "PassthroughCluster", "inbound|9080||",
				"outbound|9080|v1|details.default.svc.cluster.local", "outbound|9080|v1|ratings.default.svc.cluster.local",
				"outbound|9080|v2-mysql-vm|ratings.default.svc.cluster.local", "outbound|9080|v2-mysql|ratings.default.svc.cluster.local",
				"outbound|9080|v2|details.default.svc.cluster.local", "outbound|9080|v2|ratings.default.svc.cluster.local",
				"outbound|9080||details.default.svc.cluster.local", "outbound|9080||ratings.default.svc.cluster.local"},
		},
		{
			name: "a workloadSelector Sidecar for another workload does not apply",
			sidecar: `
kind: Sidecar
metadata:
  name: reviews-only
spec:
  workloadSelector:
    labels: {app: reviews}
  egress:
  - hosts: ["~/*"]
`,
			want: nil, // every service: compared by count below
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := bookinfo()
			loadYAML(t, &in, istioSamples+"/destination-rule-all.yaml")
			addYAML(t, &in, "sidecar.yaml", tc.sidecar)
			s := snapshot.Build(in)
			cs := Sidecar(s, sidecarProxy())
			got := clusterNames(cs)
			if tc.want == nil {
				all := clusterNames(Sidecar(snapshot.Build(withRules(t, "destination-rule-all.yaml")), sidecarProxy()))
				if !slices.Equal(got, all) {
					t.Fatalf("clusters %v, want the unscoped %v", got, all)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("clusters\n got %v\nwant %v", got, tc.want)
			}
			// Endpoints agree with the scope: a cluster outside it has no assignment.
			for _, e := range Endpoints(s, sidecarProxy(), cs) {
				if !slices.Contains(tc.want, e.GetClusterName()) {
					t.Errorf("assignment for out-of-scope %q", e.GetClusterName())
				}
			}
		})
	}
}

func withRules(t *testing.T, files ...string) snapshot.Input {
	in := bookinfo()
	for _, f := range files {
		loadYAML(t, &in, istioSamples+"/"+f)
	}
	return in
}

// TestProxyAccepts: weft-proxy's upstream manager compiles every generated cluster and
// assignment of the sidecar and gateway scenarios (the proxy NACKs what it cannot
// apply). DNS lookups are refused locally so that no query leaves the machine.
func TestProxyAccepts(t *testing.T) {
	noDNS := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("test: no DNS")
	}}
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			p := sc.proxy()
			if p.Type == node.GRPC {
				t.Skip("proxyless clusters are for grpc-go (certificate providers), not weft-proxy")
			}
			cs, eps := generate(snapshot.Build(sc.input(t)), p)
			m := upstream.NewManager(upstream.Options{
				Stats: stats.New(), Log: slog.New(slog.DiscardHandler), Resolver: noDNS,
			})
			defer m.Close()
			if err := m.Update(cs); err != nil {
				t.Fatalf("Update: %v", err)
			}
			if err := m.UpdateEndpoints(eps); err != nil {
				t.Fatalf("UpdateEndpoints: %v", err)
			}
			for _, c := range cs {
				if m.Get(c.GetName()) == nil {
					t.Errorf("cluster %q not installed", c.GetName())
				}
			}
			// The subset cluster holds only the subset's endpoint.
			if c := m.Get(names.Cluster(names.Outbound, 9080, "v2", "reviews.default.svc.cluster.local")); c != nil {
				var addrs []string
				for _, h := range c.Hosts() {
					addrs = append(addrs, h.Addr())
				}
				if !slices.Equal(addrs, []string{"127.2.0.4:9080"}) {
					t.Errorf("reviews v2 hosts %v, want [127.2.0.4:9080]", addrs)
				}
			}
			for _, n := range m.SecretNames() {
				if !strings.HasPrefix(n, "default") && n != "ROOTCA" {
					t.Errorf("unexpected SDS secret %q", n)
				}
			}
		})
	}
}

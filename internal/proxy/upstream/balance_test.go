package upstream

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// picks counts which address n picks land on.
func picks(t *testing.T, c *Cluster, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		h, err := c.Pick(nil, netipZero)
		if err != nil {
			t.Fatal(err)
		}
		got[h.Addr()]++
	}
	return got
}

func within(got, want, tolerance int) bool { return got >= want-tolerance && got <= want+tolerance }

func TestLocalityWeights(t *testing.T) {
	m, _ := newTestManager(t, Options{})
	cl := edsCluster("loc", "")
	cl.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
		LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
	}}
	mustUpdate(t, m, cl)
	la := &endpointv3.ClusterLoadAssignment{ClusterName: "loc", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{Region: "r", Zone: "a"}, LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(t, "127.0.0.1:1001")}},
		{Locality: &corev3.Locality{Region: "r", Zone: "b"}, LoadBalancingWeight: wrapperspb.UInt32(3),
			LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(t, "127.0.0.1:1002")}},
	}}
	if err := m.UpdateEndpoints([]*endpointv3.ClusterLoadAssignment{la}); err != nil {
		t.Fatal(err)
	}
	got := picks(t, getCluster(t, m, "loc"), 4000)
	if !within(got["127.0.0.1:1001"], 1000, 200) || !within(got["127.0.0.1:1002"], 3000, 200) {
		t.Fatalf("locality weights 1:3 gave %v", got)
	}
	for _, h := range m.Snapshot()[0].Hosts {
		if h.Region != "r" || (h.Zone != "a" && h.Zone != "b") {
			t.Fatalf("snapshot locality %+v", h)
		}
	}
}

func TestPrioritySpillWithOverprovisioning(t *testing.T) {
	m, _ := newTestManager(t, Options{})
	cl := edsCluster("spill", "")
	mustUpdate(t, m, cl)
	la := &endpointv3.ClusterLoadAssignment{ClusterName: "spill", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Priority: 0, LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(t, "127.0.0.1:2001"), lbEndpoint(t, "127.0.0.1:2002")}},
		{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(t, "127.0.0.1:2003")}},
	}}
	// One of the two P0 hosts is unhealthy: P0 health = 1/2 × 140% = 70%, so P1 takes 30%.
	la.Endpoints[0].LbEndpoints[1].HealthStatus = corev3.HealthStatus_UNHEALTHY
	if err := m.UpdateEndpoints([]*endpointv3.ClusterLoadAssignment{la}); err != nil {
		t.Fatal(err)
	}
	c := getCluster(t, m, "spill")
	got := picks(t, c, 4000)
	if got["127.0.0.1:2002"] != 0 || !within(got["127.0.0.1:2001"], 2800, 250) || !within(got["127.0.0.1:2003"], 1200, 250) {
		t.Fatalf("spill with overprovisioning 140: %v, want about 2800/1200", got)
	}
	// overprovisioning_factor 200: P0 at 50% available is 100% healthy, no spill.
	la.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(200)}
	if err := m.UpdateEndpoints([]*endpointv3.ClusterLoadAssignment{la}); err != nil {
		t.Fatal(err)
	}
	got = picks(t, c, 1000)
	if got["127.0.0.1:2001"] != 1000 {
		t.Fatalf("overprovisioning 200: %v, want all on P0", got)
	}
}

func TestLbPolicies(t *testing.T) {
	for _, p := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_RANDOM,
		clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(p.String(), func(t *testing.T) {
			m, _ := newTestManager(t, Options{})
			cl := staticCluster(t, "p", "127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003")
			cl.LbPolicy = p
			mustUpdate(t, m, cl)
			got := picks(t, getCluster(t, m, "p"), 300)
			if len(got) != 3 {
				t.Fatalf("%v reached %v, want all three hosts", p, got)
			}
		})
	}
}

package proxy

import (
	"log/slog"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestApplyUndecodableResource: a CDS or EDS resource that does not decode is NACKed
// with its name, and the last good configuration stays, clusters and endpoints alike
// (the resources are decoded one at a time while the manager compiles them, so the
// bad one comes after good ones were already compiled).
func TestApplyUndecodableResource(t *testing.T) {
	p, err := New(Options{Bootstrap: &bootstrapv3.Bootstrap{}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.clusters.Close()
	c0, e0 := meshCluster(t, 0)
	c1, e1 := meshCluster(t, 1)
	name0 := "outbound|80||svc-0.bench.svc.cluster.local"
	if err := p.Apply(TypeCluster, "1", map[string]*anypb.Any{name0: c0}); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(TypeEndpoint, "1", map[string]*anypb.Any{name0: e0}); err != nil {
		t.Fatal(err)
	}
	hosts := func() int { return len(p.clusters.Get(name0).Hosts()) }
	if hosts() != 2 {
		t.Fatalf("%d hosts, want 2", hosts())
	}

	// svc-1's endpoints under svc-0's name: applied, they would replace its hosts.
	var moved endpointv3.ClusterLoadAssignment
	if err := e1.UnmarshalTo(&moved); err != nil {
		t.Fatal(err)
	}
	moved.ClusterName = name0
	e0moved, err := anypb.New(&moved)
	if err != nil {
		t.Fatal(err)
	}
	bad := &anypb.Any{TypeUrl: c1.GetTypeUrl(), Value: []byte{0xff, 0xff, 0xff}}
	for _, tc := range []struct {
		typ       string
		resources map[string]*anypb.Any
	}{
		// "a-bad" sorts first, "z-good" last: decoded before and after the bad one.
		{TypeCluster, map[string]*anypb.Any{"a-bad": bad, name0: c0, "z-good": c1}},
		{TypeEndpoint, map[string]*anypb.Any{"a-bad": bad, name0: e0moved, "z-good": e1}},
	} {
		err := p.Apply(tc.typ, "2", tc.resources)
		if err == nil || !strings.Contains(err.Error(), `resource "a-bad"`) {
			t.Errorf("%s with an undecodable resource: error %v, want one naming resource \"a-bad\"", shortType(tc.typ), err)
		}
	}
	if got := len(p.clusters.Snapshot()); got != 1 {
		t.Errorf("%d clusters after the NACKed update, want the 1 of the last good one", got)
	}
	if hosts() != 2 || p.clusters.Get(name0).Hosts()[0].Addr() != "10.0.0.1:8080" {
		t.Errorf("the cluster's hosts changed with a NACKed assignment: %d hosts", hosts())
	}
}

package xds

import (
	"context"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	stream "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
)

// TestSotwCacheWatches drives the cache as go-control-plane's SotW server does: a
// wildcard request is answered with every resource, in name order, from the shared
// encodings; its ACK waits; a snapshot that changes the type answers it, one that does
// not leaves it waiting; a named request gets the named subset, and naming one more
// resource at the same version is answered at once.
func TestSotwCacheWatches(t *testing.T) {
	c := newSotwCache(gcpLogger{nil})
	memo := newEncodingMemo()
	snap := func(names ...string) *proxySnapshot {
		var cs []types.Resource
		for _, n := range names {
			cs = append(cs, edsCluster(n))
		}
		s, _, err := buildSnapshotMemo(Resources{resource.ClusterType: cs}, memo)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	node := &core.Node{Id: "p1"}
	ch := make(chan cache.Response, 8)
	watch := func(version string, sub stream.Subscription, names ...string) {
		t.Helper()
		req := &discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, VersionInfo: version, ResourceNames: names}
		if _, err := c.CreateWatch(req, sub, ch); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(sub *stream.Subscription) (string, []string) {
		t.Helper()
		select {
		case r := <-ch:
			out, err := r.GetDiscoveryResponse()
			if err != nil {
				t.Fatal(err)
			}
			sub.SetReturnedResources(r.GetReturnedResources())
			var names []string
			for _, a := range out.GetResources() {
				var cl = edsCluster("")
				if err := a.UnmarshalTo(cl); err != nil {
					t.Fatal(err)
				}
				names = append(names, cl.GetName())
			}
			return out.GetVersionInfo(), names
		default:
			return "", nil
		}
	}
	if err := c.SetSnapshot(context.Background(), "p1", snap("b", "a", "c")); err != nil {
		t.Fatal(err)
	}

	wild := stream.NewSotwSubscription(nil, true)
	watch("", wild)
	v1, got := recv(&wild)
	if v1 == "" || len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("wildcard: version %q, %v; want a b c", v1, got)
	}
	watch(v1, wild) // the ACK
	if v, _ := recv(&wild); v != "" {
		t.Fatalf("ACK answered with %q; want it to wait", v)
	}
	// Same content again: the waiting watch stays.
	if err := c.SetSnapshot(context.Background(), "p1", snap("a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	if v, _ := recv(&wild); v != "" {
		t.Fatalf("unchanged snapshot answered with %q", v)
	}
	if err := c.SetSnapshot(context.Background(), "p1", snap("a", "c")); err != nil {
		t.Fatal(err)
	}
	v2, got := recv(&wild)
	if v2 == "" || v2 == v1 || len(got) != 2 {
		t.Fatalf("changed snapshot: version %q (was %q), %v", v2, v1, got)
	}

	// A second stream naming resources.
	named := stream.NewSotwSubscription([]string{"c", "zz"}, true)
	watch("", named, "c", "zz")
	if v, got := recv(&named); v != v2 || len(got) != 1 || got[0] != "c" {
		t.Fatalf("named: %q %v; want [c] at %q", v, got, v2)
	}
	watch(v2, named, "c", "zz")
	if v, _ := recv(&named); v != "" {
		t.Fatalf("named ACK answered")
	}
	named.SetResourceSubscription([]string{"a", "c"})
	watch(v2, named, "a", "c")
	if v, got := recv(&named); v != v2 || len(got) != 2 || got[0] != "a" || got[1] != "c" {
		t.Fatalf("newly named resource: %q %v; want [a c] at once", v, got)
	}

	// Forgotten nodes have no snapshot.
	c.ClearSnapshot("p1")
	if _, err := c.GetSnapshot("p1"); err == nil {
		t.Errorf("snapshot kept after ClearSnapshot")
	}
}

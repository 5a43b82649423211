package xds

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

func TestVersion(t *testing.T) {
	a, b := edsCluster("a"), edsCluster("b")
	v1, err := Version([]types.Resource{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if len(v1) != 16 {
		t.Errorf("version %q: want 16 hex digits", v1)
	}
	if v2, _ := Version([]types.Resource{b, a}); v2 != v1 {
		t.Errorf("order changed the version: %q vs %q", v1, v2)
	}
	if v3, _ := Version([]types.Resource{edsCluster("a"), edsCluster("b")}); v3 != v1 {
		t.Errorf("equal content, different version")
	}
	changed := edsCluster("b")
	changed.LbPolicy = cluster.Cluster_LEAST_REQUEST
	if v4, _ := Version([]types.Resource{a, changed}); v4 == v1 {
		t.Errorf("changed content, same version")
	}
	if v5, _ := Version(nil); v5 == "" || v5 == v1 {
		t.Errorf("empty version %q", v5)
	}
}

func TestBuildSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  Resources
		want string // error substring; "" = ok
	}{
		{"ok", Resources{resource.ClusterType: {edsCluster("a")}, resource.EndpointType: {cla("a", "127.0.0.1", 1)}}, ""},
		{"empty", Resources{}, ""},
		{"wrong message", Resources{resource.ListenerType: {edsCluster("a")}}, "LDS resource[0]: is a envoy.config.cluster.v3.Cluster"},
		{"no name", Resources{resource.ClusterType: {edsCluster("")}}, "CDS resource[0]: name is empty"},
		{"duplicate", Resources{resource.ClusterType: {edsCluster("a"), edsCluster("a")}}, `CDS resource "a": name is not unique`},
		{"unknown type", Resources{"type.googleapis.com/foo.Bar": {edsCluster("a")}}, "not an xDS resource type"},
		{"nil", Resources{resource.ClusterType: {nil}}, "nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, versions, err := buildSnapshot(tc.res)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The five base types are always present, each with its own version.
			for _, typ := range baseTypes {
				if versions[typ] == "" || snap.GetVersion(typ) != versions[typ] {
					t.Errorf("%s: version %q, snapshot %q", ShortName(typ), versions[typ], snap.GetVersion(typ))
				}
				if want := len(tc.res[typ]); len(snap.types[typ].items) != want || len(snap.cacheSnapshot().GetResources(typ)) != want {
					t.Errorf("%s: %d resources, want %d", ShortName(typ), len(snap.types[typ].items), want)
				}
			}
		})
	}
}

// meshResources is a proxy's config of n clusters, with their CLAs and one listener.
func meshResources(n int) Resources {
	res := Resources{}
	for i := range n {
		name := fmt.Sprintf("outbound|9080||svc%d.default.svc.cluster.local", i)
		res[resource.ClusterType] = append(res[resource.ClusterType], edsCluster(name))
		res[resource.EndpointType] = append(res[resource.EndpointType], cla(name, "127.0.0.1", uint32(10000+i)))
	}
	res[resource.ListenerType] = []types.Resource{apiListener("l", "*", "c")}
	return res
}

func benchBuildSnapshot(b *testing.B, n int) {
	res := meshResources(n)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := buildSnapshot(res); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildSnapshot is the per-proxy cost of versioning a push's output.
func BenchmarkBuildSnapshot(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) { benchBuildSnapshot(b, n) })
	}
}

func TestBenchBuildSnapshotTwin(t *testing.T) {
	r := testing.Benchmark(func(b *testing.B) { benchBuildSnapshot(b, 1) })
	if r.N == 0 {
		t.Fatal("benchmark did not run")
	}
}

// TestEncoded: what the snapshot cache holds marshals to the resource's own bytes (what
// every response carries) and names the resource, and the memo shares one encoding,
// and one resource map, among the proxies given the same resources.
func TestEncoded(t *testing.T) {
	a := edsCluster("a")
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	memo := newEncodingMemo()
	e1, err := memo.encode(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cache.MarshalResource(e1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoded marshals to %x, want %x", got, want)
	}
	if n := cache.GetResourceName(e1); n != "a" {
		t.Errorf("name %q, want a", n)
	}
	var back cluster.Cluster
	if err := proto.Unmarshal(got, &back); err != nil || !proto.Equal(&back, a) {
		t.Errorf("decoded %v (%v), want %v", &back, err, a)
	}
	if e2, _ := memo.encode(a); e2 != e1 {
		t.Errorf("same resource encoded twice")
	}
	// Survives one rotation (used by the last push), not two.
	memo.rotate()
	if e3, _ := memo.encode(a); e3 != e1 {
		t.Errorf("encoding lost after one rotation")
	}
	memo.rotate()
	memo.rotate()
	if e4, _ := memo.encode(a); e4 == e1 {
		t.Errorf("encoding kept after two rotations without use")
	}

	res := Resources{resource.ClusterType: {a, edsCluster("b")}}
	s1, v1, err := buildSnapshotMemo(res, memo)
	if err != nil {
		t.Fatal(err)
	}
	s2, v2, err := buildSnapshotMemo(Resources{resource.ClusterType: {a, res[resource.ClusterType][1]}}, memo)
	if err != nil {
		t.Fatal(err)
	}
	if v1[resource.ClusterType] != v2[resource.ClusterType] {
		t.Fatalf("versions differ")
	}
	m1, m2 := s1.types[resource.ClusterType], s2.types[resource.ClusterType]
	if len(m1.items) != 2 || m1 != m2 {
		t.Errorf("equal types of two proxies: resources not shared (%d resources)", len(m1.items))
	}
	if cur, _ := memo.encode(a); m1.anys[0] != cur.any || !bytes.Equal(m1.anys[0].GetValue(), want) || m1.anys[0].GetTypeUrl() != resource.ClusterType {
		t.Errorf("response Any %v is not the shared encoding", m1.anys[0])
	}
	// The memo changes nothing in the versions.
	if _, v3, _ := buildSnapshot(res); v3[resource.ClusterType] != v1[resource.ClusterType] {
		t.Errorf("memo changed the version")
	}
}

// TestBuildSnapshotFromReusesUnchangedTypes: a type whose resources are the previous
// objects keeps its encoded form; a changed type is rebuilt; versions match a fresh build.
func TestBuildSnapshotFromReusesUnchangedTypes(t *testing.T) {
	memo := newEncodingMemo()
	a, b := edsCluster("a"), cla("a", "127.0.0.1", 80)
	prev := Resources{resource.ClusterType: {a}, resource.EndpointType: {b}}
	s1, _, err := buildSnapshotFrom(prev, memo, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	next := Resources{resource.ClusterType: {a}, resource.EndpointType: {cla("a", "127.0.0.2", 80)}}
	s2, v2, err := buildSnapshotFrom(next, memo, prev, s1)
	if err != nil {
		t.Fatal(err)
	}
	if s2.types[resource.ClusterType] != s1.types[resource.ClusterType] {
		t.Errorf("unchanged CDS rebuilt")
	}
	if s2.types[resource.EndpointType] == s1.types[resource.EndpointType] || v2[resource.EndpointType] == s1.GetVersion(resource.EndpointType) {
		t.Errorf("changed EDS kept")
	}
	_, fresh, _ := buildSnapshot(next)
	for typ, v := range fresh {
		if v2[typ] != v {
			t.Errorf("%s: version %q, fresh build %q", ShortName(typ), v2[typ], v)
		}
	}
}

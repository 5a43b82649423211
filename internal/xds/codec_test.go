package xds

import (
	"slices"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestResponseCodecSharedList: a response whose resources are a shared list is written
// from the shared encodings, as several buffers, and decodes to the same response as
// the plain protobuf codec gives; a copied list or an extra field goes the plain way.
func TestResponseCodecSharedList(t *testing.T) {
	c := newResponseCodec()
	snap, _, err := buildSnapshotMemo(Resources{resource.ClusterType: {edsCluster("b"), edsCluster("a")}}, newEncodingMemo())
	if err != nil {
		t.Fatal(err)
	}
	tr := snap.types[resource.ClusterType]
	for _, tc := range []struct {
		name   string
		resp   *discovery.DiscoveryResponse
		shared bool
	}{
		{"shared", &discovery.DiscoveryResponse{VersionInfo: tr.version, TypeUrl: resource.ClusterType, Nonce: "3", Resources: tr.anys}, true},
		{"copied list", &discovery.DiscoveryResponse{VersionInfo: "v", TypeUrl: resource.ClusterType, Resources: append([]*anypb.Any(nil), tr.anys...)}, false},
		{"extra field", &discovery.DiscoveryResponse{VersionInfo: "v", Resources: tr.anys, ControlPlane: &core.ControlPlane{Identifier: "x"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := c.Marshal(tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			if shared := len(data) > 2; shared != tc.shared {
				t.Errorf("%d buffers: written from shared encodings %v, want %v", len(data), shared, tc.shared)
			}
			var got discovery.DiscoveryResponse
			if err := proto.Unmarshal(data.Materialize(), &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got, tc.resp) {
				t.Errorf("decoded %v\nwant %v", &got, tc.resp)
			}
			if data.Len() != proto.Size(tc.resp) {
				t.Errorf("%d bytes, protobuf says %d", data.Len(), proto.Size(tc.resp))
			}
		})
	}
}

// TestResponseCodecRuns: resources encoded together go out as one buffer per run of
// neighbours; one encoded apart (earlier, for another list) splits the run; a batch
// larger than a block spans several. Every form decodes to the response protobuf gives.
func TestResponseCodecRuns(t *testing.T) {
	big := func(name string) types.Resource {
		c := edsCluster(name)
		c.AltStatName = strings.Repeat("x", 100<<10) // 3 of these exceed a block
		return c
	}
	for _, tc := range []struct {
		name    string
		earlier []types.Resource // encoded first, on their own
		list    []types.Resource
		runs    int // buffers holding resources
	}{
		{"together", nil, []types.Resource{edsCluster("a"), edsCluster("b"), edsCluster("c"), edsCluster("d")}, 1},
		{"one apart", []types.Resource{edsCluster("b")}, []types.Resource{edsCluster("a"), nil, edsCluster("c"), edsCluster("d")}, 3},
		{"blocks", nil, []types.Resource{big("a"), big("b"), big("c"), big("d"), big("e")}, 3}, // 2+2+1
	} {
		t.Run(tc.name, func(t *testing.T) {
			memo := newEncodingMemo()
			if _, err := memo.encodeAll(tc.earlier); err != nil {
				t.Fatal(err)
			}
			list := slices.Clone(tc.list)
			for i, r := range list {
				if r == nil {
					list[i] = tc.earlier[0]
				}
			}
			snap, _, err := buildSnapshotMemo(Resources{resource.ClusterType: list}, memo)
			if err != nil {
				t.Fatal(err)
			}
			tr := snap.types[resource.ClusterType]
			resp := &discovery.DiscoveryResponse{VersionInfo: tr.version, TypeUrl: resource.ClusterType, Nonce: "1", Resources: tr.anys}
			data, err := newResponseCodec().Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(data) - 2; got != tc.runs { // less the version and the tail
				t.Errorf("%d buffers of resources, want %d", got, tc.runs)
			}
			var got discovery.DiscoveryResponse
			if err := proto.Unmarshal(data.Materialize(), &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got, resp) {
				t.Errorf("decoded response differs from the one sent")
			}
			// A value shared with a response cannot grow into its neighbour.
			for _, a := range tr.anys {
				if cap(a.GetValue()) != len(a.GetValue()) {
					t.Errorf("Any value has room past its end (%d of %d)", len(a.GetValue()), cap(a.GetValue()))
				}
			}
		})
	}
}

// TestFollows: a run extends only over what is in its own block, right after it.
func TestFollows(t *testing.T) {
	block := make([]byte, 8)
	for _, tc := range []struct {
		name      string
		run, next []byte
		want      bool
	}{
		{"neighbour", block[0:4], block[4:8], true},
		{"run ends its block", block[0:4:4], block[4:8], false},
		{"gap", block[0:3], block[4:8], false},
		{"overlap", block[0:5], block[4:8], false},
		{"empty run", block[0:0], block[0:4], false},
		{"apart", block[0:4], make([]byte, 4), false},
	} {
		if got := follows(tc.run, tc.next); got != tc.want {
			t.Errorf("%s: follows %v, want %v", tc.name, got, tc.want)
		}
	}
}

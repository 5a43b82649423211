package xds

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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

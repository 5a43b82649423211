package main

import (
	"bytes"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestSimCodec: the simulated proxies' codec gives what they use (version, type, nonce,
// the marker inside a resource) and counts the bytes the plain decoding would.
func TestSimCodec(t *testing.T) {
	var resp discovery.DiscoveryResponse
	resp.VersionInfo, resp.TypeUrl, resp.Nonce = "v7", resourcev3.RouteType, "12"
	for _, prefix := range []string{"/a", "/bench-change-1-99", string(make([]byte, 300))} {
		rc := &routev3.RouteConfiguration{Name: "r" + prefix[:2], VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"},
			Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}}}}}}
		a, err := anypb.New(rc)
		if err != nil {
			t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	wire, err := proto.Marshal(&resp)
	if err != nil {
		t.Fatal(err)
	}
	var got discovery.DiscoveryResponse
	if err := newSimCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got); err != nil {
		t.Fatal(err)
	}
	if got.GetVersionInfo() != "v7" || got.GetTypeUrl() != resourcev3.RouteType || got.GetNonce() != "12" || len(got.GetResources()) != 3 {
		t.Fatalf("decoded %q %q %q, %d resources", got.GetVersionInfo(), got.GetTypeUrl(), got.GetNonce(), len(got.GetResources()))
	}
	if !bytes.Contains(got.GetResources()[1].GetValue(), []byte("bench-change-1-99")) || bytes.Contains(got.GetResources()[0].GetValue(), []byte("bench-change")) {
		t.Errorf("marker not found where it is")
	}
	if n := wireSize(&got); n != len(wire) {
		t.Errorf("wireSize %d, want %d", n, len(wire))
	}
}

package xds

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	xdsgrpc "google.golang.org/grpc/xds"

	"github.com/weft-mesh/weft/internal/node"
)

// TestGRPCGoXDSClientResolvesAndCalls proves the server against grpc-go's own xDS
// client: a proxyless client resolves xds:///echo:PORT through LDS (API listener,
// inline routes), CDS (EDS cluster) and EDS, then calls a real gRPC server on loopback.
// After an endpoint push to a second backend, its calls reach that one.
func TestGRPCGoXDSClientResolvesAndCalls(t *testing.T) {
	backend := func() (uint32, *health.Server) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g := grpc.NewServer(GRPCServerOptions()...)
		hs := health.NewServer()
		hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(g, hs)
		go g.Serve(lis)
		t.Cleanup(g.Stop)
		return uint32(lis.Addr().(*net.TCPAddr).Port), hs
	}
	port1, _ := backend()
	port2, hs2 := backend()
	// Backend two answers NOT_SERVING for "echo", so a call tells the backends apart.
	hs2.SetServingStatus("echo", healthpb.HealthCheckResponse_NOT_SERVING)

	mesh := newFakeMesh()
	target := fmt.Sprintf("echo:%d", port1)
	mesh.svc = target
	mesh.setEndpointPort(port1)
	var sawGRPC bool
	gen := GeneratorFunc(func(p *node.Proxy) (Resources, error) {
		if p.Type == node.GRPC {
			mesh.mu.Lock()
			sawGRPC = true
			mesh.mu.Unlock()
		}
		return mesh.Generate(p)
	})
	h := newHarness(t, mesh, Options{Generator: gen, Debounce: 20 * time.Millisecond})

	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "sidecar~127.0.0.1~client.default~default.svc.cluster.local", "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}}
}`, h.addr)
	builder, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	check := func() (healthpb.HealthCheckResponse_ServingStatus, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "echo"})
		return r.GetStatus(), err
	}
	var last error
	deadline := time.Now().Add(waitLong)
	for {
		st, err := check()
		if err == nil && st == healthpb.HealthCheckResponse_SERVING {
			break
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("grpc-go xDS client never reached backend one: %v", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mesh.mu.Lock()
	if !sawGRPC {
		t.Errorf("the client's node was not parsed as a proxyless gRPC client")
	}
	mesh.mu.Unlock()
	waitFor(t, "the client's ACKs", func() bool {
		ps, ok := statusOf(h.s, "sidecar~127.0.0.1~client.default~default.svc.cluster.local")
		return ok && ps.Type == node.GRPC && ps.PerType["LDS"].Synced() && ps.PerType["CDS"].Synced() && ps.PerType["EDS"].Synced()
	})

	// Move the endpoint: only EDS changes, and the client follows it.
	before, _ := statusOf(h.s, "sidecar~127.0.0.1~client.default~default.svc.cluster.local")
	mesh.setEndpointPort(port2)
	h.s.Push("registry")
	deadline = time.Now().Add(waitLong)
	for {
		st, err := check()
		if err == nil && st == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client never moved to backend two: %v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after, _ := statusOf(h.s, before.ID)
	if after.PerType["LDS"].Sent != before.PerType["LDS"].Sent || after.PerType["CDS"].Sent != before.PerType["CDS"].Sent ||
		after.PerType["EDS"].Sent == before.PerType["EDS"].Sent {
		t.Errorf("per-type versions before %+v after %+v: want only EDS to move", before.PerType, after.PerType)
	}
}

package router

import (
	"context"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestRealGRPC runs grpc-go's health service through the router: a unary call with a
// body and trailers, a trailers-only error, a server stream that must flow message by
// message, and a local reply seen as a gRPC status.
func TestRealGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	dead := prefixRoute("/dead.Service/", "dead")
	p := newProxy(t, oneVhost(dead, prefixRoute("/", "grpc")), []*clusterv3.Cluster{
		withHTTP2(t, staticCluster(t, "grpc", ln.Addr().String())),
		withHTTP2(t, staticCluster(t, "dead", deadAddr(t))),
	}, proxyOpt{h2c: true})

	cc, err := grpc.NewClient(p.srv.Listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary Check: %v %v", resp, err)
	}
	if info := p.nextInfo(); info.GRPCStatus != "0" {
		t.Errorf("unary grpc status %q", info.GRPCStatus)
	}

	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "no-such-service"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("trailers-only error: %v, want NotFound", err)
	}
	if info := p.nextInfo(); info.GRPCStatus != "5" {
		t.Errorf("trailers-only grpc status %q", info.GRPCStatus)
	}

	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	for _, want := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING} {
		// Each update is sent only after the previous one arrived: a buffering proxy
		// would stall here.
		m, err := watch.Recv()
		for err == nil && m.GetStatus() == healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
			m, err = watch.Recv()
		}
		if err != nil || m.GetStatus() != want {
			t.Fatalf("watch: %v %v, want %v", m, err, want)
		}
		hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	}

	err = cc.Invoke(ctx, "/dead.Service/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("local reply to gRPC: %v, want Unavailable", err)
	}
}

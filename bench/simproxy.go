package main

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weft-mesh/weft/internal/node"
)

// simTypes are what a simulated proxy subscribes to, all as wildcards: the control plane
// keeps one snapshot per proxy, so the wildcard of each type is exactly what that
// proxy's listeners and clusters name (what an Envoy would ask for by name).
var simTypes = []string{
	resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType,
	resourcev3.EndpointType, resourcev3.SecretType,
}

// readyTypes must each have been received once for a proxy to count as configured.
var readyTypes = []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.EndpointType}

// simProxy is one simulated sidecar: its own gRPC connection and ADS stream (State of the
// World), ACKing every response as Envoy does. It does not decode resources (see
// simCodec); it only counts bytes and looks for the marker of the pending config
// change in route configurations.
type simProxy struct {
	id     string
	conn   *grpc.ClientConn
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel context.CancelFunc

	bytes     atomic.Int64 // serialized size of every response received
	responses atomic.Int64

	mu       sync.Mutex
	seen     map[string]bool
	ready    chan struct{} // closed once every readyType arrived
	isReady  bool
	marker   []byte    // the change being waited for
	markerAt time.Time // when the response holding it was ACKed
	gotMark  chan struct{}
	err      error
	done     chan struct{}
}

// simNode is the xDS node of the i-th simulated sidecar: Istio's id form, the workload
// address of endpoint 0 of service i%services (so the proxy has inbound config too),
// explicit interception as in weft's local mode.
func simNode(i, services, endpoints int) *corev3.Node {
	svc := i % services
	ip := workloadIP(svc * endpoints)
	if i >= services { // more proxies than services: other endpoints, then beyond
		ip = workloadIP(i)
	}
	p := &node.Proxy{
		Type: node.Sidecar, IP: ip, Workload: fmt.Sprintf("sim-%d", i), Namespace: benchNS,
		ServiceAccount: fmt.Sprintf("svc-%d", svc), Labels: map[string]string{"app": fmt.Sprintf("svc-%d", svc)},
		Interception: node.Explicit, AppIP: netip.AddrFrom4([4]byte{127, 76, ip.As4()[2], ip.As4()[3]}),
	}
	return &corev3.Node{
		Id:       node.ID(node.Sidecar, ip, p.Workload, benchNS, benchNS+".svc.cluster.local"),
		Cluster:  p.Workload,
		Metadata: node.Metadata(p),
	}
}

// dialSim connects one simulated proxy and subscribes.
func dialSim(ctx context.Context, addr string, n *corev3.Node) (*simProxy, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.ForceCodecV2(newSimCodec())))
	if err != nil {
		return nil, fmt.Errorf("bench: sim proxy %s: %w", n.GetId(), err)
	}
	sctx, cancel := context.WithCancel(ctx)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("bench: sim proxy %s: open ADS: %w", n.GetId(), err)
	}
	p := &simProxy{id: n.GetId(), conn: conn, stream: st, cancel: cancel, seen: map[string]bool{},
		ready: make(chan struct{}), done: make(chan struct{})}
	for i, t := range simTypes {
		req := &discovery.DiscoveryRequest{TypeUrl: t}
		if i == 0 {
			req.Node = n
		}
		if err := st.Send(req); err != nil {
			p.close()
			return nil, fmt.Errorf("bench: sim proxy %s: subscribe: %w", n.GetId(), err)
		}
	}
	go p.recvLoop()
	return p, nil
}

func (p *simProxy) recvLoop() {
	defer close(p.done)
	for {
		r, err := p.stream.Recv()
		if err != nil {
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			return
		}
		p.bytes.Add(int64(wireSize(r)))
		p.responses.Add(1)
		hit := false
		p.mu.Lock()
		marker := p.marker
		p.mu.Unlock()
		if marker != nil && r.GetTypeUrl() == resourcev3.RouteType {
			for _, a := range r.GetResources() {
				if bytes.Contains(a.GetValue(), marker) {
					hit = true
					break
				}
			}
		}
		err = p.stream.Send(&discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
		now := time.Now()
		if err != nil {
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		if !p.seen[r.GetTypeUrl()] {
			p.seen[r.GetTypeUrl()] = true
			all := true
			for _, t := range readyTypes {
				all = all && p.seen[t]
			}
			if all && !p.isReady {
				p.isReady = true
				close(p.ready)
			}
		}
		if hit && p.marker != nil && bytes.Equal(p.marker, marker) && p.markerAt.IsZero() {
			p.markerAt = now
			close(p.gotMark)
		}
		p.mu.Unlock()
	}
}

// expect arms the proxy for a change carrying marker.
func (p *simProxy) expect(marker []byte) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marker, p.markerAt, p.gotMark = marker, time.Time{}, make(chan struct{})
	return p.gotMark
}

func (p *simProxy) ackedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.markerAt
}

func (p *simProxy) streamErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *simProxy) close() {
	p.cancel()
	p.conn.Close()
}

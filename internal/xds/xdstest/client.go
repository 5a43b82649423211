// Package xdstest has raw xDS test clients: an ADS stream, State-of-the-World or Delta,
// driven request by request, so tests of a control plane can check exactly what it
// sends, and ACK or NACK it as a proxy would.
package xdstest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// ErrTimeout is returned by Recv when nothing arrives in time.
var ErrTimeout = errors.New("xdstest: no response before the timeout")

// queueSize bounds the responses a client holds unread; the pump blocks beyond it.
const queueSize = 256

// SotW is a State-of-the-World ADS stream. Like Envoy, it sends the node in the first
// request only.
type SotW struct {
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel context.CancelFunc
	resps  chan *discovery.DiscoveryResponse
	done   chan struct{}
	err    error // the stream's end, valid once done is closed

	mu       sync.Mutex
	node     *core.Node
	sentNode bool
	names    map[string][]string // last requested names, per type
	accepted map[string]string   // last ACKed version, per type
}

// NewSotW opens an ADS stream on cc.
func NewSotW(ctx context.Context, cc grpc.ClientConnInterface, n *core.Node) (*SotW, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("xdstest: open ADS stream: %w", err)
	}
	c := &SotW{stream: st, cancel: cancel, resps: make(chan *discovery.DiscoveryResponse, queueSize),
		done: make(chan struct{}), node: n, names: map[string][]string{}, accepted: map[string]string{}}
	go func() {
		defer close(c.done)
		for {
			r, err := st.Recv()
			if err != nil {
				c.err = err
				return
			}
			select {
			case c.resps <- r:
			case <-ctx.Done():
				c.err = ctx.Err()
				return
			}
		}
	}()
	return c, nil
}

func (c *SotW) send(req *discovery.DiscoveryRequest) error {
	c.mu.Lock()
	if !c.sentNode {
		req.Node = c.node
		c.sentNode = true
	}
	c.mu.Unlock()
	return c.stream.Send(req)
}

// Subscribe sends the initial request for a type (no names: wildcard).
func (c *SotW) Subscribe(typeURL string, names ...string) error {
	c.mu.Lock()
	c.names[typeURL] = names
	version := c.accepted[typeURL]
	c.mu.Unlock()
	return c.send(&discovery.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names, VersionInfo: version})
}

// ACK accepts r.
func (c *SotW) ACK(r *discovery.DiscoveryResponse) error {
	c.mu.Lock()
	c.accepted[r.GetTypeUrl()] = r.GetVersionInfo()
	names := c.names[r.GetTypeUrl()]
	c.mu.Unlock()
	return c.send(&discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(),
		ResponseNonce: r.GetNonce(), ResourceNames: names})
}

// NACK rejects r with msg; the request carries the last accepted version, as Envoy's.
func (c *SotW) NACK(r *discovery.DiscoveryResponse, msg string) error {
	c.mu.Lock()
	version := c.accepted[r.GetTypeUrl()]
	names := c.names[r.GetTypeUrl()]
	c.mu.Unlock()
	return c.send(&discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: version,
		ResponseNonce: r.GetNonce(), ResourceNames: names,
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}})
}

// Recv returns the next response, ErrTimeout, or the stream's error.
func (c *SotW) Recv(timeout time.Duration) (*discovery.DiscoveryResponse, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-c.resps:
		return r, nil
	case <-c.done:
		select {
		case r := <-c.resps:
			return r, nil
		default:
		}
		return nil, c.err
	case <-t.C:
		return nil, ErrTimeout
	}
}

// RecvAll collects responses until none arrives for quiet (or until max).
func (c *SotW) RecvAll(quiet time.Duration, max int) []*discovery.DiscoveryResponse {
	var out []*discovery.DiscoveryResponse
	for len(out) < max {
		r, err := c.Recv(quiet)
		if err != nil {
			break
		}
		out = append(out, r)
	}
	return out
}

// Err waits up to timeout for the stream to end and returns why (nil if it did not).
func (c *SotW) Err(timeout time.Duration) error {
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		return nil
	}
}

// Close ends the stream.
func (c *SotW) Close() {
	c.stream.CloseSend()
	c.cancel()
	<-c.done
}

// Delta is an incremental (Delta) ADS stream, node in the first request only.
type Delta struct {
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel context.CancelFunc
	resps  chan *discovery.DeltaDiscoveryResponse
	done   chan struct{}
	err    error

	mu       sync.Mutex
	node     *core.Node
	sentNode bool
}

// NewDelta opens a Delta ADS stream on cc.
func NewDelta(ctx context.Context, cc grpc.ClientConnInterface, n *core.Node) (*Delta, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("xdstest: open delta ADS stream: %w", err)
	}
	c := &Delta{stream: st, cancel: cancel, resps: make(chan *discovery.DeltaDiscoveryResponse, queueSize),
		done: make(chan struct{}), node: n}
	go func() {
		defer close(c.done)
		for {
			r, err := st.Recv()
			if err != nil {
				c.err = err
				return
			}
			select {
			case c.resps <- r:
			case <-ctx.Done():
				c.err = ctx.Err()
				return
			}
		}
	}()
	return c, nil
}

func (c *Delta) send(req *discovery.DeltaDiscoveryRequest) error {
	c.mu.Lock()
	if !c.sentNode {
		req.Node = c.node
		c.sentNode = true
	}
	c.mu.Unlock()
	return c.stream.Send(req)
}

// Subscribe subscribes to names of a type (none: wildcard).
func (c *Delta) Subscribe(typeURL string, names ...string) error {
	return c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

// ACK accepts r.
func (c *Delta) ACK(r *discovery.DeltaDiscoveryResponse) error {
	return c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

// NACK rejects r with msg.
func (c *Delta) NACK(r *discovery.DeltaDiscoveryResponse, msg string) error {
	return c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}})
}

// Recv returns the next response, ErrTimeout, or the stream's error.
func (c *Delta) Recv(timeout time.Duration) (*discovery.DeltaDiscoveryResponse, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-c.resps:
		return r, nil
	case <-c.done:
		select {
		case r := <-c.resps:
			return r, nil
		default:
		}
		return nil, c.err
	case <-t.C:
		return nil, ErrTimeout
	}
}

// RecvAll collects responses until none arrives for quiet (or until max).
func (c *Delta) RecvAll(quiet time.Duration, max int) []*discovery.DeltaDiscoveryResponse {
	var out []*discovery.DeltaDiscoveryResponse
	for len(out) < max {
		r, err := c.Recv(quiet)
		if err != nil {
			break
		}
		out = append(out, r)
	}
	return out
}

// Close ends the stream.
func (c *Delta) Close() {
	c.stream.CloseSend()
	c.cancel()
	<-c.done
}

// Decode unmarshals Any-wrapped resources into new messages of T's type.
func Decode[T proto.Message](anys []*anypb.Any) ([]T, error) {
	out := make([]T, 0, len(anys))
	for i, a := range anys {
		var zero T
		m := zero.ProtoReflect().New().Interface().(T)
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("xdstest: resource[%d] (%s): %w", i, a.GetTypeUrl(), err)
		}
		out = append(out, m)
	}
	return out, nil
}

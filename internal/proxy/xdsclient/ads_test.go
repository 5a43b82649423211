package xdsclient

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	testNode = "proxy-1"
	waitFor  = 20 * time.Second // generous: the machine is shared
)

// xdsServer is go-control-plane's reference ADS server (snapshot cache + pkg/server/v3)
// on 127.0.0.1, recording what it receives and sends through its callbacks.
type xdsServer struct {
	t     *testing.T
	cache cachev3.SnapshotCache
	addr  string

	mu     sync.Mutex
	gs     *grpc.Server
	stopFn context.CancelFunc
	reqs   []proto.Message // *DiscoveryRequest or *DeltaDiscoveryRequest, in arrival order
	resps  []sent
}

// sent is one response the server sent.
type sent struct {
	typeURL, version, nonce string
}

func newXDSServer(t *testing.T) *xdsServer {
	s := &xdsServer{t: t, cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	s.start("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

func (s *xdsServer) start(addr string) {
	s.t.Helper()
	var lis net.Listener
	var err error
	// Rebinding the port just released can briefly fail; bounded retry.
	for i := 0; i < 100; i++ {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			s.record(proto.Clone(r))
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
			s.sent(sent{r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce()})
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			s.record(proto.Clone(r))
			return nil
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			s.sent(sent{r.GetTypeUrl(), r.GetSystemVersionInfo(), r.GetNonce()})
		},
	}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, s.cache, cb))
	go func() { _ = gs.Serve(lis) }()
	s.mu.Lock()
	s.gs, s.stopFn, s.addr = gs, cancel, lis.Addr().String()
	s.reqs, s.resps = nil, nil
	s.mu.Unlock()
}

func (s *xdsServer) stop() {
	s.mu.Lock()
	gs, cancel := s.gs, s.stopFn
	s.gs, s.stopFn = nil, nil
	s.mu.Unlock()
	if gs != nil {
		cancel()
		gs.Stop()
	}
}

func (s *xdsServer) record(m proto.Message) {
	s.mu.Lock()
	s.reqs = append(s.reqs, m)
	s.mu.Unlock()
}

func (s *xdsServer) sent(r sent) {
	s.mu.Lock()
	s.resps = append(s.resps, r)
	s.mu.Unlock()
}

func (s *xdsServer) requests() []proto.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// nonceOf returns the nonce of the first response of typeURL with version, or "".
func (s *xdsServer) nonceOf(typeURL, version string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.resps {
		if r.typeURL == typeURL && r.version == version {
			return r.nonce
		}
	}
	return ""
}

// findRequest returns the first recorded request matching f.
func (s *xdsServer) findRequest(f func(typeURL, version, nonce string, names, unsub []string, initial map[string]string, detail string) bool) proto.Message {
	for _, m := range s.requests() {
		switch r := m.(type) {
		case *discoveryv3.DiscoveryRequest:
			if f(r.GetTypeUrl(), r.GetVersionInfo(), r.GetResponseNonce(), r.GetResourceNames(), nil, nil, r.GetErrorDetail().GetMessage()) {
				return r
			}
		case *discoveryv3.DeltaDiscoveryRequest:
			if f(r.GetTypeUrl(), "", r.GetResponseNonce(), r.GetResourceNamesSubscribe(), r.GetResourceNamesUnsubscribe(), r.GetInitialResourceVersions(), r.GetErrorDetail().GetMessage()) {
				return r
			}
		}
	}
	return nil
}

// world is the control plane's config at one version: clusters (each with an EDS
// assignment) and listeners (each with route "route-<listener>"). Every resource embeds
// the version so each version changes every resource.
type world struct {
	version   string
	clusters  []string
	listeners []string
	port      uint32
}

func (s *xdsServer) set(w world) {
	s.t.Helper()
	res := map[resource.Type][]types.Resource{}
	for _, c := range w.clusters {
		res[resource.ClusterType] = append(res[resource.ClusterType], &clusterv3.Cluster{
			Name:                 c,
			AltStatName:          c + "-v" + w.version,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			}},
		})
		res[resource.EndpointType] = append(res[resource.EndpointType], &endpointv3.ClusterLoadAssignment{
			ClusterName: c,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(w.port)}},
			}}}},
		})
	}
	for _, l := range w.listeners {
		res[resource.ListenerType] = append(res[resource.ListenerType], &listenerv3.Listener{
			Name: l, Address: sockAddr(w.port), StatPrefix: l + "-v" + w.version,
		})
		res[resource.RouteType] = append(res[resource.RouteType], &routev3.RouteConfiguration{
			Name:         "route-" + l,
			VirtualHosts: []*routev3.VirtualHost{{Name: "vh-v" + w.version, Domains: []string{"*"}}},
		})
	}
	snap, err := cachev3.NewSnapshot(w.version, res)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.cache.SetSnapshot(context.Background(), testNode, snap); err != nil {
		s.t.Fatal(err)
	}
}

func sockAddr(port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// proxy is a Handler standing in for the proxy's glue: it keeps each type's state and,
// like the glue, subscribes EDS for the clusters it gets and RDS for its listeners.
type proxy struct {
	c      *Client
	reject func(typeURL, version string) error

	inside     atomic.Int32
	concurrent atomic.Bool // Apply was entered while another call ran

	mu      sync.Mutex
	state   map[string]map[string]*anypb.Any
	version map[string]string
	applies map[string]int
}

func newProxy() *proxy {
	return &proxy{state: map[string]map[string]*anypb.Any{}, version: map[string]string{}, applies: map[string]int{}}
}

func (p *proxy) Apply(typeURL, version string, res map[string]*anypb.Any) error {
	if p.inside.Add(1) != 1 {
		p.concurrent.Store(true)
	}
	defer p.inside.Add(-1)
	if p.reject != nil {
		if err := p.reject(typeURL, version); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.state[typeURL], p.version[typeURL] = res, version
	p.applies[typeURL]++
	p.mu.Unlock()
	switch typeURL {
	case ClusterType:
		p.c.Subscribe(EndpointType, slices.Collect(maps.Keys(res)))
	case ListenerType:
		var routes []string
		for l := range res {
			routes = append(routes, "route-"+l)
		}
		p.c.Subscribe(RouteType, routes)
	}
	return nil
}

func (p *proxy) names(typeURL string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.state[typeURL]))
}

func (p *proxy) ver(typeURL string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.version[typeURL]
}

func (p *proxy) applyCount(typeURL string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applies[typeURL]
}

// endpointPort decodes the port of a cluster's first endpoint in the proxy's EDS state.
func (p *proxy) endpointPort(t *testing.T, cluster string) uint32 {
	p.mu.Lock()
	a := p.state[EndpointType][cluster]
	p.mu.Unlock()
	if a == nil {
		return 0
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := a.UnmarshalTo(&cla); err != nil {
		t.Fatal(err)
	}
	return cla.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
}

// hasState reports whether the proxy holds exactly these names per type.
func (p *proxy) hasState(want map[string][]string) bool {
	for typ, names := range want {
		if !slices.Equal(p.names(typ), names) {
			return false
		}
	}
	return true
}

type harness struct {
	srv *xdsServer
	p   *proxy
	c   *Client
}

func start(t *testing.T, delta bool, reject func(typeURL, version string) error, w world) *harness {
	t.Helper()
	srv := newXDSServer(t)
	srv.set(w)
	p := newProxy()
	p.reject = reject
	c := New(Config{
		Target:      srv.addr,
		DialOpts:    []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Node:        &corev3.Node{Id: testNode, Cluster: "test"},
		Delta:       delta,
		Log:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		BackoffBase: 20 * time.Millisecond,
		BackoffMax:  200 * time.Millisecond,
	}, p)
	p.c = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
		if p.concurrent.Load() {
			t.Error("Apply was called concurrently")
		}
	})
	return &harness{srv: srv, p: p, c: c}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func modes(t *testing.T, f func(t *testing.T, delta bool)) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) { f(t, delta) })
	}
}

func fullState(clusters, listeners []string) map[string][]string {
	var routes []string
	for _, l := range listeners {
		routes = append(routes, "route-"+l)
	}
	return map[string][]string{ClusterType: clusters, EndpointType: clusters, ListenerType: listeners, RouteType: routes}
}

// TestReceiveAndUpdate: LDS/CDS arrive by wildcard, EDS/RDS are subscribed by name from
// within Apply and arrive, and a new snapshot reaches the Handler.
func TestReceiveAndUpdate(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := start(t, delta, nil, world{version: "1", clusters: []string{"c1"}, listeners: []string{"l1"}, port: 10001})
		eventually(t, "v1 state", func() bool { return h.p.hasState(fullState([]string{"c1"}, []string{"l1"})) })
		if got := h.p.endpointPort(t, "c1"); got != 10001 {
			t.Errorf("c1 port = %d, want 10001", got)
		}

		// The first two requests of the stream are CDS then LDS, carrying the node.
		reqs := h.srv.requests()
		if len(reqs) < 2 {
			t.Fatalf("server saw %d requests", len(reqs))
		}
		for i, want := range []string{ClusterType, ListenerType} {
			typ, node := requestTypeNode(reqs[i])
			if typ != want || node.GetId() != testNode {
				t.Errorf("request %d: type %s node %q, want %s node %q", i, typ, node.GetId(), want, testNode)
			}
		}

		h.srv.set(world{version: "2", clusters: []string{"c1", "c2"}, listeners: []string{"l1"}, port: 10002})
		eventually(t, "v2 state", func() bool {
			return h.p.hasState(fullState([]string{"c1", "c2"}, []string{"l1"})) && h.p.endpointPort(t, "c1") == 10002
		})
		eventually(t, "v2 ACKed for every type", func() bool {
			st := h.c.Status()
			for _, typ := range []string{ClusterType, ListenerType, EndpointType, RouteType} {
				if st.Types[typ].Version != "2" {
					return false
				}
			}
			return true
		})
		st := h.c.Status()
		if !st.Connected || st.Streams != 1 {
			t.Errorf("status connected=%v streams=%d, want true 1", st.Connected, st.Streams)
		}
		if eds := st.Types[EndpointType]; !slices.Equal(eds.Names, []string{"c1", "c2"}) || eds.Wildcard || eds.ACKs < 2 || eds.NACKs != 0 {
			t.Errorf("EDS status = %+v", eds)
		}
		if cds := st.Types[ClusterType]; !cds.Wildcard || !slices.Equal(cds.Resources, []string{"c1", "c2"}) {
			t.Errorf("CDS status = %+v", cds)
		}
		if got := h.p.ver(ClusterType); got != "2" {
			t.Errorf("handler CDS version = %q, want 2", got)
		}
	})
}

func requestTypeNode(m proto.Message) (string, *corev3.Node) {
	switch r := m.(type) {
	case *discoveryv3.DiscoveryRequest:
		return r.GetTypeUrl(), r.GetNode()
	case *discoveryv3.DeltaDiscoveryRequest:
		return r.GetTypeUrl(), r.GetNode()
	}
	return "", nil
}

// TestNACK: a Handler error NACKs the version with error_detail and the response's
// nonce, the previous state is kept, and the next good version is ACKed.
func TestNACK(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		reject := func(typeURL, version string) error {
			if typeURL == ClusterType && version == "2" {
				return errors.New(`cluster "c2": bad config`)
			}
			return nil
		}
		h := start(t, delta, reject, world{version: "1", clusters: []string{"c1"}, listeners: []string{"l1"}, port: 10001})
		eventually(t, "v1 state", func() bool { return h.p.hasState(fullState([]string{"c1"}, []string{"l1"})) })

		h.srv.set(world{version: "2", clusters: []string{"c1", "c2"}, listeners: []string{"l1"}, port: 10002})
		var nackNonce string
		eventually(t, "CDS NACK", func() bool {
			nackNonce = h.srv.nonceOf(ClusterType, "2")
			return nackNonce != "" && h.srv.findRequest(func(typ, version, nonce string, _, _ []string, _ map[string]string, detail string) bool {
				return typ == ClusterType && nonce == nackNonce && strings.Contains(detail, "bad config") &&
					(delta || version == "1") // SotW NACK carries the previous good version
			}) != nil
		})
		st := h.c.Status().Types[ClusterType]
		if st.Version != "1" || !strings.Contains(st.LastNACK, "bad config") || st.LastNACKVersion != "2" || st.NACKs < 1 {
			t.Errorf("CDS status after NACK = %+v", st)
		}
		if got := h.p.names(ClusterType); !slices.Equal(got, []string{"c1"}) || h.p.ver(ClusterType) != "1" {
			t.Errorf("handler CDS = %v version %q, want [c1] 1", got, h.p.ver(ClusterType))
		}

		h.srv.set(world{version: "3", clusters: []string{"c1", "c3"}, listeners: []string{"l1"}, port: 10003})
		eventually(t, "v3 state", func() bool {
			return h.p.hasState(fullState([]string{"c1", "c3"}, []string{"l1"})) && h.p.endpointPort(t, "c1") == 10003
		})
		eventually(t, "v3 ACK", func() bool {
			n := h.srv.nonceOf(ClusterType, "3")
			return n != "" && h.srv.findRequest(func(typ, version, nonce string, _, _ []string, _ map[string]string, detail string) bool {
				return typ == ClusterType && nonce == n && detail == "" && (delta || version == "3")
			}) != nil
		})
		st = h.c.Status().Types[ClusterType]
		if st.Version != "3" || st.LastNACK != "" {
			t.Errorf("CDS status after v3 = %+v", st)
		}
		if h.p.ver(ClusterType) != "3" {
			t.Errorf("handler CDS version = %q, want 3", h.p.ver(ClusterType))
		}
	})
}

// TestRepeatedNACKIsPaced: go-control-plane answers a SotW NACK by resending the same
// version; the client keeps NACKing it (the server must hear back to send anything
// newer) but paces the repeats instead of spinning.
func TestRepeatedNACKIsPaced(t *testing.T) {
	reject := func(typeURL, version string) error {
		if typeURL == ClusterType && version == "2" {
			return errors.New("bad")
		}
		return nil
	}
	h := start(t, false, reject, world{version: "1", clusters: []string{"c1"}, listeners: []string{"l1"}, port: 10001})
	eventually(t, "v1 state", func() bool { return h.p.hasState(fullState([]string{"c1"}, []string{"l1"})) })
	h.srv.set(world{version: "2", clusters: []string{"c1"}, listeners: []string{"l1"}, port: 10002})
	nacks := func() int {
		n := 0
		for _, m := range h.srv.requests() {
			if r := m.(*discoveryv3.DiscoveryRequest); r.GetTypeUrl() == ClusterType && r.GetErrorDetail() != nil {
				n++
			}
		}
		return n
	}
	eventually(t, "repeated NACK", func() bool { return nacks() >= 3 })
	time.Sleep(time.Second)
	// Unpaced, client and server exchange thousands of NACKs a second; paced (backoff
	// 20ms doubling to 200ms) about ten.
	if n := nacks(); n > 100 {
		t.Errorf("%d NACKs of one version within about a second: not paced", n)
	}
	if st := h.c.Status().Types[ClusterType]; st.Version != "1" || st.NACKs < 3 {
		t.Errorf("CDS status = %+v", st)
	}
	// The paced NACK still lets a fixed version through.
	h.srv.set(world{version: "3", clusters: []string{"c1"}, listeners: []string{"l1"}, port: 10003})
	eventually(t, "v3 applied", func() bool { return h.p.ver(ClusterType) == "3" })
}

// TestReconnect: the server stops and restarts on the same port; the client shows
// disconnected, keeps its state, re-requests what it holds, and ends with the same state
// without re-applying unchanged resources; later updates still arrive.
func TestReconnect(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := start(t, delta, nil, world{version: "1", clusters: []string{"c1"}, listeners: []string{"l1"}, port: 10001})
		want := fullState([]string{"c1"}, []string{"l1"})
		eventually(t, "v1 state", func() bool { return h.p.hasState(want) })
		eventually(t, "EDS ACKed", func() bool { return h.c.Status().Types[EndpointType].Version == "1" })
		cdsApplies := h.p.applyCount(ClusterType)

		addr := h.srv.addr
		h.srv.stop()
		eventually(t, "disconnected status", func() bool { return !h.c.Status().Connected })
		if st := h.c.Status(); st.LastError == "" {
			t.Error("status has no LastError while down")
		}
		if !h.p.hasState(want) {
			t.Fatal("state lost while disconnected")
		}

		h.srv.start(addr)
		eventually(t, "reconnected", func() bool { st := h.c.Status(); return st.Connected && st.Streams >= 2 })
		// The new stream's first requests carry what the client holds.
		eventually(t, "CDS re-request with held state", func() bool {
			return h.srv.findRequest(func(typ, version, nonce string, _, _ []string, initial map[string]string, _ string) bool {
				if delta {
					_, ok := initial["c1"]
					return typ == ClusterType && nonce == "" && ok
				}
				return typ == ClusterType && nonce == "" && version == "1"
			}) != nil
		})
		eventually(t, "EDS re-request by name", func() bool {
			return h.srv.findRequest(func(typ, version, nonce string, names, _ []string, initial map[string]string, _ string) bool {
				ok := typ == EndpointType && nonce == "" && slices.Equal(names, []string{"c1"})
				if delta {
					_, held := initial["c1"]
					return ok && held
				}
				return ok && version == "1"
			}) != nil
		})
		// Wait until the client has answered the new stream's CDS response, then check the
		// unchanged clusters were not applied again.
		eventually(t, "CDS ACK on the new stream", func() bool {
			return h.srv.findRequest(func(typ, _, nonce string, _, _ []string, _ map[string]string, _ string) bool {
				return typ == ClusterType && nonce != ""
			}) != nil
		})
		if !h.p.hasState(want) {
			t.Errorf("state after reconnect: CDS %v EDS %v", h.p.names(ClusterType), h.p.names(EndpointType))
		}
		if got := h.p.applyCount(ClusterType); got != cdsApplies {
			t.Errorf("CDS applied %d times after reconnect, want %d (unchanged resources)", got, cdsApplies)
		}

		h.srv.set(world{version: "2", clusters: []string{"c1", "c2"}, listeners: []string{"l1"}, port: 10002})
		eventually(t, "v2 after reconnect", func() bool {
			return h.p.hasState(fullState([]string{"c1", "c2"}, []string{"l1"})) && h.p.endpointPort(t, "c2") == 10002
		})
	})
}

// TestUnsubscribe: dropping a name removes it from the state given to Apply and tells
// the server; updates for the remaining names keep arriving.
func TestUnsubscribe(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := start(t, delta, nil, world{version: "1", clusters: []string{"c1", "c2"}, listeners: []string{"l1"}, port: 10001})
		eventually(t, "v1 state", func() bool {
			return h.p.hasState(fullState([]string{"c1", "c2"}, []string{"l1"}))
		})
		applies := h.p.applyCount(EndpointType)
		h.c.Subscribe(EndpointType, []string{"c1"})
		eventually(t, "EDS without c2", func() bool { return slices.Equal(h.p.names(EndpointType), []string{"c1"}) })
		if got := h.p.applyCount(EndpointType); got != applies+1 {
			t.Errorf("EDS applies = %d, want %d", got, applies+1)
		}
		eventually(t, "server told", func() bool {
			return h.srv.findRequest(func(typ, _, nonce string, names, unsub []string, _ map[string]string, _ string) bool {
				if delta {
					return typ == EndpointType && slices.Equal(unsub, []string{"c2"})
				}
				return typ == EndpointType && nonce != "" && slices.Equal(names, []string{"c1"})
			}) != nil
		})
		if st := h.c.Status().Types[EndpointType]; !slices.Equal(st.Names, []string{"c1"}) || !slices.Equal(st.Resources, []string{"c1"}) {
			t.Errorf("EDS status = %+v", st)
		}

		// The control plane drops c2 too; c1's update still flows.
		h.srv.set(world{version: "2", clusters: []string{"c1"}, listeners: []string{"l1"}, port: 10002})
		eventually(t, "c1 update", func() bool { return h.p.endpointPort(t, "c1") == 10002 })
		if got := h.p.names(EndpointType); !slices.Equal(got, []string{"c1"}) {
			t.Errorf("EDS names = %v", got)
		}
	})
}

// TestSubscribeBeforeRun: names set before Run go out on the first stream.
func TestSubscribeBeforeRun(t *testing.T) {
	srv := newXDSServer(t)
	srv.set(world{version: "1", clusters: []string{"c1"}, port: 10001})
	got := make(chan []string, 10)
	var c *Client
	c = New(Config{
		Target:   srv.addr,
		DialOpts: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Node:     &corev3.Node{Id: testNode},
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, HandlerFunc(func(typeURL, _ string, res map[string]*anypb.Any) error {
		if typeURL == EndpointType {
			got <- slices.Sorted(maps.Keys(res))
		}
		return nil
	}))
	c.Subscribe(EndpointType, []string{"c1", "c1"})
	c.Subscribe(ClusterType, []string{"ignored"}) // wildcard type: ignored
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case names := <-got:
		if !slices.Equal(names, []string{"c1"}) {
			t.Errorf("EDS = %v", names)
		}
	case <-time.After(waitFor):
		t.Fatal("no EDS")
	}
	if st := c.Status().Types[ClusterType]; !st.Wildcard || st.Names != nil {
		t.Errorf("CDS status = %+v", st)
	}
	if err := c.Run(ctx); err == nil {
		t.Error("second concurrent Run succeeded")
	}
}

func TestRunRejectsUnusableConfig(t *testing.T) {
	c := New(Config{Target: "127.0.0.1:1", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, HandlerFunc(func(string, string, map[string]*anypb.Any) error { return nil }))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Run without credentials = %v, want an error naming the target", err)
	}
}

package upstream

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
)

// countingListener counts the connections an upstream accepted.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

type upstreamServer struct {
	*httptest.Server
	ln   *countingListener
	hits atomic.Int64
	addr string
}

// newUpstream starts an HTTP server on 127.0.0.1 answering its own address in the
// X-Upstream header. h2c makes it accept HTTP/2 with prior knowledge too.
func newUpstream(t testing.TB, h2c bool, handler http.HandlerFunc) *upstreamServer {
	t.Helper()
	u := &upstreamServer{}
	s := httptest.NewUnstartedServer(nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Listener.Close()
	u.ln = &countingListener{Listener: ln}
	s.Listener = u.ln
	u.addr = ln.Addr().String()
	s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		w.Header().Set("X-Upstream", u.addr)
		w.Header().Set("X-Proto", r.Proto)
		if handler != nil {
			handler(w, r)
			return
		}
		io.WriteString(w, "ok")
	})
	if h2c {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetHTTP1(true)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	s.Start()
	u.Server = s
	t.Cleanup(s.Close)
	return u
}

func hostPort(t testing.TB, addr string) (string, uint32) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, uint32(n)
}

func lbEndpoint(t testing.TB, addr string) *endpointv3.LbEndpoint {
	h, p := hostPort(t, addr)
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: p},
		}}},
	}}}
}

func assignment(t testing.TB, name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	lle := &endpointv3.LocalityLbEndpoints{}
	for _, a := range addrs {
		lle.LbEndpoints = append(lle.LbEndpoints, lbEndpoint(t, a))
	}
	la.Endpoints = []*endpointv3.LocalityLbEndpoints{lle}
	return la
}

func staticCluster(t testing.TB, name string, addrs ...string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment:       assignment(t, name, addrs...),
	}
}

func edsCluster(name, service string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
	}
	if service != "" {
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{ServiceName: service}
	}
	return c
}

// withHTTP2 makes c's upstream protocol explicit HTTP/2 through HttpProtocolOptions.
func withHTTP2(t testing.TB, c *clusterv3.Cluster, maxStreams uint32) *clusterv3.Cluster {
	h2 := &corev3.Http2ProtocolOptions{}
	if maxStreams > 0 {
		h2.MaxConcurrentStreams = wrapperspb.UInt32(maxStreams)
	}
	opts := &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
		},
	}}
	return withProtocolOptions(t, c, opts)
}

func withProtocolOptions(t testing.TB, c *clusterv3.Cluster, opts *httpv3.HttpProtocolOptions) *clusterv3.Cluster {
	a, err := anypb.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.TypedExtensionProtocolOptions == nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	}
	c.TypedExtensionProtocolOptions[httpProtocolOptionsName] = a
	return c
}

func withBreakers(c *clusterv3.Cluster, maxCx, maxPending, maxRq, maxRetries uint32) *clusterv3.Cluster {
	th := &clusterv3.CircuitBreakers_Thresholds{}
	if maxCx > 0 {
		th.MaxConnections = wrapperspb.UInt32(maxCx)
	}
	if maxPending > 0 {
		th.MaxPendingRequests = wrapperspb.UInt32(maxPending)
	}
	if maxRq > 0 {
		th.MaxRequests = wrapperspb.UInt32(maxRq)
	}
	if maxRetries > 0 {
		th.MaxRetries = wrapperspb.UInt32(maxRetries)
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	return c
}

func newTestManager(t testing.TB, opts Options) (*Manager, *stats.Store) {
	t.Helper()
	if opts.Stats == nil {
		opts.Stats = stats.New()
	}
	m := NewManager(opts)
	t.Cleanup(m.Close)
	return m, opts.Stats
}

func mustUpdate(t testing.TB, m *Manager, cs ...*clusterv3.Cluster) {
	t.Helper()
	if err := m.Update(cs); err != nil {
		t.Fatal(err)
	}
}

func getCluster(t testing.TB, m *Manager, name string) *Cluster {
	t.Helper()
	c := m.Get(name)
	if c == nil {
		t.Fatalf("cluster %q not found", name)
	}
	return c
}

func newRequest(t testing.TB, ctx context.Context, method string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://svc.test/path", nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do picks a host and sends one GET, returning the upstream that answered.
func do(t testing.TB, c *Cluster) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.Pick(&lb.Context{}, netipZero)
	if err != nil {
		return "", err
	}
	resp, err := c.RoundTrip(newRequest(t, ctx, "GET"), h)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Upstream"), nil
}

func statValue(t testing.TB, s *stats.Store, flat string) int64 {
	t.Helper()
	v, ok := s.Value(flat)
	if !ok {
		t.Fatalf("no stat %s", flat)
	}
	return v
}

// eventually polls cond for up to 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wrapUint32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func newCertPool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func nilCLA() []*endpointv3.ClusterLoadAssignment { return nil }

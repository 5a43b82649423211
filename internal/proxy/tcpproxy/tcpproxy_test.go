package tcpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
)

// backend is an upstream on loopback: it writes its name and a newline, then echoes
// until the client half-closes, then closes.
type backend struct {
	name string
	ln   net.Listener
	wg   sync.WaitGroup
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func staticCluster(name string, addrs ...string) *clusterv3.Cluster {
	lle := &endpointv3.LocalityLbEndpoints{}
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}}}})
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{lle}},
	}
}

// env is a listener manager with one TCP proxy listener in front of upstream clusters.
type env struct {
	stats    *stats.Store
	clusters *upstream.Manager
	lm       *listener.Manager
	logs     chan *stream.Info
}

func newEnv(t *testing.T, clusters ...*clusterv3.Cluster) *env {
	t.Helper()
	e := &env{stats: stats.New(), logs: make(chan *stream.Info, 1024)}
	e.clusters = upstream.NewManager(upstream.Options{Stats: e.stats})
	t.Cleanup(e.clusters.Close)
	if err := e.clusters.Update(clusters); err != nil {
		t.Fatal(err)
	}
	fac := NewFactory(Options{
		Clusters: e.clusters,
		Stats:    e.stats,
		AccessLogs: func([]*accesslogv3.AccessLog) (func(*stream.Info), error) {
			return func(i *stream.Info) { e.logs <- i }, nil
		},
	})
	e.lm = listener.NewManager(listener.Options{Stats: e.stats, Filters: []listener.NetworkFilterFactory{fac}})
	t.Cleanup(func() { _ = e.lm.Close() })
	return e
}

// serve installs a listener "tcp" whose chain is the given TcpProxy; it returns the
// listener's address.
func (e *env) serve(t *testing.T, cfg *tcpv3.TcpProxy) string {
	t.Helper()
	if cfg.AccessLog == nil {
		cfg.AccessLog = []*accesslogv3.AccessLog{{Name: "test"}}
	}
	a, err := anypb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{
		Name: "tcp",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}},
	}
	if err := e.lm.Update([]*listenerv3.Listener{l}); err != nil {
		t.Fatal(err)
	}
	return e.lm.Addr("tcp").String()
}

func (e *env) nextLog(t *testing.T) *stream.Info {
	t.Helper()
	select {
	case i := <-e.logs:
		return i
	case <-time.After(10 * time.Second):
		t.Fatal("no access log entry")
		return nil
	}
}

func dial(t *testing.T, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), bufio.NewReader(c)
}

func TestEchoThroughProxyWithHalfClose(t *testing.T) {
	b := startBackend(t, "echo")
	e := newEnv(t, staticCluster("echo", b.addr()))
	addr := e.serve(t, &tcpv3.TcpProxy{StatPrefix: "echo_tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "echo"}})

	c, r := dial(t, addr)
	if line, err := r.ReadString('\n'); err != nil || line != "echo\n" {
		t.Fatalf("greeting %q %v", line, err)
	}
	msg := strings.Repeat("0123456789", 10_000) // 100 kB, several reads
	go func() {
		_, _ = io.WriteString(c, msg)
		_ = c.CloseWrite() // FIN through the proxy; the backend closes after echoing
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echoed %d bytes, want %d", len(got), len(msg))
	}
	info := e.nextLog(t)
	if info.Cluster != "echo" || info.UpstreamHost != b.addr() || info.Protocol != "TCP" || info.Flags != 0 {
		t.Fatalf("info %+v flags %v", info, info.Flags)
	}
	if info.BytesReceived != int64(len(msg)) || info.BytesSent != int64(len(msg)+len("echo\n")) {
		t.Fatalf("bytes received %d sent %d", info.BytesReceived, info.BytesSent)
	}
	for name, want := range map[string]int64{
		"tcp.echo_tcp.downstream_cx_total":          1,
		"tcp.echo_tcp.downstream_cx_rx_bytes_total": int64(len(msg)),
		"tcp.echo_tcp.upstream_flush_total":         1,
		"tcp.echo_tcp.upstream_flush_active":        0,
	} {
		if v, _ := e.stats.Value(name); v != want {
			t.Errorf("%s = %d, want %d", name, v, want)
		}
	}
}

func TestWeightedClusters(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	e := newEnv(t, staticCluster("a", a.addr()), staticCluster("b", b.addr()))
	addr := e.serve(t, &tcpv3.TcpProxy{StatPrefix: "split", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
		WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
			{Name: "a", Weight: 50}, {Name: "b", Weight: 50}, {Name: "never", Weight: 0}}}}})
	const n = 400
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			counts[strings.TrimSpace(line)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Binomial(400, 0.5): sd 10; 140..260 is six standard deviations.
	if counts["a"]+counts["b"] != n || counts["a"] < 140 || counts["b"] < 140 {
		t.Fatalf("split %v", counts)
	}
}

func TestIdleTimeout(t *testing.T) {
	b := startBackend(t, "idle")
	e := newEnv(t, staticCluster("idle", b.addr()))
	addr := e.serve(t, &tcpv3.TcpProxy{StatPrefix: "idle", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "idle"},
		IdleTimeout: durationpb.New(time.Second)})

	// Traffic every 100 ms for 2.5 s keeps the connection up past the 1 s timeout.
	busy, br := dial(t, addr)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	buf := make([]byte, 4)
	for time.Since(start) < 2500*time.Millisecond {
		if _, err := io.WriteString(busy, "ping"); err != nil {
			t.Fatalf("busy connection closed after %v: %v", time.Since(start), err)
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatalf("busy connection closed after %v: %v", time.Since(start), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	busy.Close()
	if info := e.nextLog(t); info.Flags.Has(stream.StreamIdleTimeout) {
		t.Fatal("busy connection flagged idle")
	}

	// An idle one is closed.
	_, ir := dial(t, addr)
	if _, err := ir.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if _, err := ir.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %v, want EOF from the proxy", err)
	}
	info := e.nextLog(t)
	if !info.Flags.Has(stream.StreamIdleTimeout) {
		t.Fatalf("flags %v, want SI", info.Flags)
	}
	if v, _ := e.stats.Value("tcp.idle.idle_timeout"); v != 1 {
		t.Fatalf("idle_timeout = %d", v)
	}
}

func TestUpstreamConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	e := newEnv(t, staticCluster("dead", dead))
	addr := e.serve(t, &tcpv3.TcpProxy{StatPrefix: "dead", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "dead"},
		MaxConnectAttempts: wrapperspb.UInt32(3)})
	_, r := dial(t, addr)
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read %v, want the downstream closed", err)
	}
	info := e.nextLog(t)
	if !info.Flags.Has(stream.UpstreamConnectionFailure) || info.Attempts != 3 || info.UpstreamHost != dead || info.UpstreamFailure == "" {
		t.Fatalf("info flags %v attempts %d host %q failure %q", info.Flags, info.Attempts, info.UpstreamHost, info.UpstreamFailure)
	}
}

func TestUnknownCluster(t *testing.T) {
	e := newEnv(t)
	addr := e.serve(t, &tcpv3.TcpProxy{StatPrefix: "nc", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "missing"}})
	_, r := dial(t, addr)
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read %v, want EOF", err)
	}
	if info := e.nextLog(t); !info.Flags.Has(stream.NoClusterFound) {
		t.Fatalf("flags %v, want NC", info.Flags)
	}
	if v, _ := e.stats.Value("tcp.nc.downstream_cx_no_route"); v != 1 {
		t.Fatalf("downstream_cx_no_route = %d", v)
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestOriginalDstPassthroughAndDrain(t *testing.T) {
	b := startBackend(t, "original")
	st := stats.New()
	cm := upstream.NewManager(upstream.Options{Stats: st})
	t.Cleanup(cm.Close)
	if err := cm.Update([]*clusterv3.Cluster{{
		Name:                 "PassthroughCluster",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(5 * time.Second),
	}}); err != nil {
		t.Fatal(err)
	}
	p, err := NewFactory(Options{Clusters: cm, Stats: st}).New(&tcpv3.TcpProxy{StatPrefix: "PassthroughCluster",
		ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "PassthroughCluster"}}, listener.ChainInfo{Listener: "virtualOutbound"})
	if err != nil {
		t.Fatal(err)
	}
	cli, srv := tcpPair(t)
	// The listener would set Local to the original destination: the backend.
	conn := &listener.Conn{Conn: srv, Listener: "virtualOutbound", Local: mustAddrPort(t, b.addr()), Remote: mustAddrPort(t, cli.LocalAddr().String())}
	served := make(chan struct{})
	go func() { p.ServeConn(context.Background(), conn); close(served) }()
	_ = cli.SetDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(cli)
	if line, err := r.ReadString('\n'); err != nil || line != "original\n" {
		t.Fatalf("greeting %q %v", line, err)
	}
	// Drain: the connection stays until the deadline, then is closed.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := p.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want deadline exceeded with a live connection", err)
	}
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed by the drain deadline")
	}
	if err := p.Drain(context.Background()); err != nil {
		t.Fatalf("Drain with nothing open = %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	f := NewFactory(Options{})
	tests := []struct {
		name string
		cfg  *tcpv3.TcpProxy
		want string
	}{
		{"no prefix", &tcpv3.TcpProxy{ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}}, "stat_prefix"},
		{"no cluster", &tcpv3.TcpProxy{StatPrefix: "p"}, "cluster or weighted_clusters"},
		{"zero weights", &tcpv3.TcpProxy{StatPrefix: "p", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
			WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a"}}}}}, "total weight"},
		{"metadata_match", &tcpv3.TcpProxy{StatPrefix: "p", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"},
			MetadataMatch: &corev3.Metadata{}}, "metadata_match"},
		{"tunneling", &tcpv3.TcpProxy{StatPrefix: "p", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"},
			TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "x"}}, "tunneling_config"},
		{"attempts", &tcpv3.TcpProxy{StatPrefix: "p", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"},
			MaxConnectAttempts: wrapperspb.UInt32(0)}, "max_connect_attempts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.New(tc.cfg, listener.ChainInfo{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	// Through Build as the listener calls it.
	a, _ := anypb.New(&tcpv3.TcpProxy{StatPrefix: "p", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}})
	if _, err := f.Build(a, listener.ChainInfo{}); err != nil {
		t.Fatal(err)
	}
	if f.ConfigType() != "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" {
		t.Fatal(f.ConfigType())
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func BenchmarkRelay(b *testing.B) {
	b.ReportAllocs()
	benchRelay(b, b.N)
}

// TestBenchRelaySize1 keeps the benchmark running in the suite.
func TestBenchRelaySize1(t *testing.T) { benchRelay(t, 1) }

// benchRelay pushes n 32 KiB chunks from a client through Proxy.relay to an echo
// upstream and back.
func benchRelay(tb testing.TB, n int) {
	cli, srv := tcpPair(tb)
	upCli, upSrv := tcpPair(tb)
	go func() { _, _ = io.Copy(upSrv, upSrv) }()
	p := &Proxy{idle: time.Hour, stats: newProxyStats(stats.New(), "bench")}
	var flags atomic.Uint32
	done := make(chan struct{})
	go func() {
		p.relay(&listener.Conn{Conn: srv}, upCli, &stream.Info{}, &flags)
		close(done)
	}()
	chunk := make([]byte, 32<<10)
	back := make([]byte, len(chunk))
	if b, ok := tb.(*testing.B); ok {
		b.SetBytes(int64(len(chunk)))
		b.ResetTimer()
	}
	for i := 0; i < n; i++ {
		if _, err := cli.Write(chunk); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(cli, back); err != nil {
			tb.Fatal(err)
		}
	}
	cli.Close()
	upSrv.Close()
	<-done
}

// Package tcpproxy is the L4 terminal network filter
// (envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy): it picks a cluster (or one of
// weighted_clusters per connection), asks the cluster for a host and a connection
// (upstream TLS and circuit breakers are the cluster's), and relays bytes both ways with
// half-close, an idle timeout and per-prefix stats. It sits after the listener's filter
// chain match; the sidecar's passthrough chains reach ORIGINAL_DST clusters through it
// with the connection's original destination.
package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
)

// ConfigType is the typed_config message this factory builds.
const ConfigType = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

// Clusters looks clusters up by name; *upstream.Manager implements it.
type Clusters interface {
	Get(name string) *upstream.Cluster
}

// Options configure the factory.
type Options struct {
	Clusters Clusters
	Stats    *stats.Store
	Log      *slog.Logger
	// AccessLogs builds the per-connection logger for a TcpProxy's access_log list; it
	// may return nil for none. When AccessLogs is nil, access_log is ignored.
	AccessLogs func([]*accesslogv3.AccessLog) (func(*stream.Info), error)
}

// Factory builds TCP proxies; it is the listener.NetworkFilterFactory for TcpProxy.
type Factory struct{ opts Options }

var _ listener.NetworkFilterFactory = (*Factory)(nil)

// NewFactory returns a factory.
func NewFactory(opts Options) *Factory {
	if opts.Stats == nil {
		opts.Stats = stats.New()
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &Factory{opts: opts}
}

// ConfigType implements listener.NetworkFilterFactory.
func (f *Factory) ConfigType() string { return ConfigType }

// Build implements listener.NetworkFilterFactory.
func (f *Factory) Build(typed *anypb.Any, chain listener.ChainInfo) (listener.NetworkFilter, error) {
	var cfg tcpv3.TcpProxy
	if err := typed.UnmarshalTo(&cfg); err != nil {
		return nil, fmt.Errorf("tcp_proxy: %w", err)
	}
	return f.New(&cfg, chain)
}

const defaultIdleTimeout = time.Hour // Envoy's idle_timeout default

// New compiles a TcpProxy config; errors name the field.
func (f *Factory) New(cfg *tcpv3.TcpProxy, chain listener.ChainInfo) (*Proxy, error) {
	p := &Proxy{opts: f.opts, chain: chain, maxAttempts: 1, idle: defaultIdleTimeout, sessions: map[*session]struct{}{}}
	if cfg.GetStatPrefix() == "" {
		return nil, errors.New("tcp_proxy: stat_prefix: must not be empty")
	}
	switch {
	case cfg.GetOnDemand() != nil:
		return nil, errors.New("tcp_proxy: on_demand: not supported")
	case cfg.GetTunnelingConfig() != nil:
		return nil, errors.New("tcp_proxy: tunneling_config: not supported")
	case cfg.GetMetadataMatch() != nil:
		return nil, errors.New("tcp_proxy: metadata_match: not supported (subsets)")
	case len(cfg.GetProxyProtocolTlvs()) > 0:
		return nil, errors.New("tcp_proxy: proxy_protocol_tlvs: not supported")
	}
	switch cs := cfg.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		if cs.Cluster == "" {
			return nil, errors.New("tcp_proxy: cluster: must not be empty")
		}
		p.cluster = cs.Cluster
	case *tcpv3.TcpProxy_WeightedClusters:
		var total uint64
		for i, c := range cs.WeightedClusters.GetClusters() {
			if c.GetName() == "" {
				return nil, fmt.Errorf("tcp_proxy: weighted_clusters.clusters[%d].name: must not be empty", i)
			}
			if c.GetMetadataMatch() != nil {
				return nil, fmt.Errorf("tcp_proxy: weighted_clusters.clusters[%d].metadata_match: not supported", i)
			}
			if c.GetWeight() == 0 {
				continue // Envoy: a zero weight is never picked
			}
			total += uint64(c.GetWeight())
			p.weighted = append(p.weighted, weighted{name: c.GetName(), upTo: total})
		}
		if total == 0 {
			return nil, errors.New("tcp_proxy: weighted_clusters: total weight must be positive")
		}
		p.total = total
	default:
		return nil, errors.New("tcp_proxy: cluster or weighted_clusters must be set")
	}
	if d := cfg.GetIdleTimeout(); d != nil {
		p.idle = d.AsDuration() // 0 disables
		if p.idle < 0 {
			return nil, errors.New("tcp_proxy: idle_timeout: negative")
		}
	}
	if n := cfg.GetMaxConnectAttempts(); n != nil {
		if n.GetValue() < 1 {
			return nil, errors.New("tcp_proxy: max_connect_attempts: must be at least 1")
		}
		p.maxAttempts = int(n.GetValue())
	}
	if d := cfg.GetMaxDownstreamConnectionDuration(); d != nil {
		p.maxDuration = d.AsDuration()
	}
	for i, hp := range cfg.GetHashPolicy() {
		if hp.GetSourceIp() == nil {
			return nil, fmt.Errorf("tcp_proxy: hash_policy[%d]: only source_ip is supported", i)
		}
		p.hashSourceIP = true
	}
	if logs := cfg.GetAccessLog(); len(logs) > 0 {
		if f.opts.AccessLogs == nil {
			f.opts.Log.Warn("tcp_proxy: access_log ignored: no access log builder", "stat_prefix", cfg.GetStatPrefix())
		} else {
			l, err := f.opts.AccessLogs(logs)
			if err != nil {
				return nil, fmt.Errorf("tcp_proxy: access_log: %w", err)
			}
			p.accessLog = l
		}
	}
	p.stats = newProxyStats(f.opts.Stats, cfg.GetStatPrefix())
	return p, nil
}

type weighted struct {
	name string
	upTo uint64 // cumulative weight
}

// Proxy is one compiled TcpProxy; it serves the connections of its filter chain.
type Proxy struct {
	opts         Options
	chain        listener.ChainInfo
	cluster      string
	weighted     []weighted
	total        uint64
	idle         time.Duration
	maxAttempts  int
	maxDuration  time.Duration
	hashSourceIP bool
	accessLog    func(*stream.Info)
	stats        *proxyStats

	mu       sync.Mutex
	sessions map[*session]struct{}
	idleCh   chan struct{} // closed when sessions becomes empty (Drain waits on it)
}

var _ listener.NetworkFilter = (*Proxy)(nil)

type proxyStats struct {
	cxTotal, noRoute, rxBytes, txBytes, idleTimeout, maxDuration, flushTotal *stats.Counter
	flushActive                                                              *stats.Gauge
}

func newProxyStats(s *stats.Store, prefix string) *proxyStats {
	tag := stats.Tag{Key: "envoy_tcp_prefix", Value: prefix}
	return &proxyStats{
		cxTotal:     s.Counter("tcp.downstream_cx_total", tag),
		noRoute:     s.Counter("tcp.downstream_cx_no_route", tag),
		rxBytes:     s.Counter("tcp.downstream_cx_rx_bytes_total", tag),
		txBytes:     s.Counter("tcp.downstream_cx_tx_bytes_total", tag),
		idleTimeout: s.Counter("tcp.idle_timeout", tag),
		maxDuration: s.Counter("tcp.max_downstream_connection_duration", tag),
		flushTotal:  s.Counter("tcp.upstream_flush_total", tag),
		flushActive: s.Gauge("tcp.upstream_flush_active", tag),
	}
}

// pickCluster chooses the cluster of one connection: weighted_clusters are drawn at
// random in proportion to their weights.
func (p *Proxy) pickCluster() string {
	if p.weighted == nil {
		return p.cluster
	}
	r := rand.Uint64N(p.total)
	for _, w := range p.weighted {
		if r < w.upTo {
			return w.name
		}
	}
	return p.weighted[len(p.weighted)-1].name
}

// session is one proxied connection pair.
type session struct {
	down   net.Conn
	cancel context.CancelFunc

	mu     sync.Mutex
	up     net.Conn
	closed bool
}

// setUp records the upstream connection; false when the session was closed meanwhile.
func (s *session) setUp(up net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.up = up
	return true
}

func (s *session) closeAll() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	up := s.up
	s.mu.Unlock()
	s.cancel()
	_ = s.down.Close()
	if up != nil {
		_ = up.Close()
	}
}

func (p *Proxy) add(s *session) {
	p.mu.Lock()
	p.sessions[s] = struct{}{}
	p.mu.Unlock()
}

func (p *Proxy) remove(s *session) {
	p.mu.Lock()
	delete(p.sessions, s)
	if len(p.sessions) == 0 && p.idleCh != nil {
		close(p.idleCh)
		p.idleCh = nil
	}
	p.mu.Unlock()
}

// ServeConn implements listener.NetworkFilter; it returns when the connection ends.
func (p *Proxy) ServeConn(ctx context.Context, c *listener.Conn) {
	info := &stream.Info{
		Start:           time.Now(),
		Listener:        c.Listener,
		Downstream:      c.Remote,
		DownstreamLocal: c.Local,
		DownstreamTLS:   c.TLS,
		PeerPrincipal:   c.PeerPrincipal,
		RequestedServer: c.SNI,
		Protocol:        "TCP",
	}
	p.stats.cxTotal.Inc()
	sctx, cancel := context.WithCancel(ctx)
	s := &session{down: c, cancel: cancel}
	p.add(s)
	defer func() {
		s.closeAll()
		p.remove(s)
		info.Duration = time.Since(info.Start)
		if p.accessLog != nil {
			p.accessLog(info)
		}
	}()

	info.Cluster = p.pickCluster()
	cl := p.opts.Clusters.Get(info.Cluster)
	if cl == nil {
		info.SetFlag(stream.NoClusterFound)
		info.ResponseDetails = "cluster_not_found"
		p.stats.noRoute.Inc()
		return
	}
	up, err := p.connect(sctx, cl, c, info)
	if err != nil {
		p.opts.Log.Debug("tcp_proxy: upstream connect", "cluster", info.Cluster, "err", err, "flags", info.Flags.String())
		return
	}
	if !s.setUp(up) { // closed (drain deadline, Close) while connecting
		_ = up.Close()
		return
	}
	// Flags set while both directions run (and by the duration timer) are collected
	// atomically and merged into info when the relay ends.
	var flags atomic.Uint32
	if p.maxDuration > 0 {
		t := time.AfterFunc(p.maxDuration, func() {
			if flags.Or(uint32(stream.DurationTimeout))&uint32(stream.DurationTimeout) == 0 {
				p.stats.maxDuration.Inc()
			}
			s.closeAll()
		})
		defer t.Stop()
	}
	p.relay(c, up, info, &flags)
	info.Flags |= stream.Flags(flags.Load())
}

// connect makes up to max_connect_attempts attempts, each on a freshly picked host
// (previous hosts excluded), and sets the response flags Envoy would on failure.
func (p *Proxy) connect(ctx context.Context, cl *upstream.Cluster, c *listener.Conn, info *stream.Info) (net.Conn, error) {
	lbCtx := &lb.Context{}
	if p.hashSourceIP {
		h := fnv.New64a()
		b := c.Remote.Addr().As16()
		_, _ = h.Write(b[:])
		lbCtx.Hash, lbCtx.HasHash = h.Sum64(), true
	}
	var tried []lb.Host
	var lastErr error
	for attempt := 0; attempt < p.maxAttempts; attempt++ {
		h, err := cl.Pick(lbCtx, c.Local)
		if err != nil {
			info.SetFlag(stream.NoHealthyUpstream)
			return nil, err
		}
		info.Attempts++
		info.UpstreamHost = h.Addr()
		up, err := cl.Dial(ctx, h)
		if err == nil {
			h.Observe(200, false) // a successful connect counts as a success
			return up, nil
		}
		lastErr = err
		info.UpstreamFailure = err.Error()
		if errors.Is(err, upstream.ErrOverflow) {
			info.SetFlag(stream.UpstreamOverflow)
			return nil, err
		}
		if ctx.Err() != nil {
			info.SetFlag(stream.DownstreamConnectionTermination)
			return nil, err
		}
		h.Observe(0, true)
		if attempt+1 < p.maxAttempts {
			tried = append(tried, h)
			lbCtx.Exclude = func(x lb.Host) bool {
				for _, t := range tried {
					if t == x {
						return true
					}
				}
				return false
			}
		}
	}
	info.SetFlag(stream.UpstreamConnectionFailure)
	return nil, lastErr
}

// relay copies both ways until both directions end. A FIN is forwarded as a
// half-close; an error in either direction closes both connections.
func (p *Proxy) relay(down *listener.Conn, up net.Conn, info *stream.Info, flags *atomic.Uint32) {
	t := &idleTracker{idle: p.idle, flags: flags}
	t.touch()
	var flushing, upDone atomic.Bool
	var rx int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		var eof bool
		rx, eof = p.copyDir(up, down, t, p.stats.rxBytes)
		if eof {
			// The downstream finished sending while the upstream may still answer:
			// the upstream connection carries on (upstream_flush_*).
			if !upDone.Load() {
				flushing.Store(true)
				p.stats.flushTotal.Inc()
				p.stats.flushActive.Inc()
			}
		} else {
			_ = up.Close()
			_ = down.Close()
		}
	}()
	tx, eof := p.copyDir(down, up, t, p.stats.txBytes)
	upDone.Store(true)
	if !eof {
		_ = up.Close()
		_ = down.Close()
	}
	<-done
	if flushing.Load() {
		p.stats.flushActive.Dec()
	}
	info.BytesReceived, info.BytesSent = rx, tx
}

// idleTracker implements idle_timeout without refreshing deadlines on every read:
// reads record the time (one atomic store); a read deadline is armed for the whole
// timeout and, when it fires, re-armed for what is left if either direction moved.
type idleTracker struct {
	idle  time.Duration
	last  atomic.Int64 // unix nanoseconds of the last read in either direction
	flags *atomic.Uint32
}

func (t *idleTracker) touch() { t.last.Store(time.Now().UnixNano()) }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyDir copies src to dst. eof is true when src ended cleanly (FIN), in which case
// dst was half-closed.
func (p *Proxy) copyDir(dst, src net.Conn, t *idleTracker, counter *stats.Counter) (n int64, eof bool) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	if t.idle > 0 {
		_ = src.SetReadDeadline(time.Now().Add(t.idle))
	}
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if t.idle > 0 {
				t.touch()
			}
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			counter.Add(uint64(nw))
			if werr != nil {
				return n, false
			}
		}
		if rerr == nil {
			continue
		}
		if errors.Is(rerr, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			} else if lc, ok := dst.(*listener.Conn); ok {
				closeWrite(lc.Conn)
			}
			return n, true
		}
		if t.idle > 0 && errors.Is(rerr, os.ErrDeadlineExceeded) {
			left := t.idle - time.Since(time.Unix(0, t.last.Load()))
			if left > 0 {
				_ = src.SetReadDeadline(time.Now().Add(left))
				continue
			}
			if t.flags.Or(uint32(stream.StreamIdleTimeout))&uint32(stream.StreamIdleTimeout) == 0 {
				p.stats.idleTimeout.Inc() // once, though both directions time out
			}
		}
		return n, false
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// Drain implements listener.NetworkFilter. A TCP stream has no way to ask the peer to
// stop, so connections run on until they end or ctx does; then they are closed.
func (p *Proxy) Drain(ctx context.Context) error {
	for {
		p.mu.Lock()
		if len(p.sessions) == 0 {
			p.mu.Unlock()
			return nil
		}
		if p.idleCh == nil {
			p.idleCh = make(chan struct{})
		}
		ch := p.idleCh
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			p.mu.Lock()
			ss := make([]*session, 0, len(p.sessions))
			for s := range p.sessions {
				ss = append(ss, s)
			}
			p.mu.Unlock()
			for _, s := range ss {
				s.closeAll()
			}
			return ctx.Err()
		}
	}
}

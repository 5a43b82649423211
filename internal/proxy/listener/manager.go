package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/sockio"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
)

// WrapperFactory compiles a non-terminal network filter (e.g.
// envoy.filters.network.rbac): it wraps the next filter of the chain, which it may
// call or not for each connection. Wrap is called once per compiled chain.
type WrapperFactory interface {
	ConfigType() string // full proto message name
	Wrap(typed *anypb.Any, chain ChainInfo, next NetworkFilter) (NetworkFilter, error)
}

// Options configure a Manager.
type Options struct {
	Secrets *tlsctx.Store
	Stats   *stats.Store
	Log     *slog.Logger
	Filters []NetworkFilterFactory // terminal network filters, by ConfigType
	// Wrappers are the non-terminal network filters, by ConfigType.
	Wrappers []WrapperFactory
	// DrainTimeout bounds the background drain of network filters replaced or removed by
	// an Update (default 5 s); Drain on them gets a context with this deadline.
	DrainTimeout time.Duration
}

// Manager owns the proxy's listeners. Update swaps whole generations; the accept
// loops and connections read the current one through atomic pointers.
type Manager struct {
	opts     Options
	log      *slog.Logger
	terminal map[string]NetworkFilterFactory
	wrappers map[string]WrapperFactory

	ctx    context.Context // ServeConn's context; cancelled by Close
	cancel context.CancelFunc

	mu             sync.Mutex // serialises Update, Drain, Close
	sockets        map[string]*socket
	closed         bool
	drainedAll     bool
	drainedInbound bool
	gen            atomic.Pointer[generation]
	background     sync.WaitGroup // drains of replaced filters, accept loops

	connMu      sync.Mutex
	conns       map[*replayConn]struct{}
	connsClosed bool // Close ran: no new connection is tracked

	// originalDst reads SO_ORIGINAL_DST; tests replace it.
	originalDst func(net.Conn) (netip.AddrPort, bool)
}

// generation is one applied set of listeners.
type generation struct {
	byName      map[string]*compiledListener
	byAddr      map[netip.AddrPort]*compiledListener // original-dst dispatch, exact
	wildcard    map[netip.AddrPort]*compiledListener // 0.0.0.0:port and [::]:port
	filters     map[string]NetworkFilter             // by chain key
	places      map[string]string                    // chain key -> where the chain sits
	secretNames []string
}

// socket is a bound listening socket; its compiled listener is swapped on update.
type socket struct {
	cfgAddr netip.AddrPort
	ln      net.Listener
	cur     atomic.Pointer[compiledListener]
	stopped atomic.Bool
	stop    chan struct{}
	done    chan struct{}
}

func (s *socket) close() {
	if s.stopped.CompareAndSwap(false, true) {
		close(s.stop)
		_ = s.ln.Close()
	}
}

// NewManager returns a manager with no listeners.
func NewManager(opts Options) *Manager {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Stats == nil {
		opts.Stats = stats.New()
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	m := &Manager{
		opts:        opts,
		log:         opts.Log,
		terminal:    map[string]NetworkFilterFactory{},
		wrappers:    map[string]WrapperFactory{},
		sockets:     map[string]*socket{},
		conns:       map[*replayConn]struct{}{},
		originalDst: originalDst,
	}
	for _, f := range opts.Filters {
		m.terminal[f.ConfigType()] = f
	}
	for _, w := range opts.Wrappers {
		m.wrappers[w.ConfigType()] = w
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.gen.Store(&generation{byName: map[string]*compiledListener{}, filters: map[string]NetworkFilter{}})
	return m
}

// Update replaces the whole set of listeners (LDS is state of the world). Everything is
// validated and built first, and new addresses are bound, before anything changes; on
// error nothing changes and the error names each listener and field at fault.
// Listeners whose address is unchanged keep their socket and get their new chains
// atomically; network filters whose config is unchanged are kept; replaced or removed
// ones are drained in the background.
func (m *Manager) Update(listeners []*listenerv3.Listener) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("listener: manager closed")
	}
	old := m.gen.Load()
	cp := &compiler{m: m, reuse: old.filters, built: map[string]NetworkFilter{}, used: map[string]NetworkFilter{}, places: map[string]string{}}
	next := &generation{
		byName:   map[string]*compiledListener{},
		byAddr:   map[netip.AddrPort]*compiledListener{},
		wildcard: map[netip.AddrPort]*compiledListener{},
	}
	var errs []error
	var order []*compiledListener
	for i, l := range listeners {
		if l == nil {
			errs = append(errs, fmt.Errorf("listener[%d]: nil", i))
			continue
		}
		cl, lerrs := cp.listener(l)
		if len(lerrs) > 0 {
			errs = append(errs, lerrs...)
			continue
		}
		if _, dup := next.byName[cl.name]; dup {
			errs = append(errs, fmt.Errorf("listener %q: name: duplicate", cl.name))
			continue
		}
		if cl.addr.Port() != 0 {
			if other := next.byAddr[cl.addr]; other != nil {
				errs = append(errs, fmt.Errorf("listener %q: address: %v already used by listener %q", cl.name, cl.addr, other.name))
				continue
			}
			next.byAddr[cl.addr] = cl
			if cl.addr.Addr().IsUnspecified() {
				next.wildcard[cl.addr] = cl
			}
		}
		next.byName[cl.name] = cl
		order = append(order, cl)
		next.secretNames = append(next.secretNames, cl.secretNames...)
	}
	if len(errs) > 0 {
		m.abandon(cp)
		return fmt.Errorf("listener: %w", errors.Join(errs...))
	}
	next.secretNames = sortedUnique(next.secretNames)
	next.filters = cp.used
	next.places = cp.places

	// Bind what is new. A socket is kept when its listener keeps its address, or is
	// handed to another listener taking over the same address.
	keep := map[string]*socket{}
	var fresh []*socket
	taken := map[*socket]bool{}
	for _, cl := range order {
		if !cl.bind {
			continue
		}
		if s := m.sockets[cl.name]; s != nil && s.cfgAddr == cl.addr && !taken[s] {
			keep[cl.name], taken[s] = s, true
			continue
		}
		if cl.addr.Port() != 0 {
			if s := m.socketAt(cl.addr, next, taken); s != nil {
				keep[cl.name], taken[s] = s, true
				continue
			}
		}
		if m.drainedAll || (m.drainedInbound && cl.inbound) {
			continue // /drain_listeners stopped this kind of listener for good
		}
		s, err := bind(cl.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("listener %q: address: %w", cl.name, err))
			continue
		}
		keep[cl.name] = s
		fresh = append(fresh, s)
	}
	if len(errs) > 0 {
		for _, s := range fresh {
			s.close()
		}
		m.abandon(cp)
		return fmt.Errorf("listener: %w", errors.Join(errs...))
	}

	// Commit.
	for name, s := range keep {
		s.cur.Store(next.byName[name])
	}
	m.gen.Store(next)
	for _, s := range fresh {
		m.background.Add(1)
		go m.acceptLoop(s)
	}
	for name, s := range m.sockets {
		if !taken[s] {
			s.close()
			m.log.Info("listener: removed", "listener", name)
		}
	}
	m.sockets = keep
	byPlace := make(map[string]NetworkFilter, len(next.places))
	for k, pl := range next.places {
		byPlace[pl] = next.filters[k]
	}
	for k, f := range old.filters {
		if next.filters[k] != f {
			if h, ok := f.(HandOff); ok {
				if nf := byPlace[old.places[k]]; nf != nil && nf != f && h.HandOff(nf) {
					m.log.Debug("listener: connections handed to the replacing filter")
				}
			}
			m.drainInBackground(f)
		}
	}
	m.opts.Stats.Gauge("listener_manager.total_listeners_active").Set(int64(len(next.byName)))
	return nil
}

// socketAt finds an existing socket bound to addr that no listener of next keeps.
func (m *Manager) socketAt(addr netip.AddrPort, next *generation, taken map[*socket]bool) *socket {
	for name, s := range m.sockets {
		if s.cfgAddr != addr || taken[s] || s.stopped.Load() {
			continue
		}
		if nl := next.byName[name]; nl != nil && nl.bind && nl.addr == addr {
			continue // its own listener keeps it
		}
		return s
	}
	return nil
}

// abandon drains the filters an unsuccessful Update built.
func (m *Manager) abandon(cp *compiler) {
	for _, f := range cp.built {
		m.drainNow(f)
	}
}

func (m *Manager) drainNow(f NetworkFilter) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.background.Add(1)
	go func() {
		defer m.background.Done()
		_ = f.Drain(ctx)
	}()
}

func (m *Manager) drainInBackground(f NetworkFilter) {
	m.background.Add(1)
	go func() {
		defer m.background.Done()
		ctx, cancel := context.WithTimeout(context.Background(), m.opts.DrainTimeout)
		defer cancel()
		if err := f.Drain(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			m.log.Debug("listener: drain of a replaced filter chain", "err", err)
		}
	}()
}

func bind(addr netip.AddrPort) (*socket, error) {
	network := "tcp4"
	if addr.Addr().Is6() {
		// Envoy's default (ipv4_compat false): an IPv6 listener takes IPv6 only.
		network = "tcp6"
	}
	// Go sets SO_REUSEADDR on listening sockets, so a port in TIME_WAIT rebinds.
	ln, err := net.Listen(network, addr.String())
	if err != nil {
		return nil, err
	}
	return &socket{cfgAddr: addr, ln: ln, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Addr is the bound address of a listener (port 0 resolved); the configured address for
// a listener that does not bind; nil for an unknown name.
func (m *Manager) Addr(name string) net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sockets[name]; s != nil {
		return s.ln.Addr()
	}
	if cl := m.gen.Load().byName[name]; cl != nil {
		return net.TCPAddrFromAddrPort(cl.addr)
	}
	return nil
}

// SecretNames lists the SDS secrets the listeners' TLS contexts refer to, sorted.
func (m *Manager) SecretNames() []string {
	return append([]string(nil), m.gen.Load().secretNames...)
}

// Drain serves admin /drain_listeners: the listeners (only those with
// traffic_direction INBOUND when inboundOnly) stop accepting, and the network filters of
// their chains drain their connections. It returns when they are done or ctx ends.
// Drained listeners stay stopped across later updates.
func (m *Manager) Drain(ctx context.Context, inboundOnly bool) error {
	m.mu.Lock()
	if inboundOnly {
		m.drainedInbound = true
	} else {
		m.drainedAll = true
	}
	gen := m.gen.Load()
	var filters []NetworkFilter
	seen := map[NetworkFilter]bool{}
	for name, cl := range gen.byName {
		if inboundOnly && !cl.inbound {
			continue
		}
		if s := m.sockets[name]; s != nil {
			s.close()
		}
		for _, ch := range cl.chains {
			if !seen[ch.filter] {
				seen[ch.filter] = true
				filters = append(filters, ch.filter)
			}
		}
	}
	m.mu.Unlock()

	errc := make(chan error, len(filters))
	for _, f := range filters {
		go func() { errc <- f.Drain(ctx) }()
	}
	var first error
	for range filters {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// Close stops every listener, makes every network filter drop its connections, closes
// the connections still open, and waits for the background work.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	for _, s := range m.sockets {
		s.close()
	}
	gen := m.gen.Load()
	m.mu.Unlock()

	m.cancel()
	seen := map[NetworkFilter]bool{}
	for _, f := range gen.filters {
		if !seen[f] {
			seen[f] = true
			m.drainNow(f)
		}
	}
	m.connMu.Lock()
	m.connsClosed = true
	conns := make([]*replayConn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.connMu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	m.background.Wait()
	return nil
}

func (m *Manager) acceptLoop(s *socket) {
	defer m.background.Done()
	defer close(s.done)
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.stopped.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failures (EMFILE, ECONNABORTED): back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("listener: accept", "addr", s.ln.Addr().String(), "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-s.stop:
				return
			}
		}
		delay = 0
		go m.serve(s, c)
	}
}

func (m *Manager) track(c *replayConn) bool {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	if m.connsClosed {
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *Manager) untrack(c *replayConn) {
	m.connMu.Lock()
	delete(m.conns, c)
	m.connMu.Unlock()
}

// lookup finds the listener serving an original destination: the exact address, then
// the wildcard address of the same port and family.
func (g *generation) lookup(dst netip.AddrPort) *compiledListener {
	if cl := g.byAddr[dst]; cl != nil {
		return cl
	}
	unspec := netip.IPv4Unspecified()
	if dst.Addr().Is6() {
		unspec = netip.IPv6Unspecified()
	}
	return g.wildcard[netip.AddrPortFrom(unspec, dst.Port())]
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// serve runs one accepted connection through listener filters, original-destination
// dispatch, filter chain match and TLS, then hands it to the chain's network filter.
func (m *Manager) serve(s *socket, raw net.Conn) {
	// Inspection and original_dst read the socket itself; everything after reads and
	// writes it through raw socket calls (package sockio), TLS included.
	rc := &replayConn{Conn: sockio.Wrap(raw), m: m}
	if !m.track(rc) {
		_ = raw.Close()
		return
	}
	l := s.cur.Load()
	if l == nil {
		_ = rc.Close()
		return
	}
	in := &inspection{
		p:      peeker{conn: raw},
		local:  addrPort(raw.LocalAddr()),
		remote: addrPort(raw.RemoteAddr()),
	}
	if !m.runListenerFilters(l, in) {
		_ = rc.Close()
		return
	}
	target := l
	if l.useOriginalDst && in.restored {
		// use_original_dst: hand the connection to the listener of the original
		// destination, which runs its own listener filters; when none, serve it here.
		if t := m.gen.Load().lookup(in.local); t != nil && t != l {
			target = t
			if !m.runListenerFilters(t, in) {
				_ = rc.Close()
				return
			}
		}
	}
	if in.p.deadline != (time.Time{}) {
		_ = raw.SetReadDeadline(time.Time{})
	}
	if in.d.transport == "" {
		in.d.transport = transportRaw // Envoy's default when no inspector decided
	}
	rc.peeked = in.p.buf

	mi := matchInput{dst: in.local, src: in.remote, sni: in.d.sni, transport: in.d.transport, alpn: in.d.alpn}
	ch := target.root.find(&mi)
	if ch == nil {
		ch = target.defaultChain
	}
	if ch == nil {
		target.stats.noMatch.Inc()
		m.log.Debug("listener: no filter chain match", "listener", target.name, "dst", in.local, "src", in.remote,
			"sni", in.d.sni, "transport", in.d.transport, "alpn", in.d.alpn)
		_ = rc.Close()
		return
	}
	target.stats.cxTotal.Inc()
	if !rc.setStats(target.stats) {
		return // closed meanwhile (Close)
	}

	c := &Conn{
		Conn:     rc,
		Listener: target.name,
		Chain:    ch.name,
		Remote:   in.remote,
		Local:    in.local,
		SNI:      in.d.sni,
	}
	if ch.tls != nil {
		tc := tls.Server(rc, ch.tls)
		_ = tc.SetDeadline(time.Now().Add(ch.handshakeTimeout))
		if err := tc.HandshakeContext(m.ctx); err != nil {
			target.stats.sslErr.Inc()
			m.log.Debug("listener: TLS handshake", "listener", target.name, "chain", ch.name, "src", in.remote, "err", err)
			_ = rc.Close()
			return
		}
		_ = tc.SetDeadline(time.Time{})
		target.stats.sslHandshake.Inc()
		cs := tc.ConnectionState()
		c.Conn, c.TLS = tc, true
		c.SNI = cs.ServerName
		c.ALPN = cs.NegotiatedProtocol
		c.PeerPrincipal = tlsctx.PeerPrincipal(&cs)
	} else if in.d.transport == transportRaw && len(in.d.alpn) == 1 {
		// http_inspector's verdict, in the names the HTTP codecs use.
		switch in.d.alpn[0] {
		case "h2c":
			c.ALPN = "h2"
		case "http/1.1", "http/1.0":
			c.ALPN = "http/1.1"
		}
	}
	ch.filter.ServeConn(m.ctx, c)
}

// inspection is a connection's state while listener filters run.
type inspection struct {
	p             peeker
	local, remote netip.AddrPort
	restored      bool // original_dst found a (redirected) original destination
	d             detected
}

// runListenerFilters runs l's listener filters in order; false when the connection
// must be closed (listener_filters_timeout without continue_on_listener_filters_timeout).
func (m *Manager) runListenerFilters(l *compiledListener, in *inspection) bool {
	if l.timeout > 0 {
		in.p.deadline = time.Now().Add(l.timeout)
		in.p.timedOut = false
	} else {
		in.p.deadline = time.Time{}
	}
	for _, f := range l.filters {
		if f.disabled != nil && f.disabled.eval(in.local.Port()) {
			continue
		}
		var inspect func([]byte, *detected) parseState
		switch f.kind {
		case lfOriginalDst:
			if dst, ok := m.originalDst(in.p.conn); ok {
				in.local, in.restored = dst, true
			}
			continue
		case lfTLSInspector:
			if in.d.transport != "" {
				continue
			}
			inspect = inspectTLS
		case lfHTTPInspector:
			if in.d.transport == transportTLS {
				continue // HTTP is inside TLS; ALPN tells
			}
			inspect = inspectHTTP
		}
		for inspect(in.p.buf, &in.d) == needMore {
			if in.p.more() {
				continue
			}
			if in.p.timedOut {
				l.stats.preTimeout.Inc()
				if !l.continueOnTimeout {
					return false
				}
				return true // go on to the chain match with what is known
			}
			break // EOF or maxPeek: decide with what is known
		}
	}
	return true
}

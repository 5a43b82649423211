// Package pool holds the connections to one upstream host: HTTP/1.1 connections reused
// with keep-alive, or HTTP/2 connections multiplexing streams (h2c with prior knowledge
// in plaintext, ALPN "h2" under TLS), under the cluster's circuit breakers (Limits).
// The upstream package builds one Pool per host; the router reaches it through
// upstream.Cluster.RoundTrip and the TCP proxy through upstream.Cluster.Dial.
//
// HTTP/1.1 connections are this package's (h1.go), explicit HTTP/2 ones weft's codec
// (package h2), and those whose protocol ALPN decides (auto_config under TLS) net/http
// ClientConns; this package decides which connection a request takes, when a new one
// is opened, when one is closed, and what is counted.
package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/h1"
	"github.com/weft-mesh/weft/internal/proxy/h2"
	"github.com/weft-mesh/weft/internal/proxy/sockio"
)

var (
	// ErrOverflow is returned when a circuit breaker is open (max_connections for a
	// dial, max_pending_requests, max_requests). The router answers 503 with flag UO.
	ErrOverflow = errors.New("upstream: circuit breaker overflow")
	// ErrConnectFailure is wrapped by errors from dialing the host (connect timeout,
	// refused, TLS handshake). The router answers 503 with flag UF.
	ErrConnectFailure = errors.New("upstream: connect failure")
	// ErrClosed is returned by a pool that has been closed for good.
	ErrClosed = errors.New("upstream: pool closed")
)

// Protocol is the upstream protocol of a pool's connections.
type Protocol uint8

const (
	// HTTP1 is HTTP/1.1 with keep-alive, one request per connection at a time.
	HTTP1 Protocol = iota
	// HTTP2 multiplexes streams on few connections: h2c with prior knowledge in
	// plaintext, ALPN h2 under TLS.
	HTTP2
	// Auto negotiates by ALPN (h2, then http/1.1) under TLS and is HTTP/1.1 in
	// plaintext (HttpProtocolOptions.auto_config).
	Auto
)

func (p Protocol) String() string {
	switch p {
	case HTTP2:
		return "HTTP/2"
	case Auto:
		return "auto"
	}
	return "HTTP/1.1"
}

// Defaults for Config.
const (
	// DefaultConnectTimeout is Envoy's cluster connect_timeout default.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultIdleTimeout is Envoy's common_http_protocol_options.idle_timeout default.
	DefaultIdleTimeout = time.Hour
	// DefaultMaxStreams bounds the streams opened on one HTTP/2 connection when
	// http2_protocol_options.max_concurrent_streams is not set lower (the peer's
	// SETTINGS_MAX_CONCURRENT_STREAMS also applies). It is also the capacity assumed for
	// a connection being dialled, so a burst of requests shares one new connection.
	DefaultMaxStreams = 100
)

// Config is what every pool of one cluster shares. It is built once per cluster
// version; pools only read it.
type Config struct {
	Protocol Protocol
	// TLS, when set, wraps each connection (transport_socket envoy.transport_sockets.tls).
	TLS *tls.Config
	// ConnectTimeout bounds TCP connect plus TLS handshake (cluster connect_timeout).
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection without requests for that long
	// (common_http_protocol_options.idle_timeout; 0 means DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxRequestsPerConnection closes a connection after that many requests
	// (common_http_protocol_options.max_requests_per_connection); 0 is unlimited.
	MaxRequestsPerConnection uint32
	// MaxConcurrentStreams caps streams per HTTP/2 connection
	// (http2_protocol_options.max_concurrent_streams); 0 means DefaultMaxStreams.
	MaxConcurrentStreams uint32
	// MaxIdle is the most idle HTTP/1.1 connections kept per host; 0 is unlimited
	// (Envoy keeps every idle connection until idle_timeout).
	MaxIdle int
	// Resolve, when set, turns the pool's address into the one to dial at each new
	// connection (LOGICAL_DNS). It returns "ip:port".
	Resolve func(ctx context.Context, addr string) (string, error)
	// Limits are the cluster's circuit breakers; Stats come with them.
	Limits *Limits

	// transport opens the connections whose protocol ALPN decides (auto_config under
	// TLS), with net/http's client; built on first use, as most clusters of a large mesh never carry a request from
	// one sidecar and an http.Transport per cluster was 3 KB of its heap. Init sets a
	// fresh one, so a copy of a Config re-initialised for another protocol has its own.
	transport *lazyTransport
	h1        bool        // connections are this package's HTTP/1.1 (h1conn)
	tlsProto  string      // scheme to dial: "http" or "https"
	rawTLS    *tls.Config // TLS as configured, ALPN untouched, for Dial
}

// Init validates c and builds what its pools share; call it once before New.
func (c *Config) Init() error {
	if c.Limits == nil {
		return errors.New("pool: config without Limits")
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxStreams
	}
	c.transport = new(lazyTransport)
	c.tlsProto = "http"
	if c.TLS != nil {
		c.tlsProto = "https"
		c.rawTLS = c.TLS
		// alpn_protocols of the UpstreamTlsContext win (the configuration is then
		// used as it is: Istio's clusters all name theirs); without them the
		// protocol's, in a copy.
		if len(c.TLS.NextProtos) == 0 {
			cfg := c.TLS.Clone()
			switch c.Protocol {
			case HTTP2:
				cfg.NextProtos = []string{"h2"}
			case Auto:
				cfg.NextProtos = []string{"h2", "http/1.1"}
			default:
				cfg.NextProtos = []string{"http/1.1"}
			}
			c.TLS = cfg
		}
	}
	c.h1 = c.Protocol == HTTP1 || (c.Protocol == Auto && c.TLS == nil)
	return nil
}

type lazyTransport struct {
	once sync.Once
	t    *http.Transport
}

// httpTransport returns the transport of c's ALPN-decided connections, building it
// on the first call.
func (c *Config) httpTransport() *http.Transport {
	c.transport.once.Do(func() {
		t := &http.Transport{
			// A proxy forwards bodies as they come: never add Accept-Encoding nor
			// decompress on the caller's behalf.
			DisableCompression: true,
			// Requests go out whole; a 100-continue from the client was already handled
			// downstream, so the body is sent right after the headers.
			ExpectContinueTimeout:  0,
			MaxResponseHeaderBytes: 1 << 20,
			ForceAttemptHTTP2:      false,
			Protocols:              new(http.Protocols),
			HTTP2:                  &http.HTTP2Config{},
		}
		switch {
		case c.Protocol == Auto && c.TLS != nil:
			// auto_config: ALPN decides (h2 preferred).
			t.Protocols.SetHTTP1(true)
			t.Protocols.SetHTTP2(true)
		default:
			t.Protocols.SetHTTP1(true)
		}
		if c.TLS != nil {
			t.DialTLSContext = c.dialTLS
		}
		t.DialContext = c.dialTCP
		c.transport.t = t
	})
	return c.transport.t
}

// dialH2 opens an HTTP/2 connection with prior knowledge, under TLS whatever ALPN
// said (Istio's ALPN lists have no "h2"; Envoy's codec does not depend on it).
func (p *Pool) dialH2(ctx context.Context) (clientConn, error) {
	var nc net.Conn
	var err error
	if p.cfg.TLS != nil {
		nc, err = p.cfg.dialTLS(ctx, "tcp", p.addr)
	} else {
		nc, err = p.cfg.dialTCP(ctx, "tcp", p.addr)
	}
	if err != nil {
		return nil, err
	}
	cc, err := h2.NewClientConn(nc, h2.ClientConfig{Scheme: p.cfg.tlsProto})
	if err != nil {
		return nil, err
	}
	return cc, nil
}

// dialTCP opens a TCP connection. The connection is counted by the caller (the pool)
// against max_connections before it calls NewClientConn.
func (c *Config) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.Resolve != nil {
		a, err := c.Resolve(ctx, addr)
		if err != nil {
			return nil, err
		}
		addr = a
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		// Envoy sets TCP_NODELAY on upstream connections.
		_ = tc.SetNoDelay(true)
	}
	// Reads and writes, TLS's included, go through raw socket calls (package sockio).
	conn = sockio.Wrap(conn)
	if ds, ok := ctx.Value(dialKey{}).(*dialState); ok {
		// From here the connection's Close gives back its max_connections slot.
		ds.dialed = true
		return ds.pool.counted(conn), nil
	}
	return conn, nil
}

func (c *Config) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.dialTLSWith(ctx, network, addr, c.TLS)
}

func (c *Config) dialTLSWith(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
	raw, err := c.dialTCP(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}

// Pool is the set of connections to one host. Safe for concurrent use.
type Pool struct {
	cfg  *Config
	addr string

	// conns is copy-on-write: the request path reads it without a lock.
	conns atomic.Pointer[[]*pconn]

	rqActive atomic.Int64 // requests in flight to this host
	cxActive atomic.Int64 // connections open to this host

	// nwait mirrors waiting for the request path's cheap "anyone to wake?" check.
	nwait      atomic.Int32
	timerArmed atomic.Bool

	mu         sync.Mutex
	waitCh     chan struct{} // closed and replaced when capacity may have freed
	waiting    int           // requests waiting for capacity in this pool
	connecting int           // capacity (streams) of connections being dialled
	draining   bool
	idleTimer  *time.Timer
	closed     bool
	// gen changes when a connection is added or room frees with waiters around,
	// so a request that found no room can tell whether to look again.
	gen uint64
}

// clientConn is a multiplexing connection: weft's HTTP/2 codec (h2.ClientConn) for
// explicit HTTP/2, net/http's ClientConn for what ALPN decides (auto_config).
type clientConn interface {
	RoundTrip(*http.Request) (*http.Response, error)
	Reserve() error
	Release()
	InFlight() int
	Err() error
	Close() error
}

// pconn is one connection of a pool: this package's HTTP/1.1 connection, or a
// clientConn.
type pconn struct {
	pool     *Pool
	h1       *h1conn
	cc       clientConn
	requests atomic.Int64 // requests started on it (max_requests_per_connection)
	streams  atomic.Int32 // requests in flight on it (max_concurrent_streams)
	retired  atomic.Bool  // takes no new requests; closed when idle
	removed  atomic.Bool
	idleAt   atomic.Int64 // unix nanos when it last became idle, 0 while busy
}

func (pc *pconn) reserve() bool {
	if pc.h1 != nil {
		return pc.h1.reserve()
	}
	return pc.cc.Reserve() == nil
}

func (pc *pconn) release() {
	if pc.h1 != nil {
		pc.h1.busy.Store(false)
		return
	}
	pc.cc.Release()
}

func (pc *pconn) close() {
	if pc.h1 != nil {
		pc.h1.close()
		return
	}
	pc.cc.Close()
}

// closeIfIdle closes the connection when no request uses it; it reserves it first so
// no request can take it meanwhile.
func (pc *pconn) closeIfIdle() bool {
	if pc.h1 != nil {
		if !pc.h1.reserve() {
			return false
		}
		pc.h1.close()
		return true
	}
	if pc.cc.Reserve() != nil {
		return pc.cc.Err() != nil
	}
	if pc.cc.InFlight() > 1 {
		pc.cc.Release()
		return false
	}
	pc.cc.Close()
	return true
}

// New returns the pool of host addr ("ip:port", or "name:port" with cfg.Resolve).
// cfg must have been Init'ed.
func New(cfg *Config, addr string) *Pool {
	p := &Pool{cfg: cfg, addr: addr, waitCh: make(chan struct{})}
	empty := []*pconn{}
	p.conns.Store(&empty)
	return p
}

// Addr is the host address the pool dials.
func (p *Pool) Addr() string { return p.addr }

// ActiveRequests is the number of requests in flight to the host.
func (p *Pool) ActiveRequests() int64 { return p.rqActive.Load() }

// ActiveConnections is the number of connections open to the host (pooled and Dial'ed).
func (p *Pool) ActiveConnections() int64 { return p.cxActive.Load() }

// emptyUA suppresses net/http's default User-Agent: a proxy sends what it received.
var emptyUA = []string{""}

// maxStaleAttempts bounds how often a replayable request is sent again after landing
// on a kept-alive connection the server had already closed.
const maxStaleAttempts = 4

// RoundTrip sends req on a connection of the pool, opening one when none has room and
// the breakers allow. req.URL.Host should carry the authority (req.Host is used when
// empty); the address dialled is the pool's. The response body must be read to EOF or
// closed; that releases the request's breaker slots and the connection.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	l := p.cfg.Limits
	if !l.AcquireRequest() {
		closeBody(req)
		return nil, fmt.Errorf("%w: max_requests", ErrOverflow)
	}
	if req.Header != nil {
		if _, ok := req.Header["User-Agent"]; !ok {
			req.Header["User-Agent"] = emptyUA
		}
	}
	if req.URL.Host == "" {
		req.URL.Host = req.Host
		if req.URL.Host == "" {
			req.URL.Host = p.addr
		}
	}
	for attempt := 0; ; attempt++ {
		pc, err := p.acquire(req.Context())
		if err != nil {
			l.ReleaseRequest()
			closeBody(req)
			return nil, err
		}
		st := l.st
		if attempt == 0 {
			st.RqTotal.Inc()
		}
		st.RqActive.Inc()
		p.rqActive.Add(1)
		if pc.h1 != nil {
			resp, err := pc.h1.roundTrip(req, pc.requests.Load() > 1)
			if err != nil {
				p.h1Done(pc)
				if errors.Is(err, errStale) {
					// A server that drains closes its idle connections at
					// once: the other idle ones are likely closed too, so
					// they go, and the retry dials a fresh connection.
					p.closeIdleH1()
				}
				if attempt < maxStaleAttempts-1 && errors.Is(err, errStale) && replayable(req) {
					// The server closed the kept-alive connection just before
					// the request went out: it never saw it; send it again. A
					// server that drains closes all its idle connections at
					// once, so the next idle one may be stale too: try a few,
					// as Go's own HTTP client does, then a fresh connection.
					if l.AcquireRequest() {
						continue
					}
				}
				return nil, err
			}
			return resp, nil
		}
		resp, err := pc.cc.RoundTrip(req)
		if err != nil {
			p.requestDone(pc, true)
			return nil, err
		}
		if resp.Body == nil || resp.Body == http.NoBody {
			p.requestDone(pc, true)
			return resp, nil
		}
		resp.Body = &body{rc: resp.Body, pc: pc}
		return resp, nil
	}
}

// replayable reports whether a request may be sent again after a stale connection:
// no body was consumed and the method is idempotent (as net/http decides).
func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// requestDone releases what a request held; releaseRequest false keeps the
// max_requests slot (a retry on a fresh connection reuses it). For a ClientConn it
// also notices the connection going idle (this pool counts streams itself, so it
// needs no net/http state hook).
func (p *Pool) requestDone(pc *pconn, releaseRequest bool) {
	st := p.cfg.Limits.st
	st.RqActive.Dec()
	p.rqActive.Add(-1)
	if releaseRequest {
		p.cfg.Limits.ReleaseRequest()
	}
	if pc.streams.Add(-1) == 0 && pc.cc != nil {
		switch {
		case pc.cc.Err() != nil:
			p.remove(pc)
		case pc.retired.Load():
			// max_requests_per_connection reached, or draining.
			if pc.closeIfIdle() {
				p.remove(pc)
			}
		default:
			pc.idleAt.Store(time.Now().UnixNano())
			p.idleArm()
		}
	}
	p.wake()
}

// wake tells requests waiting for room that some may have freed.
func (p *Pool) wake() {
	if p.nwait.Load() == 0 {
		return
	}
	p.mu.Lock()
	p.broadcastLocked()
	p.mu.Unlock()
}

// h1Done ends a request on an HTTP/1.1 connection: the connection goes back to the
// pool, or is closed when it died, is retired or exceeds MaxIdle.
func (p *Pool) h1Done(pc *pconn) {
	p.requestDone(pc, true)
	c := pc.h1
	if c.dead.Load() {
		p.remove(pc)
		return
	}
	if pc.retired.Load() || p.overIdleLimit() {
		c.close()
		p.remove(pc)
		return
	}
	pc.idleAt.Store(time.Now().UnixNano())
	c.busy.Store(false)
	p.idleArm()
	p.wake()
}

// body releases the request's slots when an HTTP/2 response body ends.
type body struct {
	rc   io.ReadCloser
	pc   *pconn
	done atomic.Bool
}

func (b *body) Read(buf []byte) (int, error) {
	n, err := b.rc.Read(buf)
	if err != nil {
		b.finish()
	}
	return n, err
}

func (b *body) Close() error {
	err := b.rc.Close()
	b.finish()
	return err
}

// Buffered passes on the connection's answer (h1.BodyBuffered).
func (b *body) Buffered() bool { return h1.BodyBuffered(b.rc) }

// Released passes on the connection's answer once this body ended too: whether nothing
// of the connection holds the request any more (see h1body.Released). A connection
// that cannot tell (net/http's) never says so.
func (b *body) Released() bool {
	r, ok := b.rc.(interface{ Released() bool })
	return ok && b.done.Load() && r.Released()
}

// Recycle passes on to the connection's body once this body ended (see
// h2's responseBody.Recycle); the caller holds nothing of the response after it.
func (b *body) Recycle() {
	if r, ok := b.rc.(interface{ Recycle() }); ok && b.done.Load() {
		r.Recycle()
	}
}

func (b *body) finish() {
	if b.done.CompareAndSwap(false, true) {
		b.pc.pool.requestDone(b.pc, true)
	}
}

// tryReserve takes room on an open connection without waiting, or returns nil. The
// newest connections are tried first, so older ones go idle and time out when load
// drops.
func (p *Pool) tryReserve() *pconn {
	conns := *p.conns.Load()
	max := int32(p.cfg.MaxConcurrentStreams)
	maxReq := int64(p.cfg.MaxRequestsPerConnection)
	for i := len(conns) - 1; i >= 0; i-- {
		pc := conns[i]
		if pc.retired.Load() {
			continue
		}
		if s := pc.streams.Add(1); s > max {
			pc.streams.Add(-1)
			continue
		}
		if !pc.reserve() {
			pc.streams.Add(-1)
			if pc.cc != nil && pc.cc.Err() != nil {
				p.remove(pc) // closed by the peer (GOAWAY, reset)
			}
			continue
		}
		if pc.h1 != nil && pc.requests.Load() > 0 && pc.h1.peek.peerClosed() {
			// The server closed it while idle, or sent bytes nobody asked for (read as
			// the next response they would answer another client's request).
			pc.h1.close()
			pc.streams.Add(-1)
			p.remove(pc)
			continue
		}
		if n := pc.requests.Add(1); maxReq > 0 && n >= maxReq {
			if n > maxReq { // lost a race for the last request
				pc.requests.Add(-1)
				pc.release()
				pc.streams.Add(-1)
				continue
			}
			// max_requests_per_connection: this is its last request.
			pc.retired.Store(true)
		}
		pc.idleAt.Store(0)
		return pc
	}
	return nil
}

// capacity is the number of requests one new connection is expected to take.
func (p *Pool) capacity() int {
	if p.cfg.h1 {
		return 1
	}
	n := int(p.cfg.MaxConcurrentStreams)
	if r := p.cfg.MaxRequestsPerConnection; r > 0 && int(r) < n {
		n = int(r)
	}
	return n
}

// acquire returns a connection with a stream reserved for one request: an open one
// with room, else a new one (max_connections permitting), else it waits as a pending
// request (max_pending_requests) until room frees or ctx ends.
func (p *Pool) acquire(ctx context.Context) (*pconn, error) {
	if pc := p.tryReserve(); pc != nil {
		return pc, nil
	}
	l := p.cfg.Limits
	if !l.acquirePending() {
		return nil, fmt.Errorf("%w: max_pending_requests", ErrOverflow)
	}
	defer l.releasePending()
	overflowed := false
	for {
		p.mu.Lock()
		gen := p.gen
		p.mu.Unlock()
		if pc := p.tryReserve(); pc != nil {
			return pc, nil
		}
		p.mu.Lock()
		if p.gen != gen {
			// A connection came up (or room freed) since the look: look again
			// rather than dial one more.
			p.mu.Unlock()
			continue
		}
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		ch := p.waitCh
		if p.waiting < p.connecting {
			// A connection being dialled will have room for this request.
			p.waiting++
			p.nwait.Add(1)
			p.mu.Unlock()
			if err := p.wait(ctx, ch, nil); err != nil {
				return nil, err
			}
			continue
		}
		if l.acquireConn() {
			capacity := p.capacity()
			p.connecting += capacity
			p.mu.Unlock()
			pc, err := p.dial(ctx)
			p.mu.Lock()
			p.connecting -= capacity
			p.broadcastLocked()
			p.mu.Unlock()
			if err != nil {
				return nil, err
			}
			if p.reserveNew(pc) {
				return pc, nil
			}
			continue
		}
		// max_connections is reached: wait for a connection of this pool to have room
		// or for any connection of the cluster to close.
		if !overflowed {
			overflowed = true
			l.st.CxOverflow.Inc()
		}
		p.waiting++
		p.nwait.Add(1)
		l.cxWaiter.Add(1)
		freed := l.connFreed()
		p.mu.Unlock()
		err := p.wait(ctx, ch, freed)
		l.cxWaiter.Add(-1)
		if err != nil {
			return nil, err
		}
	}
}

// wait blocks until ch or freed is closed or ctx ends; p.waiting was incremented.
func (p *Pool) wait(ctx context.Context, ch <-chan struct{}, freed <-chan struct{}) error {
	var err error
	select {
	case <-ch:
	case <-freed:
	case <-ctx.Done():
		err = fmt.Errorf("upstream: waiting for a connection to %s: %w", p.addr, ctx.Err())
	}
	p.mu.Lock()
	p.waiting--
	p.nwait.Add(-1)
	p.mu.Unlock()
	return err
}

// reserveNew takes a stream of a connection the caller just opened.
func (p *Pool) reserveNew(pc *pconn) bool {
	if pc.retired.Load() && pc.requests.Load() > 0 {
		return false
	}
	if pc.streams.Add(1) > int32(p.cfg.MaxConcurrentStreams) || !pc.reserve() {
		pc.streams.Add(-1)
		return false
	}
	if n := pc.requests.Add(1); p.cfg.MaxRequestsPerConnection > 0 && n >= int64(p.cfg.MaxRequestsPerConnection) {
		pc.retired.Store(true)
	}
	pc.idleAt.Store(0)
	return true
}

// broadcastLocked wakes every waiter of the pool; p.mu is held.
func (p *Pool) broadcastLocked() {
	p.gen++
	if p.waiting == 0 {
		return
	}
	close(p.waitCh)
	p.waitCh = make(chan struct{})
}

// dial opens a new connection; the caller holds a max_connections slot, released here
// on failure or when the connection closes.
func (p *Pool) dial(ctx context.Context) (*pconn, error) {
	l := p.cfg.Limits
	st := l.st
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	ds := &dialState{pool: p}
	dctx = context.WithValue(dctx, dialKey{}, ds)
	pc := &pconn{pool: p}
	var err error
	if p.cfg.h1 {
		var nc net.Conn
		if p.cfg.TLS != nil {
			nc, err = p.cfg.dialTLS(dctx, "tcp", p.addr)
		} else {
			nc, err = p.cfg.dialTCP(dctx, "tcp", p.addr)
		}
		if err == nil {
			pc.h1 = newH1Conn(nc, p.cfg.TLS != nil)
			pc.h1.pc = pc
		}
	} else if p.cfg.Protocol == HTTP2 {
		pc.cc, err = p.dialH2(dctx)
	} else {
		pc.cc, err = p.cfg.httpTransport().NewClientConn(dctx, p.cfg.tlsProto, p.addr)
	}
	cancel()
	if err != nil {
		if !ds.dialed {
			l.releaseConn()
		}
		st.CxConnectFail.Inc()
		if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("upstream: connect %s: %w", p.addr, ctx.Err())
		}
		return nil, fmt.Errorf("upstream: connect %s: %w: %w", p.addr, ErrConnectFailure, err)
	}
	p.mu.Lock()
	if p.draining || p.closed {
		pc.retired.Store(true)
	}
	old := *p.conns.Load()
	conns := make([]*pconn, len(old), len(old)+1)
	copy(conns, old)
	conns = append(conns, pc)
	p.conns.Store(&conns)
	p.gen++
	p.mu.Unlock()
	return pc, nil
}

// overIdleLimit reports whether one more idle HTTP/1.1 connection exceeds MaxIdle.
func (p *Pool) overIdleLimit() bool {
	if p.cfg.MaxIdle <= 0 {
		return false
	}
	idle := 0
	for _, c := range *p.conns.Load() {
		if c.idleAt.Load() != 0 {
			idle++
		}
	}
	return idle >= p.cfg.MaxIdle
}

// idleArm makes sure the idle timer runs while a connection is idle.
func (p *Pool) idleArm() {
	if p.timerArmed.Load() {
		return
	}
	p.mu.Lock()
	if !p.timerArmed.Load() && !p.closed {
		p.armTimerLocked(p.cfg.IdleTimeout)
	}
	p.mu.Unlock()
}

func (p *Pool) armTimerLocked(d time.Duration) {
	p.timerArmed.Store(true)
	if p.idleTimer == nil {
		p.idleTimer = time.AfterFunc(d, p.reapIdle)
	} else {
		p.idleTimer.Reset(d)
	}
}

// reapIdle closes connections idle for IdleTimeout
// (common_http_protocol_options.idle_timeout) and re-arms for the next one.
// closeIdleH1 closes every idle HTTP/1.1 connection of the pool.
func (p *Pool) closeIdleH1() {
	for _, pc := range *p.conns.Load() {
		if pc.h1 != nil && pc.idleAt.Load() != 0 && pc.closeIfIdle() {
			p.remove(pc)
		}
	}
}

func (p *Pool) reapIdle() {
	now := time.Now().UnixNano()
	timeout := int64(p.cfg.IdleTimeout)
	var victims []*pconn
	next := int64(-1)
	p.mu.Lock()
	p.timerArmed.Store(false)
	for _, pc := range *p.conns.Load() {
		at := pc.idleAt.Load()
		if at == 0 {
			continue
		}
		if now-at >= timeout {
			victims = append(victims, pc)
			continue
		}
		if left := timeout - (now - at); next < 0 || left < next {
			next = left
		}
	}
	if next >= 0 && !p.closed {
		p.armTimerLocked(time.Duration(next))
	}
	p.mu.Unlock()
	for _, pc := range victims {
		if pc.closeIfIdle() {
			p.remove(pc)
		}
	}
}

// remove drops pc from the pool's list and wakes waiters.
func (p *Pool) remove(pc *pconn) {
	if !pc.removed.CompareAndSwap(false, true) {
		return
	}
	p.mu.Lock()
	old := *p.conns.Load()
	conns := make([]*pconn, 0, len(old))
	for _, c := range old {
		if c != pc {
			conns = append(conns, c)
		}
	}
	p.conns.Store(&conns)
	p.broadcastLocked()
	p.mu.Unlock()
}

// Drain stops keeping connections: idle ones close now, busy ones after their
// requests end. The pool still serves requests (each on a connection closed after it),
// so a request racing a cluster removal completes.
func (p *Pool) Drain() {
	p.mu.Lock()
	p.draining = true
	conns := *p.conns.Load()
	p.mu.Unlock()
	for _, pc := range conns {
		pc.retired.Store(true)
		if pc.closeIfIdle() {
			p.remove(pc)
		}
	}
}

// Close closes every connection now, interrupting requests in flight, and fails
// requests waiting for a connection.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.draining = true
	if p.idleTimer != nil {
		p.idleTimer.Stop()
	}
	conns := *p.conns.Load()
	p.broadcastLocked()
	p.mu.Unlock()
	for _, pc := range conns {
		pc.retired.Store(true)
		pc.close()
		p.remove(pc)
	}
}

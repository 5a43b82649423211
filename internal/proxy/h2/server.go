// Package h2 is weft's HTTP/2 server codec: one connection's frames read and handled
// on the connection's own goroutine, each stream's handler on a goroutine of its own,
// and the frames of every stream written into one buffer that the last writer
// flushes, so that a unary exchange (HEADERS and DATA in, HEADERS, DATA and trailers
// out) costs one read and one write. net/http's server, which it replaces on the
// proxy's listeners, hands every frame through a serve goroutine and writes and
// flushes each batch from a goroutine started for it.
//
// Framing, HPACK and the frame-level checks of RFC 9113 are golang.org/x/net/http2's
// Framer; this package adds the stream states, flow control, the request checks of
// section 8 and the mapping to net/http's Handler.
package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/weft-mesh/weft/internal/proxy/h1"
)

// Preface is the client connection preface (RFC 9113 section 3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Defaults of Config.
const (
	DefaultMaxConcurrentStreams = 1000
	DefaultStreamWindow         = 1 << 20
	DefaultConnWindow           = 1 << 20
	DefaultMaxHeaderBytes       = 60 << 10 // Envoy's max_request_headers_kb default
)

const (
	initialWindow  = 65535 // RFC 9113 6.9.2
	maxWindow      = 1<<31 - 1
	readFrameSize  = 16384    // the largest frame this side accepts: the protocol's default, as Envoy's
	writeBufSize   = 16 << 10 // per connection, both ends
	readBufSize    = 8 << 10
	dataChunk      = 16 << 10 // a handler's writes are sent in DATA frames of up to this
	peerFrameFloor = 16384    // SETTINGS_MAX_FRAME_SIZE before the peer says otherwise
	goAwayLinger   = time.Second
	frameHeaderLen = 9
)

// Config is what a connection is served with.
type Config struct {
	Handler              http.Handler
	MaxConcurrentStreams uint32
	StreamWindow         uint32 // SETTINGS_INITIAL_WINDOW_SIZE this side advertises
	ConnWindow           uint32
	MaxHeaderBytes       int
	// IdleTimeout closes a connection that has had no open stream this long (GOAWAY
	// first); zero keeps it.
	IdleTimeout time.Duration
	// Context is every request's parent context.
	Context context.Context
	// TLS is the connection's state, shared by its requests' Request.TLS.
	TLS        *tls.ConnectionState
	RemoteAddr string
	Log        *slog.Logger
}

var (
	errClientGone   = errors.New("h2: client connection closed")
	errStreamReset  = errors.New("h2: stream reset by client")
	errStreamClosed = errors.New("h2: stream closed")
	errBodyClosed   = errors.New("h2: request body closed")
)

// Conn is one HTTP/2 connection being served.
type Conn struct {
	cfg    Config
	nc     net.Conn
	br     *bufio.Reader
	closed chan struct{}

	wire

	mu            sync.Mutex // guards the fields below and every stream's
	streams       map[uint32]*stream
	maxClientID   uint32
	flow          sendFlow
	recv          recvWindow
	running       int         // handlers running
	goingAway     bool        // GOAWAY sent or being sent: no new streams
	awayWritten   bool        // Shutdown's GOAWAY is on the wire: close once no stream is open
	peerAway      bool        // GOAWAY received: no new streams
	done          bool        // the connection is finished: everything fails
	idle          *time.Timer // checks the idle timeout (see armIdleLocked)
	idleArmed     bool        // idle is pending
	idleSince     time.Time   // when the last stream ended
	shutdownAsked bool

	// The serve goroutine's own.
	sawSettings bool      // the first frame was seen
	pending     []*stream // opened, handler not started yet (see dispatch)
	free        []*stream // streams of exchanges that ended cleanly, for new ones (c.mu)
}

// Serve serves HTTP/2 on nc until the connection ends; br reads nc and may hold bytes
// already read (the preface included). The first thing read must be the preface.
func Serve(nc net.Conn, br *bufio.Reader, cfg Config) {
	c := NewConn(nc, br, cfg)
	c.Serve()
}

// NewConn prepares a connection; Serve runs it.
func NewConn(nc net.Conn, br *bufio.Reader, cfg Config) *Conn {
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.StreamWindow < initialWindow {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.ConnWindow < initialWindow {
		cfg.ConnWindow = DefaultConnWindow
	}
	if cfg.StreamWindow > maxWindow {
		cfg.StreamWindow = maxWindow
	}
	if cfg.ConnWindow > maxWindow {
		cfg.ConnWindow = maxWindow
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, readBufSize)
	}
	c := &Conn{
		cfg:     cfg,
		nc:      nc,
		br:      br,
		closed:  make(chan struct{}),
		streams: map[uint32]*stream{},
		flow:    newSendFlow(),
		recv:    newRecvWindow(initialWindow),
	}
	c.wire.init(nc, br, cfg.MaxHeaderBytes)
	return c
}

// Serve reads and handles the connection's frames until it ends.
func (c *Conn) Serve() {
	defer c.finish()
	if err := c.readPreface(); err != nil {
		c.cfg.Log.Debug("h2: bad preface", "remote", c.cfg.RemoteAddr, "err", err)
		return
	}
	c.write(func() error {
		settings := []http2.Setting{
			{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.MaxConcurrentStreams},
			{ID: http2.SettingInitialWindowSize, Val: c.cfg.StreamWindow},
			{ID: http2.SettingMaxHeaderListSize, Val: uint32(c.cfg.MaxHeaderBytes)},
		}
		if err := c.fr.WriteSettings(settings...); err != nil {
			return err
		}
		if inc := c.cfg.ConnWindow - initialWindow; inc > 0 {
			return c.fr.WriteWindowUpdate(0, inc)
		}
		return nil
	})
	c.mu.Lock()
	c.recv = newRecvWindow(c.cfg.ConnWindow)
	c.armIdleLocked()
	c.mu.Unlock()
	for {
		if len(c.pending) > 0 && !c.frameBuffered() {
			c.dispatch() // before a read that may wait
		}
		f, err := c.readFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.resetStream(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &ce):
				c.goAway(http2.ErrCode(ce))
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.goAway(http2.ErrCodeFrameSize)
			}
			return
		}
		if err := c.handle(f); err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.resetStream(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAway(http2.ErrCode(ce))
			}
			return
		}
	}
}

// goAway ends the connection with a connection error: GOAWAY, then what the peer
// still sends is read and dropped for a moment before the socket closes, so that
// closing with unread bytes (which resets the connection) does not destroy the
// GOAWAY before the peer reads it.
func (c *Conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	last := c.maxClientID
	c.goingAway = true
	c.mu.Unlock()
	if c.writeFlushed(func() error { return c.fr.WriteGoAway(last, code, nil) }) != nil {
		return
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(goAwayLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.br, 1<<20))
}

func (c *Conn) readPreface() error {
	if d := c.cfg.IdleTimeout; d > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(d))
		defer c.nc.SetReadDeadline(time.Time{})
	}
	b, err := c.br.Peek(len(Preface))
	if err != nil {
		return err
	}
	if string(b) != Preface {
		return errors.New("h2: not the HTTP/2 connection preface")
	}
	_, _ = c.br.Discard(len(Preface))
	return nil
}

// finish ends the connection: every stream fails, the socket closes.
func (c *Conn) finish() {
	c.mu.Lock()
	c.done = true
	if c.idle != nil {
		c.idle.Stop()
	}
	streams := c.streams
	c.streams = map[uint32]*stream{}
	for _, s := range streams {
		s.failLocked(errClientGone)
	}
	c.mu.Unlock()
	close(c.closed)
	_ = c.nc.Close()
}

// Done is closed once the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.closed }

// testHookShutdown, when set (by tests), runs in Shutdown after new streams are
// refused and before the GOAWAY is written.
var testHookShutdown func(*Conn)

// Shutdown asks the connection to finish: GOAWAY now, close once its open streams are
// done. It returns at once.
func (c *Conn) Shutdown() {
	c.mu.Lock()
	if c.done || c.shutdownAsked {
		c.mu.Unlock()
		return
	}
	c.shutdownAsked = true
	c.goingAway = true
	last := c.maxClientID
	c.mu.Unlock()
	// A stream that ends while the GOAWAY is written must not close the connection
	// before it is out, and one that ends after must: whether none is open is read
	// once it is written.
	if testHookShutdown != nil {
		testHookShutdown(c)
	}
	c.writeFlushed(func() error { return c.fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	c.mu.Lock()
	c.awayWritten = true
	idle := c.running == 0 && len(c.streams) == 0
	c.mu.Unlock()
	if idle {
		c.closeRead()
	}
}

// Close ends the connection at once.
func (c *Conn) Close() { c.closeRead() }

// closeRead makes the serve loop's read fail, which ends the connection.
func (c *Conn) closeRead() {
	if tc, ok := c.nc.(interface{ CloseRead() error }); ok && tc.CloseRead() == nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
}

// armIdleLocked notes that no stream is open from now, and makes sure the idle timer
// is pending. The timer is not moved for every stream that opens and ends, which cost
// a timer reset and a stop per stream: when it fires it looks at how long the
// connection has been idle, and waits again for the rest if that is not long enough.
func (c *Conn) armIdleLocked() {
	if c.cfg.IdleTimeout <= 0 || c.running > 0 || len(c.streams) > 0 || c.done {
		return
	}
	c.idleSince = time.Now()
	if c.idleArmed {
		return
	}
	c.idleArmed = true
	if c.idle == nil {
		c.idle = time.AfterFunc(c.cfg.IdleTimeout, c.idleFired)
		return
	}
	c.idle.Reset(c.cfg.IdleTimeout)
}

func (c *Conn) idleFired() {
	c.mu.Lock()
	c.idleArmed = false
	if c.running > 0 || len(c.streams) > 0 || c.done {
		c.mu.Unlock() // armed again when the last stream ends
		return
	}
	if rest := c.cfg.IdleTimeout - time.Since(c.idleSince); rest > 0 {
		c.idleArmed = true
		c.idle.Reset(rest)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.Shutdown()
}

// resetStream sends RST_STREAM and forgets the stream.
func (c *Conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		delete(c.streams, id)
		s.failLocked(errStreamClosed)
		c.armIdleLocked()
	}
	c.mu.Unlock()
	c.write(func() error { return c.fr.WriteRSTStream(id, code) })
}

func (c *Conn) handle(f http2.Frame) error {
	if !c.sawSettings { // the serve goroutine's own
		c.sawSettings = true
		if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *headerBlock:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		return c.ping(f)
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
		return nil
	case *http2.GoAwayFrame:
		// The client opens no more streams; it closes the connection when it is done.
		c.mu.Lock()
		c.peerAway = true
		c.mu.Unlock()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default: // unknown and extension frames are ignored
		return nil
	}
}

func (c *Conn) onSettings(f *http2.SettingsFrame) error {
	return c.settings(f, &c.mu, &c.flow, c.streamFlows(), nil)
}

// streamFlows ranges over the open streams' flows (c.mu held).
func (c *Conn) streamFlows() iter.Seq[*streamFlow] {
	return func(yield func(*streamFlow) bool) {
		for _, s := range c.streams {
			if !yield(&s.streamFlow) {
				return
			}
		}
	}
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if err := c.flow.updateConn(f.Increment); err != nil {
			return err
		}
		for _, s := range c.streams {
			s.wakeWaiting()
		}
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxClientID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		return nil // closed: a late update
	}
	return s.streamFlow.update(f.Increment, f.StreamID)
}

func (c *Conn) onReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxClientID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		return nil
	}
	delete(c.streams, f.StreamID)
	s.failLocked(errStreamReset)
	c.armIdleLocked()
	return nil
}

func (c *Conn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length) // flow control counts the padding too
	c.mu.Lock()
	if !c.recv.admit(n) {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	s := c.streams[id]
	if s == nil || s.remoteClosed {
		// Not ours to read: the connection's window goes back.
		c.recv.give(n)
		upd := c.recv.update()
		idle := s == nil && id > c.maxClientID
		c.mu.Unlock()
		c.sendUpdates(0, 0, upd)
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if err := s.data(&c.recv, id, f.Data(), n, f.StreamEnded()); err != nil {
		c.mu.Unlock()
		return err
	}
	if s.remoteClosed {
		s.endRemoteLocked()
	}
	s.wake.Broadcast()
	upd := c.recv.update()
	var supd uint32
	if !s.remoteClosed {
		supd = s.recvWin.update()
	}
	c.mu.Unlock()
	c.sendUpdates(id, supd, upd)
	return nil
}

// connSpecific reports whether name is a connection-specific field, which an HTTP/2
// message must not carry (RFC 9113 8.2.2): a switch, asked of every field both ways.
func connSpecific(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

func (c *Conn) onHeaders(f *headerBlock) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		err := c.onTrailersLocked(s, f)
		c.mu.Unlock()
		return err
	}
	if id <= c.maxClientID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol) // closed, or not increasing
	}
	c.maxClientID = id
	if c.goingAway || c.peerAway {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	if uint32(len(c.streams)) >= c.cfg.MaxConcurrentStreams {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	if c.running >= 2*int(c.cfg.MaxConcurrentStreams) {
		// A stream the client reset no longer counts against its limit, but its
		// handler may still run: a client that opens and resets streams faster than
		// handlers end ("rapid reset", CVE-2023-44487) is cut off here.
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	c.mu.Unlock()

	if f.Truncated {
		return c.refuseHeaders(id, http.StatusRequestHeaderFieldsTooLarge)
	}
	ctx, cancel := context.WithCancelCause(c.cfg.Context)
	s := c.newStream()
	req, declared, err := c.newRequest(ctx, f, &s.reqBuf, &s.urlBuf)
	if err != nil {
		cancel(err)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	s.id, s.cancel = id, cancel
	s.inbound = inbound{recvWin: newRecvWindow(c.cfg.StreamWindow), declared: declared}
	if f.StreamEnded() {
		if declared > 0 {
			cancel(errStreamClosed)
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
		}
		s.remoteClosed = true
		req.Body = http.NoBody
		req.ContentLength = 0
	} else {
		s.body = &requestBody{s: s, c: c, gen: s.gen}
		req.Body = s.body
		req.ContentLength = declared
		if vs := req.Header["Trailer"]; len(vs) > 0 {
			req.Trailer = http.Header{}
			for _, v := range vs {
				for k := range strings.SplitSeq(v, ",") {
					if k = strings.TrimSpace(k); k != "" {
						req.Trailer[http.CanonicalHeaderKey(k)] = nil
					}
				}
			}
		}
	}
	s.req = req
	s.rw = responseWriter{s: s, head: req.Method == http.MethodHead}
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		cancel(errClientGone)
		return io.EOF
	}
	c.flow.start(&s.streamFlow, &c.mu)
	c.streams[id] = s
	c.running++
	c.mu.Unlock()
	c.pending = append(c.pending, s)
	return nil
}

// frameBuffered reports whether the next frame has been read whole already, so
// handling it does not wait on the peer.
func (c *Conn) frameBuffered() bool {
	n := c.br.Buffered()
	if n < frameHeaderLen {
		return false
	}
	h, _ := c.br.Peek(frameHeaderLen)
	return n >= frameHeaderLen+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// dispatch starts the handlers of the streams opened by the frames read so far. They
// start once the frames already read are handled, so that a request whose HEADERS
// and DATA came together reaches its handler whole (its body Buffered, and an
// HTTP/1.1 upstream gets head and body in one write).
func (c *Conn) dispatch() {
	for i, s := range c.pending {
		startWorker(s)
		c.pending[i] = nil
	}
	c.pending = c.pending[:0]
}

// Stream handlers run on workers that outlive a stream: a goroutine made per stream
// grows its stack through the proxy's call depth on every request (runtime.newstack
// was 10 % of an HTTP/2 sidecar's CPU). Up to maxIdleWorkers wait for the next
// stream; more are made when none is idle.
const maxIdleWorkers = 64

var (
	workQueue   = make(chan *stream)
	idleWorkers atomic.Int32
)

func startWorker(s *stream) {
	select {
	case workQueue <- s:
	default:
		go worker(s)
	}
}

func worker(s *stream) {
	for {
		s.run()
		if idleWorkers.Add(1) > maxIdleWorkers {
			idleWorkers.Add(-1)
			return
		}
		s = <-workQueue
		idleWorkers.Add(-1)
	}
}

// onTrailersLocked takes a HEADERS frame on an open stream: the request's trailers.
func (c *Conn) onTrailersLocked(s *stream, f *headerBlock) error {
	if s.remoteClosed {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed}
	}
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	if s.declared >= 0 && s.received != s.declared {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	if len(f.RegularFields()) > 0 {
		if s.req.Trailer == nil {
			s.req.Trailer = http.Header{}
		}
		vals := newValues(len(f.RegularFields()))
		for _, hf := range f.RegularFields() {
			vals.add(s.req.Trailer, h1.CanonicalKey(hf.Name), hf.Value)
		}
	}
	s.endRemoteLocked()
	s.wake.Broadcast()
	return nil
}

// refuseHeaders answers a stream at once, without a handler.
func (c *Conn) refuseHeaders(id uint32, status int) error {
	return c.write(func() error {
		c.hbuf = c.hbuf[:0]
		c.field(":status", strconv.Itoa(status))
		return c.writeHeaderBlock(id, true)
	})
}

// newRequest makes the request of a HEADERS frame; declared is its content-length,
// -1 when it has none.
func (c *Conn) newRequest(ctx context.Context, f *headerBlock, dst *http.Request, u *url.URL) (*http.Request, int64, error) {
	method := f.PseudoValue("method")
	path := f.PseudoValue("path")
	scheme := f.PseudoValue("scheme")
	authority := f.PseudoValue("authority")
	if method == "" || (method != http.MethodConnect && (path == "" || scheme == "")) {
		return nil, 0, errors.New("missing pseudo-header")
	}
	regular := f.RegularFields()
	h := h1.NewHeader(len(regular))
	vals := newValues(len(regular))
	declared := int64(-1)
	var cookies []string
	for _, hf := range regular {
		if connSpecific(hf.Name) {
			return nil, 0, fmt.Errorf("connection-specific field %q", hf.Name)
		}
		switch hf.Name {
		case "te":
			if hf.Value != "trailers" {
				return nil, 0, errors.New("te other than trailers")
			}
		case "content-length":
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || n < 0 || (declared >= 0 && declared != n) {
				return nil, 0, errors.New("bad content-length")
			}
			declared = n
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		}
		vals.add(h, h1.CanonicalKey(hf.Name), hf.Value)
	}
	if len(cookies) > 0 {
		// RFC 9113 8.2.3: crumbs are joined for an HTTP/1.1 hop.
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	// The authority is Request.Host, as the HTTP/1.1 codec makes it; a host field is
	// its stand-in when :authority is absent.
	if hosts := h["Host"]; len(hosts) > 0 {
		if authority == "" {
			authority = hosts[0]
		}
		delete(h, "Host")
	}
	// The request is the stream's, made with its context (the copy WithContext makes
	// of a zero request stays on the stack).
	var zero http.Request
	*dst = *zero.WithContext(ctx)
	r := dst
	r.Method, r.Proto, r.ProtoMajor = method, "HTTP/2.0", 2
	r.Header, r.Host, r.RequestURI = h, authority, path
	r.RemoteAddr, r.TLS = c.cfg.RemoteAddr, c.cfg.TLS
	var err error
	switch {
	case method == http.MethodConnect && path == "":
		r.URL = &url.URL{Host: authority}
		r.RequestURI = authority
	case path == "*" && method == http.MethodOptions:
		r.URL = &url.URL{Path: "*"}
	default:
		if path[0] != '/' {
			return nil, 0, errors.New("path is not absolute")
		}
		r.URL, err = h1.ParseOriginForm(path, u)
		if err != nil {
			return nil, 0, err
		}
	}
	return r, declared, nil
}

// stream is one request and its response.
//
// A stream whose exchange ended cleanly serves a later stream of its connection: its
// response writer, request and flow state are one allocation, which was the largest
// of an HTTP/2 request after its header maps.
type stream struct {
	c      *Conn
	id     uint32
	req    *http.Request
	cancel context.CancelCauseFunc
	rw     responseWriter
	body   *requestBody // nil without a body
	reqBuf http.Request // what req points to
	urlBuf url.URL      // what req.URL points to, for the usual paths
	// gen counts the stream's uses (see Conn.free); a body of an earlier use reads
	// nothing of a later one's.
	gen uint32

	// Guarded by c.mu. The flow's condition also wakes the body's reader (data, end,
	// reset).
	streamFlow
	inbound           // the request body
	localClosed bool  // END_STREAM sent
	err         error // the stream failed (reset, connection gone)
}

// maxFree bounds a connection's streams kept for reuse.
const maxFree = 16

// newStream is a stream of c's free list, cleared, or a new one.
func (c *Conn) newStream() *stream {
	c.mu.Lock()
	n := len(c.free)
	if n == 0 {
		c.mu.Unlock()
		return &stream{c: c}
	}
	s := c.free[n-1]
	c.free[n-1] = nil
	c.free = c.free[:n-1]
	// Cleared under c.mu: a body of an earlier use may still check its generation.
	*s = stream{c: c, gen: s.gen}
	c.mu.Unlock()
	return s
}

func (s *stream) endRemoteLocked() {
	s.remoteClosed = true
	if s.localClosed {
		delete(s.c.streams, s.id)
		s.c.armIdleLocked()
	}
}

// endLocal records that the frame ending the stream is about to be written: from
// here on, a frame for the stream finds it closed on this side (and gone when the
// client's side is closed too).
func (s *stream) endLocal() {
	c := s.c
	c.mu.Lock()
	s.localClosed = true
	if s.remoteClosed {
		delete(c.streams, s.id)
		c.armIdleLocked()
	}
	c.mu.Unlock()
}

// failed is why the stream can send no more, nil while it can (c.mu held).
func (s *stream) failed() error {
	switch {
	case s.err != nil:
		return s.err
	case s.c.done:
		return errClientGone
	}
	return nil
}

func (s *stream) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	s.cancel(err)
	s.wake.Broadcast()
}

// run serves the stream's request and sends what the handler left unsent.
func (s *stream) run() {
	c := s.c
	aborted, reuse := false, false
	func() {
		defer func() {
			if p := recover(); p != nil {
				aborted = true
				if p != http.ErrAbortHandler {
					c.cfg.Log.Error("h2: handler panicked", "stream", s.id, "panic", p)
				}
			}
		}()
		c.cfg.Handler.ServeHTTP(&s.rw, s.req)
	}()
	if aborted {
		c.resetStream(s.id, http2.ErrCodeInternal)
	} else if err := s.rw.finish(); err == nil {
		c.mu.Lock()
		open := !s.remoteClosed && s.err == nil
		c.mu.Unlock()
		if open {
			// The response is complete and the client still sends: it need not.
			c.resetStream(s.id, http2.ErrCodeNo)
		}
		if s.rw.release {
			h1.RecycleHeaders(s.req.Header, s.rw.header)
			reuse = true
		}
	} else if !errors.Is(err, errStreamReset) && !errors.Is(err, errStreamClosed) {
		c.resetStream(s.id, http2.ErrCodeInternal)
	}
	if s.body != nil {
		s.body.Close()
	}
	c.mu.Lock()
	c.running--
	_, open := c.streams[s.id]
	if open && s.err != nil {
		delete(c.streams, s.id)
		open = false
	}
	idle := c.running == 0 && len(c.streams) == 0
	s.cancel(errStreamClosed)
	if reuse && !open && len(c.free) < maxFree {
		// Nothing frames bring can reach the stream now (it is forgotten), its
		// handler is over, and the connection manager said nothing else holds its
		// request: it serves a later stream of this connection.
		s.gen++
		c.free = append(c.free, s)
	}
	c.armIdleLocked()
	away := c.awayWritten && idle
	c.mu.Unlock()
	if away {
		c.closeRead()
	}
}

// requestBody is a request's body: the bytes DATA frames brought, read by the handler.
// It is made for each request: one held after its exchange (a transport's late read)
// finds its stream's generation gone and reads nothing of the next request's.
type requestBody struct {
	s   *stream
	c   *Conn
	gen uint32
}

func (b *requestBody) Read(p []byte) (int, error) {
	s, c := b.s, b.c
	c.mu.Lock()
	if b.gen != s.gen {
		c.mu.Unlock()
		return 0, errBodyClosed // its stream serves another request now
	}
	n, upd, supd, err := s.read(&c.recv, &s.wake, p, func() error { return s.err }, errBodyClosed)
	id := s.id
	c.mu.Unlock()
	c.sendUpdates(id, supd, upd)
	return n, err
}

// Buffered reports whether the whole body has arrived (h1.BodyBuffered): it can be
// read without waiting on the client.
func (b *requestBody) Buffered() bool {
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return b.gen == b.s.gen && b.s.remoteClosed && b.s.err == nil && !b.s.bodyClosed
}

// Close stops reading the body; what is buffered or still arrives is given back.
func (b *requestBody) Close() error {
	s, c := b.s, b.c
	c.mu.Lock()
	if s.bodyClosed || b.gen != s.gen {
		c.mu.Unlock()
		return nil
	}
	upd := s.close(&c.recv)
	s.wake.Broadcast()
	c.mu.Unlock()
	c.sendUpdates(0, 0, upd)
	return nil
}

// sendData sends p as DATA frames as the flow-control windows allow (end: the last
// one ends the stream); it waits for window updates.
func (s *stream) sendData(p []byte, end bool) error {
	c := s.c
	for {
		c.mu.Lock()
		if err := c.flow.wait(&s.streamFlow, s.failed); err != nil {
			c.mu.Unlock()
			return err
		}
		n := c.flow.take(&s.streamFlow, len(p), c.peerMaxFrame.Load())
		c.mu.Unlock()
		chunk := p[:n]
		p = p[n:]
		last := end && len(p) == 0
		if last {
			s.endLocal()
		}
		if err := c.write(func() error { return c.writeData(s.id, chunk, last) }); err != nil {
			return err
		}
		if len(p) == 0 {
			return nil
		}
	}
}

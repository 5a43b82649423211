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
	"golang.org/x/net/http2/hpack"
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
	readFrameSize  = 16384 // the largest frame this side accepts: the protocol's default, as Envoy's
	writeBufSize   = 32 << 10
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
	fr     *http2.Framer // reads on the serve goroutine; writes under wmu
	closed chan struct{}

	// Writes: every frame goes into bw under wmu; the writer that finds no other
	// writer waiting flushes, so concurrent streams share writes.
	wmu     sync.Mutex
	writers atomic.Int32
	bw      *bufio.Writer
	henc    *hpack.Encoder
	hbuf    []byte
	hw      sliceWriter
	werr    error // the first write error; later writes fail with it

	mu            sync.Mutex // guards the fields below and every stream's
	streams       map[uint32]*stream
	maxClientID   uint32
	sendWindow    int64 // the connection's send window
	peerInitWin   int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame  uint32
	recvWindow    int64 // what the peer may still send on the connection
	recvUnacked   int64 // consumed or discarded, not yet given back
	running       int   // handlers running
	goingAway     bool  // GOAWAY sent: no new streams, close once none is open
	peerAway      bool  // GOAWAY received: no new streams
	done          bool  // the connection is finished: everything fails
	idle          *time.Timer
	shutdownAsked bool

	// The serve goroutine's own.
	sawSettings bool      // the first frame was seen
	pending     []*stream // opened, handler not started yet (see dispatch)
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
		br = bufio.NewReaderSize(nc, 16<<10)
	}
	c := &Conn{
		cfg:          cfg,
		nc:           nc,
		br:           br,
		closed:       make(chan struct{}),
		bw:           bufio.NewWriterSize(nc, writeBufSize),
		streams:      map[uint32]*stream{},
		sendWindow:   initialWindow,
		peerInitWin:  initialWindow,
		peerMaxFrame: peerFrameFloor,
		recvWindow:   initialWindow,
	}
	c.fr = http2.NewFramer(c.bw, br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(readFrameSize)
	c.fr.MaxHeaderListSize = uint32(cfg.MaxHeaderBytes)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hw)
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
	c.recvWindow = int64(c.cfg.ConnWindow)
	c.armIdleLocked()
	c.mu.Unlock()
	for {
		if len(c.pending) > 0 && !c.frameBuffered() {
			c.dispatch() // before a read that may wait
		}
		f, err := c.fr.ReadFrame()
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
	if c.write(func() error { return c.fr.WriteGoAway(last, code, nil) }) != nil {
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
	idle := c.running == 0 && len(c.streams) == 0
	c.mu.Unlock()
	c.write(func() error { return c.fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
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

// armIdleLocked starts the idle timer when no stream is open.
func (c *Conn) armIdleLocked() {
	if c.cfg.IdleTimeout <= 0 || c.running > 0 || len(c.streams) > 0 || c.done {
		return
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(c.cfg.IdleTimeout, c.idleFired)
		return
	}
	c.idle.Reset(c.cfg.IdleTimeout)
}

func (c *Conn) idleFired() {
	c.mu.Lock()
	busy := c.running > 0 || len(c.streams) > 0
	c.mu.Unlock()
	if !busy {
		c.Shutdown()
	}
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

// write runs fn, which writes frames, under the write lock, and flushes unless
// another writer is waiting (it will flush).
func (c *Conn) write(fn func() error) error {
	c.writers.Add(1)
	c.wmu.Lock()
	err := c.werr
	if err == nil {
		err = fn()
	}
	if c.writers.Add(-1) == 0 && err == nil {
		err = c.bw.Flush()
	}
	if err != nil && c.werr == nil {
		c.werr = err
	}
	c.wmu.Unlock()
	return err
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
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		data := f.Data
		return c.write(func() error { return c.fr.WritePing(true, data) })
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
	if f.IsAck() {
		return nil
	}
	if err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					c.mu.Unlock()
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.wake.Broadcast()
			}
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.mu.Lock()
			c.peerMaxFrame = s.Val
			c.mu.Unlock()
		case http2.SettingHeaderTableSize:
			c.wmu.Lock()
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
			c.wmu.Unlock()
		}
		return nil
	}); err != nil {
		return err
	}
	return c.write(c.fr.WriteSettingsAck)
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		for _, s := range c.streams {
			if s.waiting {
				s.wake.Broadcast()
			}
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
	s.sendWindow += inc
	if s.sendWindow > maxWindow {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	s.wake.Broadcast()
	return nil
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
	data := f.Data()
	c.mu.Lock()
	if n > c.recvWindow {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	s := c.streams[id]
	if s == nil || s.remoteClosed {
		// Not ours to read: give the connection window back.
		c.recvUnacked += n
		upd := c.connUpdateLocked()
		closedID := s == nil && id <= c.maxClientID
		c.mu.Unlock()
		c.sendUpdates(0, 0, upd)
		if s == nil && !closedID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if n > s.recvWindow {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	s.recvWindow -= n
	pad := n - int64(len(data))
	s.received += int64(len(data))
	if s.declared >= 0 && s.received > s.declared {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if s.bodyClosed {
		// The handler is not reading: what arrives is dropped and given back.
		c.recvUnacked += n
	} else {
		s.buf = append(s.buf, data...)
		c.recvUnacked += pad
		s.recvUnacked += pad
	}
	if f.StreamEnded() {
		if s.declared >= 0 && s.received != s.declared {
			c.mu.Unlock()
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
		}
		s.endRemoteLocked()
	}
	s.wake.Broadcast()
	upd := c.connUpdateLocked()
	var supd uint32
	if !s.remoteClosed {
		supd = s.streamUpdateLocked()
	}
	c.mu.Unlock()
	c.sendUpdates(id, supd, upd)
	return nil
}

// connUpdateLocked returns the connection window to give back now (0: not yet):
// updates go out once half the window is used, not for every frame.
func (c *Conn) connUpdateLocked() uint32 {
	if c.recvUnacked < int64(c.cfg.ConnWindow)/2 {
		return 0
	}
	n := c.recvUnacked
	c.recvUnacked = 0
	c.recvWindow += n
	return uint32(n)
}

func (c *Conn) sendUpdates(id, streamInc, connInc uint32) {
	if streamInc == 0 && connInc == 0 {
		return
	}
	_ = c.write(func() error {
		if connInc > 0 {
			if err := c.fr.WriteWindowUpdate(0, connInc); err != nil {
				return err
			}
		}
		if streamInc > 0 {
			return c.fr.WriteWindowUpdate(id, streamInc)
		}
		return nil
	})
}

// connection-specific fields, which an HTTP/2 request must not carry (RFC 9113
// 8.2.2).
var connSpecific = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true,
}

func (c *Conn) onHeaders(f *http2.MetaHeadersFrame) error {
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
	c.mu.Unlock()

	if f.Truncated {
		return c.refuseHeaders(id, http.StatusRequestHeaderFieldsTooLarge)
	}
	req, declared, err := c.newRequest(f)
	if err != nil {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	s := &stream{c: c, id: id, declared: declared, recvWindow: int64(c.cfg.StreamWindow)}
	s.wake.L = &c.mu
	ctx, cancel := context.WithCancelCause(c.cfg.Context)
	s.cancel = cancel
	req = req.WithContext(ctx)
	if f.StreamEnded() {
		if declared > 0 {
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
		}
		s.remoteClosed = true
		req.Body = http.NoBody
		req.ContentLength = 0
	} else {
		req.Body = &s.body
		s.body.s = s
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
	s.rw = responseWriter{s: s, header: make(http.Header, 8), head: req.Method == http.MethodHead}
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		cancel(errClientGone)
		return io.EOF
	}
	s.sendWindow = c.peerInitWin
	c.streams[id] = s
	c.running++
	if c.idle != nil {
		c.idle.Stop()
	}
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
	return n >= frameHeaderLen+int(h[0])<<16|int(h[1])<<8|int(h[2])
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
func (c *Conn) onTrailersLocked(s *stream, f *http2.MetaHeadersFrame) error {
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
		for _, hf := range f.RegularFields() {
			k := canonicalKey(hf.Name)
			s.req.Trailer[k] = append(s.req.Trailer[k], hf.Value)
		}
	}
	s.endRemoteLocked()
	s.wake.Broadcast()
	return nil
}

// refuseHeaders answers a stream at once, without a handler.
func (c *Conn) refuseHeaders(id uint32, status int) error {
	return c.write(func() error {
		c.hw.b = c.hbuf[:0]
		_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
		c.hbuf = c.hw.b
		return c.writeHeaderBlock(id, true)
	})
}

// newRequest makes the request of a HEADERS frame; declared is its content-length,
// -1 when it has none.
func (c *Conn) newRequest(f *http2.MetaHeadersFrame) (*http.Request, int64, error) {
	method := f.PseudoValue("method")
	path := f.PseudoValue("path")
	scheme := f.PseudoValue("scheme")
	authority := f.PseudoValue("authority")
	if method == "" || (method != http.MethodConnect && (path == "" || scheme == "")) {
		return nil, 0, errors.New("missing pseudo-header")
	}
	h := make(http.Header, len(f.Fields))
	declared := int64(-1)
	var cookies []string
	for _, hf := range f.RegularFields() {
		if connSpecific[hf.Name] {
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
		k := canonicalKey(hf.Name)
		h[k] = append(h[k], hf.Value)
	}
	if len(cookies) > 0 {
		// RFC 9113 8.2.3: crumbs are joined for an HTTP/1.1 hop.
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = h.Get("Host")
	}
	r := &http.Request{
		Method:     method,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h,
		Host:       authority,
		RequestURI: path,
		RemoteAddr: c.cfg.RemoteAddr,
		TLS:        c.cfg.TLS,
	}
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
		r.URL, err = parseRequestURI(path)
		if err != nil {
			return nil, 0, err
		}
	}
	return r, declared, nil
}

// stream is one request and its response.
type stream struct {
	c      *Conn
	id     uint32
	req    *http.Request
	cancel context.CancelCauseFunc
	rw     responseWriter
	body   requestBody

	// Guarded by c.mu.
	wake         sync.Cond // data, window, reset or end: whoever waits on the stream
	waiting      bool      // a writer waits for the connection's window
	sendWindow   int64
	recvWindow   int64
	recvUnacked  int64
	declared     int64 // content-length, -1 if none
	received     int64
	buf          []byte // body bytes not yet read
	remoteClosed bool   // END_STREAM received
	bodyClosed   bool   // the handler closed the body
	localClosed  bool   // END_STREAM sent
	err          error  // the stream failed (reset, connection gone)
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
	aborted := false
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
	} else if !errors.Is(err, errStreamReset) && !errors.Is(err, errStreamClosed) {
		c.resetStream(s.id, http2.ErrCodeInternal)
	}
	s.body.Close()
	c.mu.Lock()
	c.running--
	if _, ok := c.streams[s.id]; ok && s.err != nil {
		delete(c.streams, s.id)
	}
	idle := c.running == 0 && len(c.streams) == 0
	s.cancel(errStreamClosed)
	c.armIdleLocked()
	away := c.goingAway && idle
	c.mu.Unlock()
	if away {
		c.closeRead()
	}
}

// requestBody is a request's body: the bytes DATA frames brought, read by the handler.
type requestBody struct{ s *stream }

func (b *requestBody) Read(p []byte) (int, error) {
	s := b.s
	c := s.c
	c.mu.Lock()
	for len(s.buf) == 0 && !s.remoteClosed && s.err == nil && !s.bodyClosed {
		s.wake.Wait()
	}
	switch {
	case s.bodyClosed:
		c.mu.Unlock()
		return 0, errBodyClosed
	case len(s.buf) == 0 && s.remoteClosed:
		c.mu.Unlock()
		return 0, io.EOF
	case len(s.buf) == 0:
		err := s.err
		c.mu.Unlock()
		return 0, err
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	if len(s.buf) == 0 {
		s.buf = s.buf[:0:0] // let the read buffer go; a new one is made on demand
	}
	c.recvUnacked += int64(n)
	s.recvUnacked += int64(n)
	upd := c.connUpdateLocked()
	var supd uint32
	if !s.remoteClosed && s.err == nil {
		supd = s.streamUpdateLocked()
	}
	c.mu.Unlock()
	c.sendUpdates(s.id, supd, upd)
	return n, nil
}

// Buffered reports whether the whole body has arrived (h1.BodyBuffered): it can be
// read without waiting on the client.
func (b *requestBody) Buffered() bool {
	c := b.s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return b.s.remoteClosed && b.s.err == nil && !b.s.bodyClosed
}

// streamUpdateLocked is connUpdateLocked for the stream's window.
func (s *stream) streamUpdateLocked() uint32 {
	if s.recvUnacked < int64(s.c.cfg.StreamWindow)/2 {
		return 0
	}
	n := s.recvUnacked
	s.recvUnacked = 0
	s.recvWindow += n
	return uint32(n)
}

// Close stops reading the body; what is buffered or still arrives is given back.
func (b *requestBody) Close() error {
	s := b.s
	if s == nil {
		return nil
	}
	c := s.c
	c.mu.Lock()
	if s.bodyClosed {
		c.mu.Unlock()
		return nil
	}
	s.bodyClosed = true
	c.recvUnacked += int64(len(s.buf))
	s.buf = nil
	upd := c.connUpdateLocked()
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
		for s.err == nil && !c.done && len(p) > 0 && (s.sendWindow <= 0 || c.sendWindow <= 0) {
			s.waiting = true
			s.wake.Wait()
			s.waiting = false
		}
		if s.err != nil || c.done {
			err := s.err
			if err == nil {
				err = errClientGone
			}
			c.mu.Unlock()
			return err
		}
		n := int64(len(p))
		n = min(n, s.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
		s.sendWindow -= n
		c.sendWindow -= n
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

// writeData writes one DATA frame (under wmu), its payload straight into the buffer.
func (c *Conn) writeData(id uint32, p []byte, end bool) error {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	n := len(p)
	hdr := [9]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(http2.FrameData), flags,
		byte(id >> 24 & 0x7f), byte(id >> 16), byte(id >> 8), byte(id)}
	if _, err := c.bw.Write(hdr[:]); err != nil {
		return err
	}
	_, err := c.bw.Write(p)
	return err
}

// writeHeaderBlock writes c.hbuf as a HEADERS frame and as many CONTINUATION frames as
// the peer's frame size needs (under wmu).
func (c *Conn) writeHeaderBlock(id uint32, end bool) error {
	c.mu.Lock()
	max := int(c.peerMaxFrame)
	c.mu.Unlock()
	block := c.hbuf
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}); err != nil {
		return err
	}
	for len(block) > 0 {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		if err := c.fr.WriteContinuation(id, len(block) == 0, frag); err != nil {
			return err
		}
	}
	return nil
}

type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

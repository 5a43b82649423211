package h2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/weft-mesh/weft/internal/proxy/h1"
)

// ClientConfig is what a client connection is made with.
type ClientConfig struct {
	StreamWindow   uint32 // SETTINGS_INITIAL_WINDOW_SIZE this side advertises
	ConnWindow     uint32
	MaxHeaderBytes int    // the largest response head accepted
	Scheme         string // :scheme of requests whose URL has none ("http", "https")
}

var (
	// ErrConnUnusable is the error of a request on a connection that takes no more.
	ErrConnUnusable = errors.New("h2: connection is not usable")
	errConnClosed   = errors.New("h2: connection closed")
)

// ClientConn is an HTTP/2 client connection: requests are streams on it, their
// frames written as on the server side (one buffer, the last writer flushes), the
// peer's frames read on the connection's own goroutine. Its methods are those of
// net/http's ClientConn that the upstream pool uses.
type ClientConn struct {
	wire
	nc     net.Conn
	br     *bufio.Reader
	cfg    ClientConfig
	closed chan struct{}

	mu         sync.Mutex // guards the fields below and every stream's
	streams    map[uint32]*clientStream
	nextID     uint32
	maxStreams uint32 // the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	reserved   int    // slots taken by Reserve, not yet used by RoundTrip
	inFlight   int    // streams not yet done
	flow       sendFlow
	recv       recvWindow
	err        error // set once the connection takes no new request
	dead       bool  // the connection is gone: everything fails
	watchTimer *time.Timer
	watchArmed bool
	free       []*clientStream // recycled streams, cleared, for later requests
}

// NewClientConn starts HTTP/2 on nc (the preface and SETTINGS go out at once) and
// the goroutine that reads the server's frames.
func NewClientConn(nc net.Conn, cfg ClientConfig) (*ClientConn, error) {
	if cfg.StreamWindow < initialWindow {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.ConnWindow < initialWindow {
		cfg.ConnWindow = DefaultConnWindow
	}
	cfg.StreamWindow = min(cfg.StreamWindow, maxWindow)
	cfg.ConnWindow = min(cfg.ConnWindow, maxWindow)
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 1 << 20
	}
	c := &ClientConn{
		nc:         nc,
		br:         bufio.NewReaderSize(nc, readBufSize),
		cfg:        cfg,
		closed:     make(chan struct{}),
		streams:    map[uint32]*clientStream{},
		nextID:     1,
		maxStreams: 100, // until the server's SETTINGS say (RFC 9113 6.5.2 suggests no fewer)
		flow:       newSendFlow(),
		recv:       newRecvWindow(cfg.ConnWindow),
	}
	c.wire.init(nc, c.br, cfg.MaxHeaderBytes)
	err := c.write(func() error {
		if _, err := c.bw.WriteString(Preface); err != nil {
			return err
		}
		if err := c.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: cfg.StreamWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(cfg.MaxHeaderBytes)},
		); err != nil {
			return err
		}
		if inc := cfg.ConnWindow - initialWindow; inc > 0 {
			return c.fr.WriteWindowUpdate(0, inc)
		}
		return nil
	})
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// Reserve takes a slot for one request; it fails when the connection has no room
// (the server's concurrency limit) or takes no more requests.
func (c *ClientConn) Reserve() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	if c.inFlight+c.reserved >= int(c.maxStreams) {
		return ErrConnUnusable
	}
	c.reserved++
	return nil
}

// Release gives back a slot Reserve took and RoundTrip did not use.
func (c *ClientConn) Release() {
	c.mu.Lock()
	if c.reserved > 0 {
		c.reserved--
	}
	c.mu.Unlock()
}

// InFlight is the number of requests in flight, reserved slots included.
func (c *ClientConn) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight + c.reserved
}

// Err is why the connection takes no new request, nil while it does.
func (c *ClientConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection; requests in flight fail.
func (c *ClientConn) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = errConnClosed
	}
	c.mu.Unlock()
	return c.nc.Close()
}

// Done is closed once the connection is gone.
func (c *ClientConn) Done() <-chan struct{} { return c.closed }

// clientStream is one request on a ClientConn.
type clientStream struct {
	c    *ClientConn
	id   uint32
	req  *http.Request
	resp *http.Response

	// Guarded by c.mu. The flow's condition also wakes RoundTrip (head) and the
	// body's reader (data, end, reset).
	streamFlow
	inbound     // the response body
	gotHead     bool
	localClosed bool // END_STREAM sent
	readDone    bool // the response body was read to its end, or closed
	err         error
	watched     bool        // its request's context is watched (see watchDelay)
	ticks       int         // watch ticks seen in flight
	stopWatch   func() bool // stops that watch
	sending     bool        // sendBody runs

	respBuf http.Response // what resp points to
	body    responseBody  // its body
}

// RoundTrip sends req as a stream and returns the response once its head arrives;
// the body follows as the server sends it. A slot must have been reserved.
func (c *ClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	// A small body that is all here (a gRPC request usually is, without a length) goes
	// with the head, in one write; a larger one is streamed after what was read of it.
	var inline []byte
	var bp *[dataChunk + 1]byte // inline's buffer, given back once inline is written
	body := req.Body
	if hasBody && req.ContentLength <= dataChunk && h1.BodyBuffered(req.Body) {
		// Read into a pooled buffer: io.ReadAll's, grown from 512 bytes, was the
		// largest allocation of a proxied request. The rare rest is copied out.
		bp = inlineBufs.Get().(*[dataChunk + 1]byte)
		n, err := io.ReadFull(req.Body, bp[:])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = nil
		}
		if err != nil {
			inlineBufs.Put(bp)
			c.Release()
			return nil, err
		}
		if n <= dataChunk {
			inline, hasBody = bp[:n], n > 0
			req.Body.Close()
		} else {
			body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(bytes.Clone(bp[:n])), req.Body), req.Body}
			inlineBufs.Put(bp)
			bp = nil
		}
	}

	c.mu.Lock()
	if c.reserved > 0 {
		c.reserved--
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		if bp != nil {
			inlineBufs.Put(bp)
		}
		return nil, err
	}
	c.inFlight++
	s := c.newStream(req)
	c.flow.start(&s.streamFlow, &c.mu)
	s.inbound = inbound{recvWin: newRecvWindow(c.cfg.StreamWindow), declared: -1}
	c.mu.Unlock()

	streaming := hasBody && inline == nil
	endOnHead := !hasBody && !streaming
	var n int64
	err := c.write(func() error {
		// Stream ids go out in increasing order: taken under the write lock.
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return err
		}
		s.id = c.nextID
		c.nextID += 2
		if c.nextID > maxWindow { // ids run out: a new connection takes the next ones
			c.err = ErrConnUnusable
		}
		c.streams[s.id] = s
		if inline != nil {
			n = int64(c.flow.take(&s.streamFlow, len(inline), c.peerMaxFrame.Load()))
		}
		if endOnHead || (inline != nil && n == int64(len(inline)) && len(req.Trailer) == 0) {
			s.localClosed = true
		}
		c.mu.Unlock()
		c.encodeRequest(req, int64(len(inline)), inline != nil && req.ContentLength >= 0)
		if err := c.writeHeaderBlock(s.id, endOnHead); err != nil {
			return err
		}
		if inline != nil && n > 0 {
			return c.writeData(s.id, inline[:n], n == int64(len(inline)) && len(req.Trailer) == 0)
		}
		return nil
	})
	// What flow control held back, or the trailers' turn, goes from the sender, copied:
	// inline's buffer goes back now.
	var rest io.Reader
	if err == nil && inline != nil && (n < int64(len(inline)) || len(req.Trailer) > 0) {
		rest = bytes.NewReader(bytes.Clone(inline[n:]))
	}
	if bp != nil {
		inlineBufs.Put(bp)
	}
	if err != nil {
		s.finish(err)
		return nil, err
	}
	if dl, ok := req.Context().Deadline(); ok && time.Until(dl) < watchDelay {
		s.watch()
	} else {
		c.armWatch()
	}
	switch {
	case rest != nil:
		s.startSending()
		go s.sendBody(rest)
	case streaming:
		s.startSending()
		go s.sendBody(body)
	}

	c.mu.Lock()
	for !s.gotHead && s.err == nil {
		s.wake.Wait()
	}
	if !s.gotHead {
		err := s.err
		c.mu.Unlock()
		s.finish(err)
		return nil, err
	}
	resp := s.resp
	c.mu.Unlock()
	return resp, nil
}

// newStream is a stream of c's free list or a new one, for req (c.mu held).
func (c *ClientConn) newStream(req *http.Request) *clientStream {
	n := len(c.free)
	if n == 0 {
		return &clientStream{c: c, req: req}
	}
	s := c.free[n-1]
	c.free[n-1] = nil
	c.free = c.free[:n-1]
	s.req = req
	return s
}

// watchDelay: a stream's request context is watched (and a canceled one resets the
// stream) once the stream has been in flight for a tick of this period, or from the
// start when its deadline is nearer. Most exchanges end sooner and cost no watch: a
// watch materialises the router's lazy route-timeout context, with its timer, and
// registers a callback on it (13 % of an HTTP/2 sidecar's allocated bytes). A canceled
// request is noticed within two ticks at worst, as the HTTP/1.1 pool's watch.
const watchDelay = 50 * time.Millisecond

// armWatch makes sure the connection's watch tick runs while streams are in flight.
func (c *ClientConn) armWatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watchArmed || c.dead {
		return
	}
	c.watchArmed = true
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(watchDelay, c.watchTick)
		return
	}
	c.watchTimer.Reset(watchDelay)
}

// watchTick watches the streams in flight for a whole tick.
func (c *ClientConn) watchTick() {
	c.mu.Lock()
	var due []*clientStream
	pending := false
	for _, s := range c.streams {
		if s.watched {
			continue
		}
		if s.ticks > 0 {
			due = append(due, s)
		} else {
			s.ticks++
			pending = true
		}
	}
	c.watchArmed = pending && !c.dead
	if c.watchArmed {
		c.watchTimer.Reset(watchDelay)
	}
	c.mu.Unlock()
	for _, s := range due {
		s.watch()
	}
}

// watch resets the stream when its request's context ends.
func (s *clientStream) watch() {
	c := s.c
	c.mu.Lock()
	if s.watched {
		c.mu.Unlock()
		return
	}
	s.watched = true
	c.mu.Unlock()
	ctx := s.req.Context()
	if ctx.Done() == nil {
		return
	}
	stop := context.AfterFunc(ctx, func() { s.cancel(context.Cause(ctx)) })
	c.mu.Lock()
	if _, open := c.streams[s.id]; !open {
		c.mu.Unlock()
		stop()
		return
	}
	s.stopWatch = stop
	c.mu.Unlock()
}

func (s *clientStream) startSending() {
	s.c.mu.Lock()
	s.sending = true
	s.c.mu.Unlock()
}

// sendBody sends the rest of the request body as DATA frames, then the trailers or
// END_STREAM.
func (s *clientStream) sendBody(body io.Reader) {
	c := s.c
	defer func() { // last: the stream's request is not read after this
		c.mu.Lock()
		s.sending = false
		c.mu.Unlock()
	}()
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	var err error
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if err = s.sendData(buf[:n]); err != nil {
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if rc, ok := body.(io.Closer); ok {
		rc.Close()
	}
	if err != nil {
		s.cancel(err) // the request cannot be completed: the stream is reset
		return
	}
	c.mu.Lock()
	s.localClosed = true
	c.mu.Unlock()
	if tr := s.req.Trailer; len(tr) > 0 {
		err = c.write(func() error {
			c.encodeFields(tr)
			return c.writeHeaderBlock(s.id, true)
		})
	} else {
		err = c.write(func() error { return c.writeData(s.id, nil, true) })
	}
	s.finish(err)
}

func (s *clientStream) sendData(p []byte) error {
	c := s.c
	for len(p) > 0 {
		c.mu.Lock()
		if err := c.flow.wait(&s.streamFlow, func() error { return s.err }); err != nil {
			c.mu.Unlock()
			return err
		}
		n := c.flow.take(&s.streamFlow, len(p), c.peerMaxFrame.Load())
		c.mu.Unlock()
		chunk := p[:n]
		p = p[n:]
		if err := c.write(func() error { return c.writeData(s.id, chunk, false) }); err != nil {
			return err
		}
	}
	return nil
}

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, dataChunk); return &b }}

// inlineBufs hold a small request body sent with its head: one more byte than a
// chunk, to tell a body that does not fit.
var inlineBufs = sync.Pool{New: func() any { return new([dataChunk + 1]byte) }}

// encodeRequest HPACK-encodes a request head into c.hbuf (under wmu).
func (c *ClientConn) encodeRequest(req *http.Request, length int64, known bool) {
	c.hbuf = c.hbuf[:0]
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	path := req.URL.RequestURI()
	if req.Method == http.MethodConnect {
		path = ""
	}
	scheme := req.URL.Scheme
	if scheme == "" {
		scheme = c.cfg.Scheme
	}
	if scheme == "" {
		scheme = "http"
	}
	c.field(":method", req.Method)
	c.field(":scheme", scheme)
	c.field(":authority", host)
	if path != "" {
		c.field(":path", path)
	}
	for k, vs := range req.Header {
		name := h1.LowerKey(k)
		switch {
		case connSpecific(name), name == "host", name == "content-length":
			continue
		case name == "te":
			// Only "trailers" may cross an HTTP/2 hop.
			for _, v := range vs {
				if strings.EqualFold(strings.TrimSpace(v), "trailers") {
					c.field("te", "trailers")
					break
				}
			}
			continue
		}
		for _, v := range vs {
			c.field(name, v)
		}
	}
	switch {
	case known:
		c.field("content-length", strconv.FormatInt(length, 10))
	case req.ContentLength > 0:
		c.field("content-length", strconv.FormatInt(req.ContentLength, 10))
	}
}

// cancel resets the stream (the caller gave up, or its body broke off).
func (s *clientStream) cancel(cause error) {
	c := s.c
	c.mu.Lock()
	if s.err != nil || (s.remoteClosed && s.localClosed) {
		c.mu.Unlock()
		return
	}
	if cause == nil {
		cause = context.Canceled
	}
	s.err = cause
	s.wake.Broadcast()
	_, open := c.streams[s.id]
	c.mu.Unlock()
	if open {
		_ = c.write(func() error { return c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel) })
		s.finish(cause)
	}
}

// finish forgets the stream once it failed, or is done both ways: request sent,
// response read.
func (s *clientStream) finish(err error) {
	s.c.mu.Lock()
	s.finishLocked(err)
	s.c.mu.Unlock()
}

func (s *clientStream) finishLocked(err error) {
	c := s.c
	if s.err == nil {
		s.err = err
	}
	if s.err == nil && !(s.localClosed && s.readDone) {
		// Not done both ways: the response was read but the request body still goes
		// (sendBody finishes it), or the other way round.
		return
	}
	if s.stopWatch != nil {
		s.stopWatch()
		s.stopWatch = nil
	}
	if _, ok := c.streams[s.id]; ok || s.id == 0 {
		delete(c.streams, s.id)
		c.inFlight--
	}
	// What is buffered stays for the reader (a server may reset a stream whose
	// response it completed, RST_STREAM NO_ERROR, to stop the request body): reading
	// or closing the body gives its window back.
}

// readLoop reads and handles the server's frames until the connection fails.
func (c *ClientConn) readLoop() {
	var err error
	for {
		var f http2.Frame
		f, err = c.readFrame()
		if err == nil {
			err = c.handle(f)
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			c.resetStream(se.StreamID, se.Code, se)
			continue
		}
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			c.mu.Lock()
			last := c.nextID
			c.mu.Unlock()
			_ = c.write(func() error { return c.fr.WriteGoAway(last, http2.ErrCode(ce), nil) })
		}
		break
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("h2: connection lost: %w", err)
	}
	c.dead = true
	streams := c.streams
	c.streams = map[uint32]*clientStream{}
	for _, s := range streams {
		if s.err == nil {
			s.err = fmt.Errorf("h2: connection lost: %w", err)
		}
		c.inFlight--
		s.wake.Broadcast()
	}
	c.mu.Unlock()
	_ = c.nc.Close()
	close(c.closed)
}

// resetStream ends a stream with RST_STREAM (a stream error of ours).
func (c *ClientConn) resetStream(id uint32, code http2.ErrCode, err error) {
	_ = c.write(func() error { return c.fr.WriteRSTStream(id, code) })
	c.failStream(id, err)
}

// failStream ends stream id, if it is open, with err. The stream is looked up and
// failed under one hold of c.mu: once forgotten, a stream may be recycled (Recycle)
// and serve another request, which a failure decided on earlier must not reach.
func (c *ClientConn) failStream(id uint32, err error) {
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		s.failLocked(err)
	}
	c.mu.Unlock()
}

// failLocked ends the stream with err: its waiters wake, it is forgotten (c.mu held).
func (s *clientStream) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	s.wake.Broadcast()
	s.finishLocked(err)
}

// streamFlows ranges over the open streams' flows (c.mu held).
func (c *ClientConn) streamFlows() iter.Seq[*streamFlow] {
	return func(yield func(*streamFlow) bool) {
		for _, s := range c.streams {
			if !yield(&s.streamFlow) {
				return
			}
		}
	}
}

func (c *ClientConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *headerBlock:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.WindowUpdateFrame:
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
		if s := c.streams[f.StreamID]; s != nil {
			return s.streamFlow.update(f.Increment, f.StreamID)
		}
		return nil
	case *http2.PingFrame:
		return c.ping(f)
	case *http2.RSTStreamFrame:
		c.failStream(f.StreamID, http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode})
		return nil
	case *http2.GoAwayFrame:
		// Streams above the last one the server took were not processed: they fail
		// as refused (a retry may send them elsewhere); the others finish.
		c.mu.Lock()
		if c.err == nil {
			c.err = fmt.Errorf("h2: server sent GOAWAY (%v): %w", f.ErrCode, ErrConnUnusable)
		}
		for id, s := range c.streams { // failLocked deletes s: allowed while ranging
			if id > f.LastStreamID {
				s.failLocked(http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream})
			}
		}
		c.mu.Unlock()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // push is disabled
	}
	return nil
}

func (c *ClientConn) onSettings(f *http2.SettingsFrame) error {
	return c.settings(f, &c.mu, &c.flow, c.streamFlows(), func(st http2.Setting) {
		if st.ID == http2.SettingMaxConcurrentStreams {
			c.mu.Lock()
			c.maxStreams = st.Val
			c.mu.Unlock()
		}
	})
}

func (c *ClientConn) onHeaders(f *headerBlock) error {
	c.mu.Lock()
	s := c.streams[f.StreamID]
	if s == nil {
		c.mu.Unlock()
		if f.StreamID >= c.nextStreamID() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a stream we gave up on
	}
	if s.gotHead {
		// Trailers.
		if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			c.mu.Unlock()
			return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
		}
		tr := fieldHeader(f.RegularFields())
		s.resp.Trailer = tr
		s.remoteClosed = true // the reader finishes the stream at EOF
		s.wake.Broadcast()
		c.mu.Unlock()
		return nil
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 || f.Truncated {
		c.mu.Unlock()
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	if status < 200 && status != http.StatusSwitchingProtocols {
		c.mu.Unlock()
		return nil // informational heads are not passed on
	}
	h := fieldHeader(f.RegularFields())
	// The response and its body are the stream's: one allocation for the three.
	s.respBuf = http.Response{
		Status:        h1.Status(status),
		StatusCode:    status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		Request:       s.req,
		ContentLength: -1,
	}
	resp := &s.respBuf
	if vs := h["Content-Length"]; len(vs) == 1 {
		if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil && n >= 0 {
			resp.ContentLength = n
			s.declared = n
		}
	}
	if f.StreamEnded() {
		s.remoteClosed = true
		resp.ContentLength = 0
	}
	s.body = responseBody{s: s}
	resp.Body = &s.body
	s.resp = resp
	s.gotHead = true
	s.wake.Broadcast()
	c.mu.Unlock()
	return nil
}

func (c *ClientConn) nextStreamID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nextID
}

func (c *ClientConn) onData(f *http2.DataFrame) error {
	n := int64(f.Length) // flow control counts the padding too
	c.mu.Lock()
	if !c.recv.admit(n) {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	s := c.streams[f.StreamID]
	if s == nil || !s.gotHead || s.remoteClosed {
		// Not ours to read (given up, or closed): the window goes back.
		c.recv.give(n)
		upd := c.recv.update()
		c.mu.Unlock()
		c.sendUpdates(0, 0, upd)
		if s != nil {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
		return nil
	}
	err := s.data(&c.recv, s.id, f.Data(), n, f.StreamEnded()) // at the end, the reader finishes the stream
	s.wake.Broadcast()
	upd := c.recv.update()
	c.mu.Unlock()
	c.sendUpdates(0, 0, upd)
	return err
}

// responseBody is a response's body as the server's DATA frames bring it.
type responseBody struct{ s *clientStream }

func (b *responseBody) Read(p []byte) (int, error) {
	s := b.s
	c := s.c
	c.mu.Lock()
	n, upd, supd, err := s.read(&c.recv, &s.wake, p, func() error { return s.err }, http.ErrBodyReadAfterClose)
	c.mu.Unlock()
	c.sendUpdates(s.id, supd, upd)
	if err == io.EOF {
		c.mu.Lock()
		s.readDone = true
		c.mu.Unlock()
		s.finish(nil)
	}
	return n, err
}

// Released reports whether nothing of the connection holds the stream's request any
// more (its caller may then reuse the request's memory): the stream ended cleanly both
// ways and is forgotten, its request body's sender has returned, and no watch of its
// request's context was ever set up or is about to be (no watch tick saw the stream
// in flight).
func (b *responseBody) Released() bool {
	c := b.s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return b.s.releasedLocked()
}

func (s *clientStream) releasedLocked() bool {
	_, open := s.c.streams[s.id]
	return !open && s.err == nil && s.localClosed && s.readDone && !s.sending && !s.watched && s.ticks == 0
}

// Recycle gives the stream, its response and this body back to the connection for a
// later request, once Released (else it does nothing); the caller holds nothing of the
// response after it but its header and trailer maps, which are not part of the stream.
// Nothing of the connection can reach a released stream: frames find streams by id
// among the open ones, and a failure is decided and applied under one hold of c.mu
// (failStream). It was the largest allocation of a proxied gRPC call (about 300 B).
func (b *responseBody) Recycle() {
	s := b.s
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.releasedLocked() || len(c.free) >= maxFree {
		return
	}
	*s = clientStream{c: c} // its body's buffer went back at EOF or Close
	c.free = append(c.free, s)
}

// Buffered reports whether the whole response has arrived, trailers included
// (h1.BodyBuffered): the router then writes it downstream without flushing parts.
func (b *responseBody) Buffered() bool {
	c := b.s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return b.s.remoteClosed && !b.s.bodyClosed
}

// Close stops reading: a stream still open is reset (CANCEL).
func (b *responseBody) Close() error {
	s := b.s
	c := s.c
	c.mu.Lock()
	if s.bodyClosed {
		c.mu.Unlock()
		return nil
	}
	upd := s.close(&c.recv)
	s.readDone = true
	complete := s.remoteClosed && s.localClosed
	s.wake.Broadcast()
	c.mu.Unlock()
	c.sendUpdates(0, 0, upd)
	if !complete {
		s.cancel(errBodyClosed)
		return nil
	}
	s.finish(nil)
	return nil
}

package httpconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/h1"
	"github.com/weft-mesh/weft/internal/proxy/h2"
	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/watchdog"
)

// HTTP/1.1 connections are served by weft's own codec (internal/proxy/h1) rather than
// net/http's server (HTTP/2 ones by package h2, see h2.go). Per request the codec makes one read and
// one write on the downstream connection when the message fits its buffers, where
// net/http adds a background read per request and its head parsing allocates several
// times more. The behaviours kept from net/http: keep-alive rules of HTTP/1.0 and 1.1,
// 100 Continue on the first body read, unread request bodies up to 256 KiB discarded to
// keep the connection, a client that goes away cancels the request context (checked
// once a request has run for watchDelay, instead of a read per request), Hijack for
// upgrades, ResponseController's Flush, EnableFullDuplex and deadlines.

const (
	h1BufSize = 4 << 10
	// maxDiscard is how much of an unread request body is read and dropped so the
	// connection can carry the next request (net/http's figure).
	maxDiscard = 256 << 10
	// watchDelay is how long a request runs before its connection is watched for the
	// client going away. Shorter requests never pay for the watch.
	watchDelay = 50 * time.Millisecond
	// drainIdleGrace is how long an idle connection stays open after a drain began,
	// so a client about to reuse it gets an answer with "Connection: close" instead of
	// a reset.
	drainIdleGrace = time.Second
)

var (
	errClientGone = errors.New("httpconn: downstream connection closed")
	aLongTimeAgo  = time.Unix(1, 0)
)

const (
	stateIdle int32 = iota
	stateActive
)

// h1server is a manager's set of HTTP/1.1 connections, for Drain and HandOff.
type h1server struct {
	mu       sync.Mutex
	conns    map[*h1conn]struct{}
	empty    chan struct{} // closed once draining and no connection is left
	draining atomic.Bool
	drainAt  atomic.Int64 // unix nanos after which idle connections close
	// successor is the manager that replaced this one at the same place (HandOff):
	// connections move to it between requests.
	successor atomic.Pointer[Manager]
}

// register adds hc to m's set, or to m's successor's (and so on) when m was replaced;
// it returns the manager that took it.
func register(m *Manager, hc *h1conn) *Manager {
	for {
		if next := m.h1.successor.Load(); next != nil {
			m = next
			continue
		}
		s := &m.h1
		s.mu.Lock()
		if s.successor.Load() != nil {
			s.mu.Unlock()
			continue
		}
		if s.conns == nil {
			s.conns = map[*h1conn]struct{}{}
			s.empty = make(chan struct{})
		}
		s.conns[hc] = struct{}{}
		s.mu.Unlock()
		m.cxActive.Inc()
		return m
	}
}

// unregister removes hc from m's set.
func unregister(m *Manager, hc *h1conn) {
	s := &m.h1
	s.mu.Lock()
	delete(s.conns, hc)
	if len(s.conns) == 0 && s.draining.Load() && s.empty != nil {
		select {
		case <-s.empty:
		default:
			close(s.empty)
		}
	}
	s.mu.Unlock()
	m.cxActive.Dec()
}

// HandOff implements listener.HandOff: HTTP/1.1 connections move to next between
// requests (idle ones at once), so the next request meets the new config; HTTP/2
// connections drain on this one.
func (m *Manager) HandOff(next listener.NetworkFilter) bool {
	n, ok := next.(*Manager)
	if !ok || n == m {
		return false
	}
	m.h1.successor.Store(n)
	return true
}

type h1conn struct {
	m      *Manager
	lc     *listener.Conn
	nc     net.Conn // what is read and written: the *tls.Conn under TLS
	rd     connReader
	br     *bufio.Reader
	bw     *bufio.Writer
	r      h1.Reader
	ctx    context.Context
	cancel context.CancelCauseFunc
	remote string
	tls    *tls.ConnectionState
	state  atomic.Int32

	// The idle timeout's read deadline stays armed while requests come and go, and
	// moves only when it is no longer at least the idle timeout ahead (armIdle): a
	// deadline set and cleared at every request was two timer updates of the
	// netpoller per request. idleAt is that deadline (Unix ns) while it is the one
	// armed, 0 once anything else set the read deadline. dlMu orders the setters
	// that run beside another reader of the connection (see idleDeadlineHit).
	idleAt atomic.Int64
	dlMu   sync.Mutex

	// The client-gone watch of a request (startWatch .. stopWatch) reads the
	// connection once the request has run for watchDelay (watchRead).
	watch     *watchdog.Timer
	watchDone chan struct{}
	startFn   func() // startWatch, bound once: a method value per request allocates

	// ex is the storage of the next request, reused from one request to the next
	// while the exchanges end cleanly (see recycle).
	ex *h1exchange
}

// h1exchange is the per-request state of an HTTP/1.1 connection in one piece: the
// request, its URL, its response writer and the manager's exchange state. A connection
// keeps one and reuses it for its next request when nothing can hold the last one any
// more. With the header maps recycled too, the proxy's own allocation per request fell
// from 3.3 to 1.2 KB (BenchmarkProxyHTTP1), and the collector's cycles per request
// under load by 58 %.
type h1exchange struct {
	rb h1.RequestBuf
	w  h1writer
	st exchangeState
}

// connReader is the connection as the bufio.Reader sees it: a byte the client-gone
// watch read comes first, and before everything the bytes protocol detection read
// ahead (pre). Every read of the connection goes through it: a reader on nc directly
// would lose the byte the watch keeps here.
type connReader struct {
	hc      *h1conn
	pre     *bufio.Reader
	one     [1]byte
	hasByte bool
}

func (r *connReader) Read(p []byte) (int, error) {
	for {
		n, err := r.read(p)
		if err != nil && n == 0 && r.hc.idleDeadlineHit(err) {
			continue // a request outlasted the idle deadline: it does not apply to it
		}
		return n, err
	}
}

func (r *connReader) read(p []byte) (int, error) {
	if r.hasByte {
		if len(p) == 0 {
			return 0, nil
		}
		p[0] = r.one[0]
		r.hasByte = false
		return 1, nil
	}
	if r.pre != nil {
		if r.pre.Buffered() > 0 {
			return r.pre.Read(p)
		}
		r.pre = nil
	}
	return r.hc.nc.Read(p)
}

// pending reports whether bytes the client sent are waiting outside the connection.
func (r *connReader) pending() bool {
	return r.hasByte || (r.pre != nil && r.pre.Buffered() > 0)
}

var (
	h1Readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h1BufSize) }}
	h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h1BufSize) }}
)

// serveH1 serves c until it closes. pre may hold bytes already read (protocol
// detection), served before the connection's.
func (m *Manager) serveH1(lc *listener.Conn, nc net.Conn, pre *bufio.Reader) {
	hc := &h1conn{m: m, lc: lc, nc: nc, watchDone: make(chan struct{}, 1)}
	hc.rd.hc, hc.rd.pre = hc, pre
	hc.br = h1Readers.Get().(*bufio.Reader)
	hc.br.Reset(&hc.rd)
	hc.bw = h1Writers.Get().(*bufio.Writer)
	hc.bw.Reset(nc)
	hc.r.MaxHeaderBytes = m.maxHeaderBytes
	hc.ctx, hc.cancel = context.WithCancelCause(context.WithValue(context.Background(), connKey{}, lc))
	hc.r.Context = hc.ctx
	if lc.Remote.IsValid() {
		hc.remote = lc.Remote.String()
	}
	if tc, ok := nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		hc.tls = &cs
	}
	hc.startFn = hc.startWatch
	hc.watch = watchdog.New(hc.watchRead)

	hc.m = register(m, hc)
	hc.r.MaxHeaderBytes = hc.m.maxHeaderBytes

	hijacked := hc.loop()

	unregister(hc.m, hc)
	hc.cancel(errClientGone)
	if !hijacked {
		_ = nc.Close()
		hc.br.Reset(nil)
		h1Readers.Put(hc.br)
		hc.bw.Reset(nil)
		h1Writers.Put(hc.bw)
	}
}

// moveTo hands hc to the manager that replaced its own.
func (hc *h1conn) moveTo(next *Manager) {
	unregister(hc.m, hc)
	hc.m = register(next, hc)
	hc.r.MaxHeaderBytes = hc.m.maxHeaderBytes
}

// loop reads and serves requests until the connection must close; it reports whether
// the connection was hijacked (an upgrade took it).
func (hc *h1conn) loop() (hijacked bool) {
	for {
		m := hc.m
		if next := m.h1.successor.Load(); next != nil {
			hc.moveTo(next)
			continue
		}
		hc.state.Store(stateIdle)
		hc.armIdle(m.idleTimeout)
		// After the deadline is set: a drain or hand-off from now on sets its own.
		if m.h1.successor.Load() != nil {
			continue
		}
		if m.h1.draining.Load() {
			_ = hc.setReadDeadline(time.Unix(0, m.h1.drainAt.Load()))
		}
		if _, err := hc.br.Peek(1); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && m.h1.successor.Load() != nil {
				continue // woken by a hand-off: wait again under the new manager
			}
			return false // closed, idle timeout, or drained
		}
		hc.state.Store(stateActive)
		if m.headersTimeout > 0 {
			_ = hc.setReadDeadline(time.Now().Add(m.headersTimeout))
		}
		if hc.ex == nil {
			hc.ex = new(h1exchange)
			hc.r.Buf = &hc.ex.rb
		}
		req, body, err := hc.r.ReadRequest(hc.br)
		if err != nil {
			hc.reject(err)
			return false
		}
		// The idle and headers timeouts bound the head's read only: a body may take
		// its time, and the client-gone watch reads while the request runs (with
		// the deadline left, it would end at request_headers_timeout and a client
		// leaving later would go unnoticed). The idle deadline stays, at least the
		// idle timeout ahead: a read of a request that outlasts it clears it then
		// (idleDeadlineHit). Any other deadline goes now.
		if hc.idleAt.Load() == 0 {
			_ = hc.setReadDeadline(time.Time{})
		}
		keep, hijacked := hc.serve(req, body)
		if hijacked {
			return true
		}
		if !keep {
			return false
		}
	}
}

// idleSlack is how much later than the idle timeout an idle connection may close: the
// deadline is armed that much further, so the requests of that span leave it as it is.
func idleSlack(d time.Duration) time.Duration { return min(d/16, time.Minute) }

// armIdle makes the read deadline end an idle wait that starts now: the idle timeout
// from now, or up to idleSlack later. A deadline already armed in that span stays.
func (hc *h1conn) armIdle(d time.Duration) {
	now := time.Now()
	want := now.Add(d).UnixNano()
	if at := hc.idleAt.Load(); at >= want && at <= want+int64(idleSlack(d)) {
		return
	}
	at := now.Add(d + idleSlack(d))
	hc.dlMu.Lock()
	_ = hc.nc.SetReadDeadline(at)
	hc.idleAt.Store(at.UnixNano())
	hc.dlMu.Unlock()
}

// setReadDeadline sets a read deadline other than the idle one.
func (hc *h1conn) setReadDeadline(t time.Time) error {
	hc.dlMu.Lock()
	defer hc.dlMu.Unlock()
	hc.idleAt.Store(0)
	return hc.nc.SetReadDeadline(t)
}

// idleDeadlineHit reports whether err is a read of an active request that ran into
// the idle deadline armed before it, which does not apply to requests; the deadline
// is then cleared and the read can be tried again. A deadline anyone else set (a
// drain, the end of the exchange, the handler) is reported as it is: its setter
// zeroed idleAt first, under dlMu, so the two never cross.
func (hc *h1conn) idleDeadlineHit(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || hc.state.Load() != stateActive {
		return false
	}
	hc.dlMu.Lock()
	defer hc.dlMu.Unlock()
	if hc.idleAt.Load() == 0 {
		return false
	}
	hc.idleAt.Store(0)
	_ = hc.nc.SetReadDeadline(time.Time{})
	return true
}

// reject answers a request the codec refused, and the connection closes.
func (hc *h1conn) reject(err error) {
	var pe *h1.ProtocolError
	if !errors.As(err, &pe) {
		return // the connection failed or timed out: nothing to answer
	}
	hc.m.opts.Log.Debug("http/1.1: bad request", "err", err, "src", hc.remote)
	msg := http.StatusText(pe.Status)
	bw := hc.bw
	bw.WriteString(h1.StatusLine(pe.Status))
	bw.WriteString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(msg)))
	bw.WriteString("\r\n\r\n")
	bw.WriteString(msg)
	_ = bw.Flush()
}

// serve runs one request through the manager and finishes its response. keep says
// whether the connection can carry another request.
func (hc *h1conn) serve(req *http.Request, body *h1.Body) (keep, hijacked bool) {
	m := hc.m
	// The request already has hc.ctx: the reader builds it with it (hc.r.Context).
	req.RemoteAddr = hc.remote
	req.TLS = hc.tls
	ex := hc.ex
	w := &ex.w
	*w = h1writer{hc: hc, req: req}
	if body != nil {
		if expect, ok := req.Header["Expect"]; ok {
			if req.ProtoMinor == 1 && len(expect) == 1 && equalFold(expect[0], "100-continue") {
				w.expect = true
				body.Before(w.sendContinue)
			}
			// The proxy answers 100 Continue itself (Envoy's default), so the
			// upstream does not see the expectation.
			delete(req.Header, "Expect")
		}
		if !body.Done() {
			body.OnDone(hc.startFn)
		}
	}
	if body == nil {
		hc.startWatch()
	}

	func() {
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					m.opts.Log.Error("http/1.1: handler panic", "panic", p)
				}
				w.aborted = true
			}
		}()
		m.serve(w, req, &ex.st)
	}()
	if w.hijacked {
		hc.ex = nil // the upgrade keeps it
		return false, true
	}
	// Take the body back before the connection is read again: the handler may have
	// left it with another goroutine (the upstream pool writes a large body from one,
	// and an early response ends the exchange while it still reads). A read in progress
	// is ended by a read deadline in the past; the body is then cut, and the connection
	// closes after the response.
	bodyOK := true
	if body != nil && !body.Release() {
		_ = hc.setReadDeadline(aLongTimeAgo)
		body.ReleaseWait()
		bodyOK = false
	}
	hc.stopWatch()
	keep = hc.end(w, body, bodyOK)
	hc.recycle(ex, req, bodyOK)
	return keep, false
}

// end finishes the response and tells whether the connection can carry another request.
func (hc *h1conn) end(w *h1writer, body *h1.Body, bodyOK bool) bool {
	if w.aborted || hc.ctx.Err() != nil {
		return false
	}
	if err := w.finish(); err != nil {
		return false
	}
	if w.closeAfter || !bodyOK {
		return false
	}
	if body != nil && !body.Done() {
		// Keep the connection if the rest of the body is small enough to read away.
		rem := body.Remaining()
		if rem < 0 || rem > maxDiscard {
			return false
		}
		_ = hc.setReadDeadline(time.Now().Add(5 * time.Second))
		if !body.Discard(maxDiscard) {
			return false
		}
	}
	return true
}

// recycle decides whether the exchange's storage, and the request's and response's
// header maps, serve the next request. Only an exchange that ended cleanly gives them
// back: one upstream attempt that answered, no response flag, the body taken back. On
// any other path something may still hold them (a failed attempt's transport writing
// the request on its own goroutine, a retry's clone, a hijacked connection), and the
// next request gets new ones.
//
// The request's header map went upstream as the attempt's own (the router changes it
// in place): a transport reads it while it writes the request head, which is over once
// the upstream answered. The response's came from the upstream's response (adopted by
// the writer) or was made here; the transports hand it over with the response.
func (hc *h1conn) recycle(ex *h1exchange, req *http.Request, bodyOK bool) {
	if ex.w.aborted || !bodyOK || !ex.st.endedCleanly() {
		hc.ex = nil
		return
	}
	h1.RecycleHeaders(req.Header, ex.w.header)
}

// startWatch arms the client-gone watch for a request whose body has been read (or
// that has none): from then on the handler does not read the connection.
func (hc *h1conn) startWatch() {
	if hc.br.Buffered() > 0 || hc.rd.pending() {
		// The client already sent more (a pipelined request): it is there, and
		// the watch would have to read past those bytes.
		return
	}
	hc.watch.Start(watchDelay)
}

// stopWatch ends the watch before the connection is read again.
func (hc *h1conn) stopWatch() {
	if !hc.watch.Stop() {
		return // it never started
	}
	select {
	case <-hc.watchDone:
		return // it ran and ended (a byte, or the client went away)
	default:
	}
	// It is running: a deadline in the past ends its read.
	_ = hc.setReadDeadline(aLongTimeAgo)
	<-hc.watchDone
	_ = hc.setReadDeadline(time.Time{})
}

// watchRead runs on the timer's goroutine: one byte read while the handler works. A
// byte is the client's next request (kept for the loop); an error other than the
// deadline stopWatch sets means the client went away.
func (hc *h1conn) watchRead() {
	n, err := hc.nc.Read(hc.rd.one[:])
	for n == 0 && err != nil && hc.idleDeadlineHit(err) {
		n, err = hc.nc.Read(hc.rd.one[:])
	}
	if n == 1 {
		hc.rd.hasByte = true
	} else if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			hc.cancel(errClientGone)
		}
	}
	hc.watchDone <- struct{}{}
}

// drainH1 makes every HTTP/1.1 connection close: active ones after their response
// (with Connection: close), idle ones after drainIdleGrace; it returns when all are
// gone, or closes what is left when ctx ends.
func (m *Manager) drainH1(ctx context.Context) error {
	s := &m.h1
	grace := drainIdleGrace
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) / 2; left < grace {
			grace = left
		}
	}
	at := time.Now().Add(grace)
	if s.successor.Load() != nil {
		at = aLongTimeAgo // wake idle connections now: they move to the successor
	}
	s.drainAt.Store(at.UnixNano())
	s.draining.Store(true)
	s.mu.Lock()
	if s.empty == nil {
		s.empty = make(chan struct{})
	}
	if len(s.conns) == 0 {
		select {
		case <-s.empty:
		default:
			close(s.empty)
		}
	}
	for hc := range s.conns {
		if hc.state.Load() == stateIdle {
			_ = hc.setReadDeadline(at)
		}
	}
	empty := s.empty
	s.mu.Unlock()
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for hc := range s.conns {
			_ = hc.nc.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// h1writer is the http.ResponseWriter of one HTTP/1.1 request. The head is written
// into the connection's buffer when the body starts (or the handler returns), and the
// buffer goes out when the handler returns or flushes: a response that fits the
// buffer leaves in one write.
type h1writer struct {
	hc     *h1conn
	req    *http.Request
	header http.Header

	status      int
	wroteHeader bool // a final status was set
	headWritten bool
	chunked     bool
	noBody      bool
	cl          int64 // declared Content-Length, -1 if none
	written     int64
	closeAfter  bool
	hijacked    bool
	aborted     bool
	// expect: the client waits for 100 Continue. sendContinue runs in the body's
	// first read, which may be on another goroutine than the handler's (the upstream
	// pool's body writer): contMu orders it with the response head, so a 100 never
	// follows nor interleaves with the final head.
	expect    bool
	contMu    sync.Mutex
	continued bool
}

var _ http.ResponseWriter = (*h1writer)(nil)

// Header returns the response's header map, made on first use: a proxied response
// usually brings its own (AdoptHeader).
func (w *h1writer) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// AdoptHeader makes h the response's header map, instead of a copy of it, when nothing
// was set in the writer's own yet and the head is not written. The caller hands h over:
// it reads and changes it only through Header() from then on. It saves a map per
// proxied response.
func (w *h1writer) AdoptHeader(h http.Header) bool {
	if w.wroteHeader || w.hijacked || len(w.header) > 0 || h == nil {
		return false
	}
	w.header = h
	return true
}

func (w *h1writer) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational (103 Early Hints): out now, the final status follows.
		if w.expect {
			w.contMu.Lock()
			defer w.contMu.Unlock()
		}
		bw := w.hc.bw
		bw.WriteString(h1.StatusLine(code))
		h1.WriteFields(bw, w.header)
		bw.WriteString("\r\n")
		_ = bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
}

func (w *h1writer) sendContinue() {
	w.contMu.Lock()
	defer w.contMu.Unlock()
	if w.headWritten || w.continued || w.hijacked {
		return
	}
	w.continued = true
	w.hc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	_ = w.hc.bw.Flush()
}

// writeHead puts the status line and header fields in the buffer. final says the
// handler returned without a body byte written, so the length is known to be 0.
func (w *h1writer) writeHead(final bool) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.expect {
		w.contMu.Lock()
		defer w.contMu.Unlock()
		if !w.continued {
			// The client was not told to send its body and may never send it:
			// the connection cannot be read for a next request.
			w.closeAfter = true
		}
	}
	w.headWritten = true
	hc, req, h := w.hc, w.req, w.header
	code := w.status
	w.noBody = req.Method == http.MethodHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
	bw := hc.bw
	bw.WriteString(h1.StatusLine(code))
	seen := h1.WriteFields(bw, h)
	w.cl = -1
	if v := seen.ContentLength; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.cl = n
		}
	}
	if hasClose(seen.Connection) || req.Close || (hc.m.h1.draining.Load() && hc.m.h1.successor.Load() == nil) || code == http.StatusSwitchingProtocols {
		w.closeAfter = true
	}
	if !seen.Date {
		bw.WriteString("Date: ")
		bw.WriteString(h1.Date())
		bw.WriteString("\r\n")
	}
	switch {
	case w.noBody:
		if w.cl >= 0 && code != http.StatusNoContent && code >= 200 {
			bw.WriteString("Content-Length: ")
			h1.WriteInt(bw, w.cl)
			bw.WriteString("\r\n")
		}
	case w.cl >= 0:
		bw.WriteString("Content-Length: ")
		h1.WriteInt(bw, w.cl)
		bw.WriteString("\r\n")
	case final:
		w.cl = 0
		bw.WriteString("Content-Length: 0\r\n")
	case req.ProtoMinor >= 1:
		w.chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		// HTTP/1.0 without a length: the close ends the body.
		w.closeAfter = true
	}
	if w.closeAfter {
		bw.WriteString("Connection: close\r\n")
	} else if req.ProtoMinor == 0 {
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
}

func (w *h1writer) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.headWritten {
		w.writeHead(false)
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	var n int
	var err error
	if w.chunked {
		n, err = h1.ChunkWriter{W: w.hc.bw}.Write(p)
	} else {
		n, err = w.hc.bw.Write(p)
	}
	w.written += int64(n)
	return n, err
}

// WriteString keeps io.WriteString from converting to bytes.
func (w *h1writer) WriteString(s string) (int, error) {
	if !w.chunked && w.headWritten && !w.noBody && !w.hijacked && (w.cl < 0 || w.written+int64(len(s)) <= w.cl) {
		n, err := w.hc.bw.WriteString(s)
		w.written += int64(n)
		return n, err
	}
	return w.Write([]byte(s))
}

func (w *h1writer) Flush() { _ = w.FlushError() }

// FlushError is http.ResponseController's Flush.
func (w *h1writer) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.headWritten {
		w.writeHead(false)
	}
	return w.hc.bw.Flush()
}

// EnableFullDuplex is a no-op: the codec always lets a response start before the
// request body ends.
func (w *h1writer) EnableFullDuplex() error { return nil }

func (w *h1writer) SetReadDeadline(t time.Time) error  { return w.hc.setReadDeadline(t) }
func (w *h1writer) SetWriteDeadline(t time.Time) error { return w.hc.nc.SetWriteDeadline(t) }

// Hijack hands the connection over (WebSocket and other upgrades). Buffered request
// bytes stay readable through the returned reader.
func (w *h1writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.headWritten {
		return nil, nil, errors.New("httpconn: hijack after the response started")
	}
	hc := w.hc
	hc.stopWatch()
	_ = hc.setReadDeadline(time.Time{})
	_ = hc.nc.SetWriteDeadline(time.Time{})
	if w.expect {
		w.contMu.Lock()
		defer w.contMu.Unlock()
	}
	w.hijacked = true
	return hc.nc, bufio.NewReadWriter(hc.br, bufio.NewWriter(hc.nc)), nil
}

// finish ends the response after the handler returned: the head if not yet written,
// the last chunk and trailers, then one flush. An error closes the connection.
func (w *h1writer) finish() error {
	if !w.headWritten {
		w.writeHead(true)
	}
	bw := w.hc.bw
	if w.chunked {
		var tr http.Header
		for k, vs := range w.header {
			if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
				if tr == nil {
					tr = http.Header{}
				}
				tr[k[len(http.TrailerPrefix):]] = vs
			}
		}
		_ = h1.ChunkWriter{W: bw}.Close(tr)
	} else if !w.noBody && w.cl >= 0 && w.written < w.cl {
		// The handler wrote less than it declared: the framing is broken, and
		// only a close tells the client.
		_ = bw.Flush()
		return io.ErrShortWrite
	}
	return bw.Flush()
}

func hasClose(vals []string) bool {
	for _, v := range vals {
		for len(v) > 0 {
			var t string
			t, v, _ = cutByte(v, ',')
			if equalFold(trimSpace(t), "close") {
				return true
			}
		}
	}
	return false
}

func cutByte(s string, c byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isH2Preface reads just enough of a plaintext connection to tell HTTP/2 prior
// knowledge (h2c) from HTTP/1.
func isH2Preface(br *bufio.Reader) (bool, error) {
	if _, err := br.Peek(1); err != nil {
		return false, err
	}
	for {
		n := br.Buffered()
		if n > len(h2.Preface) {
			n = len(h2.Preface)
		}
		b, _ := br.Peek(n)
		if string(b) != h2.Preface[:n] {
			return false, nil
		}
		if n == len(h2.Preface) {
			return true, nil
		}
		if _, err := br.Peek(n + 1); err != nil {
			return false, err
		}
	}
}

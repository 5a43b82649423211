package httpconn

import (
	"bufio"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/h1"
	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/router"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// ServeHTTP serves one request: stamp, match the route, run the filter chain, log.
func (m *Manager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// One piece holds the request's state (the HTTP/2 server's requests; the HTTP/1.1
	// connections bring theirs). It serves a later request, as an HTTP/1.1
	// connection's does (h1conn.recycle), only after an exchange that ended cleanly; a
	// handler that panicked leaves it too.
	st := exchangeStates.Get().(*exchangeState)
	m.serve(w, r, st)
	if st.endedCleanly() {
		exchangeStates.Put(st)
		// The header maps and the server's stream too, once it wrote the response.
		if er, ok := w.(exchangeReleaser); ok {
			er.ReleaseExchange()
		}
	}
}

// exchangeReleaser is a server's response writer that gives the exchange's header maps
// and request storage back when told (the HTTP/2 server's).
type exchangeReleaser interface{ ReleaseExchange() }

var exchangeStates = sync.Pool{New: func() any { return new(exchangeState) }}

// serve is ServeHTTP with the exchange's state in st, which it clears first.
func (m *Manager) serve(w http.ResponseWriter, r *http.Request, st *exchangeState) {
	*st = exchangeState{}
	info := &st.info
	info.Start = time.Now()
	m.rqTotal.Inc()
	m.rqActiveGauge.Inc()

	c, _ := r.Context().Value(connKey{}).(*listener.Conn)
	m.fillInfo(info, c, r)
	m.stamp(info, c, r)

	rw := &st.rw
	*rw = responseWriter{ResponseWriter: w, info: info, server: m.serverVal}
	x := &st.x
	*x = filter.Exchange{W: rw, R: r, Info: info, Reroute: m.rerouteFn}
	// The bookkeeping runs however the request ends: the router aborts the stream with
	// http.ErrAbortHandler when an upstream body breaks off after the headers went out,
	// and the access log and gauges must still see it.
	defer func() {
		p := recover()
		if p != nil {
			info.SetFlag(stream.UpstreamConnectionTermination)
		}
		m.finish(x, rw)
		if p != nil {
			panic(p)
		}
	}()
	if m.useRemoteAddress {
		m.sanitize(x)
	}
	m.reroute(x)
	if err := m.handler.Serve(x); err != nil && !rw.wroteHeader && !rw.hijacked {
		m.opts.Log.Debug("request failed", "err", err, "path", r.URL.Path)
		x.LocalReply(http.StatusInternalServerError, "internal error", 0, "filter_error")
	}
}

// exchangeState is what ServeHTTP allocates per request, in one piece.
type exchangeState struct {
	info stream.Info
	rw   responseWriter
	x    filter.Exchange
}

// endedCleanly reports whether the exchange ended with one attempt at most, no response
// flag, no hijack and no transport still holding the request's body: only then is
// nothing else (a transport reading the request on its own goroutine, a retry's clone,
// a hijacked connection) known to be done with its storage, and both servers reuse it
// on this word.
func (st *exchangeState) endedCleanly() bool {
	return st.info.Flags == 0 && st.info.Attempts <= 1 && !st.rw.hijacked && !st.info.BodyHeld
}

// Header values the manager sets, shared: a one-element slice is never appended to
// in place (append reallocates it), and nothing writes into it.
var (
	valHTTP  = []string{"http"}
	valHTTPS = []string{"https"}
)

// finish records the outcome: stats and the access log.
func (m *Manager) finish(x *filter.Exchange, rw *responseWriter) {
	info := x.Info
	if x.R.Context().Err() != nil && !rw.wroteHeader && !rw.hijacked {
		info.SetFlag(stream.DownstreamConnectionTermination)
	}
	switch {
	case rw.hijacked:
		// An upgrade: the router counted the spliced bytes itself.
		info.ResponseCode = http.StatusSwitchingProtocols
	case rw.wroteHeader:
		info.ResponseCode = rw.status
		info.BytesSent = rw.written
	default:
		info.ResponseCode = 0
	}
	info.Duration = time.Since(info.Start)
	m.account(info)
	if m.accessLog != nil {
		m.accessLog.Log(info, x.R.Header, rw.Header())
	}
	m.rqActiveGauge.Dec()
}

// sanitize removes what a request from outside the mesh may not set: Envoy's control
// headers (x-envoy-retry-on, -upstream-rq-timeout-ms, ...) and the route
// configuration's internal_only_headers, as Envoy does at the edge.
func (m *Manager) sanitize(x *filter.Exchange) {
	h := x.R.Header
	for k := range h {
		if len(k) > 8 && (k[:8] == "X-Envoy-" || k[:8] == "x-envoy-") && k != "X-Envoy-Original-Path" {
			delete(h, k)
		}
	}
	if t := m.table(); t != nil {
		for _, k := range t.InternalOnlyHeaders() {
			h.Del(k)
		}
	}
}

func (m *Manager) table() *router.Table {
	if m.inline != nil {
		return m.inline
	}
	return m.opts.Routes.Get(m.rdsName)
}

// reroute matches the route for the exchange's current request headers.
func (m *Manager) reroute(x *filter.Exchange) {
	x.Route = nil
	t := m.table()
	if t == nil {
		return
	}
	rt, vh := t.Match(x.R)
	if rt == nil {
		return
	}
	x.Route = rt
	x.Info.RouteName = rt.Name()
	if vh != nil {
		x.Info.VirtualHost = vh.Name()
	}
}

func (m *Manager) fillInfo(info *stream.Info, c *listener.Conn, r *http.Request) {
	info.Protocol = r.Proto
	info.Method = r.Method
	info.Authority = r.Host
	info.Path = r.RequestURI // the request target as received, from either codec
	if info.Path == "" {
		info.Path = r.URL.RequestURI()
	}
	if c != nil {
		info.Listener = c.Listener
		info.Downstream = c.Remote
		info.DownstreamLocal = c.Local
		info.DownstreamTLS = c.TLS
		info.PeerPrincipal = c.PeerPrincipal
		info.RequestedServer = c.SNI
	} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		info.Downstream = ap
	}
	if r.ContentLength > 0 {
		info.BytesReceived = r.ContentLength
	}
}

// The keys the connection manager sets, as the codec interns them: its head writer
// knows them for valid names without reading them.
var (
	keyRequestID      = h1.CanonicalKey("X-Request-Id")
	keyForwardedProto = h1.CanonicalKey("X-Forwarded-Proto")
	keyServer         = h1.CanonicalKey("Server")
)

// stamp sets the headers the connection manager owns: x-request-id,
// x-forwarded-for and -proto, and x-forwarded-client-cert.
func (m *Manager) stamp(info *stream.Info, c *listener.Conn, r *http.Request) {
	h := r.Header
	// Envoy keeps an incoming x-request-id unless the request is from the edge
	// (use_remote_address) and preserve_external_request_id is off.
	id := h1.FirstValue(h, keyRequestID)
	if m.generateRequestID && (id == "" || (m.useRemoteAddress && !m.preserveRequestID)) {
		v := newRequestID()
		h[keyRequestID] = v
		id = v[0]
	}
	info.RequestID = id

	tls := info.DownstreamTLS || r.TLS != nil
	if m.useRemoteAddress {
		proto := valHTTP
		if tls {
			proto = valHTTPS
		}
		h[keyForwardedProto] = proto
		if !m.skipXFFAppend && info.Downstream.IsValid() {
			ip := info.Downstream.Addr().Unmap().String()
			if prior := h.Values("X-Forwarded-For"); len(prior) > 0 {
				h.Set("X-Forwarded-For", joinComma(prior)+", "+ip)
			} else {
				h.Set("X-Forwarded-For", ip)
			}
		}
	} else if h1.FirstValue(h, keyForwardedProto) == "" {
		if tls {
			h[keyForwardedProto] = valHTTPS
		} else {
			h[keyForwardedProto] = valHTTP
		}
	}
	m.xfcc.apply(h, c)
}

func joinComma(v []string) string {
	if len(v) == 1 {
		return v[0]
	}
	n := 0
	for _, s := range v {
		n += len(s) + 2
	}
	b := make([]byte, 0, n)
	for i, s := range v {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, s...)
	}
	return string(b)
}

// requestID is a request id and the header value that holds it, in one allocation.
type requestID struct {
	b [36]byte
	v [1]string
}

// idBytes is random bytes for request ids, read from crypto/rand 32 ids at a time, as
// Envoy buffers its UUIDs' randomness: one read per 32 requests instead of one each
// (the read was half of an id's cost). One per P at a time (sync.Pool): no two
// requests take the same bytes.
type idBytes struct {
	b   [idBatch * 16]byte
	off int
}

const idBatch = 32 // ids per read of crypto/rand

var idPool = sync.Pool{New: func() any { return &idBytes{off: idBatch * 16} }}

const hexDigits = "0123456789abcdef"

// idDigits is where each byte's two hex digits go in the 8-4-4-4-12 form.
var idDigits = [16]uint8{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// newRequestID returns a random UUID version 4, Envoy's x-request-id form, as a header
// value.
func newRequestID() []string {
	src := idPool.Get().(*idBytes)
	if src.off == len(src.b) {
		_, _ = rand.Read(src.b[:])
		src.off = 0
	}
	var u [16]byte
	copy(u[:], src.b[src.off:])
	src.off += len(u)
	idPool.Put(src)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	x := new(requestID)
	b := &x.b
	for i, c := range u {
		p := idDigits[i]
		b[p], b[p+1] = hexDigits[c>>4], hexDigits[c&15]
	}
	b[8], b[13], b[18], b[23] = '-', '-', '-', '-'
	// The string is the array's bytes, which are never written again.
	x.v[0] = unsafe.String(&b[0], len(b))
	return x.v[:]
}

func (m *Manager) account(info *stream.Info) {
	switch code := info.ResponseCode; {
	case code >= 500:
		m.rq5xx.Inc()
	case code >= 400:
		m.rq4xx.Inc()
	case code >= 300:
		m.rq3xx.Inc()
	case code >= 200:
		m.rq2xx.Inc()
	case code >= 100:
		m.rq1xx.Inc()
	}
	if info.Flags.Has(stream.NoRouteFound) {
		m.noRoute.Inc()
	}
	if info.Flags.Has(stream.NoClusterFound) {
		m.noCluster.Inc()
	}
	m.rqTime.Record(float64(info.Duration) / float64(time.Millisecond))
}

// responseWriter records what was written for the access log and stats, and sets the
// server header. It keeps http.ResponseController working through Unwrap.
type responseWriter struct {
	http.ResponseWriter
	info        *stream.Info
	server      []string // the Server header's value; nil passes the upstream's through
	status      int
	written     int64
	wroteHeader bool
	hijacked    bool
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wroteHeader = true
		w.status = code
		if w.server != nil {
			w.ResponseWriter.Header()[keyServer] = w.server
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// AdoptHeader passes the router's offer of the upstream response's header map to the
// HTTP/1.1 writer underneath (see h1writer.AdoptHeader).
func (w *responseWriter) AdoptHeader(h http.Header) bool {
	a, ok := w.ResponseWriter.(interface{ AdoptHeader(http.Header) bool })
	return ok && !w.wroteHeader && a.AdoptHeader(h)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// ReadFrom keeps io.Copy on the fast path of the underlying writer.
func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		w.written += n
		return n, err
	}
	n, err := io.Copy(writerOnly{w.ResponseWriter}, r)
	w.written += n
	return n, err
}

type writerOnly struct{ io.Writer }

func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("httpconn: connection cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

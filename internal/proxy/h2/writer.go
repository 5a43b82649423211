package h2

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/weft-mesh/weft/internal/proxy/h1"
)

// responseWriter is a stream's http.ResponseWriter. The head waits for the body's
// first bytes, the handler's Flush or its return, and the body is gathered into
// frames of up to dataChunk: a response the handler writes and returns leaves as its
// HEADERS, DATA and trailers in one write.
type responseWriter struct {
	s           *stream
	header      http.Header
	status      int
	wroteHeader bool // the handler chose the status
	sentHeader  bool // the HEADERS frame went out
	head        bool // a HEAD request: the body is not sent
	buf         []byte
	trailers    []string // declared in the Trailer header when the status was chosen
	err         error
	release     bool // the exchange's storage goes back once the response is written (ReleaseExchange)
}

// ReleaseExchange says that the handler's exchange ended cleanly and that nothing but
// the stream holds the request (its body aside), the request's header map and the
// response's any more: the maps go back (h1.RecycleHeaders) once the response has been
// written, and the stream with its request serves a later stream once frames can no
// longer reach it. The connection manager calls it under the rules its HTTP/1.1
// connections recycle by.
func (w *responseWriter) ReleaseExchange() { w.release = true }

var _ http.Flusher = (*responseWriter)(nil)

// Header returns the response's header map, made on first use: a proxied response
// usually brings its own (AdoptHeader).
func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// AdoptHeader makes h the response's header map instead of a copy of it, when nothing
// was set in the writer's own yet and the status is not chosen; the caller hands h
// over (the connection manager's HTTP/1.1 writer does the same). It saves a map per
// proxied response.
func (w *responseWriter) AdoptHeader(h http.Header) bool {
	if w.wroteHeader || len(w.header) > 0 || h == nil {
		return false
	}
	w.header = h
	return true
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("h2: invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	for _, v := range w.header["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
			}
		}
	}
}

// informational sends a 1xx head at once (103 Early Hints carries the header).
func (w *responseWriter) informational(code int) {
	c := w.s.c
	if w.err != nil {
		return
	}
	var h http.Header
	if code == http.StatusEarlyHints {
		h = w.header
	}
	w.err = c.write(func() error {
		c.encodeHead(code, h, -1)
		return c.writeHeaderBlock(w.s.id, false)
	})
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.head {
		return len(p), nil
	}
	if len(w.buf)+len(p) <= dataChunk {
		if w.buf == nil {
			w.buf = getChunk()
		}
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if len(w.buf) > 0 {
		if err := w.send(w.buf, false); err != nil {
			return 0, err
		}
		w.buf = w.buf[:0]
	}
	if len(p) >= dataChunk {
		if err := w.send(p, false); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *responseWriter) WriteString(s string) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err == nil && len(w.buf)+len(s) <= dataChunk && bodyAllowed(w.status) && !w.head {
		if w.buf == nil {
			w.buf = getChunk()
		}
		w.buf = append(w.buf, s...)
		return len(s), nil
	}
	return w.Write([]byte(s))
}

func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError sends the head and whatever body is gathered.
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 && w.sentHeader {
		return nil
	}
	err := w.send(w.buf, false)
	w.buf = w.buf[:0]
	return err
}

// send sends the head if it has not gone out, then p, as the windows allow.
func (w *responseWriter) send(p []byte, end bool) error {
	err := w.sendLast(p, end, false)
	if err != nil && w.err == nil {
		w.err = err
	}
	return err
}

// sendLast is send, with the trailers (when the response has some) after p ending the
// stream. The head, the part of p the windows admit now and the trailers go in one
// write.
func (w *responseWriter) sendLast(p []byte, end, trailers bool) error {
	s, c := w.s, w.s.c
	endData := end && !trailers
	c.mu.Lock()
	if s.err != nil || c.done {
		err := s.err
		c.mu.Unlock()
		if err == nil {
			err = errClientGone
		}
		return err
	}
	n := c.flow.take(&s.streamFlow, len(p), c.peerMaxFrame.Load())
	c.mu.Unlock()
	now, rest := p[:n], p[n:]
	length := int64(-1)
	if end && !w.sentHeader && len(rest) == 0 && w.header["Content-Length"] == nil && bodyAllowed(w.status) && !w.head {
		length = int64(len(p))
	}
	headerEnds := endData && len(p) == 0 && !w.sentHeader // the head ends the stream
	if end && len(rest) == 0 {
		s.endLocal()
	}
	err := c.write(func() error {
		if !w.sentHeader {
			c.encodeHead(w.status, w.header, length)
			if err := c.writeHeaderBlock(s.id, headerEnds); err != nil {
				return err
			}
			w.sentHeader = true
		}
		if len(now) > 0 || (endData && len(rest) == 0 && !headerEnds) {
			if err := c.writeData(s.id, now, endData && len(rest) == 0); err != nil {
				return err
			}
		}
		if len(rest) == 0 && trailers {
			c.encodeTrailers(w.header, w.trailers)
			return c.writeHeaderBlock(s.id, true)
		}
		return nil
	})
	if err != nil || len(rest) == 0 {
		return err
	}
	if err := s.sendData(rest, endData); err != nil {
		return err
	}
	if trailers {
		s.endLocal()
		return c.write(func() error {
			c.encodeTrailers(w.header, w.trailers)
			return c.writeHeaderBlock(s.id, true)
		})
	}
	return nil
}

// finish ends the response after the handler returned: the head if it has not gone
// out, the gathered body, the trailers, END_STREAM.
func (w *responseWriter) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	err := w.sendLast(w.buf, true, w.hasTrailers())
	putChunk(w.buf) // written into the connection's buffer, or given up
	w.buf = nil
	return err
}

// hasTrailers reports whether the handler set trailers: fields its Trailer header
// declared, or fields under http.TrailerPrefix.
func (w *responseWriter) hasTrailers() bool {
	for _, k := range w.trailers {
		if len(w.header[k]) > 0 {
			return true
		}
	}
	for k, vs := range w.header {
		if len(vs) > 0 && strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// encodeHead HPACK-encodes a response head into c.hbuf (under wmu): :status, the
// header's fields but trailers and connection-specific ones, a date if it has none,
// and content-length when length >= 0.
func (c *Conn) encodeHead(status int, h http.Header, length int64) {
	c.hbuf = c.hbuf[:0]
	c.field(":status", statusValue(status))
	c.writeFields(h)
	if h["Date"] == nil && status >= 200 {
		c.field("date", h1.Date())
	}
	if length >= 0 {
		c.field("content-length", strconv.FormatInt(length, 10))
	}
}

// statusValue is the :status value of code: the first three bytes of its status text,
// which has no allocation for the standard codes.
func statusValue(code int) string {
	if code >= 100 && code <= 999 {
		return h1.Status(code)[:3]
	}
	return strconv.Itoa(code)
}

package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// WriteFields writes header fields except the framing and connection ones (Host,
// Content-Length, Transfer-Encoding, Connection, Trailer and the "Trailer:" prefixed
// keys the Go API uses for trailers), which the caller writes itself. CR and LF in
// values become spaces, so a value cannot start a field of its own; a name that is not
// a token (set by a filter or from config) is not written, as net/http's server skips
// it. It returns what the caller needs of the fields it went past, so that the caller
// does not look them up again.
func WriteFields(bw *bufio.Writer, h http.Header) (seen Written) {
	// The fields are appended to the buffer's free space and written in one call at
	// the end (a copy onto itself), not one call each; a field that does not fit
	// writes what is there, then goes as writeField writes it.
	b := bw.AvailableBuffer()
	for k, vs := range h {
		switch k {
		case "Content-Length":
			seen.ContentLength = vs
			continue
		case "Connection":
			seen.Connection = vs
			continue
		case "Host", "Transfer-Encoding", "Trailer":
			continue
		case "Date":
			seen.Date = true
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !validName(k) {
			continue
		}
		for _, v := range vs {
			if v == "" && k == "User-Agent" {
				continue // an empty User-Agent means "send none" to Go's clients
			}
			// noCRLF's test written out: too large to inline, and a call per
			// field cost 150 instructions per request (callgrind).
			if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 {
				v = crlfToSpace.Replace(v)
			}
			if len(b)+len(k)+len(v)+4 > cap(b) {
				bw.Write(b)
				putField(bw, k, v)
				b = bw.AvailableBuffer()
				continue
			}
			b = appendField(b, k, v)
		}
	}
	bw.Write(b)
	return seen
}

// Written is what WriteFields saw of the fields it does not write, and whether the
// header has a Date.
type Written struct {
	ContentLength, Connection []string
	Date                      bool
}

func writeField(bw *bufio.Writer, k, v string) {
	if !validName(k) {
		return
	}
	putField(bw, k, noCRLF(v))
}

// putField writes a field whose name and value were checked.
func putField(bw *bufio.Writer, k, v string) {
	// The field appended to the buffer's free space and written in one call (the
	// copy is then onto itself); four writes when it does not fit.
	if b := bw.AvailableBuffer(); cap(b) >= len(k)+len(v)+4 {
		bw.Write(appendField(b, k, v))
		return
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// appendField appends "k: v" and CRLF to b.
func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ':', ' ')
	b = append(b, v...)
	return append(b, '\r', '\n')
}

var crlfToSpace = strings.NewReplacer("\r", " ", "\n", " ")

// noCRLF is v with CR and LF as spaces: a value cannot end its line early.
func noCRLF(v string) string {
	if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 {
		return crlfToSpace.Replace(v)
	}
	return v
}

// writeValue writes v with CR and LF as spaces.
func writeValue(bw *bufio.Writer, v string) { bw.WriteString(noCRLF(v)) }

// validName reports whether k is a token (RFC 9110 field-name).
func validName(k string) bool {
	if isCommonKey(k) {
		return true // the codecs' own keys: checked once, at init
	}
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isToken(k[i]) {
			return false
		}
	}
	return true
}

// WriteRequestHead writes req's request line and header fields, framing included: a
// body of known length gets Content-Length, one of unknown length (ContentLength -1,
// or 0 with a body, as net/http's client reads a Request) is chunked. It reports whether the body must be written chunked. The Connection
// header is written when req.Close is set or the header carries one (an upgrade).
func WriteRequestHead(bw *bufio.Writer, req *http.Request, hasBody bool) (chunked bool) {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	u := req.URL
	switch {
	case req.Method == http.MethodConnect && u.Path == "":
		bw.WriteString(u.Host)
	case u.Opaque != "":
		bw.WriteString(u.Opaque)
	default:
		p := u.EscapedPath()
		if p == "" {
			p = "/"
		}
		bw.WriteString(p)
		if u.RawQuery != "" || u.ForceQuery {
			bw.WriteByte('?')
			bw.WriteString(u.RawQuery)
		}
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = u.Host
	}
	writeValue(bw, host)
	bw.WriteString("\r\n")
	seen := WriteFields(bw, req.Header)
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	} else {
		for _, v := range seen.Connection {
			writeField(bw, "Connection", v)
		}
	}
	switch {
	case !hasBody:
		if req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
			bw.WriteString("Content-Length: 0\r\n")
		}
	case req.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		WriteInt(bw, req.ContentLength)
		bw.WriteString("\r\n")
	default:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		chunked = true
	}
	bw.WriteString("\r\n")
	return chunked
}

// WriteInt writes n in decimal, without allocating.
func WriteInt(bw *bufio.Writer, n int64) {
	// Appended to the buffer's free space: a local array would escape through Write.
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), n, 10))
}

// ChunkWriter writes a chunked body: each Write is one chunk.
type ChunkWriter struct{ W *bufio.Writer }

func (c ChunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.W.Write(strconv.AppendInt(c.W.AvailableBuffer(), int64(len(p)), 16))
	c.W.WriteString("\r\n")
	n, err := c.W.Write(p)
	if err != nil {
		return n, err
	}
	_, err = c.W.WriteString("\r\n")
	return n, err
}

// Close writes the last chunk and the trailer fields (may be nil).
func (c ChunkWriter) Close(trailer http.Header) error {
	c.W.WriteString("0\r\n")
	for k, vs := range trailer {
		for _, v := range vs {
			writeField(c.W, k, v)
		}
	}
	_, err := c.W.WriteString("\r\n")
	return err
}

// ErrBodyLength is a body that did not match its declared Content-Length.
var ErrBodyLength = errors.New("h1: body length does not match content-length")

// CopyBody writes body to bw with the framing WriteRequestHead chose: chunked, or
// exactly length bytes (a body that ends early or runs over is an error, since the
// connection's framing would break). buf is the copy buffer. What each read brings is
// flushed before the next read, so a slowly arriving body flows as it comes; the end
// of the body (the last bytes of a known length, the last chunk) is left in bw for the
// caller to flush.
func CopyBody(bw *bufio.Writer, body io.Reader, chunked bool, length int64, trailer http.Header, buf []byte) error {
	var w io.Writer = bw
	if chunked {
		w = ChunkWriter{bw}
	}
	var total int64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			total += int64(n)
			if !chunked && total > length {
				return ErrBodyLength
			}
			last := !chunked && total == length
			piece := buf[:n]
			if last {
				// The body's last byte stays in bw (a large write skips the
				// buffer), so the upstream cannot have the whole body, and answer,
				// before the caller's flush.
				piece = buf[:n-1]
			}
			if _, werr := w.Write(piece); werr != nil {
				return werr
			}
			if last {
				if werr := bw.WriteByte(buf[n-1]); werr != nil {
					return werr
				}
			}
			// What arrived goes on now: the next read may wait on a slow client.
			if err == nil && !last {
				if ferr := bw.Flush(); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if chunked {
		return ChunkWriter{bw}.Close(trailer)
	}
	if total != length {
		return ErrBodyLength
	}
	return nil
}

// CopyKnown writes exactly n bytes of body into bw, reading straight into the
// writer's free buffer; a body shorter than n is an error.
func CopyKnown(bw *bufio.Writer, body io.Reader, n int64) error {
	for n > 0 {
		if bw.Available() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		p := bw.AvailableBuffer()[:bw.Available()]
		if int64(len(p)) > n {
			p = p[:n]
		}
		k, err := body.Read(p)
		if k > 0 {
			bw.Write(p[:k])
			n -= int64(k)
		}
		if err == io.EOF {
			if n > 0 {
				return ErrBodyLength
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Date is the Date header value, formatted once per second (both codecs' responses
// carry it).
func Date() string {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.sec == sec {
		return d.s
	}
	d := &dateStamp{sec: sec, s: now.UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.s
}

type dateStamp struct {
	sec int64
	s   string
}

var cachedDate atomic.Pointer[dateStamp]

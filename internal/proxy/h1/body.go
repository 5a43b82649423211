package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// ErrBodyMalformed is a chunked body that breaks the framing.
var ErrBodyMalformed = errors.New("h1: malformed chunked body")

var crlfcrlf = []byte("\r\n\r\n")

// maxTrailerBytes bounds a chunked body's trailer section.
const maxTrailerBytes = 16 << 10

// Body reads a message body off the connection's reader: Content-Length bytes, or
// chunked (trailers go to Trailer), or everything up to the close. The final bytes come
// with io.EOF, so a proxy hands the connection back before it writes them on.
//
// A Body may be read from another goroutine than its connection's (a proxy writing it
// upstream): reads hold mu, and Release takes the body back for the connection when the
// exchange is over, so a late read never touches a reader that moved on to the next
// message or went back to a pool.
type Body struct {
	mu        sync.Mutex
	released  bool
	br        *bufio.Reader
	hr        *headerReader
	remaining int64 // Content-Length bytes left, or the current chunk's
	chunked   bool
	toClose   bool // delimited by the connection's close
	inChunk   bool
	done      bool
	err       error
	// Trailer receives a chunked body's trailer fields; nil drops them.
	Trailer http.Header
	before  func()
	onDone  func()
}

// Before sets f to run once before the body's first read (the server's 100 Continue).
func (b *Body) Before(f func()) { b.before = f }

// OnDone sets f to run when the body has been read to its end.
func (b *Body) OnDone(f func()) { b.onDone = f }

func (b *Body) markDone() {
	b.done = true
	if f := b.onDone; f != nil {
		b.onDone = nil
		f()
	}
}

// Done reports whether the body was read to its end (the message's framing is
// intact, so the connection can carry the next message).
func (b *Body) Done() bool { return b.done }

// Remaining is how many Content-Length bytes are unread; -1 for other framings.
func (b *Body) Remaining() int64 {
	if b.chunked || b.toClose {
		return -1
	}
	return b.remaining
}

// Buffered reports whether every remaining byte of a Content-Length body is already in
// the reader's buffer: writing it on cannot block on the peer.
func (b *Body) Buffered() bool {
	return !b.chunked && !b.toClose && (b.done || int64(b.br.Buffered()) >= b.remaining)
}

// BodyBuffered reports whether all of body can be read without waiting on a peer:
// a body that says so (Body.Buffered, and the router's wrappers that pass it on), or
// one that is in memory by its type. A body that cannot tell is not buffered: whoever
// writes it streams it rather than wait for all of it, which a slow client may take
// long to send.
func BodyBuffered(body io.Reader) bool {
	switch b := body.(type) {
	case interface{ Buffered() bool }:
		return b.Buffered()
	case *bytes.Reader, *strings.Reader:
		return true
	}
	return false
}

func (b *Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.released {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.read(p)
}

// Release takes the body back for the connection's owner once the exchange's handler is
// done: from then on Read fails with http.ErrBodyReadAfterClose. It returns false at
// once, releasing nothing, when a read is in progress on another goroutine; the owner
// then ends that read (a read deadline in the past) and calls ReleaseWait.
func (b *Body) Release() bool {
	if !b.mu.TryLock() {
		return false
	}
	b.released = true
	b.mu.Unlock()
	return true
}

// ReleaseWait is Release that waits for a read in progress to return.
func (b *Body) ReleaseWait() {
	b.mu.Lock()
	b.released = true
	b.mu.Unlock()
}

// Discard reads and drops the rest of a released body, at most max bytes; it reports
// whether the body ended (the connection can carry the next message).
func (b *Body) Discard(max int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	var buf [4096]byte
	for !b.done && max > 0 {
		p := buf[:]
		if int64(len(p)) > max {
			p = p[:max]
		}
		n, err := b.read(p)
		max -= int64(n)
		if err != nil && err != io.EOF {
			return false
		}
	}
	return b.done
}

func (b *Body) read(p []byte) (int, error) {
	if b.before != nil {
		f := b.before
		b.before = nil
		f()
	}
	if b.done {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch {
	case b.toClose:
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.markDone()
		} else if err != nil {
			b.err = err
		}
		return n, err
	case b.chunked:
		return b.readChunked(p)
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		b.markDone()
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *Body) readChunked(p []byte) (int, error) {
	for !b.inChunk {
		if err := b.nextChunk(); err != nil {
			return 0, b.fail(err)
		}
		if b.done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		b.inChunk = false
		if err := b.chunkEnd(); err != nil {
			return n, b.fail(err)
		}
		// Look ahead for the last chunk when all its bytes, trailer section
		// included, are here already (reading them cannot block), so the final
		// data comes with io.EOF.
		if k := b.br.Buffered(); k >= 5 {
			if peek, _ := b.br.Peek(k); peek[0] == '0' && (peek[1] == '\r' || peek[1] == ';') && bytes.Contains(peek, crlfcrlf) {
				if err := b.nextChunk(); err != nil {
					return n, b.fail(err)
				}
				if b.done {
					return n, io.EOF
				}
			}
		}
		return n, nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, b.fail(err)
	}
	return n, nil
}

func (b *Body) fail(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	b.err = err
	return err
}

// nextChunk reads a chunk-size line; a zero size reads the trailer section and ends the
// body.
func (b *Body) nextChunk() error {
	n := 4096
	line, err := readRawLine(b.br, &n)
	if err != nil {
		return err
	}
	// A chunk line ends with CRLF, never a bare LF (RFC 9112 section 7.1): a peer
	// that frames on either would read a different body (CVE-2025-22871).
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return ErrBodyMalformed
	}
	line = line[:len(line)-2]
	// No control characters (a bare CR above all) in the size or its extensions:
	// net/http refuses them too.
	if !validValue(line) {
		return ErrBodyMalformed
	}
	if i := indexByte(line, ';'); i >= 0 {
		line = line[:i] // chunk extensions are ignored
	}
	line = trimOWS(line)
	if len(line) == 0 || len(line) > 15 {
		return ErrBodyMalformed
	}
	var size int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return ErrBodyMalformed
		}
		size = size<<4 | int64(d)
	}
	if size > 0 {
		b.remaining, b.inChunk = size, true
		return nil
	}
	limit := maxTrailerBytes
	h, err := b.hr.readHeader(b.br, &limit, false)
	if err != nil {
		return err
	}
	if b.Trailer != nil {
		for k, vs := range h {
			b.Trailer[k] = append(b.Trailer[k], vs...)
		}
	}
	b.markDone()
	return nil
}

// chunkEnd reads the CRLF after a chunk's data (a bare LF is refused, as net/http
// refuses it).
func (b *Body) chunkEnd() error {
	c, err := b.br.ReadByte()
	if err != nil {
		return err
	}
	if c != '\r' {
		return ErrBodyMalformed
	}
	if c, err = b.br.ReadByte(); err != nil {
		return err
	}
	if c != '\n' {
		return ErrBodyMalformed
	}
	return nil
}

// Close does not touch the connection: whoever owns it decides, from Done, whether it
// may carry another message.
func (b *Body) Close() error { return nil }

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

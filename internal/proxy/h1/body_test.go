package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
	"time"
)

// chunkedBody parses raw as the body of a chunked request.
func chunkedBody(raw string, bufSize int) (*Body, *bufio.Reader) {
	br := bufio.NewReaderSize(strings.NewReader(raw), bufSize)
	var r Reader
	return &Body{br: br, hr: &r.hr, chunked: true}, br
}

// TestChunkedBody covers the chunked framing, with net/http's chunked reader
// (httputil.NewChunkedReader) as the reference where it has an opinion.
func TestChunkedBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		raw     string
		want    string // body on success
		trailer http.Header
		ok      bool
		// ref: what net/http's reader says (true = accepts); equal to ok unless the
		// difference is deliberate.
		ref bool
	}{
		{"simple", "5\r\nhello\r\n0\r\n\r\n", "hello", nil, true, true},
		{"several", "1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n", "abcdef", nil, true, true},
		{"uppercase hex", "A\r\n0123456789\r\nF\r\n0123456789abcde\r\n0\r\n\r\n", "01234567890123456789abcde", nil, true, true},
		{"lowercase hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789", nil, true, true},
		{"extensions", "5;a=b;c\r\nhello\r\n0;z=\"q\"\r\n\r\n", "hello", nil, true, true},
		{"extension BWS (RFC 9112 7.1.1)", "5 ;a=b\r\nhello\r\n0\r\n\r\n", "hello", nil, true, false},
		{"trailers", "5\r\nhello\r\n0\r\nX-Sum: abc\r\ngrpc-status: 0\r\n\r\n", "hello", http.Header{"X-Sum": {"abc"}, "Grpc-Status": {"0"}}, true, true},
		// Bare LF ending a chunk line or chunk data: the framing differences behind
		// CVE-2025-22871 (request smuggling through a proxy that reads them another way).
		{"bare LF size line", "5\nhello\r\n0\r\n\r\n", "", nil, false, false},
		{"bare LF last chunk line", "5\r\nhello\r\n0\n\r\n", "", nil, false, false},
		{"bare CR size line", "5\rhello\r\n0\r\n\r\n", "", nil, false, false},
		{"bare CR in extension", "5;a\rb\r\nhello\r\n0\r\n\r\n", "", nil, false, false},
		{"bare CR in last chunk extension", "5\r\nhello\r\n0;\r\r\n\r\n", "", nil, false, false},
		{"NUL in extension", "5;a\x00\r\nhello\r\n0\r\n\r\n", "", nil, false, true},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n", "", nil, false, false},
		{"no CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n", "", nil, false, false},
		{"short data", "5\r\nhel\r\n", "", nil, false, false},
		{"data longer than size", "3\r\nhello\r\n0\r\n\r\n", "", nil, false, false},
		{"negative size", "-5\r\nhello\r\n0\r\n\r\n", "", nil, false, false},
		{"size with 0x", "0x5\r\nhello\r\n0\r\n\r\n", "", nil, false, false},
		{"empty size", "\r\nhello\r\n0\r\n\r\n", "", nil, false, false},
		{"size overflow", "10000000000000000\r\nx\r\n", "", nil, false, false},
		{"missing last chunk", "5\r\nhello\r\n", "", nil, false, false},
		// httputil's reader stops before the trailer section; net/http's
		// textproto reader refuses this line.
		{"malformed trailer", "5\r\nhello\r\n0\r\nbad trailer\r\n\r\n", "", nil, false, true},
		{"huge size line", strings.Repeat("0", 8<<10) + "5\r\nhello\r\n0\r\n\r\n", "", nil, false, false},
		{"huge extension", "5;" + strings.Repeat("e", 8<<10) + "\r\nhello\r\n0\r\n\r\n", "", nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := chunkedBody(tc.raw, 4096)
			b.Trailer = http.Header{}
			got, err := io.ReadAll(b)
			if tc.ok {
				if err != nil || string(got) != tc.want {
					t.Fatalf("body %q, %v; want %q", got, err, tc.want)
				}
				if tc.trailer != nil && !equalHeader(b.Trailer, tc.trailer) {
					t.Fatalf("trailer %v, want %v", b.Trailer, tc.trailer)
				}
				if !b.Done() {
					t.Fatalf("not Done after EOF")
				}
			} else {
				if err == nil {
					t.Fatalf("accepted: %q", got)
				}
				if b.Done() {
					t.Fatalf("Done after an error")
				}
				// The error sticks.
				if _, err2 := b.Read(make([]byte, 8)); err2 == nil {
					t.Fatalf("read after error succeeded")
				}
			}
			// The reference: httputil's chunked reader, which reads up to the
			// trailer section (net/http reads trailers itself).
			_, rerr := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(strings.NewReader(tc.raw))))
			if (rerr == nil) != tc.ref {
				t.Errorf("net/http's chunked reader: err %v, table says accepts=%v", rerr, tc.ref)
			}
		})
	}
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, "\x00") != strings.Join(b[k], "\x00") {
			return false
		}
	}
	return true
}

// TestBodyFinalDataWithEOF: when the rest of the message is buffered, the last bytes of
// a body come with io.EOF (so a proxy can hand the connection back before writing them
// on), for Content-Length and chunked framings.
func TestBodyFinalDataWithEOF(t *testing.T) {
	for _, tc := range []struct{ name, raw, want string }{
		{"content-length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", "hello"},
		{"chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"chunked with trailer", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\r\n\r\n", "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.raw))
			var r Reader
			_, body, err := r.ReadRequest(br)
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, 64)
			n, err := body.Read(p)
			if string(p[:n]) != tc.want || err != io.EOF {
				t.Fatalf("Read = %q, %v; want %q with io.EOF", p[:n], err, tc.want)
			}
			if !body.Done() {
				t.Fatalf("not Done")
			}
		})
	}
}

// TestBodyContentLength: short bodies are ErrUnexpectedEOF, Remaining counts down.
func TestBodyContentLength(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello"))
	var r Reader
	req, body, err := r.ReadRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	if req.ContentLength != 10 || body.Remaining() != 10 {
		t.Fatalf("ContentLength %d, Remaining %d", req.ContentLength, body.Remaining())
	}
	p := make([]byte, 3)
	if n, err := body.Read(p); n != 3 || err != nil || body.Remaining() != 7 {
		t.Fatalf("Read %d %v, Remaining %d", n, err, body.Remaining())
	}
	if _, err := io.ReadAll(body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v, want ErrUnexpectedEOF", err)
	}
	if body.Done() {
		t.Fatalf("short body Done")
	}
}

// TestBodyBeforeAndOnDone: Before runs once at the first read (the 100 Continue), OnDone
// at the end.
func TestBodyBeforeAndOnDone(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"))
	var r Reader
	_, body, err := r.ReadRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	var before, done int
	body.Before(func() { before++ })
	body.OnDone(func() { done++ })
	p := make([]byte, 1)
	for {
		_, err := body.Read(p)
		if err != nil {
			break
		}
	}
	_, _ = body.Read(p)
	if before != 1 || done != 1 {
		t.Fatalf("Before ran %d times, OnDone %d; want 1 and 1", before, done)
	}
}

// TestReadRequestWeftOnly: input weft accepts where net/http's reader does not, on
// purpose (RFC 9112 allows it).
func TestReadRequestWeftOnly(t *testing.T) {
	for _, tc := range []struct{ name, raw, path, body string }{
		// RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before
		// the request line (clients that add CRLF after a POST body).
		{"leading empty lines", "\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n", "/x", ""},
		// RFC 9112 section 6.3: a list of identical Content-Lengths may be taken as
		// that one value.
		{"CL list of equal values", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", "/x", "abc"},
		// RFC 9112 section 3.2.2: absolute-form carries the authority; weft takes it
		// without a Host field.
		{"absolute-form without Host", "GET http://a.example/x HTTP/1.1\r\n\r\n", "/x", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, b, err := readReq(t, tc.raw, 0)
			if err != nil || req.URL.Path != tc.path || string(b) != tc.body {
				t.Fatalf("got %v %q %v", req, b, err)
			}
		})
	}
}

// TestBodyCloseDelimited: a response without framing reads to the close.
func TestBodyCloseDelimited(t *testing.T) {
	raw := "HTTP/1.0 200 OK\r\nX: y\r\n\r\n" + strings.Repeat("z", 10000)
	var r Reader
	resp, body, err := r.ReadResponse(bufio.NewReader(strings.NewReader(raw)), http.MethodGet)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Close || resp.ContentLength != -1 || body.Remaining() != -1 {
		t.Fatalf("Close %v, ContentLength %d", resp.Close, resp.ContentLength)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(b, []byte(strings.Repeat("z", 10000))) || !body.Done() {
		t.Fatalf("body of %d, %v", len(b), err)
	}
}

// TestBodyRelease: the connection's owner takes a body back from a goroutine that still
// reads it; later reads fail without touching the reader.
func TestBodyRelease(t *testing.T) {
	pr, pw := io.Pipe()
	br := bufio.NewReader(pr)
	var r Reader
	go func() { _, _ = io.WriteString(pw, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab") }()
	_, body, err := r.ReadRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	reading := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(body) // blocks after "ab"
		reading <- err
	}()
	// Wait until the reader is inside Read, holding the body.
	deadline := time.Now().Add(5 * time.Second)
	for body.mu.TryLock() {
		body.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the reader never blocked in Read")
		}
		time.Sleep(time.Millisecond)
	}
	if body.Release() {
		t.Fatal("Release succeeded while a read was in progress")
	}
	_ = pw.CloseWithError(errors.New("deadline")) // what a past read deadline does
	body.ReleaseWait()
	if err := <-reading; err == nil {
		t.Fatal("the cut read succeeded")
	}
	if _, err := body.Read(make([]byte, 4)); err != http.ErrBodyReadAfterClose {
		t.Fatalf("read after release: %v", err)
	}

	// Discard reads a released body's rest within the bound.
	br = bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET"))
	_, body, _ = r.ReadRequest(br)
	if !body.Release() || !body.Discard(100) || !body.Done() {
		t.Fatal("Discard of a 5-byte body")
	}
	if rest, _ := io.ReadAll(br); string(rest) != "GET" {
		t.Fatalf("Discard read past the body: %q left", rest)
	}
	br = bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 500\r\n\r\n" + strings.Repeat("x", 500)))
	_, body, _ = r.ReadRequest(br)
	if !body.Release() || body.Discard(100) {
		t.Fatal("Discard went over its bound")
	}
}

// TestRequestTrailers: a chunked request's trailer fields land in Request.Trailer at the
// body's end, as net/http's server puts them there.
func TestRequestTrailers(t *testing.T) {
	raw := "POST / HTTP/1.1\r\nHost: h\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n"
	req, b, err := readReq(t, raw, 0)
	if err != nil || string(b) != "abc" {
		t.Fatalf("%q %v", b, err)
	}
	ref, _ := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	_, _ = io.ReadAll(ref.Body)
	if req.Trailer.Get("X-Sum") != "42" || ref.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("trailer %v, net/http %v", req.Trailer, ref.Trailer)
	}
}

// TestChunkedLastDataNotHeldByTrailer: the look-ahead for the last chunk must not hold
// data back while a trailer section is still on its way.
func TestChunkedLastDataNotHeldByTrailer(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = io.WriteString(pw, "5\r\nhello\r\n0\r\nX-Tr") }() // the rest never comes
	var r Reader
	b := &Body{br: bufio.NewReader(pr), hr: &r.hr, chunked: true}
	got := make(chan string, 1)
	go func() {
		p := make([]byte, 64)
		n, _ := b.Read(p)
		got <- string(p[:n])
	}()
	select {
	case s := <-got:
		if s != "hello" {
			t.Fatalf("read %q", s)
		}
	case <-time.After(5 * time.Second):
		pw.CloseWithError(errors.New("test over"))
		t.Fatal("the chunk's data waited for the trailer section")
	}
}

type saysBuffered bool

func (s saysBuffered) Read([]byte) (int, error) { return 0, io.EOF }
func (s saysBuffered) Buffered() bool           { return bool(s) }

// TestBodyBuffered: only bodies known to be in memory count as buffered; one that
// cannot tell (an HTTP/2 body, a pipe, a NopCloser) is streamed by its writer.
func TestBodyBuffered(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	for name, c := range map[string]struct {
		r    io.Reader
		want bool
	}{
		"bytes.Reader":   {bytes.NewReader([]byte("x")), true},
		"strings.Reader": {strings.NewReader("x"), true},
		"says yes":       {saysBuffered(true), true},
		"says no":        {saysBuffered(false), false},
		"pipe":           {pr, false},
		"NopCloser":      {io.NopCloser(strings.NewReader("x")), false},
	} {
		if got := BodyBuffered(c.r); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

package pool

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/h1"
	"github.com/weft-mesh/weft/internal/proxy/stats"
)

// rawUpstream is an HTTP/1.1 server on loopback scripted byte by byte: serve runs once
// per accepted connection.
type rawUpstream struct {
	ln      net.Listener
	accepts atomic.Int64
}

func startRaw(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepts.Add(1)
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return u
}

func rawPool(t *testing.T, u *rawUpstream) *Pool {
	t.Helper()
	cfg := Config{Limits: NewLimits(DefaultThresholds(), NewStats(stats.New(), "raw"))}
	if err := cfg.Init(); err != nil {
		t.Fatal(err)
	}
	p := New(&cfg, u.ln.Addr().String())
	t.Cleanup(p.Close)
	return p
}

func do(t *testing.T, p *Pool, req *http.Request) (*http.Response, string, error) {
	t.Helper()
	resp, err := p.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// TestH1PoolReusesAndCloses: a response read to its end gives the connection back; a
// response with Connection: close or a close-delimited body does not.
func TestH1PoolReusesAndCloses(t *testing.T) {
	u := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			switch req.URL.Path {
			case "/close":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
				return
			case "/eof":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n\r\nuntil the close")
				return
			case "/chunked":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")
			default:
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
			}
		}
	})
	p := rawPool(t, u)
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest("GET", "http://svc/k", nil)
		if _, body, err := do(t, p, req); err != nil || body != "/k" {
			t.Fatalf("%d: %q %v", i, body, err)
		}
	}
	req, _ := http.NewRequest("GET", "http://svc/chunked", nil)
	resp, body, err := do(t, p, req)
	if err != nil || body != "ok" || resp.Trailer.Get("X-T") != "1" {
		t.Fatalf("chunked: %q %v %v", body, err, resp)
	}
	if n := u.accepts.Load(); n != 1 {
		t.Fatalf("%d connections for keep-alive requests, want 1", n)
	}
	for _, path := range []string{"/close", "/eof"} {
		req, _ := http.NewRequest("GET", "http://svc"+path, nil)
		if _, body, err := do(t, p, req); err != nil || (body != "ok" && body != "until the close") {
			t.Fatalf("%s: %q %v", path, body, err)
		}
		before := u.accepts.Load()
		req, _ = http.NewRequest("GET", "http://svc/k", nil)
		if _, body, err := do(t, p, req); err != nil || body != "/k" {
			t.Fatalf("after %s: %q %v", path, body, err)
		}
		if u.accepts.Load() != before+1 {
			t.Fatalf("after %s the connection was reused", path)
		}
	}
}

// TestH1PoolExchangeOnOneWait: on a plaintext connection a request's last write goes
// with its response's first read (exchanger): exchanges with and without a body, many
// over one connection, against a server that answers at once, each get their own
// answer.
func TestH1PoolExchangeOnOneWait(t *testing.T) {
	u := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(req.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s", len(req.URL.Path)+len(b), req.URL.Path, b)
		}
	})
	p := rawPool(t, u)
	payload := strings.Repeat("p", 1024)
	for i := range 300 {
		path := fmt.Sprintf("/r%d", i)
		var req *http.Request
		want := path
		if i%2 == 0 {
			req, _ = http.NewRequest("GET", "http://svc"+path, nil)
		} else {
			// A body as the proxy's codec hands it over: whole in its buffer, so
			// written with the head.
			var r h1.Reader
			raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s", path, len(payload), payload)
			var err error
			if req, _, err = r.ReadRequest(bufio.NewReader(strings.NewReader(raw))); err != nil || !h1.BodyBuffered(req.Body) {
				t.Fatalf("%d: request %v, body buffered %v", i, err, err == nil && h1.BodyBuffered(req.Body))
			}
			req.URL.Scheme, req.URL.Host = "http", "svc"
			want += payload
		}
		if _, body, err := do(t, p, req); err != nil || body != want {
			t.Fatalf("%d: %.40q %v", i, body, err)
		}
	}
	if n := u.accepts.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	conns := *p.conns.Load()
	if len(conns) != 1 || conns[0].h1 == nil || conns[0].h1.ex == nil {
		t.Fatal("the plaintext connection has no exchanger: the requests went the write-then-read way")
	}
	if n := conns[0].h1.ex.exchanges; n != 300 {
		t.Errorf("%d of 300 requests went out with their response's first read, want all", n)
	}
}

// TestStaleAfter: which failures before a response byte say a reused connection was
// closed by the server; a failed write only when no body was consumed by it.
func TestStaleAfter(t *testing.T) {
	wr := &net.OpError{Op: "write", Err: errors.New("broken pipe")}
	rd := &net.OpError{Op: "read", Err: errors.New("connection reset")}
	for _, c := range []struct {
		err     error
		hasBody bool
		want    bool
	}{
		{io.EOF, true, true},
		{fmt.Errorf("h1: %w", io.ErrUnexpectedEOF), false, true},
		{rd, true, true},
		{wr, false, true},
		{wr, true, false},
		{errors.New("malformed response"), false, false},
	} {
		if got := staleAfter(c.err, c.hasBody); got != c.want {
			t.Errorf("staleAfter(%v, body=%v) = %v, want %v", c.err, c.hasBody, got, c.want)
		}
	}
}

// TestH1PoolRequestFraming: what the pool writes parses with net/http to the same
// request: known length, chunked with trailers, an empty POST.
func TestH1PoolRequestFraming(t *testing.T) {
	got := make(chan string, 8)
	u := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, err := io.ReadAll(req.Body)
			got <- fmt.Sprintf("%s %s cl=%d te=%v body=%d/%v trailer=%s host=%s", req.Method, req.RequestURI, req.ContentLength, req.TransferEncoding, len(b), err, req.Trailer.Get("X-T"), req.Host)
			fmt.Fprintf(c, "HTTP/1.1 204 No Content\r\n\r\n")
		}
	})
	p := rawPool(t, u)
	big := bytes.Repeat([]byte("x"), 200<<10)
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		want string
	}{
		{"small known", func() *http.Request {
			r, _ := http.NewRequest("POST", "http://svc/a?b=c", strings.NewReader("hello"))
			return r
		}, "POST /a?b=c cl=5 te=[] body=5/<nil> trailer= host=svc"},
		{"large known", func() *http.Request {
			r, _ := http.NewRequest("PUT", "http://svc/big", bytes.NewReader(big))
			return r
		}, fmt.Sprintf("PUT /big cl=%d te=[] body=%d/<nil> trailer= host=svc", len(big), len(big))},
		{"chunked with trailer", func() *http.Request {
			r, _ := http.NewRequest("POST", "http://svc/c", io.MultiReader(strings.NewReader("abc")))
			r.ContentLength = -1
			r.Trailer = http.Header{"X-T": {"t"}}
			return r
		}, "POST /c cl=-1 te=[chunked] body=3/<nil> trailer=t host=svc"},
		{"empty POST", func() *http.Request {
			r, _ := http.NewRequest("POST", "http://svc/e", nil)
			return r
		}, "POST /e cl=0 te=[] body=0/<nil> trailer= host=svc"},
		{"host override", func() *http.Request {
			r, _ := http.NewRequest("GET", "http://svc/h", nil)
			r.Host = "other.example:8080"
			return r
		}, "GET /h cl=0 te=[] body=0/<nil> trailer= host=other.example:8080"},
	} {
		if resp, _, err := do(t, p, tc.req()); err != nil || resp.StatusCode != 204 {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if g := <-got; g != tc.want {
			t.Errorf("%s: upstream saw %q, want %q", tc.name, g, tc.want)
		}
	}
}

// TestH1PoolEarlyResponse: an upstream that answers before reading a large body; the
// response comes back and the connection is not reused.
func TestH1PoolEarlyResponse(t *testing.T) {
	u := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 3\r\n\r\nbig")
		time.Sleep(200 * time.Millisecond)
	})
	p := rawPool(t, u)
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 64; i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", "http://svc/up", pr)
	req.ContentLength = 64 * 64 << 10
	resp, body, err := do(t, p, req)
	_ = pr.CloseWithError(io.ErrClosedPipe)
	if err != nil || resp.StatusCode != 413 || body != "big" {
		t.Fatalf("%v %q %v", resp, body, err)
	}
}

// TestH1PoolReleased: a response body reports the request released only once it has
// ended and no writer of the request body is still running - the router reuses the
// request's memory, and gives the response's back (Recycle), on that word.
func TestH1PoolReleased(t *testing.T) {
	u := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/early" {
				// Answer before the body, which never ends, and read no more.
				fmt.Fprintf(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 3\r\n\r\nbig")
				time.Sleep(time.Second)
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p := rawPool(t, u)
	released := func(resp *http.Response) bool {
		r, ok := resp.Body.(interface{ Released() bool })
		return ok && r.Released()
	}

	// Bodies from the second goroutine: a small one, a chunked one, and one of known
	// length whose end goes out in a write larger than the write buffer. Each time
	// the upstream may answer before the writer has said it is done; the end of the
	// response then waits for it, and the connection is reused.
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(make([]byte, 1000)); pw.Close() }()
	large := make([]byte, 48<<10)
	for _, tc := range []struct {
		body   io.Reader
		length int64
	}{{strings.NewReader("hello"), 5}, {pr, -1}, {struct{ io.Reader }{bytes.NewReader(large)}, int64(len(large))}} {
		req, _ := http.NewRequest("POST", "http://svc/ok", tc.body)
		req.ContentLength = tc.length
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if released(resp) {
			t.Fatal("released before the response body was read")
		}
		if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
			t.Fatalf("%q %v", b, err)
		}
		if !released(resp) {
			t.Fatalf("%T not released at the end of its body", tc.body)
		}
		// Its storage serves the next response (read on the same connection).
		resp.Body.(interface{ Recycle() }).Recycle()
	}
	if n := u.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections for the three requests, want 1", n)
	}

	// The upstream answers early; the request body's writer still waits for bytes.
	pr, pw = io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", "http://svc/early", pr)
	req.ContentLength = -1
	resp, err := p.RoundTrip(req)
	if err != nil || resp.StatusCode != 413 {
		t.Fatalf("%v %v", resp, err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if released(resp) {
		t.Fatal("released while the request body's writer still runs")
	}
}

// TestH1PoolInformational: 1xx responses before the final one are skipped, but not
// without end.
func TestH1PoolInformational(t *testing.T) {
	u := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		n := 2
		if req.URL.Path == "/flood" {
			n = 10000
		}
		for i := 0; i < n; i++ {
			if _, err := fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"); err != nil {
				return
			}
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	p := rawPool(t, u)
	req, _ := http.NewRequest("GET", "http://svc/two", nil)
	if resp, body, err := do(t, p, req); err != nil || resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("two 103s: %v %q %v", resp, body, err)
	}
	req, _ = http.NewRequest("GET", "http://svc/flood", nil)
	if resp, _, err := do(t, p, req); err == nil {
		t.Fatalf("10000 informational responses accepted: %d", resp.StatusCode)
	}
}

// TestH1PoolStaleAndUnsolicited: a connection the upstream closed after its response
// (without saying so) costs a replayable request nothing; bytes after a response's end
// (unsolicited, or a body longer than its Content-Length) never become the next
// request's response.
func TestH1PoolStaleAndUnsolicited(t *testing.T) {
	strayWritten := make(chan struct{}, 1)
	u := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/extra":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
			time.Sleep(500 * time.Millisecond) // keep the connection open
		case "/late":
			// Bytes nobody asked for, a moment after the response: the pool must not
			// read them as the answer to the next request on this connection.
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			time.Sleep(20 * time.Millisecond)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
			strayWritten <- struct{}{} // on loopback the bytes are in the pool's socket now
			for {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		default:
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			// close at once: the pool learns it only on the next request
		}
	})
	p := rawPool(t, u)
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest("GET", "http://svc/s", nil)
		if _, body, err := do(t, p, req); err != nil || body != "ok" {
			t.Fatalf("%d: %q %v", i, body, err)
		}
	}
	req, _ := http.NewRequest("GET", "http://svc/extra", nil)
	if _, body, err := do(t, p, req); err != nil || body != "ok" {
		t.Fatalf("extra: %q %v", body, err)
	}
	req, _ = http.NewRequest("GET", "http://svc/after", nil)
	if _, body, err := do(t, p, req); err != nil || body != "ok" {
		t.Fatalf("after unsolicited bytes: %q %v", body, err)
	}
	// Stray bytes that arrive after the response, with the connection taken again at
	// once (well within any idle threshold).
	req, _ = http.NewRequest("GET", "http://svc/late", nil)
	if _, body, err := do(t, p, req); err != nil || body != "ok" {
		t.Fatalf("late: %q %v", body, err)
	}
	select {
	case <-strayWritten:
	case <-time.After(10 * time.Second):
		t.Fatal("the server never wrote its stray bytes")
	}
	req, _ = http.NewRequest("GET", "http://svc/after-late", nil)
	if _, body, err := do(t, p, req); err != nil || body != "ok" {
		t.Fatalf("after late unsolicited bytes: %q %v (want a fresh connection's answer)", body, err)
	}
}

// TestH1PoolContextEndsExchange: the end of a request's context fails its exchange,
// whether it comes before the pool starts watching the context (a deadline shorter
// than watchAfter, a cancel right away) or after (a cancel during the response body),
// and the connection is not reused. Fast exchanges on the same connection go on.
func TestH1PoolContextEndsExchange(t *testing.T) {
	u := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/hang":
				_, _ = br.ReadByte() // until the pool closes the connection
				return
			case "/trickle":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
				_, _ = br.ReadByte()
				return
			default:
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	p := rawPool(t, u)
	fast := func(when string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://svc/fast", nil)
		if _, body, err := do(t, p, req); err != nil || body != "ok" {
			t.Fatalf("%s: %q %v", when, body, err)
		}
	}
	fast("first")
	fast("reused") // the connection's second exchange: its watch timer is reset, not remade

	// A deadline shorter than watchAfter.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/hang", nil)
	start := time.Now()
	_, _, err := do(t, p, req)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("deadline: %v after %v", err, time.Since(start))
	}
	fast("after the deadline")

	// A cancel before the watch starts: the watch finds the context ended.
	ctx, cancel = context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://svc/hang", nil)
	time.AfterFunc(5*time.Millisecond, cancel)
	start = time.Now()
	if _, _, err := do(t, p, req); !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("early cancel: %v after %v", err, time.Since(start))
	}

	// A cancel while the response body is read, long after watchAfter.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://svc/trickle", nil)
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(3*watchAfter, cancel)
	start = time.Now()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "first" || !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("body cancel: %q %v after %v", b, err, time.Since(start))
	}
	before := u.accepts.Load()
	fast("after the cancels")
	if u.accepts.Load() != before+1 {
		t.Fatal("a connection whose exchange was cancelled was reused")
	}

	// The watch timer stays set from one exchange to the next: set for the exchange
	// just over, it fires before this one is due and must be set again for the rest,
	// or this exchange is never watched.
	time.Sleep(watchAfter / 2)
	ctx, cancel = context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://svc/hang", nil)
	time.AfterFunc(3*watchAfter, cancel)
	start = time.Now()
	if _, _, err := do(t, p, req); !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("cancel on a reused connection: %v after %v", err, time.Since(start))
	}
	if u.accepts.Load() != before+1 {
		t.Fatal("the exchange did not reuse the connection")
	}
}

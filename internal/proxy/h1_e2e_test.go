package proxy_test

// End-to-end tests of the HTTP/1.1 server side (internal/proxy/httpconn/h1.go on the
// internal/proxy/h1 codec) and the upstream HTTP/1.1 pool, through a whole proxy on
// loopback sockets, driven as clients drive it: raw bytes over TCP where the framing is
// the point, net/http and x/net/http2 clients elsewhere.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// h1Mesh is the usual mesh with backend a answering the paths the tests use:
//
//	/echo   the request body back, with what the backend saw in X-Got-* fields
//	/slow   after 300 ms, "METHOD path"
//	/early  413 without reading the body
//	/hang   waits for the request context to end, reported on m.cancelled
//	/direct a direct_response of the proxy (the body is never read)
//	other   "METHOD path"
type h1Mesh struct {
	*mesh
	arrived   chan struct{}
	cancelled chan time.Time
}

func newH1Mesh(t *testing.T) *h1Mesh {
	t.Helper()
	m := &h1Mesh{mesh: newMesh(t, false), arrived: make(chan struct{}, 16), cancelled: make(chan time.Time, 16)}
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/echo":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return true
			}
			w.Header().Set("X-Got-Length", strconv.FormatInt(r.ContentLength, 10))
			w.Header().Set("X-Got-Te", strings.Join(r.TransferEncoding, ","))
			w.Header().Set("X-Got-Trailer", r.Trailer.Get("X-T"))
			w.Header().Set("X-Got-Expect", r.Header.Get("Expect"))
			_, _ = w.Write(b)
		case "/hop":
			w.Header().Set("Connection", "X-Hop")
			w.Header().Set("X-Hop", "secret")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("X-Keep", "yes")
			_, _ = io.WriteString(w, "hop")
		case "/slow":
			time.Sleep(300 * time.Millisecond)
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
		case "/early":
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = io.WriteString(w, "too big")
		case "/hang":
			// net/http's server notices a client going away only once the
			// body was read.
			_, _ = io.ReadAll(r.Body)
			m.arrived <- struct{}{}
			select {
			case <-r.Context().Done():
				m.cancelled <- time.Now()
			case <-time.After(15 * time.Second):
			}
		default:
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
		}
		return true
	}
	m.pushRC(t, routeConfig("r", directRoute("/direct", "direct"), prefixRoute("/", "a")))
	m.waitBackend(t, "/", "")
	return m
}

func directRoute(prefix, body string) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}},
		}},
	}
}

// rawConn is one client TCP connection to the proxy.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (m *h1Mesh) dial(t *testing.T) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) write(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// response reads one response and its body.
func (rc *rawConn) response(method string) (*http.Response, string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the server closed the connection (EOF or reset) within d.
func (rc *rawConn) closed(d time.Duration) error {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	n, err := rc.br.Read(make([]byte, 1))
	if n > 0 {
		return fmt.Errorf("unexpected byte from the server")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("still open after %v", d)
	}
	return nil
}

// countingClient is a keep-alive client that counts the TCP connections it opens.
func countingClient(dials *atomic.Int64) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 64, DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func TestH1KeepAliveReusesOneConnection(t *testing.T) {
	m := newH1Mesh(t)
	var dials atomic.Int64
	c := countingClient(&dials)
	for i := 0; i < 100; i++ {
		code, _, body := get(t, c, fmt.Sprintf("%s/k/%d", m.url, i))
		if code != 200 || body != fmt.Sprintf("GET /k/%d", i) {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("100 sequential requests opened %d connections, want 1", n)
	}
}

func TestH1HTTP10(t *testing.T) {
	m := newH1Mesh(t)
	t.Run("closes without keep-alive", func(t *testing.T) {
		rc := m.dial(t)
		rc.write("GET /ten HTTP/1.0\r\nHost: x\r\n\r\n")
		resp, body := rc.response("GET")
		if resp.StatusCode != 200 || body != "GET /ten" || !resp.Close {
			t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
		}
		if err := rc.closed(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("keep-alive", func(t *testing.T) {
		rc := m.dial(t)
		for i := 0; i < 3; i++ {
			rc.write(fmt.Sprintf("GET /ka/%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", i))
			resp, body := rc.response("GET")
			if resp.StatusCode != 200 || body != fmt.Sprintf("GET /ka/%d", i) || resp.Close || resp.Header.Get("Connection") != "keep-alive" {
				t.Fatalf("%d: %d %q close=%v %v", i, resp.StatusCode, body, resp.Close, resp.Header)
			}
		}
	})
}

// TestH1ResponseHeaders: the writer takes the upstream response's header map as its
// own (h1writer.AdoptHeader); hop-by-hop fields, and those the upstream's Connection
// names, still go, and the route's response header ops still apply.
func TestH1ResponseHeaders(t *testing.T) {
	m := newH1Mesh(t)
	hop := prefixRoute("/hop", "a")
	hop.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-route", Value: "added"}}}
	hop.ResponseHeadersToRemove = []string{"x-keep-not"}
	v := m.pushRC(t, routeConfig("r", hop, prefixRoute("/", "a")))
	eventually(t, 10*time.Second, func() error {
		if got := m.cp.acked("type.googleapis.com/envoy.config.route.v3.RouteConfiguration"); got != v {
			return fmt.Errorf("routes acked %q, want %q", got, v)
		}
		return nil
	})
	rc := m.dial(t)
	for i := 0; i < 2; i++ { // the second on a reused connection
		rc.write("GET /hop HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := rc.response("GET")
		if resp.StatusCode != 200 || body != "hop" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		h := resp.Header
		if h.Get("X-Hop") != "" || h.Get("Keep-Alive") != "" || strings.Contains(h.Get("Connection"), "X-Hop") {
			t.Errorf("hop-by-hop fields passed: %v", h)
		}
		if h.Get("X-Keep") != "yes" || h.Get("X-Route") != "added" || h.Get("Content-Length") != "3" || h.Get("Server") == "" {
			t.Errorf("fields missing: %v", h)
		}
		// The upstream's Date goes through, and the proxy adds none of its own.
		if len(h["Date"]) != 1 {
			t.Errorf("Date fields: %q", h["Date"])
		}
	}
	// A response of the proxy's own (direct response) gets one.
	rc.write("GET /direct HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := rc.response("GET"); len(resp.Header["Date"]) != 1 {
		t.Errorf("direct response: Date fields %q", resp.Header["Date"])
	}
}

// TestH1Pipelined: requests sent before the previous answers come back are answered in
// order, including one that arrives while a slow request is being served (the
// client-gone watch is reading the connection then).
func TestH1Pipelined(t *testing.T) {
	m := newH1Mesh(t)
	t.Run("all at once", func(t *testing.T) {
		rc := m.dial(t)
		var b strings.Builder
		for i := 0; i < 5; i++ {
			fmt.Fprintf(&b, "GET /p/%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		}
		b.WriteString("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		b.WriteString("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		rc.write(b.String())
		for i := 0; i < 5; i++ {
			if resp, body := rc.response("GET"); resp.StatusCode != 200 || body != fmt.Sprintf("GET /p/%d", i) {
				t.Fatalf("response %d: %d %q", i, resp.StatusCode, body)
			}
		}
		if resp, body := rc.response("POST"); resp.StatusCode != 200 || body != "abc" {
			t.Fatalf("echo: %d %q", resp.StatusCode, body)
		}
		if resp, body := rc.response("GET"); resp.StatusCode != 200 || body != "GET /slow" {
			t.Fatalf("slow: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("during a slow request", func(t *testing.T) {
		rc := m.dial(t)
		rc.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(150 * time.Millisecond) // past the 50 ms after which the watch reads
		rc.write("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := rc.response("GET"); resp.StatusCode != 200 || body != "GET /slow" {
			t.Fatalf("slow: %d %q", resp.StatusCode, body)
		}
		if resp, body := rc.response("GET"); resp.StatusCode != 200 || body != "GET /after" {
			t.Fatalf("pipelined after the slow one: %d %q", resp.StatusCode, body)
		}
	})
}

func TestH1ExpectContinue(t *testing.T) {
	m := newH1Mesh(t)
	rc := m.dial(t)
	rc.write("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusContinue {
		t.Fatalf("first answer %d, want 100 before the body is sent", resp.StatusCode)
	}
	rc.write("hello world")
	resp, body := rc.response("POST")
	if resp.StatusCode != 200 || body != "hello world" || resp.Header.Get("X-Got-Expect") != "" {
		t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
	}
	// The connection carries the next request.
	rc.write("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.response("GET"); resp.StatusCode != 200 || body != "GET /next" {
		t.Fatalf("next: %d %q", resp.StatusCode, body)
	}

	// A local reply that never reads the body: no 100, and the connection is not
	// left waiting for a body the client will not send.
	rc = m.dial(t)
	rc.write("POST /direct HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
	resp, body = rc.response("POST")
	if resp.StatusCode != 200 || body != "direct" {
		t.Fatalf("direct: %d %q", resp.StatusCode, body)
	}

	// Go's client end to end.
	req, _ := http.NewRequest("POST", m.url+"/echo", strings.NewReader("via net/http"))
	req.Header.Set("Expect", "100-continue")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	start := time.Now()
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || string(b) != "via net/http" {
		t.Fatalf("%d %q", r.StatusCode, b)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("the client waited out its 100-continue timeout: no 100 came")
	}
}

func TestH1ChunkedRequestBody(t *testing.T) {
	m := newH1Mesh(t)
	rc := m.dial(t)
	rc.write("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nB\r\n and chunks\r\n0\r\nX-T: t1\r\n\r\n")
	resp, body := rc.response("POST")
	if resp.StatusCode != 200 || body != "hello and chunks" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Got-Length") != "-1" || resp.Header.Get("X-Got-Te") != "chunked" {
		t.Fatalf("upstream saw length %q te %q", resp.Header.Get("X-Got-Length"), resp.Header.Get("X-Got-Te"))
	}
	// Request trailers reach the upstream (the router hands Request.Trailer on).
	if got := resp.Header.Get("X-Got-Trailer"); got != "t1" {
		t.Fatalf("upstream saw trailer X-T %q, want t1", got)
	}
	rc.write("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.response("GET"); body != "GET /next" {
		t.Fatalf("next: %d %q", resp.StatusCode, body)
	}
}

// TestH1LargeBodies: 1 MB each way, with Content-Length and chunked, and a response
// that streams back chunked.
func TestH1LargeBodies(t *testing.T) {
	m := newH1Mesh(t)
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(payload)
		if chunked {
			body = io.MultiReader(body) // hides the length: net/http sends it chunked
		}
		req, _ := http.NewRequest("POST", m.url+"/echo", body)
		resp, err := m.c.Do(req)
		if err != nil {
			t.Fatalf("chunked=%v: %v", chunked, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, payload) {
			t.Fatalf("chunked=%v: %d, %d bytes back, %v", chunked, resp.StatusCode, len(got), err)
		}
		wantLen := "1048576"
		if chunked {
			wantLen = "-1"
		}
		if resp.Header.Get("X-Got-Length") != wantLen {
			t.Fatalf("chunked=%v: upstream saw length %s", chunked, resp.Header.Get("X-Got-Length"))
		}
	}
}

// TestH1EarlyResponse: the upstream answers 413 before reading a large body; the
// client gets the 413.
func TestH1EarlyResponse(t *testing.T) {
	m := newH1Mesh(t)
	for _, framing := range []string{"Content-Length: 4194304", "Transfer-Encoding: chunked"} {
		rc := m.dial(t)
		rc.write("POST /early HTTP/1.1\r\nHost: x\r\n" + framing + "\r\n\r\n")
		done := make(chan struct{})
		go func() {
			defer close(done)
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for i := 0; i < 64; i++ {
				var err error
				if strings.HasPrefix(framing, "Transfer") {
					_, err = fmt.Fprintf(rc.c, "%x\r\n%s\r\n", len(chunk), chunk)
				} else {
					_, err = rc.c.Write(chunk)
				}
				if err != nil {
					return // the proxy closed: expected once it answered
				}
			}
		}()
		resp, err := http.ReadResponse(rc.br, &http.Request{Method: "POST"})
		if err != nil {
			t.Fatalf("%s: %v", framing, err)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: %d, want 413", framing, resp.StatusCode)
		}
		_ = rc.c.Close()
		<-done
	}
	// The proxy still serves.
	if code, _, body := get(t, m.c, m.url+"/after"); code != 200 || body != "GET /after" {
		t.Fatalf("after: %d %q", code, body)
	}
}

// TestH1EarlyResponseSlowClient: a small body that has not all arrived is not waited
// for before the request goes upstream: the upstream sees the head, answers 413 at
// once, and the client gets it while the rest of its body is still unsent. (The pool
// writes a small body in one piece with the head only when all of it is already in
// the connection's read buffer.) Also with a chunked body, whose first chunk must reach
// the upstream without waiting for more.
func TestH1EarlyResponseSlowClient(t *testing.T) {
	m := newH1Mesh(t)
	for _, c := range []struct{ framing, first string }{
		{"Content-Length: 1000", "0123456789"},
		{"Transfer-Encoding: chunked", "a\r\n0123456789\r\n"},
	} {
		rc := m.dial(t)
		rc.write("POST /early HTTP/1.1\r\nHost: x\r\n" + c.framing + "\r\n\r\n" + c.first)
		_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(rc.br, &http.Request{Method: "POST"})
		if err != nil {
			t.Fatalf("%s: no response while the body is incomplete: %v", c.framing, err)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: %d, want 413", c.framing, resp.StatusCode)
		}
		_ = rc.c.Close()
	}
}

// TestH2EarlyResponseSlowClient: the same over HTTP/2 (h2c) to the proxy and HTTP/1.1
// to the upstream: a body the proxy cannot tell is all in memory (net/http's HTTP/2
// request body) is streamed after the head, not read whole first.
func TestH2EarlyResponseSlowClient(t *testing.T) {
	m := newH1Mesh(t)
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("0123456789")) }() // and nothing more
	req, _ := http.NewRequest("POST", m.url+"/early", pr)
	req.ContentLength = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("no response while the body is incomplete: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d, want 413", resp.StatusCode)
	}
}

// TestH1EarlyResponseExpectContinue: with Expect: 100-continue the proxy's 100 (sent
// when the upstream writer starts reading the body, on its own goroutine) and the
// upstream's early 413 never interleave, and the 413 arrives.
func TestH1EarlyResponseExpectContinue(t *testing.T) {
	m := newH1Mesh(t)
	for i := 0; i < 10; i++ {
		rc := m.dial(t)
		rc.write("POST /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1048576\r\n\r\n")
		var sent sync.WaitGroup
		for {
			resp, err := http.ReadResponse(rc.br, &http.Request{Method: "POST"})
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			if resp.StatusCode == http.StatusContinue {
				sent.Add(1)
				go func() {
					defer sent.Done()
					_, _ = rc.c.Write(make([]byte, 1<<20))
				}()
				continue
			}
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("round %d: %d, want 413", i, resp.StatusCode)
			}
			break
		}
		_ = rc.c.Close()
		sent.Wait()
	}
}

// TestH1ClientGoneCancelsUpstream: a client that closes its connection mid-request
// cancels the upstream request.
func TestH1ClientGoneCancelsUpstream(t *testing.T) {
	m := newH1Mesh(t)
	for _, req := range []string{
		"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		// Over the pool's inline limit: the body goes upstream from a second
		// goroutine, which arms the watch when it reads the body's end.
		"POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("b", 200000),
		"POST /hang HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		// After a request on the same connection: the watch's timer, set for that
		// one, fires before this one is due and must be set again for it.
		"GET /direct HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		rc := m.dial(t)
		if strings.HasPrefix(req, "GET /direct") {
			rc.write(req)
			rc.response("GET")
			time.Sleep(25 * time.Millisecond) // half of httpconn's watchDelay
			req = "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"
		}
		rc.write(req)
		select {
		case <-m.arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the request did not reach the upstream")
		}
		time.Sleep(100 * time.Millisecond)
		closed := time.Now()
		_ = rc.c.Close()
		select {
		case at := <-m.cancelled:
			t.Logf("upstream context ended %v after the client left", at.Sub(closed))
		case <-time.After(5 * time.Second):
			t.Fatalf("%.60q: upstream request not cancelled 5 s after the client left", req)
		}
	}
}

// TestH1UnreadBody: a local reply that does not read the request body keeps the
// connection when the body is small (it is read away) and closes it when large.
func TestH1UnreadBody(t *testing.T) {
	m := newH1Mesh(t)
	rc := m.dial(t)
	rc.write("POST /direct HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("s", 1000))
	if resp, body := rc.response("POST"); resp.StatusCode != 200 || body != "direct" || resp.Close {
		t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	rc.write("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.response("GET"); resp.StatusCode != 200 || body != "GET /next" {
		t.Fatalf("next on the same connection: %d %q", resp.StatusCode, body)
	}

	rc = m.dial(t)
	rc.write("POST /direct HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
	go func() { _, _ = rc.c.Write(make([]byte, 1<<20)) }()
	resp, body := rc.response("POST")
	if resp.StatusCode != 200 || body != "direct" {
		t.Fatalf("large: %d %q", resp.StatusCode, body)
	}
	if err := rc.closed(5 * time.Second); err != nil {
		t.Fatalf("large unread body: %v", err)
	}
}

// TestH1MalformedRequests: what the codec refuses is answered with its status and
// the connection closes.
func TestH1MalformedRequests(t *testing.T) {
	m := newH1Mesh(t)
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"CL and TE", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"two CL", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
		{"TE gzip", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"header too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 100<<10) + "\r\n\r\n", 431},
		{"HTTP/2.0 line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 HTTP/1.1\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := m.dial(t)
			go func() { _, _ = io.WriteString(rc.c, tc.raw) }()
			resp, err := http.ReadResponse(rc.br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if resp.StatusCode != tc.status || !resp.Close {
				t.Fatalf("%d close=%v, want %d with close", resp.StatusCode, resp.Close, tc.status)
			}
			_, _ = io.ReadAll(resp.Body)
			if err := rc.closed(5 * time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A bad chunked body after the request went upstream: the connection closes.
	rc := m.dial(t)
	rc.write("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n")
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(rc.br, nil); err == nil {
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 200 && string(b) == "hello" {
			t.Fatalf("a bare-LF chunk framing was forwarded as a good body")
		}
	}
}

// TestH1H2CPriorKnowledge: HTTP/2 with prior knowledge on the same plaintext listener.
func TestH1H2CPriorKnowledge(t *testing.T) {
	m := newH1Mesh(t)
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	for i := 0; i < 3; i++ {
		resp, err := c.Post(m.url+"/echo", "text/plain", strings.NewReader("h2c body"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "h2c body" {
			t.Fatalf("%s %d %q", resp.Proto, resp.StatusCode, b)
		}
	}
	// And HTTP/1.1 on the same port.
	if code, _, body := get(t, m.c, m.url+"/h1"); code != 200 || body != "GET /h1" {
		t.Fatalf("h1: %d %q", code, body)
	}
}

// TestH2ExchangesInterleaved: many HTTP/2 streams on one connection, answered by the
// upstream, by the proxy itself, and failing (no cluster: a flag, so the exchange's
// state is not reused), each gets its own answer. The HTTP/2 server reuses the state
// of exchanges that ended cleanly (httpconn's ServeHTTP); under -race this also shows
// that no state serves two streams at once.
func TestH2ExchangesInterleaved(t *testing.T) {
	m := newH1Mesh(t)
	m.pushRC(t, routeConfig("r", directRoute("/direct", "direct"), prefixRoute("/none", "no-such-cluster"), prefixRoute("/", "a")))
	eventually(t, 10*time.Second, func() error {
		if code, _, _ := get(t, m.c, m.url+"/none"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/none: %d", code)
		}
		return nil
	})
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 20 * time.Second, Transport: tr}
	interleave(t, 300, 16, func() *http.Client { return c }, func(c *http.Client, i int) error {
		var path, wantBody string
		wantCode := 200
		switch i % 3 {
		case 0:
			path, wantBody = "/echo", fmt.Sprintf("body %d", i)
		case 1:
			path, wantBody = "/direct", "direct"
		default:
			path, wantCode = "/none", http.StatusServiceUnavailable
		}
		req, _ := http.NewRequest("POST", m.url+path, strings.NewReader(fmt.Sprintf("body %d", i)))
		req.Header.Set("X-Request-Id", fmt.Sprintf("req-%d", i))
		resp, b, err := do(c, req)
		if err != nil {
			return err
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != wantCode || (wantBody != "" && b != wantBody) {
			return fmt.Errorf("%s: %s %d %q", path, resp.Proto, resp.StatusCode, b)
		}
		return nil
	})
}

// interleave runs exchanges 0 to n-1 from workers goroutines at once, exchange i on
// worker i % workers with the client newClient gave that worker, and reports each
// exchange's error; a worker stops at its first.
func interleave(t *testing.T, n, workers int, newClient func() *http.Client, exchange func(c *http.Client, i int) error) {
	t.Helper()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient()
			for i := w; i < n; i += workers {
				if err := exchange(c, i); err != nil {
					errs <- fmt.Errorf("exchange %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// h1Client is a client with a transport of its own, closed at the test's end.
func h1Client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 20 * time.Second, Transport: tr}
}

// lateBody is a request body whose first bytes come at once and the rest only after
// the answer (finish): an upstream that answers early leaves the proxy's request-body
// writer still reading when the exchange ends.
type lateBody struct {
	*io.PipeReader
	w *io.PipeWriter
}

func newLateBody(first string) *lateBody {
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write([]byte(first)) }()
	return &lateBody{pr, pw}
}

// finish sends the rest and ends the body; on a nil body it does nothing.
func (b *lateBody) finish() {
	if b == nil {
		return
	}
	_, _ = b.w.Write([]byte("late bytes"))
	b.w.Close()
}

// do sends req and reads the whole answer.
func do(c *http.Client, req *http.Request) (*http.Response, string, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// TestH1ForwardStateReuse: the router reuses a request's upstream state (request, URL,
// route-timeout context, body wrapper) once the upstream connection let go of it, and
// only then. Interleaved on 16 connections: echoes (reused), echoes under a route
// timeout that nothing waits on (reused), slow answers under it (the pool watched the
// context, so it was made real: left to the collector), and early answers while the
// request body still flows (its writer still reads the body: left to the collector).
// Each answer is checked against its own request; under -race, state reused while the
// body writer still read it shows as a race (it did, with the Released check removed).
func TestH1ForwardStateReuse(t *testing.T) {
	m := newH1Mesh(t)
	timed := prefixRoute("/t/", "a")
	timed.GetRoute().Timeout = durationpb.New(10 * time.Second)
	timed.GetRoute().PrefixRewrite = "/"
	m.pushRC(t, routeConfig("r", timed, prefixRoute("/", "a")))
	// The old table answers /t/ too (its "/" route): wait for the rewrite to show.
	eventually(t, 10*time.Second, func() error {
		if code, _, body := get(t, m.c, m.url+"/t/probe"); code != 200 || body != "GET /probe" {
			return fmt.Errorf("GET /t/probe = %d %q, want the /t/ route's rewrite", code, body)
		}
		return nil
	})
	interleave(t, 160, 16, func() *http.Client { return h1Client(t) }, func(c *http.Client, i int) error {
		sent := fmt.Sprintf("body %d", i)
		var body io.Reader = strings.NewReader(sent)
		path, wantCode, wantBody := "/echo", 200, sent
		var late *lateBody
		switch i % 4 {
		case 1:
			path = "/t/echo"
		case 2:
			if i%8 == 2 {
				path, wantBody = "/t/slow", "POST /slow"
			}
		case 3:
			// The upstream answers and closes while the body is still coming.
			late = newLateBody("first bytes")
			body, path, wantCode, wantBody = late, "/early", http.StatusRequestEntityTooLarge, "too big"
		}
		req, _ := http.NewRequest("POST", m.url+path, body)
		resp, b, err := do(c, req)
		late.finish()
		if err != nil {
			return err
		}
		if resp.StatusCode != wantCode || b != wantBody {
			return fmt.Errorf("%s: %d %q, want %d %q", path, resp.StatusCode, b, wantCode, wantBody)
		}
		return nil
	})
}

// TestH1BodyStorageReuse: a connection reuses the storage of a request's body for its
// next request only once the upstream transport let go of it. Each round on one
// connection: a 200 KB body the upstream answers before reading (its writer is still
// copying it when the answer comes, and may read it once more after the exchange),
// then an echo whose body must come back whole; and bodies that go upstream whole,
// whose storage is reused. With the transport's release not checked, the next request's
// body was built in storage the old writer still read: under -race a data race, and
// without it an echo missing bytes.
func TestH1BodyStorageReuse(t *testing.T) {
	m := newH1Mesh(t)
	rc := m.dial(t)
	big := strings.Repeat("b", 200<<10)
	read := func() (int, string, error) {
		resp, err := http.ReadResponse(rc.br, &http.Request{Method: "POST"})
		if err != nil {
			return 0, "", err
		}
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	kept := 0 // early rounds whose echo went on the same connection
	for i := range 40 {
		echo := fmt.Sprintf("round %d ", i) + strings.Repeat("e", 3000)
		echoReq := "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(echo)) + "\r\n\r\n" + echo
		if i%2 == 0 {
			rc.write("POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big + echoReq)
			code, body, err := read()
			if err == nil && (code != http.StatusRequestEntityTooLarge || body != "too big") {
				t.Fatalf("round %d: early: %d %q", i, code, body)
			}
			if err == nil {
				code, body, err = read()
			}
			if err != nil {
				// The proxy may close the connection after an early answer, when the
				// body's writer was still reading it (the body is then cut): the
				// echo goes again on a new connection.
				rc = m.dial(t)
				rc.write(echoReq)
				code, body, err = read()
			} else {
				kept++
			}
			if err != nil || code != 200 || body != echo {
				t.Fatalf("round %d: echo after an early answer: %d, %d bytes back of %d (%.20q) %v", i, code, len(body), len(echo), body, err)
			}
			continue
		}
		rc.write(echoReq)
		if code, body, err := read(); err != nil || code != 200 || body != echo {
			t.Fatalf("round %d: echo: %d, %d bytes back of %d (%.20q) %v", i, code, len(body), len(echo), body, err)
		}
	}
	t.Logf("%d of 20 early answers left the connection open for the next request", kept)
	if kept == 0 {
		t.Fatal("no early answer left its connection open: the body storage's reuse was not exercised")
	}
}

// TestH1UpgradeWithEarlyBytes: a WebSocket-style upgrade whose first frame comes in the
// same write as the request head.
func TestH1UpgradeWithEarlyBytes(t *testing.T) {
	m := newH1Mesh(t)
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return true
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if err != nil {
				return true
			}
			if _, err := c.Write(bytes.ToUpper(buf[:n])); err != nil {
				return true
			}
		}
	}
	rc := m.dial(t)
	rc.write("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nfirst")
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(rc.br, got); err != nil || string(got) != "FIRST" {
		t.Fatalf("early bytes: %q %v", got, err)
	}
	rc.write("second")
	got = make([]byte, 6)
	if _, err := io.ReadFull(rc.br, got); err != nil || string(got) != "SECOND" {
		t.Fatalf("after: %q %v", got, err)
	}
}

// hcmListener is the mesh's listener with a stat prefix and chain name of choice. A
// change of the stat prefix alone is an HTTP connection manager change: the chain's
// connections are handed to the new manager. A change of the chain name moves the
// chain: the old one drains.
func hcmListener(t testing.TB, port int, statPrefix, chainName string, opts ...func(*hcmv3.HttpConnectionManager)) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "r",
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}},
	}
	for _, o := range opts {
		o(hcm)
	}
	return &listenerv3.Listener{
		Name:    "http",
		Address: socketAddr("127.0.0.1", port),
		FilterChains: []*listenerv3.FilterChain{{
			Name:    chainName,
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}}},
		}},
	}
}

func (m *h1Mesh) pushHCM(t *testing.T, statPrefix, chainName string) string {
	return m.cp.push(resources{
		listeners: []types.Resource{hcmListener(t, m.port, statPrefix, chainName)},
		routes:    []types.Resource{routeConfig("r", directRoute("/direct", "direct"), prefixRoute("/", "a"))},
		clusters:  m.clusters,
		endpoints: m.eps,
	})
}

// waitApplied waits until the proxy ACKed the listener version.
func (m *h1Mesh) waitApplied(t *testing.T, version string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if got := m.cp.acked("type.googleapis.com/envoy.config.listener.v3.Listener"); got != version {
			return fmt.Errorf("listener version acked %q, want %q", got, version)
		}
		return nil
	})
}

// TestH1HandOffKeepsConnections: a change of the connection manager's own config hands
// open HTTP/1.1 connections to the new manager: idle and reused connections keep
// working without a close.
func TestH1HandOffKeepsConnections(t *testing.T) {
	m := newH1Mesh(t)
	rc := m.dial(t)
	for i := 0; i < 5; i++ {
		v := m.cp.push(resources{
			listeners: []types.Resource{hcmListener(t, m.port, fmt.Sprintf("gen%d", i), "")},
			routes:    []types.Resource{routeConfig("r", directRoute("/direct", "direct"), prefixRoute("/", "a"))},
			clusters:  m.clusters,
			endpoints: m.eps,
		})
		m.waitApplied(t, v)
		rc.write(fmt.Sprintf("GET /h/%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
		resp, body := rc.response("GET")
		if resp.StatusCode != 200 || body != fmt.Sprintf("GET /h/%d", i) || resp.Close {
			t.Fatalf("after change %d: %d %q close=%v", i, resp.StatusCode, body, resp.Close)
		}
	}
}

// TestH1DrainIdleConnections: after a listener change that moves the filter chain (no
// successor to hand off to), an idle keep-alive connection of the old chain is
// answered with Connection: close or closed after the grace.
func TestH1DrainIdleConnections(t *testing.T) {
	m := newH1Mesh(t)
	idle, reuse := m.dial(t), m.dial(t)
	for _, rc := range []*rawConn{idle, reuse} {
		rc.write("GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := rc.response("GET"); body != "GET /before" || resp.Close {
			t.Fatalf("before: %d %q", resp.StatusCode, body)
		}
	}
	m.waitApplied(t, m.pushHCM(t, "http", "moved"))
	// The connection that is reused at once gets an answer, and is told to close.
	reuse.write("GET /during HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(reuse.br, nil)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "GET /during" {
			t.Fatalf("during drain: %d %q", resp.StatusCode, b)
		}
		if !resp.Close {
			t.Fatalf("a response during the drain lacks Connection: close")
		}
	}
	if err := reuse.closed(5 * time.Second); err != nil {
		t.Fatalf("reused connection: %v", err)
	}
	// The one left idle is closed after the grace.
	if err := idle.closed(5 * time.Second); err != nil {
		t.Fatalf("idle connection: %v", err)
	}
}

// TestH1DrainUnderLoad: 20 keep-alive clients for 3 s while the connection manager's
// config changes every 200 ms: no request fails.
func TestH1DrainUnderLoad(t *testing.T) {
	m := newH1Mesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var pushes sync.WaitGroup
	pushes.Add(1)
	go func() {
		defer pushes.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// Alternate hand-offs (stat prefix) and drains (chain name).
			m.pushHCM(t, fmt.Sprintf("gen%d", i), fmt.Sprintf("chain%d", i/2))
		}
	}()
	var dials, ok, failed atomic.Int64
	var firstErr atomic.Value
	c := countingClient(&dials)
	var wg sync.WaitGroup
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 100000; i++ {
				code, _, body := get(t, c, fmt.Sprintf("%s/load/%d/%d", m.url, w, i))
				if code == 200 && body == fmt.Sprintf("GET /load/%d/%d", w, i) {
					ok.Add(1)
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q", code, body))
				}
			}
		}(w)
	}
	wg.Wait()
	pushes.Wait()
	t.Logf("%d requests ok, %d failed, %d connections opened", ok.Load(), failed.Load(), dials.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed while the config changed; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Fatalf("only %d requests: the load did not run", ok.Load())
	}
	if dials.Load() < 5 {
		t.Fatalf("%d connections: the drains did not move the clients to new connections", dials.Load())
	}
}

// TestH1ResponseFramings: what the upstream's response framing becomes for HTTP/1.1
// and HTTP/1.0 clients: HEAD, 204, 304, a close-delimited HTTP/1.0 upstream response,
// and an upstream that breaks off mid-body (the client must see the break, never a
// complete-looking body).
func TestH1ResponseFramings(t *testing.T) {
	m := newH1Mesh(t)
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("Etag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		case "/http10", "/cut-chunked", "/cut-length":
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return true
			}
			defer c.Close()
			switch r.URL.Path {
			case "/http10":
				fmt.Fprintf(brw, "HTTP/1.0 200 OK\r\nX-Backend: old\r\n\r\n%s", strings.Repeat("z", 100000))
			case "/cut-chunked":
				fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			case "/cut-length":
				fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
			}
			_ = brw.Flush()
		default:
			return false
		}
		return true
	}
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		rc := m.dial(t)
		keep := ""
		if proto == "HTTP/1.0" {
			keep = "Connection: keep-alive\r\n"
		}
		rc.write("HEAD /head " + proto + "\r\nHost: x\r\n" + keep + "\r\n")
		resp, body := rc.response("HEAD")
		if resp.StatusCode != 200 || resp.ContentLength != 1234 || body != "" {
			t.Fatalf("%s HEAD: %d CL %d %q", proto, resp.StatusCode, resp.ContentLength, body)
		}
		rc.write("GET /204 " + proto + "\r\nHost: x\r\n" + keep + "\r\n")
		if resp, body := rc.response("GET"); resp.StatusCode != 204 || body != "" || resp.Header.Get("Transfer-Encoding") != "" {
			t.Fatalf("%s 204: %d %q %v", proto, resp.StatusCode, body, resp.Header)
		}
		rc.write("GET /304 " + proto + "\r\nHost: x\r\n" + keep + "\r\n")
		if resp, body := rc.response("GET"); resp.StatusCode != 304 || body != "" || resp.Header.Get("Etag") != `"x"` {
			t.Fatalf("%s 304: %d %q %v", proto, resp.StatusCode, body, resp.Header)
		}
		rc.write("GET /http10 " + proto + "\r\nHost: x\r\n" + keep + "\r\n")
		resp, body = rc.response("GET")
		if resp.StatusCode != 200 || body != strings.Repeat("z", 100000) {
			t.Fatalf("%s close-delimited upstream: %d, %d bytes", proto, resp.StatusCode, len(body))
		}
		if proto == "HTTP/1.1" {
			if resp.Close || len(resp.TransferEncoding) == 0 {
				t.Fatalf("HTTP/1.1 client: close=%v te=%v, want chunked on a kept connection", resp.Close, resp.TransferEncoding)
			}
			rc.write("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
			if _, body := rc.response("GET"); body != "a /after" {
				t.Fatalf("after: %q", body)
			}
		} else if !resp.Close {
			t.Fatalf("HTTP/1.0 client, unknown length: the close must end the body")
		}
	}
	for _, path := range []string{"/cut-chunked", "/cut-length"} {
		rc := m.dial(t)
		rc.write("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil {
			continue // cut before the head: fine
		}
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Fatalf("%s: the client read a complete body %q from an upstream that broke off", path, b)
		}
	}
}

// TestH1RefusalIsReadable: a 431 or 400 reaches a client that is still sending (the
// proxy does not reset the connection under it).
func TestH1RefusalIsReadable(t *testing.T) {
	m := newH1Mesh(t)
	for i := 0; i < 10; i++ {
		rc := m.dial(t)
		go func() {
			_, _ = io.WriteString(rc.c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
			chunk := strings.Repeat("b", 16<<10)
			for j := 0; j < 64; j++ {
				if _, err := io.WriteString(rc.c, chunk); err != nil {
					return
				}
			}
		}()
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil {
			t.Fatalf("round %d: no 431: %v", i, err)
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("round %d: %d", i, resp.StatusCode)
		}
		_ = rc.c.Close()
	}
}

// TestH1ClientGoneAfterHeadersTimeout: the request_headers_timeout bounds the head's
// read only; a client that leaves a long request later still cancels it upstream.
func TestH1ClientGoneAfterHeadersTimeout(t *testing.T) {
	m := newH1Mesh(t)
	v := m.cp.push(resources{
		listeners: []types.Resource{hcmListener(t, m.port, "http", "", func(h *hcmv3.HttpConnectionManager) {
			h.RequestHeadersTimeout = durationpb.New(200 * time.Millisecond)
		})},
		routes:    []types.Resource{routeConfig("r", directRoute("/direct", "direct"), prefixRoute("/", "a"))},
		clusters:  m.clusters,
		endpoints: m.eps,
	})
	m.waitApplied(t, v)
	rc := m.dial(t)
	rc.write("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-m.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the upstream")
	}
	time.Sleep(600 * time.Millisecond) // well past the headers timeout
	_ = rc.c.Close()
	select {
	case <-m.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request not cancelled 5 s after the client left")
	}
}

// TestH1IdleTimeoutSparesRequests: the idle timeout ends a connection that carries no
// request, never one whose request outlasts it. The idle deadline stays armed while
// requests come (it moves only when it is no longer the idle timeout ahead), so a body
// that trickles in past it, and the client-gone watch of a request held past it, read
// through it; an idle connection still closes on time.
func TestH1IdleTimeoutSparesRequests(t *testing.T) {
	m := newH1Mesh(t)
	const idle = 300 * time.Millisecond
	v := m.cp.push(resources{
		listeners: []types.Resource{hcmListener(t, m.port, "http", "", func(h *hcmv3.HttpConnectionManager) {
			h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(idle)}
		})},
		routes:    []types.Resource{routeConfig("r", directRoute("/direct", "direct"), prefixRoute("/", "a"))},
		clusters:  m.clusters,
		endpoints: m.eps,
	})
	m.waitApplied(t, v)

	rc := m.dial(t)
	for i := range 3 { // requests in a row: the first arms the idle deadline, the rest keep it
		rc.write("GET /direct HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := rc.response("GET"); resp.StatusCode != 200 || body != "direct" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	// A body that comes in pieces for three idle timeouts.
	rc.write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n")
	for _, piece := range []string{"ab", "cd", "ef"} {
		time.Sleep(idle)
		rc.write(piece)
	}
	if resp, body := rc.response("POST"); resp.StatusCode != 200 || body != "abcdef" {
		t.Fatalf("slow body: %d %q", resp.StatusCode, body)
	}
	// The connection carries another request, then closes once idle.
	rc.write("GET /direct HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.response("GET"); resp.StatusCode != 200 || body != "direct" {
		t.Fatalf("after the slow body: %d %q", resp.StatusCode, body)
	}
	start := time.Now()
	if err := rc.closed(5 * time.Second); err != nil {
		t.Fatalf("idle connection: %v", err)
	}
	if took := time.Since(start); took < idle-50*time.Millisecond {
		t.Errorf("idle connection closed after %v, before the idle timeout (%v)", took, idle)
	}

	// A request held upstream past the idle timeout: the client's leaving is still
	// noticed (the watch's read went through the idle deadline) and cancels it.
	rc = m.dial(t)
	rc.write("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-m.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the upstream")
	}
	time.Sleep(3 * idle)
	_ = rc.c.Close()
	select {
	case <-m.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request not cancelled 5 s after the client left")
	}
}

// TestH1ResponseTrailers: an upstream's chunked response trailers reach the client.
func TestH1ResponseTrailers(t *testing.T) {
	m := newH1Mesh(t)
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "streamed")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "42")
		return true
	}
	resp, err := m.c.Get(m.url + "/t")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "streamed" {
		t.Fatalf("%q %v", b, err)
	}
	if resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("trailer %v", resp.Trailer)
	}
}

// TestH1ExchangeReuse: a connection reuses its request's storage and both header maps
// from one clean exchange to the next, and gives them up when an exchange does not end
// cleanly. Eight keep-alive connections each send a mix (plain, chunked with a trailer,
// HEAD, direct response, an upstream that resets without answering) with a value of
// their own in a header, which the backend echoes in the response's header and body: any
// map or request shared between two exchanges shows as a value of another request (and
// as a race under -race).
func TestH1ExchangeReuse(t *testing.T) {
	m := newH1Mesh(t)
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/id/") {
			return false
		}
		id := r.Header.Get("X-Id")
		if strings.HasSuffix(r.URL.Path, "/reset") {
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close()
			}
			return true
		}
		w.Header().Set("X-Id", id)
		w.Header().Set("X-Path", r.URL.Path)
		if strings.HasSuffix(r.URL.Path, "/chunked") {
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, id)
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "sum-"+id)
			return true
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(id)))
		if r.Method != http.MethodHead {
			_, _ = io.WriteString(w, id)
		}
		return true
	}
	const conns, perConn = 8, 120
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var dials atomic.Int64
			client := countingClient(&dials)
			for i := 0; i < perConn; i++ {
				id := fmt.Sprintf("c%d-r%d", c, i)
				method, path := http.MethodGet, "/id/"+id
				switch i % 5 {
				case 1:
					path += "/chunked"
				case 2:
					method = http.MethodHead
				case 3:
					path = "/direct/" + id // a local reply: no upstream attempt
				case 4:
					if i%10 == 4 {
						path += "/reset" // a failed exchange: its storage is given up
					}
				}
				req, _ := http.NewRequest(method, m.url+path, nil)
				req.Header.Set("X-Id", id)
				resp, err := client.Do(req)
				if err != nil {
					errs <- fmt.Errorf("%s %s: %v", method, path, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					errs <- fmt.Errorf("%s %s: body: %v", method, path, err)
					return
				}
				reset := strings.HasSuffix(path, "/reset")
				if reset {
					if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Id") != "" {
						errs <- fmt.Errorf("%s %s: %d with X-Id %q, want 503 without", method, path, resp.StatusCode, resp.Header.Get("X-Id"))
						return
					}
					continue
				}
				wantBody := id
				switch {
				case i%5 == 2:
					wantBody = ""
				case i%5 == 3:
					wantBody = "direct"
				}
				if resp.StatusCode != 200 || string(body) != wantBody {
					errs <- fmt.Errorf("%s %s: %d %q, want 200 %q", method, path, resp.StatusCode, body, wantBody)
					return
				}
				if i%5 != 3 && (resp.Header.Get("X-Id") != id || resp.Header.Get("X-Path") != path) {
					errs <- fmt.Errorf("%s %s: response fields X-Id %q X-Path %q", method, path, resp.Header.Get("X-Id"), resp.Header.Get("X-Path"))
					return
				}
				if i%5 == 3 && resp.Header.Get("X-Id") != "" {
					errs <- fmt.Errorf("%s %s: a direct response carries X-Id %q", method, path, resp.Header.Get("X-Id"))
					return
				}
				if i%5 == 1 && resp.Trailer.Get("X-Sum") != "sum-"+id {
					errs <- fmt.Errorf("%s %s: trailer %v", method, path, resp.Trailer)
					return
				}
			}
			if n := dials.Load(); n != 1 {
				errs <- fmt.Errorf("connection %d: %d dials, want 1 (the exchanges shared one connection)", c, n)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

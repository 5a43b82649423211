package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/tlsctx/tlstest"
)

// closingUpstream answers each request with a keep-alive response and then closes
// the connection without saying so (as a server's idle timeout does), optionally
// under TLS. It counts requests and connections.
func closingUpstream(t *testing.T, cert *tls.Certificate) (addr string, conns, reqs *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns, reqs = new(atomic.Int64), new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				if cert != nil {
					c = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})
				}
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				reqs.Add(1)
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	return ln.Addr().String(), conns, reqs
}

func TestStaleKeepAliveConnection(t *testing.T) {
	addr, conns, reqs := closingUpstream(t, nil)
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "stale", addr))
	c := getCluster(t, m, "stale")
	for i := 0; i < 5; i++ {
		if _, err := do(t, c); err != nil {
			t.Fatalf("request %d on a server that closes idle connections: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond) // let the FIN arrive
	}
	if conns.Load() != 5 || reqs.Load() != 5 {
		t.Fatalf("conns %d reqs %d, want 5 and 5", conns.Load(), reqs.Load())
	}
}

func TestStaleKeepAliveConnectionTLSRetry(t *testing.T) {
	// Under TLS the pool cannot peek; a GET on a connection the server closed is
	// sent again on a new one, a POST with a body is not.
	ca := tlstest.NewCA(t, "root")
	leaf := ca.Issue(t, tlstest.Opts{DNS: []string{"server.weft.test"}})
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	addr, _, reqs := closingUpstream(t, &cert)
	client := ca.Issue(t, tlstest.Opts{URIs: []string{"spiffe://weft.test/c"}})
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, upstreamTLS(t, staticCluster(t, "stls", addr), mtlsContext(ca, client)))
	c := getCluster(t, m, "stls")
	for i := 0; i < 3; i++ {
		if _, err := do(t, c); err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if reqs.Load() != 3 {
		t.Fatalf("server saw %d requests, want 3", reqs.Load())
	}
	h, _ := c.Pick(nil, netipZero)
	req, _ := http.NewRequest("POST", "http://svc.test/", strings.NewReader("payload"))
	if _, err := c.RoundTrip(req, h); err == nil {
		t.Fatal("POST with a body on a stale connection was retried")
	}
}

func TestHTTP1Exchanges(t *testing.T) {
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("X-UA", strings.Join(r.Header.Values("User-Agent"), ","))
			b, _ := io.ReadAll(r.Body) // net/http servers read before writing
			w.Write(b)
		case "/early":
			// Answers before reading a large body.
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		case "/chunked":
			for i := 0; i < 3; i++ {
				io.WriteString(w, "chunk")
				w.(http.Flusher).Flush()
			}
		case "/hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "after hints")
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case "/trailer":
			w.Header().Set("Trailer", "X-Checksum")
			io.WriteString(w, "body")
			w.Header().Set("X-Checksum", "abc")
		}
	})
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "x", u.addr))
	c := getCluster(t, m, "x")
	send := func(method, path string, body io.Reader, ctx context.Context) (*http.Response, string, error) {
		h, _ := c.Pick(nil, netipZero)
		req, _ := http.NewRequestWithContext(ctx, method, "http://svc.test"+path, body)
		resp, err := c.RoundTrip(req, h)
		if err != nil {
			return nil, "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b), err
	}
	bg := context.Background()

	resp, body, err := send("POST", "/echo", strings.NewReader(strings.Repeat("x", 100000)), bg)
	if err != nil || len(body) != 100000 {
		t.Fatalf("echo of a 100kB body: %d bytes, %v", len(body), err)
	}
	if resp.Header.Get("X-UA") != "" {
		t.Fatalf("a User-Agent was added: %q", resp.Header.Get("X-UA"))
	}
	resp, body, err = send("HEAD", "/echo", nil, bg)
	if err != nil || body != "" || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %q %v", resp, body, err)
	}
	if _, body, err = send("GET", "/chunked", nil, bg); err != nil || body != "chunkchunkchunk" {
		t.Fatalf("chunked: %q %v", body, err)
	}
	if resp, body, err = send("GET", "/hints", nil, bg); err != nil || resp.StatusCode != 200 || body != "after hints" {
		t.Fatalf("1xx then 200: %v %q %v", resp, body, err)
	}
	if resp, body, err = send("GET", "/trailer", nil, bg); err != nil || body != "body" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Fatalf("trailers: %q %v %v", body, resp.Trailer, err)
	}
	// A body the server does not read: the response still arrives.
	big := io.MultiReader(strings.NewReader(strings.Repeat("y", 1<<20)), &slowReader{n: 1 << 20})
	if resp, _, err = send("POST", "/early", big, bg); err != nil || resp.StatusCode != 413 {
		t.Fatalf("early response: %v %v", resp, err)
	}
	// The request context bounds the exchange.
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	if _, _, err = send("GET", "/slow", nil, ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow upstream with a 100ms context: %v, want DeadlineExceeded", err)
	}
	eventually(t, "no request left active", func() bool {
		return statValue(t, st, "cluster.x.upstream_rq_active") == 0
	})
	// The pool still works after all that.
	if _, body, err = send("GET", "/chunked", nil, bg); err != nil || body != "chunkchunkchunk" {
		t.Fatalf("after: %q %v", body, err)
	}
}

// slowReader yields n bytes slowly, so a request body outlives an early response.
type slowReader struct{ n int }

func (r *slowReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	time.Sleep(time.Millisecond)
	k := min(len(p), r.n, 4096)
	for i := range p[:k] {
		p[i] = 'z'
	}
	r.n -= k
	return k, nil
}

func TestBodyCloseBeforeEOFClosesConnection(t *testing.T) {
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("z", 1<<16))
	})
	m, st := newTestManager(t, Options{})
	mustUpdate(t, m, staticCluster(t, "early", u.addr))
	c := getCluster(t, m, "early")
	h, _ := c.Pick(nil, netipZero)
	resp, err := c.RoundTrip(newRequest(t, context.Background(), "GET"), h)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	resp.Body.Read(buf)
	resp.Body.Close()
	if v := statValue(t, st, "cluster.early.upstream_cx_active"); v != 0 {
		t.Fatalf("a half-read connection stayed open (cx_active %d)", v)
	}
	if v := statValue(t, st, "cluster.early.upstream_rq_active"); v != 0 {
		t.Fatalf("upstream_rq_active = %d", v)
	}
	if _, err := do(t, c); err != nil {
		t.Fatal(err)
	}
}

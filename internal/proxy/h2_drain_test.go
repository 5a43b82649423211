package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// closeWatch is a client connection that keeps what the server sent and records when
// the server ended it.
type closeWatch struct {
	net.Conn
	got    bytes.Buffer // read on the transport's read loop only, then after closed
	once   sync.Once
	closed chan struct{}
}

func (c *closeWatch) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.got.Write(p[:n])
	if err != nil {
		c.once.Do(func() { close(c.closed) })
	}
	return n, err
}

// goAway is the GOAWAY frame the server sent on c, nil if none.
func (c *closeWatch) goAway() *http2.GoAwayFrame {
	fr := http2.NewFramer(nil, bytes.NewReader(c.got.Bytes()))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return ga
		}
	}
}

// TestH2DrainOnListenerChange: an HTTP/2 (h2c) connection of a filter chain that a
// listener change replaces is sent GOAWAY (NO_ERROR) and closed once idle, not just
// closed (the connection manager's Drain), and the client's next request goes out on a
// new connection to the new chain.
func TestH2DrainOnListenerChange(t *testing.T) {
	m := newH1Mesh(t)
	var mu sync.Mutex
	var conns []*closeWatch
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			w := &closeWatch{Conn: c, closed: make(chan struct{})}
			mu.Lock()
			conns = append(conns, w)
			mu.Unlock()
			return w, nil
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(path string) string {
		t.Helper()
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", m.port, path))
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("GET %s: %d over HTTP/%d", path, resp.StatusCode, resp.ProtoMajor)
		}
		return string(b)
	}
	if got := get("/before"); got != "GET /before" {
		t.Fatalf("before: %q", got)
	}
	m.waitApplied(t, m.pushHCM(t, "http", "moved"))
	mu.Lock()
	first := conns[0]
	mu.Unlock()
	select {
	case <-first.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the old chain's HTTP/2 connection was not closed after the listener change")
	}
	if ga := first.goAway(); ga == nil || ga.ErrCode != http2.ErrCodeNo {
		t.Errorf("the old chain's connection was closed without GOAWAY NO_ERROR (got %v)", ga)
	}
	if got := get("/after"); got != "GET /after" {
		t.Fatalf("after: %q", got)
	}
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d connections dialled, want 2 (the drained one and a new one)", n)
	}
}

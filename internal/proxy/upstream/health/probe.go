package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// outcome of one check.
type outcome uint8

const (
	pass        outcome = iota
	fail                // counts toward unhealthy_threshold
	failNow             // HTTP status neither expected nor retriable: unhealthy at once
	failNetwork         // connect error, timeout, reset: counts toward unhealthy_threshold
)

// prober runs one check against one host. It owns any kept-alive connection.
type prober interface {
	probe(ctx context.Context) (outcome, error)
	close()
}

// DialFunc opens a connection to addr ("ip:port"), with the cluster's transport socket
// (upstream TLS) when it has one.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

func newProber(c *check, addr, cluster string, dial DialFunc) prober {
	if c.http != nil {
		return newHTTPProber(c, addr, cluster, dial)
	}
	return &tcpProber{c: c.tcp, addr: addr, dial: dial}
}

type httpProber struct {
	c        *httpCheck
	url      string
	host     string
	client   *http.Client
	closeIdl func()
}

func newHTTPProber(c *check, addr, cluster string, dial DialFunc) *httpProber {
	h := c.http
	p := &httpProber{c: h, url: "http://" + addr + h.path, host: h.host}
	if p.host == "" {
		p.host = cluster
	}
	// Envoy sends the cluster name as is; net/http would blank a Host it considers
	// invalid (Istio's "outbound|80||svc" names are), so send the address instead.
	if p.host == "" || !httpguts.ValidHostHeader(p.host) {
		p.host = addr
	}
	// The connection comes from dial (TLS included when the cluster has it), so the
	// transport always speaks cleartext HTTP over it.
	if h.h2 {
		t := &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
				return dial(ctx, addr)
			},
		}
		p.client = &http.Client{Transport: t}
		p.closeIdl = t.CloseIdleConnections
	} else {
		t := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dial(ctx, addr)
			},
			DisableKeepAlives:   !c.reuse,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
			Proxy:               nil,
		}
		p.client = &http.Client{Transport: t}
		p.closeIdl = t.CloseIdleConnections
	}
	p.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return p
}

func (p *httpProber) close() { p.closeIdl() }

func (p *httpProber) probe(ctx context.Context) (outcome, error) {
	var body io.Reader
	if p.c.send != nil {
		body = bytes.NewReader(p.c.send)
	}
	req, err := http.NewRequestWithContext(ctx, p.c.method, p.url, body)
	if err != nil {
		return fail, err
	}
	req.Host = p.host
	req.Header.Set("User-Agent", "Envoy/HC") // what upstream apps recognise as a health check
	for _, a := range p.c.add {
		if a.key == ":authority" || a.key == "host" {
			req.Host = a.value
			continue
		}
		_, exists := req.Header[http.CanonicalHeaderKey(a.key)]
		switch a.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			req.Header.Add(a.key, a.value)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				req.Header.Set(a.key, a.value)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				req.Header.Set(a.key, a.value)
			}
		default:
			req.Header.Set(a.key, a.value)
		}
	}
	for _, k := range p.c.remove {
		req.Header.Del(k)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return failNetwork, err
	}
	defer resp.Body.Close()
	var got []byte
	if len(p.c.receive) > 0 {
		got, err = io.ReadAll(io.LimitReader(resp.Body, int64(p.c.bufSize)))
		if err != nil {
			return failNetwork, err
		}
	}
	// Drain a little so the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	switch {
	case inRanges(resp.StatusCode, p.c.expected):
	case inRanges(resp.StatusCode, p.c.retriable):
		return fail, fmt.Errorf("status %d", resp.StatusCode)
	default:
		return failNow, fmt.Errorf("status %d", resp.StatusCode)
	}
	if len(p.c.receive) > 0 && !fuzzyMatch(got, p.c.receive) {
		return fail, errors.New("response body does not match receive")
	}
	return pass, nil
}

type tcpProber struct {
	c    *tcpCheck
	addr string
	dial DialFunc
}

func (p *tcpProber) close() {}

func (p *tcpProber) probe(ctx context.Context) (outcome, error) {
	conn, err := p.dial(ctx, p.addr)
	if err != nil {
		return failNetwork, err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	if len(p.c.send) > 0 {
		if _, err := conn.Write(p.c.send); err != nil {
			return failNetwork, err
		}
	}
	if len(p.c.receive) == 0 {
		return pass, nil
	}
	// Read until every receive block has been seen in order, the peer closes, or the
	// timeout; a bounded buffer.
	var buf []byte
	chunk := make([]byte, 4096)
	for len(buf) < maxBody {
		n, err := conn.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if fuzzyMatch(buf, p.c.receive) {
			return pass, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fail, errors.New("connection closed before the expected response")
			}
			return failNetwork, err
		}
	}
	return fail, errors.New("response does not match receive")
}

// fuzzyMatch reports whether every block occurs in buf, in order, not necessarily
// adjacent (Envoy's receive matching).
func fuzzyMatch(buf []byte, blocks [][]byte) bool {
	for _, b := range blocks {
		i := bytes.Index(buf, b)
		if i < 0 {
			return false
		}
		buf = buf[i+len(b):]
	}
	return true
}

// netDial is the default DialFunc: plain TCP.
func netDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

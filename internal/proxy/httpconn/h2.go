package httpconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"sync"

	"github.com/weft-mesh/weft/internal/proxy/h2"
	"github.com/weft-mesh/weft/internal/proxy/listener"
)

// h2server is a manager's set of HTTP/2 connections, for Drain.
type h2server struct {
	mu       sync.Mutex
	conns    map[*h2.Conn]struct{}
	draining bool
}

// serveH2 serves an HTTP/2 connection until it ends; br, when not nil, holds what was
// read of it while detecting the protocol.
func (m *Manager) serveH2(lc *listener.Conn, nc net.Conn, br *bufio.Reader) {
	cfg := m.h2cfg
	cfg.Context = context.WithValue(context.Background(), connKey{}, lc)
	if tc, ok := nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		cfg.TLS = &cs
	}
	if lc.Remote.IsValid() {
		cfg.RemoteAddr = lc.Remote.String()
	}
	hc := h2.NewConn(nc, br, cfg)
	s := &m.h2
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	if s.conns == nil {
		s.conns = map[*h2.Conn]struct{}{}
	}
	s.conns[hc] = struct{}{}
	s.mu.Unlock()
	m.cxActive.Inc()

	hc.Serve()

	m.cxActive.Dec()
	s.mu.Lock()
	delete(s.conns, hc)
	s.mu.Unlock()
}

// drainH2 sends every HTTP/2 connection GOAWAY and waits for them to close (each once
// its open streams are done); at ctx's end it closes those left.
func (m *Manager) drainH2(ctx context.Context) error {
	s := &m.h2
	s.mu.Lock()
	s.draining = true
	conns := make([]*h2.Conn, 0, len(s.conns))
	for hc := range s.conns {
		conns = append(conns, hc)
	}
	s.mu.Unlock()
	for _, hc := range conns {
		hc.Shutdown()
	}
	for _, hc := range conns {
		select {
		case <-hc.Done():
		case <-ctx.Done():
			for _, hc := range conns {
				hc.Close()
			}
			return ctx.Err()
		}
	}
	return nil
}

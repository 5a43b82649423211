package pool

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
)

// dialKey carries a *dialState through net/http's dial so the connection is counted.
type dialKey struct{}

// dialState is one dial in progress; dialed is set (on the dialling goroutine) once
// the TCP connection exists and owns the max_connections slot.
type dialState struct {
	pool   *Pool
	dialed bool
}

// countedConn gives back its max_connections slot and updates the gauges once, on
// the first Close.
type countedConn struct {
	net.Conn
	pool   *Pool
	closed atomic.Bool
}

func (p *Pool) counted(c net.Conn) net.Conn {
	st := p.cfg.Limits.st
	st.CxTotal.Inc()
	st.CxActive.Inc()
	p.cxActive.Add(1)
	return &countedConn{Conn: c, pool: p}
}

// uncounted is the connection under the pool's counting wrapper, if any.
func uncounted(nc net.Conn) net.Conn {
	if cc, ok := nc.(*countedConn); ok {
		return cc.Conn
	}
	return nc
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		p := c.pool
		st := p.cfg.Limits.st
		st.CxActive.Dec()
		st.CxDestroy.Inc()
		p.cxActive.Add(-1)
		p.cfg.Limits.releaseConn()
	}
	return err
}

// CloseWrite half-closes the TCP connection (the TCP proxy relays a FIN).
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Dial opens a connection to the host outside the HTTP pool (TCP proxy, upgrades),
// under max_connections, with the cluster's connect timeout and upstream TLS. It
// returns ErrOverflow when the breaker is open and an error wrapping
// ErrConnectFailure when the host cannot be reached. Closing the connection gives the
// slot back.
func (p *Pool) Dial(ctx context.Context) (net.Conn, error) {
	l := p.cfg.Limits
	if !l.acquireConn() {
		l.st.CxOverflow.Inc()
		return nil, fmt.Errorf("%w: max_connections", ErrOverflow)
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	ds := &dialState{pool: p}
	dctx = context.WithValue(dctx, dialKey{}, ds)
	var conn net.Conn
	var err error
	if p.cfg.TLS != nil {
		conn, err = p.cfg.dialTLSWith(dctx, "tcp", p.addr, p.cfg.rawTLS)
	} else {
		conn, err = p.cfg.dialTCP(dctx, "tcp", p.addr)
	}
	if err != nil {
		if !ds.dialed {
			l.releaseConn()
		}
		l.st.CxConnectFail.Inc()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upstream: connect %s: %w", p.addr, ctx.Err())
		}
		return nil, fmt.Errorf("upstream: connect %s: %w: %w", p.addr, ErrConnectFailure, err)
	}
	return conn, nil
}

// DialDirect opens a connection to addr with the config's connect timeout and TLS (ALPN
// as configured), outside the pools and the circuit breakers: for active health
// checks, which Envoy does not count as upstream connections.
func (c *Config) DialDirect(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout)
	defer cancel()
	if c.rawTLS != nil {
		return c.dialTLSWith(ctx, "tcp", addr, c.rawTLS)
	}
	return c.dialTCP(ctx, "tcp", addr)
}

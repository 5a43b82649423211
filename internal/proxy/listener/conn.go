package listener

import (
	"net"
	"sync"
)

// replayConn is the accepted socket as the filter chain sees it: Read returns the bytes
// the listener filters peeked before reading the socket again, and Close keeps the
// listener's connection stats and the manager's connection set right whoever closes it
// (the network filter, the TLS layer above, or Close).
type replayConn struct {
	net.Conn
	peeked []byte // set before the conn is handed out; read by one reader
	m      *Manager

	mu     sync.Mutex
	closed bool
	stats  *listenerStats
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(b, c.peeked)
		c.peeked = c.peeked[n:]
		if len(c.peeked) == 0 {
			c.peeked = nil // let the peek buffer go
		}
		return n, nil
	}
	return c.Conn.Read(b)
}

// CloseWrite half-closes the socket (the TCP proxy forwards a FIN this way).
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// CloseRead shuts the read side down.
func (c *replayConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return nil
}

func (c *replayConn) Close() error {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	st := c.stats
	c.mu.Unlock()
	if !first {
		return nil
	}
	err := c.Conn.Close()
	c.m.untrack(c)
	if st != nil {
		st.cxActive.Dec()
		st.cxDestroy.Inc()
	}
	return err
}

// setStats counts the connection as active on its listener; false when it was closed
// already.
func (c *replayConn) setStats(s *listenerStats) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.stats = s
	s.cxActive.Inc()
	return true
}

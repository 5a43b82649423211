//go:build !unix

package pool

import "net"

// peeker cannot look without blocking here; a stale connection is caught by the
// retry of a replayable request instead.
type peeker struct{}

func (p *peeker) init(net.Conn)    {}
func (p *peeker) peerClosed() bool { return false }

//go:build !linux

package listener

import (
	"net"
	"net/netip"
)

// originalDst is Linux only (netfilter); elsewhere connections are never redirected.
func originalDst(net.Conn) (netip.AddrPort, bool) { return netip.AddrPort{}, false }

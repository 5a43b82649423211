//go:build !linux

package sockio

import "net"

// Wrap returns c: raw socket calls are for Linux.
func Wrap(c net.Conn) net.Conn { return c }

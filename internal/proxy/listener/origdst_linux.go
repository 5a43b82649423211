package listener

import (
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// originalDst reads SO_ORIGINAL_DST from an accepted TCP connection. ok is false when
// the connection was not redirected (no conntrack entry, or not a TCP socket); the
// caller then uses the local address.
func originalDst(c net.Conn) (netip.AddrPort, bool) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return netip.AddrPort{}, false
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	level := unix.SOL_IP
	if local != nil && local.IP.To4() == nil {
		level = unix.SOL_IPV6
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false
	}
	var (
		buf  [128]byte // sockaddr_storage
		n    = uint32(len(buf))
		gerr error
	)
	err = rc.Control(func(fd uintptr) {
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if errno != 0 {
			gerr = errno
		}
	})
	if err != nil || gerr != nil {
		// ENOENT: no conntrack entry (not redirected); ENOPROTOOPT: no netfilter.
		return netip.AddrPort{}, false
	}
	ap, err := parseSockaddr(buf[:n])
	if err != nil {
		return netip.AddrPort{}, false
	}
	return ap, true
}

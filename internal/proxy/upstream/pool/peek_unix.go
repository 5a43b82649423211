//go:build unix

package pool

import (
	"net"
	"syscall"
	"unsafe"
)

// peeker tells whether the peer closed an idle plaintext connection (or sent bytes
// nobody asked for): a non-blocking MSG_PEEK that finds EOF or data. One syscall per
// reuse, in place of a goroutine reading every idle connection; set up once per
// connection so a check does not allocate.
type peeker struct {
	rc     syscall.RawConn
	fn     func(fd uintptr) bool
	closed bool
	buf    [1]byte
}

func (p *peeker) init(nc net.Conn) {
	sc, ok := uncounted(nc).(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	p.rc = rc
	p.fn = func(fd uintptr) bool {
		// A raw call, as package sockio makes them: a non-blocking peek never
		// blocks, so the scheduler need not know about it.
		_, _, err := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.buf[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		// EAGAIN: nothing to read, the connection is fine. Anything else is an
		// error, EOF or unsolicited data: unusable.
		p.closed = err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
		return true // never wait for readiness
	}
}

// peerClosed runs the check; only one goroutine (the one holding the reserved
// connection) calls it at a time.
func (p *peeker) peerClosed() bool {
	if p.rc == nil {
		return false
	}
	if err := p.rc.Read(p.fn); err != nil {
		return true
	}
	return p.closed
}

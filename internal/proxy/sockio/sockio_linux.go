package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a TCP connection whose Read and Write are raw system calls.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu    sync.Mutex // one Read at a time owns rbuf/rn/rerr
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // one Write at a time owns wbuf/wn/werr
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// Wrap returns c with raw reads and writes when c is a *net.TCPConn, else c.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	x := &Conn{TCPConn: tc, rc: rc}
	x.readFn = x.read
	x.writeFn = x.write
	return x
}

// Read reads like net.Conn's Read: the poller waits when there is nothing to read, and
// the read deadline applies.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	if err != nil {
		return 0, err
	}
	if rerr != nil && rerr != io.EOF {
		return n, c.opError("read", rerr)
	}
	return n, rerr
}

func (c *Conn) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			c.rn = int(n)
			if n == 0 {
				c.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the poller waits for the socket to be readable
		default:
			c.rerr = os.NewSyscallError("read", e)
			return true
		}
	}
}

// Write writes all of p, waiting in the poller while the socket's buffer is full; the
// write deadline applies.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	n, werr := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	if err != nil {
		return n, err
	}
	if werr != nil {
		return n, c.opError("write", werr)
	}
	return n, nil
}

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		// send with MSG_NOSIGNAL: a peer that closed gives EPIPE, never SIGPIPE.
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wn])),
			uintptr(len(c.wbuf)-c.wn), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits for room in the socket's buffer
		default:
			c.werr = os.NewSyscallError("write", e)
			return true
		}
	}
	return true
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.TCPConn }

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

	writeReadFn func(fd uintptr) bool // WriteRead's, holding both locks
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
	x.writeReadFn = x.writeRead
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

// WriteRead writes all of w, then reads into r what the peer sends, as Write then Read
// would, but without the read that would find nothing: for a peer that only speaks when
// spoken to (an HTTP/1.1 server asked a request), the answer cannot be there before the
// question, so once w is written the poller waits for it at once. That read is a system
// call per exchange that returns EAGAIN (measured: about one per upstream request).
//
// The wait is for a readiness edge after the write: the read side's readiness is cleared
// before the write, by the poller's own preparation of the read (syscall.RawConn.Read),
// so an answer that comes while the write returns is not missed. Bytes the peer sent
// before w are not looked for (the pool peeks for them when it takes a connection); a
// peer that closed before gets w, and its reset wakes the wait. Only a peer that had
// half-closed (stopped writing, still reading) in the moment between that peek and this
// call, with the poller taking its FIN then, leaves the wait to the read deadline.
//
// When the socket's send buffer fills before w is all written, the rest goes as Write
// sends it, waiting for room, and the read follows as Read's. The read deadline applies
// to the wait; a failed write returns an *net.OpError whose Op is "write".
func (c *Conn) WriteRead(w, r []byte) (int, error) {
	if len(w) == 0 {
		return c.Read(r)
	}
	if len(r) == 0 {
		_, err := c.Write(w)
		return 0, err // nothing read
	}
	c.wmu.Lock()
	c.rmu.Lock()
	c.wbuf, c.wn, c.werr = w, 0, nil
	c.rbuf, c.rn, c.rerr = r, 0, nil
	err := c.rc.Read(c.writeReadFn)
	wn, werr := c.wn, c.werr
	n, rerr := c.rn, c.rerr
	c.wbuf, c.rbuf = nil, nil
	c.rmu.Unlock()
	c.wmu.Unlock()
	switch {
	case werr != nil:
		return 0, c.opError("write", werr)
	case wn < len(w):
		if err != nil {
			return 0, err // the poller failed before the write (closed, deadline)
		}
		// The send buffer filled: the rest waits for room, then the answer.
		if _, err := c.Write(w[wn:]); err != nil {
			return 0, err
		}
		return c.Read(r)
	case err != nil:
		return 0, err
	case rerr != nil && rerr != io.EOF:
		return n, c.opError("read", rerr)
	}
	return n, rerr
}

// writeRead is WriteRead's step under the poller: the write on the first call (false
// once it is all sent: wait for the answer), then the read.
func (c *Conn) writeRead(fd uintptr) bool {
	if c.wn < len(c.wbuf) {
		if !c.write(fd) {
			return true // EAGAIN: WriteRead finishes the write outside
		}
		return c.werr != nil // an error ends it; else wait for readability
	}
	return c.read(fd)
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.TCPConn }

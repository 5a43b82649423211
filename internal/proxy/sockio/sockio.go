// Package sockio reads and writes a TCP connection's socket with raw system calls, for
// the proxy's connections (the listener wraps every accepted one after inspection, the
// upstream pools every one they dial; TLS and HTTP/2 run on top).
//
// Why: a Go read or write on a socket enters the scheduler's syscall state, and with
// GOMAXPROCS=1 (a sidecar's setting) the runtime's monitor thread takes the one P away
// from any system call it sees running across two of its 20 µs ticks, and hands it to
// another thread; on loopback a write that delivers to the peer can take that long.
// Each hand-off is two futex calls and two thread switches, and while they happen the
// monitor polls every 20 µs instead of backing off to 10 ms. On sockets in non-blocking
// mode a read or write never blocks, so there is nothing to hand off: sockio makes the
// call without entering syscall state (RawSyscall inside syscall.RawConn, which keeps
// the net package's locking, poller wait and deadlines). Measured on the benchmark's
// server sidecar at 1000 requests/s: see BENCHMARKS.md.
//
// Wrap returns a net.Conn whose Read and Write are the raw ones, and whose other
// methods are the *net.TCPConn's (deadlines, Close, CloseWrite, SyscallConn); a
// connection that is not a *net.TCPConn, or any connection off Linux, is returned as it
// is. The trade: a raw call is invisible to the race detector's view of the buffer and
// cannot be preempted while it runs, which for a non-blocking socket is microseconds.
package sockio

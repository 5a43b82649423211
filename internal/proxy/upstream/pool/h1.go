package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/h1"
	"github.com/weft-mesh/weft/internal/proxy/sockio"
	"github.com/weft-mesh/weft/internal/proxy/watchdog"
)

// h1conn is one HTTP/1.1 connection, spoken with weft's codec (internal/proxy/h1): a
// request is written and its response read on the caller's goroutine, head and small
// body in one write (a large or chunked body is written from a second goroutine so an
// early response is read while the body still flows). No goroutine lives on an idle
// connection; a connection the server closed while idle is noticed when it is taken
// (peeker) or, failing that, by one retry of a replayable request.
type h1conn struct {
	pc   *pconn
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	rd   h1.Reader
	tls  bool // a peek cannot tell TLS records from a close
	peek peeker
	ex   *exchanger // under br and bw on a plaintext raw socket, else nil
	busy atomic.Bool
	dead atomic.Bool

	// The context of the exchange in progress is watched (its end fails the
	// connection's I/O) only once the exchange has run for watchAfter or until the
	// context's deadline, whichever is sooner (wd runs arm then): context.AfterFunc
	// costs five allocations and most exchanges are over before then.
	wd      *watchdog.Timer
	wmu     sync.Mutex
	wctx    context.Context // the exchange's context; nil between exchanges
	wstop   func() bool     // the AfterFunc's stop once armed
	abortFn func()          // c.nc's deadline in the past, bound once
}

// watchAfter is how long an exchange runs before its context is watched.
const watchAfter = 50 * time.Millisecond

// watch starts watching ctx for the exchange that begins.
func (c *h1conn) watch(ctx context.Context) {
	d := watchAfter
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, max(time.Until(dl), 0))
	}
	c.wmu.Lock()
	c.wctx, c.wstop = ctx, nil
	c.wmu.Unlock()
	c.wd.Start(d)
}

// arm makes the end of the exchange's context fail the connection's I/O.
func (c *h1conn) arm() {
	c.wmu.Lock()
	if c.wctx != nil && c.wstop == nil {
		c.wstop = context.AfterFunc(c.wctx, c.abortFn)
	}
	c.wmu.Unlock()
}

// unwatch ends the watch of the exchange. It reports false when the context ended
// while watched: the connection's deadline was then set in the past.
func (c *h1conn) unwatch() bool {
	c.wd.Stop()
	c.wmu.Lock()
	ok := c.wstop == nil || c.wstop()
	c.wctx, c.wstop = nil, nil
	c.wmu.Unlock()
	return ok
}

// aLongTimeAgo is a deadline in the past: set on a connection it fails pending I/O.
var aLongTimeAgo = time.Unix(1, 0)

func newH1Conn(nc net.Conn, isTLS bool) *h1conn {
	c := &h1conn{nc: nc, tls: isTLS}
	var rw io.ReadWriter = nc
	if !isTLS {
		c.peek.init(nc)
		if sc, ok := uncounted(nc).(*sockio.Conn); ok {
			c.ex = &exchanger{Conn: nc, sc: sc}
			rw = c.ex
		}
	}
	c.br = bufio.NewReaderSize(rw, 4096)
	c.bw = bufio.NewWriterSize(rw, 4096)
	c.abortFn = func() { c.nc.SetDeadline(aLongTimeAgo) }
	c.wd = watchdog.New(c.arm)
	return c
}

func (c *h1conn) reserve() bool {
	if c.dead.Load() || !c.busy.CompareAndSwap(false, true) {
		return false
	}
	if c.dead.Load() {
		c.busy.Store(false)
		return false
	}
	return true
}

func (c *h1conn) close() {
	if c.dead.CompareAndSwap(false, true) {
		c.nc.Close()
	}
}

// exchanger is a plaintext connection under its read and write buffers: the flush of a
// request made while held is written by the first read of the response, in one poller
// wait (sockio.Conn.WriteRead), instead of a write and then a read that finds nothing
// yet (a system call per request).
type exchanger struct {
	net.Conn
	sc   *sockio.Conn
	hold bool   // the next write is kept for the next read
	held []byte // the write kept: the write buffer's bytes, untouched until that read
	// exchanges counts the reads that carried a held write (read by tests, after the
	// connection's last request).
	exchanges int
}

func (x *exchanger) Write(p []byte) (int, error) {
	if x.hold {
		x.hold, x.held = false, p
		return len(p), nil
	}
	return x.Conn.Write(p)
}

func (x *exchanger) Read(p []byte) (int, error) {
	if w := x.held; w != nil {
		x.held = nil
		x.exchanges++
		return x.sc.WriteRead(w, p)
	}
	return x.Conn.Read(p)
}

// flushHeld flushes the request's last bytes; on a plaintext raw socket they are
// written by the response's first read, which comes next and before anything else
// is written (the request is whole).
func (c *h1conn) flushHeld() error {
	if c.ex == nil {
		return c.bw.Flush()
	}
	c.ex.hold = true
	err := c.bw.Flush()
	c.ex.hold = false
	return err
}

// errStale marks a failure on a reused connection before any response byte: the
// server had closed it while idle, and a replayable request may go again.
var errStale = errors.New("upstream: reused connection closed by the server")

// inlineBodyMax is the largest request body written on the caller's goroutine, in
// one write with the head. A larger or unknown-length body is written from a second
// goroutine, so an early response (413, 401) is read while the body still flows; a
// small one fits the socket buffers even when the server answers without reading it.
const inlineBodyMax = 64 << 10

// max1xx bounds the informational responses before the final one.
const max1xx = 16

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// roundTrip sends req and reads the response head; the response body reads from the
// connection and hands it back to the pool at its end.
func (c *h1conn) roundTrip(req *http.Request, reused bool) (*http.Response, error) {
	ctx := req.Context()
	c.watch(ctx)
	fail := func(err error) (*http.Response, error) {
		c.close()
		if !c.unwatch() || ctx.Err() != nil {
			return nil, fmt.Errorf("upstream: %w", ctx.Err())
		}
		return nil, err
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := h1.WriteRequestHead(c.bw, req, hasBody)
	var written *bodyWriter
	if hasBody && (chunked || req.ContentLength > inlineBodyMax || !h1.BodyBuffered(req.Body)) {
		// The head goes at once: the upstream may answer (401, 413) before the body
		// has come, and should see the request while it comes.
		if err := c.bw.Flush(); err != nil {
			if reused {
				err = fmt.Errorf("%w: %w", errStale, err)
			}
			return fail(err)
		}
		written = &bodyWriter{done: make(chan error, 1)}
		go func() {
			bp := bodyBufs.Get().(*[]byte)
			err := h1.CopyBody(c.bw, req.Body, chunked, req.ContentLength, req.Trailer, *bp)
			bodyBufs.Put(bp)
			if err == nil {
				written.copied.Store(true)
				err = c.bw.Flush()
			}
			if err != nil {
				// Unblock the response read: the request cannot complete.
				c.nc.SetDeadline(aLongTimeAgo)
			}
			written.done <- err
		}()
	} else {
		var err error
		if hasBody {
			err = h1.CopyKnown(c.bw, req.Body, req.ContentLength)
		}
		if err == nil {
			err = c.flushHeld()
		}
		if err != nil {
			if reused && !hasBody {
				err = fmt.Errorf("%w: %w", errStale, err)
			}
			return fail(err)
		}
	}
	var resp *http.Response
	var body *h1.Body
	x := h1resps.Get().(*h1resp)
	for informational := 0; ; informational++ {
		var err error
		resp, body, err = c.rd.ReadResponseInto(c.br, req.Method, &x.rb)
		if err != nil {
			if written != nil {
				// Do not wait for the writer: it may be blocked reading the
				// request body. Closing the connection (in fail) ends it.
				select {
				case werr := <-written.done:
					if werr != nil {
						err = werr
					}
				default:
				}
			} else if reused && c.br.Buffered() == 0 && staleAfter(err, hasBody) {
				err = fmt.Errorf("%w: %w", errStale, err)
			}
			return fail(err)
		}
		// 1xx informational responses (100 Continue, 103 Early Hints) precede the
		// real one; 101 ends HTTP on this connection.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if informational == max1xx {
				// An upstream may not hold the request with informational
				// responses without end (net/http stops at 5).
				return fail(errors.New("upstream: too many informational (1xx) responses"))
			}
			continue
		}
		break
	}
	resp.Request = req
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The connection now carries the upgraded protocol; it leaves the pool with
		// the response (Body is read-write, as net/http's).
		// Its context is watched for as long as it is open.
		c.arm()
		resp.Body = &upgraded{c: c}
		return resp, nil
	}
	b := &x.body
	*b = h1body{c: c, ctx: ctx, written: written, keep: !resp.Close && !req.Close, x: x}
	if body == nil {
		b.finish(true)
		resp.Body = http.NoBody
		return resp, nil
	}
	b.rc = body
	resp.Body = b
	return resp, nil
}

// staleAfter reports whether a reused connection's failure before any response byte
// says the server had closed it: EOF, a read error, or (the request's last write goes
// with the response's first read, see exchanger) a failed write of a request with no
// body, as a failed flush of it says.
func staleAfter(err error, hasBody bool) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && (op.Op == "read" || op.Op == "write" && !hasBody)
}

// h1resp is a response's storage: the response and its body as the codec reads them,
// and the body the caller reads. It is reused once the caller says it is done with
// the response (Recycle).
type h1resp struct {
	rb   h1.ResponseBuf
	body h1body
}

var h1resps = sync.Pool{New: func() any { return new(h1resp) }}

// h1body ends the request when the body does: at EOF the connection goes back to the
// pool if nothing forbids it, otherwise (early close, error) it is closed.
type h1body struct {
	c       *h1conn
	rc      io.ReadCloser
	ctx     context.Context
	written *bodyWriter // nil: the body went with the head
	keep    bool
	done    bool
	freed   bool    // finish saw the request's body writer done, or there was none
	x       *h1resp // the storage this body is part of
}

// Released reports whether the exchange is over and nothing of the pool still holds
// its request (the request, its body, its context): the body was read to its end or
// closed, and the request body's writer, if one ran, had finished by then. Before
// that, or when the writer was still running (an upstream that answered early), the
// caller must not reuse the request's memory.
func (b *h1body) Released() bool { return b.done && b.freed }

// Recycle gives the response's storage (the response, this body) back for a later
// response, once Released. The caller must hold nothing of the response after it
// but its header and trailer maps, which are not part of the storage.
func (b *h1body) Recycle() {
	if !b.Released() {
		return
	}
	x := b.x
	*x = h1resp{}
	h1resps.Put(x)
}

func (b *h1body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		if b.ctx.Err() != nil {
			err = fmt.Errorf("upstream: reading the response body: %w", b.ctx.Err())
		}
		b.finish(false)
	}
	return n, err
}

func (b *h1body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *h1body) finish(eof bool) {
	if b.done {
		return
	}
	b.done = true
	c := b.c
	// Bytes after the response's end were not asked for (or the body ran over its
	// Content-Length): read as the next request's response they would answer it
	// with someone else's data.
	reuse := eof && b.keep && c.br.Buffered() == 0
	if !c.unwatch() {
		reuse = false // the request context ended: the deadline is in the past
	}
	b.freed = true
	if w := b.written; w != nil {
		select {
		case err := <-w.done:
			reuse = reuse && err == nil
		default:
			// Copied: the upstream had the whole request, and the writer is flushing
			// the last bytes it sent, or about to say so. Not copied: the body is
			// still being written, the exchange is cut short.
			reuse = reuse && w.copied.Load() && w.wait()
			b.freed = reuse
		}
	}
	if !reuse {
		c.close()
	}
	c.pc.pool.h1Done(c.pc)
}

// bodyWriter is the request body's writer on its second goroutine.
type bodyWriter struct {
	// copied is set once the whole body is in the write buffer (or sent), before the
	// flush of its end: an upstream cannot have answered the whole request before.
	copied atomic.Bool
	done   chan error // the writer's result
}

// lastFlushWait bounds how long the end of a response waits for the body writer's
// last flush. The flush only waits when the upstream stopped reading with its buffers
// full; then the connection is closed, as for any exchange cut short.
const lastFlushWait = 100 * time.Millisecond

// wait reports whether the writer ended well within lastFlushWait.
func (w *bodyWriter) wait() bool {
	t := time.NewTimer(lastFlushWait)
	defer t.Stop()
	select {
	case err := <-w.done:
		return err == nil
	case <-t.C:
		return false
	}
}

// upgraded is the body of a 101 response: the raw connection.
type upgraded struct {
	c    *h1conn
	done atomic.Bool
}

func (u *upgraded) Read(p []byte) (int, error)  { return u.c.br.Read(p) }
func (u *upgraded) Write(p []byte) (int, error) { return u.c.nc.Write(p) }
func (u *upgraded) Close() error {
	if u.done.CompareAndSwap(false, true) {
		u.c.unwatch()
		u.c.close()
		u.c.pc.pool.h1Done(u.c.pc)
	}
	return nil
}

package router

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/weft-mesh/weft/internal/proxy/h1"
)

// errStaleAttempt ends the request body of an attempt that a retry replaced.
var errStaleAttempt = errors.New("router: request body belongs to an abandoned attempt")

// replayBody streams a downstream request body to upstream attempts while keeping the
// first limit bytes, so a retry can send the body again (Envoy buffers up to
// per_request_buffer_limit_bytes for the same reason). The body is never read ahead of
// what an attempt asks for, so a gRPC stream flows as it arrives. Once more than limit
// bytes went by, the body cannot be replayed and the request is no longer retried.
//
// Only one attempt is current (the latest); an older attempt's transport may still hold
// its reader and gets errStaleAttempt. The source is never read with the lock held, so
// a stale reader blocked in the source never stops the current attempt from replaying
// what is buffered.
type replayBody struct {
	src    io.Reader
	limit  int
	length int64 // Content-Length, -1 when unknown

	overflow atomic.Bool // more than limit bytes read: no replay
	gen      atomic.Int64

	mu      sync.Mutex
	cond    sync.Cond
	buf     []byte
	total   int64 // bytes read from src
	srcErr  error // sticky, io.EOF at the end
	reading bool  // a reader is in src.Read
}

func newReplayBody(src io.Reader, limit int, length int64) *replayBody {
	rb := &replayBody{src: src, limit: limit, length: length}
	rb.cond.L = &rb.mu
	return rb
}

// attempt returns the reader for a new attempt; previous readers become stale.
func (rb *replayBody) attempt() io.ReadCloser {
	return &attemptBody{rb: rb, gen: rb.gen.Add(1)}
}

// replayable reports whether a new attempt can still get the whole body.
func (rb *replayBody) replayable() bool { return !rb.overflow.Load() }

// complete returns the whole body when it has been read to its end and fits the
// buffer (for mirrors).
func (rb *replayBody) complete() ([]byte, bool) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	// A transport may stop at Content-Length without reading the EOF.
	done := rb.srcErr == io.EOF || (rb.length >= 0 && rb.total == rb.length)
	if rb.overflow.Load() || !done {
		return nil, false
	}
	return rb.buf, true
}

type attemptBody struct {
	rb  *replayBody
	gen int64
	off int64
}

// Buffered reports whether this attempt can read the rest of the body without waiting
// for the client: it is kept in the replay buffer already, or the source's rest is in
// memory (h1.BodyBuffered; see the upstream pool's one-write path).
func (a *attemptBody) Buffered() bool {
	rb := a.rb
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.srcErr == io.EOF || (rb.length >= 0 && rb.total == rb.length) {
		return !rb.overflow.Load() || a.off >= rb.total
	}
	if rb.reading {
		return false
	}
	return h1.BodyBuffered(rb.src)
}

// passBody hands a body to one attempt or mirror: reads pass through, Close does
// nothing (the body's owner closes it), Buffered is the body's own.
type passBody struct{ r io.Reader }

func (b passBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b passBody) Close() error               { return nil }
func (b passBody) Buffered() bool             { return h1.BodyBuffered(b.r) }

func (a *attemptBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	rb := a.rb
	rb.mu.Lock()
	for {
		if a.gen != rb.gen.Load() {
			rb.mu.Unlock()
			return 0, errStaleAttempt
		}
		if !rb.overflow.Load() && a.off < int64(len(rb.buf)) {
			n := copy(p, rb.buf[a.off:])
			a.off += int64(n)
			rb.mu.Unlock()
			return n, nil
		}
		if a.off < rb.total {
			// The bytes this attempt needs were not kept.
			rb.mu.Unlock()
			return 0, errStaleAttempt
		}
		if rb.srcErr != nil {
			err := rb.srcErr
			rb.mu.Unlock()
			return 0, err
		}
		if !rb.reading {
			break
		}
		rb.cond.Wait()
	}
	rb.reading = true
	rb.mu.Unlock()

	n, err := rb.src.Read(p)

	rb.mu.Lock()
	rb.reading = false
	rb.total += int64(n)
	if !rb.overflow.Load() {
		if len(rb.buf)+n <= rb.limit {
			rb.buf = append(rb.buf, p[:n]...)
		} else {
			rb.overflow.Store(true)
			rb.buf = nil
		}
	}
	if err != nil {
		rb.srcErr = err
	}
	a.off = rb.total
	stale := a.gen != rb.gen.Load()
	rb.cond.Broadcast()
	rb.mu.Unlock()
	if stale {
		// The bytes stay buffered for the current attempt.
		return 0, errStaleAttempt
	}
	return n, err
}

// Close does not close the downstream body: other attempts may still need it, and the
// HTTP server owns it.
func (a *attemptBody) Close() error { return nil }

package h2

import (
	"bufio"
	"io"
	"iter"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"

	"github.com/weft-mesh/weft/internal/proxy/h1"
)

// wire is a connection's writing side, shared by its streams, on both ends: frames go
// into one buffer under wmu, and the writer that finds no other writer waiting
// flushes, so concurrent streams share writes.
type wire struct {
	wmu     sync.Mutex
	writers atomic.Int32
	bw      *bufio.Writer
	fr      *http2.Framer // reads on the connection's reading goroutine; writes under wmu
	henc    encoder
	hbuf    []byte // the header block being encoded
	werr    error  // the first write error; later writes fail with it
	br      *bufio.Reader
	hb      headerBlock // the last header block read (the reading goroutine's)
	pingF   http2.PingFrame
	wupdF   http2.WindowUpdateFrame

	peerMaxFrame atomic.Uint32 // the peer's SETTINGS_MAX_FRAME_SIZE
}

func (w *wire) init(wr io.Writer, br *bufio.Reader, maxHeaderBytes int) {
	w.bw = bufio.NewWriterSize(wr, writeBufSize)
	w.br = br
	w.fr = http2.NewFramer(w.bw, br)
	w.fr.SetReuseFrames()
	w.fr.SetMaxReadFrameSize(readFrameSize)
	w.hb.init(uint32(maxHeaderBytes))
	w.henc = newEncoder()
	w.peerMaxFrame.Store(peerFrameFloor)
}

// write runs fn, which writes frames, under the write lock, and flushes unless
// another writer is waiting (it will flush).
func (w *wire) write(fn func() error) error {
	w.writers.Add(1)
	w.wmu.Lock()
	err := w.werr
	if err == nil {
		err = fn()
	}
	if w.writers.Add(-1) == 0 && err == nil {
		err = w.bw.Flush()
	}
	if err != nil && w.werr == nil {
		w.werr = err
	}
	w.wmu.Unlock()
	return err
}

// writeFlushed is write that flushes even when another writer is waiting: what fn
// wrote is on the wire when it returns. A connection's last frames (GOAWAY before a
// close) go this way; left to the waiting writer, they could still be in the buffer
// when the socket closes.
func (w *wire) writeFlushed(fn func() error) error {
	return w.write(func() error {
		if err := fn(); err != nil {
			return err
		}
		return w.bw.Flush()
	})
}

// writeData writes one DATA frame (under wmu), its payload straight into the buffer.
func (w *wire) writeData(id uint32, p []byte, end bool) error {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	n := len(p)
	// The frame header is appended to the buffer's free space (a local array would
	// escape through Write).
	hdr := append(w.bw.AvailableBuffer(), byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameData), flags,
		byte(id>>24&0x7f), byte(id>>16), byte(id>>8), byte(id))
	if _, err := w.bw.Write(hdr); err != nil {
		return err
	}
	_, err := w.bw.Write(p)
	return err
}

// writeHeaderBlock writes w.hbuf as a HEADERS frame and as many CONTINUATION frames as
// the peer's frame size needs (under wmu).
func (w *wire) writeHeaderBlock(id uint32, end bool) error {
	max := int(w.peerMaxFrame.Load())
	block := w.hbuf
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	if err := w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}); err != nil {
		return err
	}
	for len(block) > 0 {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		if err := w.fr.WriteContinuation(id, len(block) == 0, frag); err != nil {
			return err
		}
	}
	return nil
}

func (w *wire) sendUpdates(id, streamInc, connInc uint32) {
	if streamInc == 0 && connInc == 0 {
		return
	}
	_ = w.write(func() error {
		if connInc > 0 {
			if err := w.fr.WriteWindowUpdate(0, connInc); err != nil {
				return err
			}
		}
		if streamInc > 0 {
			return w.fr.WriteWindowUpdate(id, streamInc)
		}
		return nil
	})
}

// encodeTrailers HPACK-encodes a response's trailers into w.hbuf (under wmu), straight
// from its header: the fields its Trailer header declared, then those under
// http.TrailerPrefix (the router's way) but one declared as well.
func (w *wire) encodeTrailers(h http.Header, declared []string) {
	w.hbuf = w.hbuf[:0]
	for _, k := range declared {
		w.fieldValues(k, h[k])
	}
	for k, vs := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && len(vs) > 0 {
			if len(declared) > 0 {
				if c := http.CanonicalHeaderKey(name); slices.Contains(declared, c) && len(h[c]) > 0 {
					continue // sent as declared
				}
			}
			w.fieldValues(name, vs)
		}
	}
}

// fieldValues encodes the values of header key k under its lower-case name, but for
// connection-specific fields and TE, which the proxy sets itself.
func (w *wire) fieldValues(k string, vs []string) {
	name := h1.LowerKey(k)
	if connSpecific(name) || name == "" || name == "te" {
		return
	}
	for _, v := range vs {
		w.field(name, v)
	}
}

// encodeFields HPACK-encodes a request's trailers into w.hbuf (under wmu).
func (w *wire) encodeFields(h http.Header) {
	w.hbuf = w.hbuf[:0]
	for k, vs := range h {
		w.fieldValues(k, vs)
	}
}

// writeFields encodes a head's fields, but those under http.TrailerPrefix.
func (w *wire) writeFields(h http.Header) {
	for k, vs := range h {
		if !strings.HasPrefix(k, http.TrailerPrefix) {
			w.fieldValues(k, vs)
		}
	}
}

func (w *wire) field(name, value string) {
	w.hbuf = w.henc.appendField(w.hbuf, name, value)
}

// ping answers a PING (an acknowledgement needs no answer).
func (w *wire) ping(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil
	}
	data := f.Data
	return w.write(func() error { return w.fr.WritePing(true, data) })
}

// sendFlow is the sending side of flow control, the same on both ends: the
// connection's window and the peer's initial stream window. It is guarded by the
// connection's mutex, as are the streams' flows.
type sendFlow struct {
	window  int64 // the connection's send window
	initWin int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
}

// streamFlow is a stream's send window and the condition its writers wait on (for
// window, and for whatever else ends their wait: a reset, the connection's end).
type streamFlow struct {
	wake    sync.Cond
	waiting bool // a writer waits for window
	sendWin int64
}

func newSendFlow() sendFlow { return sendFlow{window: initialWindow, initWin: initialWindow} }

// start makes a new stream's flow (mu is the connection's mutex).
func (f *sendFlow) start(sf *streamFlow, mu *sync.Mutex) {
	sf.wake.L = mu
	sf.sendWin = f.initWin
}

// take takes up to want bytes of both windows, and no more than a frame of max
// bytes; 0 when either window is closed. mu held.
func (f *sendFlow) take(sf *streamFlow, want int, max uint32) int {
	n := min(int64(want), sf.sendWin, f.window, int64(max))
	if n <= 0 {
		return 0
	}
	sf.sendWin -= n
	f.window -= n
	return int(n)
}

// wait blocks until both windows are open or failed reports an error (which it
// returns). mu held.
func (f *sendFlow) wait(sf *streamFlow, failed func() error) error {
	for {
		if err := failed(); err != nil {
			return err
		}
		if sf.sendWin > 0 && f.window > 0 {
			return nil
		}
		sf.waiting = true
		sf.wake.Wait()
		sf.waiting = false
	}
}

// updateConn applies a WINDOW_UPDATE to the connection's window; the caller then wakes
// its streams that wait for window (wakeWaiting). mu held.
func (f *sendFlow) updateConn(inc uint32) error {
	f.window += int64(inc)
	if f.window > maxWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	return nil
}

// update applies a WINDOW_UPDATE to the stream's window. mu held.
func (sf *streamFlow) update(inc uint32, streamID uint32) error {
	sf.sendWin += int64(inc)
	if sf.sendWin > maxWindow {
		return http2.StreamError{StreamID: streamID, Code: http2.ErrCodeFlowControl}
	}
	sf.wake.Broadcast()
	return nil
}

// wakeWaiting wakes the stream's writer if it waits for window. mu held.
func (sf *streamFlow) wakeWaiting() {
	if sf.waiting {
		sf.wake.Broadcast()
	}
}

// settings applies the peer's SETTINGS that both ends heed, then acknowledges them:
// a new initial window moves every stream's window by the change (RFC 9113 6.9.2),
// the frame size and header table size bound what this side writes. other gets each
// setting first (those only one end heeds); mu is the connection's mutex, not held.
//
// It all happens under the write lock, the acknowledgement written last: a writer the
// new window wakes writes after it. A peer may wait for the acknowledgement before
// it reads anything else (h2spec 6.9.2/1 does), and a DATA frame sent ahead of the
// acknowledgement was lost to it about once in sixty runs.
func (w *wire) settings(fr *http2.SettingsFrame, mu *sync.Mutex, f *sendFlow, streams iter.Seq[*streamFlow], other func(http2.Setting)) error {
	if fr.IsAck() {
		return nil
	}
	var perr error // a protocol error: no acknowledgement, and the writer stays usable
	werr := w.write(func() error {
		perr = fr.ForeachSetting(func(s http2.Setting) error {
			if err := s.Valid(); err != nil {
				return err
			}
			if other != nil {
				other(s)
			}
			switch s.ID {
			case http2.SettingInitialWindowSize:
				mu.Lock()
				defer mu.Unlock()
				delta := int64(s.Val) - f.initWin
				f.initWin = int64(s.Val)
				for sf := range streams {
					sf.sendWin += delta
					if sf.sendWin > maxWindow {
						return http2.ConnectionError(http2.ErrCodeFlowControl)
					}
					sf.wake.Broadcast()
				}
			case http2.SettingMaxFrameSize:
				w.peerMaxFrame.Store(s.Val)
			case http2.SettingHeaderTableSize:
				w.henc.setMaxSize(s.Val) // under wmu, as the encoder is used
			}
			return nil
		})
		if perr != nil {
			return nil
		}
		return w.fr.WriteSettingsAck()
	})
	if perr != nil {
		return perr
	}
	return werr
}

// recvWindow is a receive window, the connection's or a stream's: what the peer may
// still send, and what was taken (read, or dropped) and not yet given back. It is
// given back once half of it is taken, not for every frame. Guarded by the
// connection's mutex.
type recvWindow struct {
	size    int64 // as advertised
	left    int64
	unacked int64
}

func newRecvWindow(size uint32) recvWindow {
	return recvWindow{size: int64(size), left: int64(size)}
}

// admit counts a frame of n bytes against the window: false if it has not that much.
func (r *recvWindow) admit(n int64) bool {
	if n > r.left {
		return false
	}
	r.left -= n
	return true
}

// give records n bytes taken.
func (r *recvWindow) give(n int64) { r.unacked += n }

// update is the WINDOW_UPDATE increment to send now, 0 while under half the window.
func (r *recvWindow) update() uint32 {
	if r.unacked < r.size/2 {
		return 0
	}
	n := r.unacked
	r.unacked = 0
	r.left += n
	return uint32(n)
}

// inbound is a stream's received body, on either end: what DATA frames brought and
// its reader has not taken yet. Guarded by the connection's mutex.
type inbound struct {
	recvWin      recvWindow
	buf          []byte
	remoteClosed bool  // END_STREAM received
	bodyClosed   bool  // the reader closed the body
	declared     int64 // content-length, -1 if none
	received     int64
}

// data takes a DATA frame for the stream: its payload, and n, its flow-controlled
// length (the padding counts). What the reader will not read, and the padding, go
// back to conn at once. mu held.
func (in *inbound) data(conn *recvWindow, id uint32, payload []byte, n int64, end bool) error {
	if !in.recvWin.admit(n) {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	in.received += int64(len(payload))
	if in.declared >= 0 && (in.received > in.declared || (end && in.received != in.declared)) {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if in.bodyClosed {
		conn.give(n)
	} else {
		if in.buf == nil {
			in.buf = getChunk()
		}
		in.buf = append(in.buf, payload...)
		pad := n - int64(len(payload))
		conn.give(pad)
		in.recvWin.give(pad)
	}
	if end {
		in.remoteClosed = true
	}
	return nil
}

// read takes what is buffered into p, waiting on wake for data, the end, or failed
// to report an error. It returns the window updates to send (connection, stream).
// mu held.
func (in *inbound) read(conn *recvWindow, wake *sync.Cond, p []byte, failed func() error, closedErr error) (n int, connUpd, streamUpd uint32, err error) {
	for len(in.buf) == 0 && !in.remoteClosed && !in.bodyClosed {
		if err := failed(); err != nil {
			return 0, 0, 0, err
		}
		wake.Wait()
	}
	switch {
	case in.bodyClosed:
		return 0, 0, 0, closedErr
	case len(in.buf) == 0:
		putChunk(in.buf)
		in.buf = nil
		return 0, 0, 0, io.EOF
	}
	n = copy(p, in.buf)
	// What p did not take moves to the front: the buffer keeps its start, and
	// goes back to the pool when the body ends.
	in.buf = in.buf[:copy(in.buf, in.buf[n:])]
	conn.give(int64(n))
	in.recvWin.give(int64(n))
	connUpd = conn.update()
	if !in.remoteClosed && failed() == nil {
		streamUpd = in.recvWin.update()
	}
	return n, connUpd, streamUpd, nil
}

// close stops reading: what is buffered goes back to conn; it returns the connection
// update to send. mu held.
func (in *inbound) close(conn *recvWindow) uint32 {
	in.bodyClosed = true
	conn.give(int64(len(in.buf)))
	putChunk(in.buf)
	in.buf = nil
	return conn.update()
}

// Bodies are gathered in chunks from a pool: a stream's request or response body (in
// and out) is a buffer of its own while the stream lives, most of them small. The
// pool holds arrays, so that giving one back allocates nothing (a pointer to a slice
// header would be a new allocation each time); a buffer that grew past its chunk is
// left to the collector.
const chunkSize = 4 << 10

var chunks = sync.Pool{New: func() any { return new([chunkSize]byte) }}

func getChunk() []byte { return chunks.Get().(*[chunkSize]byte)[:0] }

func putChunk(b []byte) {
	if cap(b) != chunkSize {
		return
	}
	chunks.Put((*[chunkSize]byte)(b[:chunkSize]))
}

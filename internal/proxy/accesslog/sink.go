package accesslog

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// queueLen bounds the lines waiting for one file. A request never waits on the disk: when
// the queue is full the line is dropped and counted (Dropped), as a slow disk must not
// slow traffic.
const queueLen = 8192

// sink is one output file, shared by every logger that names its path, so lines from
// all listeners are written whole, one at a time, by one goroutine.
type sink struct {
	path    string
	ch      chan item
	refs    int // guarded by sinksMu
	dropped atomic.Uint64
	done    chan struct{}
}

// item is a line to write, a flush request, or the stop of the writer. The channel is
// never closed, so a logger still in use by a draining listener cannot panic on send:
// its late lines are dropped.
type item struct {
	line    *[]byte
	flushed chan struct{}
	stop    bool
}

var (
	sinksMu sync.Mutex
	sinks   = map[string]*sink{}
	dropped atomic.Uint64 // lines dropped by sinks that are gone
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// openSink returns the sink of path, opening the file on first use.
func openSink(path string) (*sink, error) {
	sinksMu.Lock()
	defer sinksMu.Unlock()
	if s, ok := sinks[path]; ok {
		s.refs++
		return s, nil
	}
	var w io.Writer
	var closer io.Closer
	switch path {
	case "/dev/stdout":
		w = os.Stdout
	case "/dev/stderr":
		w = os.Stderr
	default:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		w, closer = f, f
	}
	s := &sink{path: path, ch: make(chan item, queueLen), refs: 1, done: make(chan struct{})}
	sinks[path] = s
	go s.run(w, closer)
	return s, nil
}

// release drops one reference; the last one drains the queue and closes the file.
func (s *sink) release() {
	sinksMu.Lock()
	s.refs--
	last := s.refs == 0
	if last {
		delete(sinks, s.path)
		dropped.Add(s.dropped.Load())
	}
	sinksMu.Unlock()
	if last {
		s.ch <- item{stop: true}
		<-s.done
	}
}

func (s *sink) enqueue(b *[]byte) {
	select {
	case <-s.done:
		s.dropped.Add(1)
		putBuf(b)
	case s.ch <- item{line: b}:
	default:
		s.dropped.Add(1)
		putBuf(b)
	}
}

func (s *sink) flush() {
	done := make(chan struct{})
	select {
	case s.ch <- item{flushed: done}:
	case <-s.done:
		return
	}
	select {
	case <-done:
	case <-s.done:
	}
}

func (s *sink) run(w io.Writer, closer io.Closer) {
	defer close(s.done)
	bw := bufio.NewWriterSize(w, 64<<10)
	failed := false
	write := func(b []byte) {
		if _, err := bw.Write(b); err != nil && !failed {
			// Reported once: a full disk would otherwise flood stderr.
			failed = true
			fmt.Fprintf(os.Stderr, "accesslog: %s: %v\n", s.path, err)
		}
	}
	for it := range s.ch {
		if it.stop {
			break
		}
		if it.line != nil {
			write(*it.line)
			putBuf(it.line)
		}
		// Flush when the queue runs empty: lines reach the file promptly when traffic is
		// light and in big writes when it is heavy.
		if len(s.ch) == 0 || it.flushed != nil {
			if err := bw.Flush(); err != nil && !failed {
				failed = true
				fmt.Fprintf(os.Stderr, "accesslog: %s: %v\n", s.path, err)
			}
		}
		if it.flushed != nil {
			close(it.flushed)
		}
	}
	_ = bw.Flush()
	if closer != nil {
		_ = closer.Close()
	}
}

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // do not keep a rare huge line's buffer
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// Flush writes every queued line of every open log file. Call it before exit.
func Flush() {
	sinksMu.Lock()
	all := make([]*sink, 0, len(sinks))
	for _, s := range sinks {
		all = append(all, s)
	}
	sinksMu.Unlock()
	for _, s := range all {
		s.flush()
	}
}

// Dropped is the number of lines dropped because a log file's queue was full.
func Dropped() uint64 {
	sinksMu.Lock()
	defer sinksMu.Unlock()
	n := dropped.Load()
	for _, s := range sinks {
		n += s.dropped.Load()
	}
	return n
}

// Package watchdog runs a function once an exchange has lasted a given time, for the
// watches a proxy keeps on the exchanges of a connection (is the client still there,
// has the request's context ended) that most exchanges end before they are due.
//
// Setting a timer when an exchange begins and stopping it when it ends updates the
// runtime's timer heap twice per exchange. A Timer instead stays set while exchanges
// follow one another: when it fires before the exchange then in progress is due, it
// is set again for the rest; when no exchange is in progress, it is left unset.
package watchdog

import (
	"sync"
	"time"
)

// epoch is the origin of due times: durations since it are monotonic.
var epoch = time.Now()

// Timer watches one exchange at a time. Its function runs on a goroutine of its own.
type Timer struct {
	t  *time.Timer
	fn func()

	mu      sync.Mutex
	active  bool          // an exchange is watched
	fired   bool          // fn ran, or runs, for it
	due     time.Duration // when fn is due for it, since epoch
	next    time.Duration // when t fires, while pending
	pending bool
}

// New returns a Timer that runs fn for the exchanges it watches.
func New(fn func()) *Timer {
	w := &Timer{fn: fn}
	w.t = time.AfterFunc(time.Hour, w.tick)
	w.t.Stop()
	return w
}

// Start watches an exchange that begins: fn runs once it has lasted d, unless Stop
// comes first.
func (w *Timer) Start(d time.Duration) {
	due := time.Since(epoch) + d
	w.mu.Lock()
	w.active, w.fired, w.due = true, false, due
	if !w.pending || due < w.next {
		w.t.Reset(d)
		w.pending, w.next = true, due
	}
	w.mu.Unlock()
}

// Stop ends the watch of the exchange; it reports whether fn ran, or runs, for it.
func (w *Timer) Stop() (fired bool) {
	w.mu.Lock()
	fired = w.fired
	w.active, w.fired = false, false
	w.mu.Unlock()
	return fired
}

func (w *Timer) tick() {
	w.mu.Lock()
	w.pending = false
	if !w.active || w.fired {
		w.mu.Unlock()
		return
	}
	if left := w.due - time.Since(epoch); left > 0 {
		w.t.Reset(left)
		w.pending, w.next = true, w.due
		w.mu.Unlock()
		return
	}
	w.fired = true
	w.mu.Unlock()
	w.fn()
}

package watchdog

import (
	"testing"
	"time"
)

// TestTimer: fn runs for an exchange that lasts its delay, never before it is due, once;
// not for one stopped before; and for an exchange that starts while the timer is still
// set for the one before (it fires early for this one and must be set again).
func TestTimer(t *testing.T) {
	ran := make(chan time.Time, 4)
	w := New(func() { ran <- time.Now() })
	const d = 60 * time.Millisecond

	// Stopped before due: nothing runs, even when the timer fires later.
	w.Start(d)
	if w.Stop() {
		t.Fatal("Stop right after Start reports fn ran")
	}
	select {
	case <-ran:
		t.Fatal("fn ran for a stopped exchange")
	case <-time.After(2 * d):
	}

	// runsWhenDue starts an exchange and waits for fn, which must not run before d.
	runsWhenDue := func(what string) {
		t.Helper()
		start := time.Now()
		w.Start(d)
		select {
		case at := <-ran:
			if at.Sub(start) < d {
				t.Fatalf("%s: fn ran %v after Start, before its %v", what, at.Sub(start), d)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: fn did not run", what)
		}
	}

	// Lasts: fn runs once, not before d.
	runsWhenDue("an exchange that lasts")
	if !w.Stop() {
		t.Fatal("Stop does not report that fn ran")
	}

	// The timer set for an exchange that ended fires before the next one is due.
	w.Start(d)
	w.Stop()
	time.Sleep(d / 2)
	runsWhenDue("an exchange that began while the timer was set")
	w.Stop()

	// A shorter delay than the one the timer is set for moves it earlier.
	w.Start(time.Hour)
	w.Stop()
	w.Start(d)
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatalf("fn did not run within 5 s for a %v delay after a 1 h one", d)
	}
	w.Stop()
	select {
	case <-ran:
		t.Fatal("fn ran twice")
	case <-time.After(2 * d):
	}
}

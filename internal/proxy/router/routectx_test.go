package router

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// TestRouteCtx: the route timeout's lazy context behaves as
// context.WithTimeoutCause(parent, d, errGlobalTimeout) would, whether or not
// anything waited on it.
func TestRouteCtx(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "v")

	c := &routeCtx{parent: parent, deadline: time.Now().Add(time.Hour)}
	if c.Err() != nil || c.Value(ctxKey{}) != "v" || c.real.Load() != nil {
		t.Fatal("a fresh context is not live, or made its timer")
	}
	if dl, ok := c.Deadline(); !ok || dl != c.deadline {
		t.Fatal("deadline")
	}

	// Past the deadline, without anything having waited: Err and Cause say timeout.
	c = &routeCtx{parent: parent, deadline: time.Now().Add(-time.Millisecond)}
	if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(c), errGlobalTimeout) {
		t.Fatalf("past deadline: err %v cause %v", c.Err(), context.Cause(c))
	}

	// Waited on: Done closes at the deadline, with the cause.
	c = &routeCtx{parent: parent, deadline: time.Now().Add(20 * time.Millisecond)}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done never closed")
	}
	if !errors.Is(context.Cause(c), errGlobalTimeout) || c.Value(ctxKey{}) != "v" {
		t.Fatalf("cause %v", context.Cause(c))
	}
	c.cancel()

	// The parent's end reaches a derived context and Err, with the parent's cause.
	p, cancelP := context.WithCancelCause(parent)
	c = &routeCtx{parent: p, deadline: time.Now().Add(time.Hour)}
	derived, cancelD := context.WithCancel(c)
	defer cancelD()
	gone := errors.New("client gone")
	cancelP(gone)
	select {
	case <-derived.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("parent's cancel did not reach a derived context")
	}
	if !errors.Is(c.Err(), context.Canceled) || !errors.Is(context.Cause(c), gone) {
		t.Fatalf("err %v cause %v", c.Err(), context.Cause(c))
	}
	c.cancel()
}

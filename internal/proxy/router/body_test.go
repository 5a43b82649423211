package router

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReplayBody(t *testing.T) {
	rb := newReplayBody(strings.NewReader("hello world"), 64, 11)
	a1 := rb.attempt()
	buf := make([]byte, 5)
	if n, err := io.ReadFull(a1, buf); n != 5 || err != nil || string(buf) != "hello" {
		t.Fatalf("first attempt read %q %v", buf[:n], err)
	}
	// A retry replays what was read, then continues from the source.
	a2 := rb.attempt()
	if _, err := a1.Read(buf); !errors.Is(err, errStaleAttempt) {
		t.Fatalf("stale attempt read: %v", err)
	}
	all, err := io.ReadAll(a2)
	if err != nil || string(all) != "hello world" {
		t.Fatalf("retry read %q %v", all, err)
	}
	if b, ok := rb.complete(); !ok || string(b) != "hello world" {
		t.Fatalf("complete = %q %v", b, ok)
	}

	// Past the limit the body streams on but cannot be replayed.
	big := strings.Repeat("x", 100)
	rb = newReplayBody(strings.NewReader(big), 10, -1)
	a := rb.attempt()
	got, err := io.ReadAll(a)
	if err != nil || string(got) != big {
		t.Fatalf("over the limit: read %d bytes, %v", len(got), err)
	}
	if rb.replayable() {
		t.Fatal("replayable after overflow")
	}
	if _, ok := rb.complete(); ok {
		t.Fatal("complete after overflow")
	}
}

package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the server's end of it, over loopback.
func pair(t testing.TB) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	w, ok := Wrap(c).(*Conn)
	if !ok {
		if runtime.GOOS != "linux" {
			t.Skip("raw socket calls are Linux only")
		}
		t.Fatalf("Wrap(%T) did not wrap", c)
	}
	return w, s
}

// TestBothWaysLarge: 8 MB each way at once, more than the socket buffers hold, so
// writes meet EAGAIN and wait in the poller, and reads wait for data.
func TestBothWaysLarge(t *testing.T) {
	c, s := pair(t)
	const size = 8 << 20
	up, down := make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)
	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	var errs [4]error
	wg.Add(4)
	go func() { defer wg.Done(); _, errs[0] = c.Write(up) }()
	go func() { defer wg.Done(); _, errs[1] = s.Write(down) }()
	go func() { defer wg.Done(); gotUp, errs[2] = readN(s, size) }()
	go func() { defer wg.Done(); gotDown, errs[3] = readN(c, size) }()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatal("bytes differ")
	}
}

func readN(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

func TestEOF(t *testing.T) {
	c, s := pair(t)
	if _, err := s.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		t.Fatalf("%q %v", b, err)
	}
	if n, err := c.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("after EOF: %d %v", n, err)
	}
}

// TestReadDeadline: deadlines apply, and the error is the net package's timeout.
func TestReadDeadline(t *testing.T) {
	c, _ := pair(t)
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
	// A deadline in the past ends a read that is already waiting, as the HTTP
	// server's drain and the pool's cancellation use it.
	_ = c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 10)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	_ = c.SetReadDeadline(time.Unix(1, 0))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting read not woken by a past deadline")
	}
}

func TestCloseWhileReading(t *testing.T) {
	c, _ := pair(t)
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 10)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read not ended by Close")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestWriteToReset: writing to a peer that reset the connection fails with an error
// (EPIPE or ECONNRESET) instead of raising SIGPIPE.
func TestWriteToReset(t *testing.T) {
	c, s := pair(t)
	_ = s.(*net.TCPConn).SetLinger(0)
	s.Close() // RST
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = c.Write(make([]byte, 64<<10))
	}
	var oe *net.OpError
	if err == nil || !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("err = %v, want a write OpError", err)
	}
}

// echoN answers every n bytes s reads with the same bytes, until s fails.
func echoN(s net.Conn, n int) {
	buf := make([]byte, n)
	for {
		if _, err := io.ReadFull(s, buf); err != nil {
			return
		}
		if _, err := s.Write(buf); err != nil {
			return
		}
	}
}

// TestWriteReadExchanges: a peer that answers at once, so the answer often arrives
// while the write returns: every exchange gets its answer (a missed readiness edge
// would leave the wait to the deadline).
func TestWriteReadExchanges(t *testing.T) {
	c, s := pair(t)
	const size = 1024
	go echoN(s, size)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	q, a := make([]byte, size), make([]byte, size)
	for i := range 2000 {
		rand.Read(q)
		n, err := c.WriteRead(q, a)
		if err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, a[n:]); err != nil {
			t.Fatalf("exchange %d: rest of the answer: %v", i, err)
		}
		if !bytes.Equal(q, a) {
			t.Fatalf("exchange %d: answer differs", i)
		}
	}
}

// TestWriteReadLarge: a question larger than the socket buffers, from a peer that
// reads it all before answering: the write meets EAGAIN, finishes outside the read's
// wait, and the answer is still read.
func TestWriteReadLarge(t *testing.T) {
	c, s := pair(t)
	const size = 8 << 20
	go func() {
		if _, err := readN(s, size); err == nil {
			s.Write([]byte("ok"))
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	a := make([]byte, 16)
	n, err := c.WriteRead(make([]byte, size), a)
	if err != nil || string(a[:n]) != "ok" && string(a[:n]) != "o" {
		t.Fatalf("%q %v", a[:n], err)
	}
}

// TestWriteReadDeadline: a peer that never answers: the read deadline ends the wait.
func TestWriteReadDeadline(t *testing.T) {
	c, s := pair(t)
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.WriteRead([]byte("question"), make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
	// The question went out before the wait.
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := readN(s, len("question")); err != nil || string(got) != "question" {
		t.Fatalf("peer read %q %v", got, err)
	}
}

// TestWriteReadPeerClosed: a peer that closed before the question: the exchange ends
// with EOF, or with an error, not in a wait for an answer that cannot come.
func TestWriteReadPeerClosed(t *testing.T) {
	for _, reset := range []bool{false, true} {
		c, s := pair(t)
		if reset {
			_ = s.(*net.TCPConn).SetLinger(0)
		}
		s.Close()
		time.Sleep(20 * time.Millisecond) // the FIN or RST is in before the question
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.WriteRead([]byte("question"), make([]byte, 10))
		if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("reset=%v: %d %v, want EOF or a connection error", reset, n, err)
		}
	}
}

// TestWriteReadEmpty: with nothing to write it is a Read; with nowhere to read, a Write
// that reports no bytes read.
func TestWriteReadEmpty(t *testing.T) {
	c, s := pair(t)
	if n, err := c.WriteRead([]byte("only written"), nil); n != 0 || err != nil {
		t.Fatalf("nothing to read into: %d %v, want 0 <nil>", n, err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := readN(s, len("only written")); err != nil || string(got) != "only written" {
		t.Fatalf("peer read %q %v", got, err)
	}
	if _, err := s.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	a := make([]byte, 8)
	if n, err := c.WriteRead(nil, a); err != nil || string(a[:n]) != "back" && string(a[:n]) != "b" {
		t.Fatalf("nothing to write: %q %v", a[:n], err)
	}
}

// TestWriteReadWriteError: a write that fails is reported as the write's OpError.
func TestWriteReadWriteError(t *testing.T) {
	c, s := pair(t)
	_ = s.(*net.TCPConn).SetLinger(0)
	s.Close() // RST
	time.Sleep(20 * time.Millisecond)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = c.WriteRead(make([]byte, 64<<10), make([]byte, 10))
	}
	var oe *net.OpError
	if err == nil || !errors.As(err, &oe) || (oe.Op != "write" && oe.Op != "read") {
		t.Fatalf("err = %v, want an OpError", err)
	}
}

func TestWrapLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("a net.Pipe conn was wrapped")
	}
}

// BenchmarkPingPong: one 1 KB request and response over loopback per op, with the
// net package's calls and with sockio's, under GOMAXPROCS=1 as a sidecar runs.
func BenchmarkPingPong(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, name := range []string{"net", "sockio", "sockio-writeread"} {
		b.Run(name, func(b *testing.B) {
			c, s := pair(b)
			var conn io.ReadWriter = c.TCPConn
			if name != "net" {
				conn = c
			}
			go echoN(s, 1024)
			buf := make([]byte, 1024)
			b.SetBytes(2048)
			for b.Loop() {
				if name == "sockio-writeread" {
					n, err := c.WriteRead(buf, buf)
					if err == nil {
						_, err = io.ReadFull(c, buf[n:])
					}
					if err != nil {
						b.Fatal(err)
					}
					continue
				}
				if _, err := conn.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(conn, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

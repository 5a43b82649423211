package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// upstreams are the servers the client is tested against: net/http's HTTP/2 server
// (golang.org/x/net/http2, h2c) and this package's.
func upstreams(t *testing.T, h http.Handler, maxStreams uint32) map[string]string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http2.Server{MaxConcurrentStreams: maxStreams}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(nc, &http2.ServeConnOpts{Handler: h})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return map[string]string{
		"net/http": ln.Addr().String(),
		"weft":     serve(t, h, Config{MaxConcurrentStreams: maxStreams}).addr,
	}
}

func dialClient(t *testing.T, addr string) *ClientConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(nc, ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func roundTrip(cc *ClientConn, req *http.Request) (*http.Response, error) {
	if err := cc.Reserve(); err != nil {
		return nil, err
	}
	return cc.RoundTrip(req)
}

func TestClientExchange(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", fmt.Sprintf("%s %s %s %d %s", r.Method, r.Host, r.URL.RequestURI(), len(b), r.Header.Get("X-In")))
		w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
		if r.URL.Path == "/trailers" {
			w.Header().Set("Trailer", "Grpc-Status")
			w.Write(b)
			w.Header().Set("Grpc-Status", "7")
			return
		}
		w.Write(b)
	})
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16) // 300 KB: past the default windows
	for name, addr := range upstreams(t, h, 0) {
		t.Run(name, func(t *testing.T) {
			cc := dialClient(t, addr)
			for _, tc := range []struct {
				path string
				body []byte
				// the body as a reader net/http cannot tell the size of
				streamed bool
				// no content-length, though the body is all here (a gRPC request)
				noLength bool
			}{
				{"/get", nil, false, false},
				{"/small", []byte("hello"), false, false},
				{"/big", big, false, false},
				{"/streamed", big, true, false},
				{"/trailers", []byte("with trailers"), false, false},
				{"/nolength", []byte("hello"), false, true},
				{"/bignolength", big, false, true},
			} {
				var body io.Reader
				if tc.body != nil {
					body = bytes.NewReader(tc.body)
					if tc.streamed {
						body = io.MultiReader(bytes.NewReader(tc.body[:1000]), bytes.NewReader(tc.body[1000:]))
					}
				}
				method := "GET"
				if body != nil {
					method = "POST"
				}
				req, _ := http.NewRequest(method, "http://svc.test"+tc.path+"?x=1", body)
				req.Header.Set("X-In", "in")
				if tc.noLength {
					req.ContentLength = -1
				}
				resp, err := roundTrip(cc, req)
				if err != nil {
					t.Fatalf("%s: %v", tc.path, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !bytes.Equal(got, tc.body) {
					t.Errorf("%s: %d bytes back (err %v), want %d", tc.path, len(got), err, len(tc.body))
				}
				if got, want := resp.Header.Get("X-Length"), fmt.Sprint(len(tc.body)); tc.body != nil && !tc.noLength && !tc.streamed && got != want {
					t.Errorf("%s: server saw content-length %s, want %s", tc.path, got, want)
				}
				if got := resp.Header.Get("X-Length"); tc.noLength && got != "-1" {
					t.Errorf("%s: server saw content-length %s, want none", tc.path, got)
				}
				if want := fmt.Sprintf("%s svc.test %s?x=1 %d in", method, tc.path, len(tc.body)); resp.Header.Get("X-Got") != want {
					t.Errorf("%s: server saw %q, want %q", tc.path, resp.Header.Get("X-Got"), want)
				}
				if tc.path == "/trailers" && resp.Trailer.Get("Grpc-Status") != "7" {
					t.Errorf("trailers %v, want Grpc-Status 7", resp.Trailer)
				}
			}
			if n := cc.InFlight(); n != 0 {
				t.Errorf("%d streams in flight after every response was read", n)
			}
		})
	}
}

// TestClientConcurrency: streams share the connection up to the server's limit;
// Reserve refuses past it.
func TestClientConcurrency(t *testing.T) {
	var mu sync.Mutex
	var release chan struct{} // this subtest's
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ch := release
		mu.Unlock()
		<-ch
		io.WriteString(w, r.URL.Query().Get("i"))
	})
	for name, addr := range upstreams(t, h, 3) {
		t.Run(name, func(t *testing.T) {
			mu.Lock()
			release = make(chan struct{})
			mu.Unlock()
			cc := dialClient(t, addr)
			// The server's SETTINGS arrive right after the connection opens.
			deadline := time.Now().Add(5 * time.Second)
			for cc.Reserve() == nil {
				cc.Release()
				cc.mu.Lock()
				limit := cc.maxStreams
				cc.mu.Unlock()
				if limit == 3 || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 3)
			for i := range 3 {
				if err := cc.Reserve(); err != nil {
					t.Fatalf("reserve %d of 3: %v", i, err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest("GET", fmt.Sprintf("http://svc.test/?i=%d", i), nil)
					resp, err := cc.RoundTrip(req)
					if err != nil {
						errs <- err
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(b) != fmt.Sprint(i) {
						errs <- fmt.Errorf("request %d answered %q", i, b)
					}
				}()
			}
			if err := cc.Reserve(); err == nil {
				t.Error("a fourth stream was reserved past the server's limit of 3")
				cc.Release()
			}
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestClientResets: the server resetting a stream fails its body with a stream
// error; the caller giving up (context) resets it, and the server's handler sees it.
func TestClientResets(t *testing.T) {
	canceled := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/abort":
			w.Write([]byte("part"))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/hang":
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				canceled <- struct{}{}
			case <-time.After(10 * time.Second):
			}
		}
	})
	for name, addr := range upstreams(t, h, 0) {
		t.Run(name, func(t *testing.T) {
			cc := dialClient(t, addr)
			req, _ := http.NewRequest("GET", "http://svc.test/abort", nil)
			resp, err := roundTrip(cc, req)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			var se http2.StreamError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), "stream error") {
				t.Errorf("aborted body: %v, want a stream error", err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			req, _ = http.NewRequestWithContext(ctx, "GET", "http://svc.test/hang", nil)
			resp, err = roundTrip(cc, req)
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Error("body of a canceled request ended cleanly")
			}
			resp.Body.Close()
			select {
			case <-canceled:
			case <-time.After(5 * time.Second):
				t.Error("the server's handler did not see the reset")
			}
			if cc.Err() != nil {
				t.Errorf("stream resets broke the connection: %v", cc.Err())
			}
		})
	}
}

// TestClientGoAway: a server that shuts down lets the stream in flight finish; the
// connection then takes no new request.
func TestClientGoAway(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "done")
	}), Config{})
	cc := dialClient(t, s.addr)
	got := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://svc.test/", nil)
		resp, err := roundTrip(cc, req)
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	select {
	case <-entered: // the server has the stream
	case <-time.After(10 * time.Second):
		t.Fatal("request not started")
	}
	s.conn(0).Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for cc.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("GOAWAY not seen")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cc.Reserve(); err == nil {
		t.Error("a connection going away took a new request")
	}
	close(release)
	if b := <-got; b != "done" {
		t.Errorf("stream in flight at GOAWAY: %q, want it answered", b)
	}
}

// TestClientResponseBeforeRequestEnds: a server that answers before the request body
// ends, and then resets the stream (RST_STREAM NO_ERROR, as gRPC servers and this
// package's do to stop the upload), leaves a complete response: its body is read
// whole, not cut off by the reset.
func TestClientResponseBeforeRequestEnds(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		io.ReadFull(r.Body, buf) // the first message only
		w.Header().Set("Content-Type", "application/grpc")
		w.Write(bytes.Repeat(buf, 200))
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	})
	want := bytes.Repeat([]byte("hello"), 200)
	for name, addr := range upstreams(t, h, 0) {
		t.Run(name, func(t *testing.T) {
			cc := dialClient(t, addr)
			for i := range 50 {
				pr, pw := io.Pipe()
				go pw.Write([]byte("hello")) // and never ends
				req, _ := http.NewRequest("POST", "http://svc.test/", pr)
				resp, err := roundTrip(cc, req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				pw.Close()
				if err != nil || !bytes.Equal(got, want) || resp.Trailer.Get("Grpc-Status") != "0" {
					t.Fatalf("exchange %d: %d bytes (err %v), trailers %v; want %d bytes and Grpc-Status 0", i, len(got), err, resp.Trailer, len(want))
				}
			}
		})
	}
}

// TestClientCancelWhileWaiting: a request whose context ends while it waits for the
// response head returns with the context's cause and resets the stream: a near
// deadline is watched from the start, a later cancellation within two watch ticks.
func TestClientCancelWhileWaiting(t *testing.T) {
	resets := make(chan struct{}, 4)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
		resets <- struct{}{}
	}), Config{})
	cc := dialClient(t, s.addr)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc.test/", nil)
	start := time.Now()
	if _, err := roundTrip(cc, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("near deadline: err %v, want DeadlineExceeded", err)
	}
	// Watched at the ticks instead, it would return after two of them at the soonest.
	if d := time.Since(start); d >= 2*watchDelay {
		t.Errorf("near deadline of 10 ms: returned after %v, want it watched from the start", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://svc.test/", nil)
	time.AfterFunc(10*time.Millisecond, cancel)
	start = time.Now()
	if _, err := roundTrip(cc, req); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: err %v, want Canceled", err)
	}
	if d := time.Since(start); d > 6*watchDelay {
		t.Errorf("canceled after 10 ms: returned after %v, want within two ticks of %v", d, watchDelay)
	}
	for i := range 2 {
		select {
		case <-resets:
		case <-time.After(5 * time.Second):
			t.Fatalf("the server saw %d of 2 resets", i)
		}
	}
	if n := cc.InFlight(); n != 0 {
		t.Errorf("%d streams in flight after both gave up", n)
	}
}

// TestClientReleased: a response body reports its request released (the router then
// reuses the request's memory) only once the stream is over both ways and nothing of
// the connection can read the request again: not before the body's end, not while the
// request body's sender runs, not when the request's context was watched.
func TestClientReleased(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			buf := make([]byte, 5)
			io.ReadFull(r.Body, buf) // and answers while the rest still comes
		} else {
			io.Copy(io.Discard, r.Body)
		}
		io.WriteString(w, "ok")
	})
	released := func(resp *http.Response) bool {
		r, ok := resp.Body.(interface{ Released() bool })
		return ok && r.Released()
	}
	for name, addr := range upstreams(t, h, 0) {
		t.Run(name, func(t *testing.T) {
			cc := dialClient(t, addr)
			// Bodyless, a body sent with the head, a streamed body.
			pr, pw := io.Pipe()
			go func() { pw.Write(make([]byte, 100)); pw.Close() }()
			for i, body := range []io.Reader{nil, strings.NewReader("hello"), pr} {
				req, _ := http.NewRequest("POST", "http://svc.test/", body)
				resp, err := roundTrip(cc, req)
				if err != nil {
					t.Fatal(err)
				}
				if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
					t.Fatalf("request %d: %q %v", i, b, err)
				}
				// The streamed body's sender may still be ending the stream.
				deadline := time.Now().Add(5 * time.Second)
				for !released(resp) && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if !released(resp) {
					t.Fatalf("request %d: not released after its exchange", i)
				}
			}

			// The answer came while the request body still flows.
			pr, pw = io.Pipe()
			go pw.Write([]byte("hello")) // and no more until the response was read
			req, _ := http.NewRequest("POST", "http://svc.test/early", pr)
			resp, err := roundTrip(cc, req)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			if released(resp) {
				t.Fatal("released while the request body's sender runs")
			}
			resp.Body.Close()
			pw.Close()

			// A near deadline: the context is watched from the start.
			ctx, cancel := context.WithTimeout(context.Background(), watchDelay/2)
			defer cancel()
			req, _ = http.NewRequestWithContext(ctx, "GET", "http://svc.test/", nil)
			resp, err = roundTrip(cc, req)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			if released(resp) {
				t.Fatal("released although its context was watched")
			}
		})
	}
}

// TestClientRecycle: a released response's stream serves a later request of its
// connection, cleared (no header, trailer or body of the earlier exchange shows); a
// body that is not released is not recycled; under concurrent requests, some of them
// reset by the server, every response is its own request's.
func TestClientRecycle(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Id")
		if strings.HasSuffix(id, "7") {
			panic(http.ErrAbortHandler) // RST_STREAM
		}
		if r.URL.Path == "/streamed" {
			b, _ := io.ReadAll(r.Body)
			id += " " + string(b)
		}
		if r.URL.Path == "/first" {
			w.Header().Set("X-First", "1")
			w.Header().Set("Trailer", "X-Tr")
		}
		io.WriteString(w, "answer to "+id)
		if r.URL.Path == "/first" {
			w.Header().Set("X-Tr", "t")
		}
	})
	type recycler interface {
		Released() bool
		Recycle()
	}
	get := func(t *testing.T, cc *ClientConn, path, id string) (*http.Response, string, error) {
		req, _ := http.NewRequest("GET", "http://svc.test"+path, nil)
		req.Header.Set("X-Id", id)
		resp, err := roundTrip(cc, req)
		if err != nil {
			return nil, "", err
		}
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}
	for name, addr := range upstreams(t, h, 0) {
		t.Run(name, func(t *testing.T) {
			cc := dialClient(t, addr)
			first, body, err := get(t, cc, "/first", "a")
			if err != nil || body != "answer to a" || first.Trailer.Get("X-Tr") != "t" {
				t.Fatalf("first: %q %v, trailer %v", body, err, first.Trailer)
			}
			r := first.Body.(recycler)
			if !r.Released() {
				t.Fatal("first: not released")
			}
			r.Recycle()
			// Its request body streamed after the head (the stream's end comes from the
			// body's sender, before or after the response).
			pr, pw := io.Pipe()
			go func() { io.WriteString(pw, "hello"); pw.Close() }()
			req, _ := http.NewRequest("POST", "http://svc.test/streamed", pr)
			req.Header.Set("X-Id", "b")
			var second *http.Response
			done := make(chan error, 1)
			go func() {
				var err error
				second, err = roundTrip(cc, req)
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("second: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("second: no response in 10 s")
			}
			if b, err := io.ReadAll(second.Body); err != nil || string(b) != "answer to b hello" {
				t.Fatalf("second: %q %v", b, err)
			}
			if second != first {
				t.Error("the recycled stream's response was not reused")
			}
			if second.Header.Get("X-First") != "" || second.Trailer != nil || second.Request.Header.Get("X-Id") != "b" {
				t.Errorf("second carries the first's: header %v, trailer %v, request id %q",
					second.Header, second.Trailer, second.Request.Header.Get("X-Id"))
			}
			// Not released (its context is watched): kept out of reuse.
			ctx, cancel := context.WithTimeout(context.Background(), watchDelay/2)
			defer cancel()
			req, _ = http.NewRequestWithContext(ctx, "GET", "http://svc.test/", nil)
			watched, err := roundTrip(cc, req)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(watched.Body)
			watched.Body.(recycler).Recycle()
			if third, _, err := get(t, cc, "/", "c"); err != nil || third == watched {
				t.Errorf("a body not released was recycled (%v)", err)
			}

			// Concurrent requests, every tenth reset by the server.
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 100 {
						id := fmt.Sprintf("%d-%d", g, i)
						resp, body, err := get(t, cc, "/", id)
						if strings.HasSuffix(id, "7") {
							if err == nil {
								errs <- fmt.Errorf("%s: no error from a reset stream", id)
								return
							}
							continue
						}
						if err != nil || body != "answer to "+id || resp.Request.Header.Get("X-Id") != id {
							errs <- fmt.Errorf("%s: %q %v", id, body, err)
							return
						}
						if r := resp.Body.(recycler); r.Released() {
							r.Recycle()
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := cc.InFlight(); n != 0 {
				t.Errorf("%d streams in flight at the end", n)
			}
		})
	}
}

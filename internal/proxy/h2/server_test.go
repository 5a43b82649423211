package h2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// server serves h on a loopback listener with weft's codec, plaintext (h2c with prior
// knowledge); it returns the address and the connections it served.
type server struct {
	addr  string
	mu    sync.Mutex
	conns []*Conn
}

func serve(t *testing.T, h http.Handler, cfg Config) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String()}
	cfg.Handler = h
	var wg sync.WaitGroup
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c := NewConn(nc, nil, cfg)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); c.Serve() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *server) conn(i int) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[i]
}

func client(t *testing.T) *http.Client {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func TestServeExchange(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Cookie", r.Header.Get("Cookie"))
		w.Header().Set("X-Len", fmt.Sprint(r.ContentLength))
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		w.Write(b)
	}), Config{})
	c := client(t)
	req, _ := http.NewRequest("POST", "http://"+s.addr+"/a/b?q=1", strings.NewReader("hello"))
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for k, want := range map[string]string{
		"X-Method": "POST", "X-Path": "/a/b?q=1", "X-Host": s.addr, "X-Proto": "HTTP/2.0",
		"X-Cookie": "a=1; b=2", "X-Len": "5", "Content-Length": "5",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if string(body) != "hello" || resp.StatusCode != 200 || resp.Header.Get("Date") == "" {
		t.Errorf("status %d body %q date %q", resp.StatusCode, body, resp.Header.Get("Date"))
	}
}

// TestServeAdoptHeader: a handler's map becomes the response's header when nothing was
// set in the writer's own; after a Set it is refused and the writer's map is sent.
func TestServeAdoptHeader(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := w.(interface{ AdoptHeader(http.Header) bool })
		if r.URL.Path == "/set-first" {
			w.Header().Set("X-Own", "1")
		}
		adopted := a.AdoptHeader(http.Header{"X-Adopted": {"yes"}})
		if adopted != (r.URL.Path == "/adopt") {
			t.Errorf("%s: AdoptHeader = %v", r.URL.Path, adopted)
		}
		w.WriteHeader(http.StatusAccepted)
		if a.AdoptHeader(http.Header{"X-Late": {"1"}}) {
			t.Errorf("%s: adopted after WriteHeader", r.URL.Path)
		}
	}), Config{})
	c := client(t)
	for path, want := range map[string][2]string{"/adopt": {"yes", ""}, "/set-first": {"", "1"}} {
		resp, err := c.Get("http://" + s.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Adopted") != want[0] || resp.Header.Get("X-Own") != want[1] || resp.Header.Get("X-Late") != "" {
			t.Errorf("%s: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
}

// TestServeLargeBodies: bodies several times the windows go both ways, in order.
func TestServeLargeBodies(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := io.Copy(w, r.Body); err != nil {
			t.Errorf("copy: %v", err)
		}
	}), Config{StreamWindow: 65535, ConnWindow: 65535})
	c := client(t)
	want := make([]byte, 3<<20+17)
	for i := range want {
		want[i] = byte(i * 7)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Post("http://"+s.addr+"/echo", "application/octet-stream", bytes.NewReader(want))
			if err != nil {
				t.Error(err)
				return
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("echo: %d bytes (err %v), want %d equal bytes", len(got), err, len(want))
			}
		}()
	}
	wg.Wait()
}

// TestServeTrailers: trailers set after the body (TrailerPrefix, as the router sets
// them, whatever the name's case) and declared ones reach the client, once each when
// set both ways; a connection-specific one does not; a gRPC trailers-only response
// (status in the head, no body) is one HEADERS frame.
func TestServeTrailers(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/prefix":
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(200)
			w.Write([]byte("msg"))
			w.(http.Flusher).Flush()
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Grpc-Message", "ok")
			w.Header()[http.TrailerPrefix+"x-lower"] = []string{"l"}
			w.Header()[http.TrailerPrefix+"Connection"] = []string{"close"}
		case "/declared":
			w.Header().Set("Trailer", "X-Sum")
			w.Write([]byte("data"))
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Sum", "43")
		case "/many": // more than the writer notes: found again from the map
			w.Write([]byte("data"))
			for i := range 6 {
				w.Header().Set(http.TrailerPrefix+fmt.Sprintf("X-T%d", i), fmt.Sprint(i))
			}
		case "/only":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "5")
			w.WriteHeader(200)
		}
	}), Config{})
	c := client(t)
	for path, want := range map[string]map[string]string{
		"/prefix":   {"Grpc-Status": "0", "Grpc-Message": "ok", "X-Lower": "l"},
		"/declared": {"X-Sum": "42"},
		"/many":     {"X-T0": "0", "X-T1": "1", "X-T2": "2", "X-T3": "3", "X-T4": "4", "X-T5": "5"},
		"/only":     {},
	} {
		resp, err := c.Get("http://" + s.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		for k, v := range want {
			if got := resp.Trailer[k]; len(got) != 1 || got[0] != v {
				t.Errorf("%s: trailer %s = %q, want [%q] (trailers %v)", path, k, got, v, resp.Trailer)
			}
		}
		if len(resp.Trailer) != len(want) {
			t.Errorf("%s: trailers %v, want %v", path, resp.Trailer, want)
		}
		if path == "/only" && (resp.Header.Get("Grpc-Status") != "5" || len(resp.Trailer) != 0) {
			t.Errorf("trailers-only: head %v trailers %v", resp.Header, resp.Trailer)
		}
	}
}

// TestServeConcurrentStreams: many streams at once on one connection, each answered
// with its own body.
func TestServeConcurrentStreams(t *testing.T) {
	var peak, cur atomic.Int32
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		cur.Add(-1)
		io.WriteString(w, r.URL.Query().Get("i"))
	}), Config{})
	c := client(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(fmt.Sprintf("http://%s/?i=%d", s.addr, i))
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != fmt.Sprint(i) {
				t.Errorf("request %d answered %q", i, b)
			}
		}()
	}
	wg.Wait()
	if n := s.count(); n != 1 || peak.Load() < 2 {
		t.Errorf("%d connections, %d streams at once at peak: want 1 connection and concurrency", n, peak.Load())
	}
}

// TestServeClientReset: a client that gives up resets the stream, and the handler's
// context ends.
func TestServeClientReset(t *testing.T) {
	ended := make(chan error, 1)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			ended <- context.Cause(r.Context())
		case <-time.After(10 * time.Second):
			ended <- errors.New("context not canceled")
		}
	}), Config{})
	c := client(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.addr+"/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	if err := <-ended; !errors.Is(err, errStreamReset) {
		t.Errorf("handler context ended with %v, want the reset", err)
	}
}

// TestServeAbort: a handler that aborts after the head resets the stream: the client
// sees a broken body, not a complete one.
func TestServeAbort(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}), Config{})
	resp, err := client(t).Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	var se http2.StreamError
	if !errors.As(err, &se) || se.Code != http2.ErrCodeInternal {
		t.Errorf("body read error %v, want a stream reset with INTERNAL_ERROR", err)
	}
}

// TestServeIdleAndShutdown: a connection with no stream closes after the idle
// timeout; Shutdown lets the open stream finish, then closes.
func TestServeIdleAndShutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}), Config{IdleTimeout: 300 * time.Millisecond})
	c := client(t)
	get := func(path string) error {
		resp, err := c.Get("http://" + s.addr + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && string(b) != "ok" {
			err = fmt.Errorf("body %q", b)
		}
		return err
	}
	if err := get("/"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.conn(0).Done():
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection still open after 5 s (idle timeout 300 ms)")
	}

	slow := make(chan error, 1)
	go func() { slow <- get("/slow") }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s.count() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second connection not made")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c2 := s.conn(1)
	select {
	case <-entered: // the stream is open
	case err := <-slow:
		t.Fatalf("slow request ended before its handler ran: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("slow request's handler did not start")
	}
	c2.Shutdown()
	select {
	case <-c2.Done():
		t.Fatal("connection closed under an open stream")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("stream open at shutdown: %v", err)
	}
	select {
	case <-c2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open after its last stream ended")
	}
}

// TestServeWholeRequest: a request whose HEADERS and DATA arrive together is Buffered
// at its handler (an HTTP/1.1 upstream then gets head and body in one write); one whose
// body is still coming is not. (That handlers wait for the frames already read is
// TestFrameBuffered's: this test passes without that wait, since the serve goroutine
// usually handles the DATA frame before a new handler runs.)
func TestServeWholeRequest(t *testing.T) {
	got := make(chan bool, 2)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Body.(interface{ Buffered() bool }).Buffered()
		io.Copy(io.Discard, r.Body)
	}), Config{})
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nc)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	head := func(id uint32, end bool) {
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: end})
	}
	buf.WriteString(Preface)
	fr.WriteSettings()
	head(1, false)
	fr.WriteData(1, true, []byte("whole body"))
	if _, err := nc.Write(buf.Bytes()); err != nil { // one write: the server reads it at once
		t.Fatal(err)
	}
	if !<-got {
		t.Error("a request that arrived whole was not Buffered at its handler")
	}
	buf.Reset()
	head(3, false)
	fr.WriteData(3, false, []byte("part"))
	nc.Write(buf.Bytes())
	if <-got {
		t.Error("a request whose body is still coming was Buffered")
	}
	buf.Reset()
	fr.WriteData(3, true, []byte("rest"))
	nc.Write(buf.Bytes())
}

// TestFrameBuffered: the serve loop starts the handlers it holds only before a read
// that may wait, that is when the next frame is not all in the read buffer.
func TestFrameBuffered(t *testing.T) {
	var frames bytes.Buffer
	fr := http2.NewFramer(&frames, nil)
	fr.WriteData(1, false, []byte("0123456789"))
	fr.WriteData(1, true, []byte("abc"))
	all := frames.Bytes() // 9+10, then 9+3 bytes
	for _, tc := range []struct {
		have int
		want bool
	}{
		{0, false}, {5, false}, {9, false}, {18, false}, {19, true}, {25, true},
	} {
		br := bufio.NewReader(bytes.NewReader(all[:tc.have]))
		br.Peek(tc.have)
		c := &Conn{br: br}
		if got := c.frameBuffered(); got != tc.want {
			t.Errorf("%d bytes buffered: frameBuffered %v, want %v", tc.have, got, tc.want)
		}
	}
}

// TestServeRapidReset: a client that opens and resets streams while their handlers
// still run is cut off (GOAWAY ENHANCE_YOUR_CALM) once twice the stream limit of
// handlers run, instead of starting handlers without bound.
func TestServeRapidReset(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var started atomic.Int32
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-release // a handler that does not watch its context
	}), Config{MaxConcurrentStreams: 2})
	nc, fr := rawConn(t, s.addr)
	go func() {
		for id := uint32(1); id < 200; id += 2 {
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: getBlock(), EndHeaders: true, EndStream: true}) != nil ||
				fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY (read: %v); %d handlers started", err, started.Load())
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			break
		}
	}
	if n := started.Load(); n > 4 {
		t.Errorf("%d handlers started, want at most twice the limit of 2", n)
	}
}

// TestServeStreamReuse: after an exchange its handler declared clean (ReleaseExchange),
// the stream, its request included, serves the connection's next stream; a body kept
// from the earlier request reads nothing of the later one's, and each request sees
// its own method, path, header and body.
func TestServeStreamReuse(t *testing.T) {
	var mu sync.Mutex
	var kept io.Reader
	reqs := map[*http.Request]bool{}
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reqs[r] = true
		old := kept
		kept = r.Body
		mu.Unlock()
		if old != nil {
			if n, err := old.Read(make([]byte, 64)); n > 0 || err == nil {
				t.Errorf("%s: an earlier request's body read %d bytes (err %v)", r.URL.Path, n, err)
			}
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		w.Header().Set("X-Got", fmt.Sprintf("%s %s %s %s", r.Method, r.URL.Path, r.Header.Get("X-N"), b))
		w.(interface{ ReleaseExchange() }).ReleaseExchange()
	}), Config{})
	c := client(t)
	for i := range 20 {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s/p%d", s.addr, i), strings.NewReader(fmt.Sprintf("body %d", i)))
		req.Header.Set("X-N", fmt.Sprint(i))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got, want := resp.Header.Get("X-Got"), fmt.Sprintf("POST /p%d %d body %d", i, i, i); got != want {
			t.Fatalf("request %d: %q, want %q", i, got, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reqs) >= 20 {
		t.Fatalf("20 requests in %d request structs: the streams were not reused", len(reqs))
	}
}

// TestServeShutdownAsLastStreamEnds: when the connection's last stream ends while
// Shutdown is about to write its GOAWAY, the GOAWAY still reaches the client before the
// connection closes (the stream's end used to close it first).
func TestServeShutdownAsLastStreamEnds(t *testing.T) {
	release := make(chan struct{})
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	}), Config{})
	nc, fr := rawConn(t, s.addr)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: getBlock(), EndHeaders: true, EndStream: true})
	deadline := time.Now().Add(10 * time.Second)
	for s.count() == 0 || s.conn(0).openStreams() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream did not open")
		}
		time.Sleep(time.Millisecond)
	}
	c := s.conn(0)

	testHookShutdown = func(c *Conn) {
		close(release) // the stream ends now, between the refusal and the GOAWAY
		for c.openStreams() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		select {
		case <-c.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer func() { testHookShutdown = nil }()
	c.Shutdown()

	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ga *http2.GoAwayFrame
	var body string
	for ga == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("the connection ended without GOAWAY: %v", err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			body += string(f.Data())
		case *http2.GoAwayFrame:
			ga = f
		}
	}
	if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Errorf("GOAWAY %v, last stream %d; want NO_ERROR, 1", ga.ErrCode, ga.LastStreamID)
	}
	if body != "ok" {
		t.Errorf("stream 1's body %q, want ok", body)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Error("the connection was not closed after its GOAWAY, with no stream open")
	}
}

// openStreams is the number of streams open or with a handler still running.
func (c *Conn) openStreams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running + len(c.streams)
}

// rawConn is a client connection that speaks frames: the preface and SETTINGS are
// sent; it closes at the test's end.
func rawConn(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fr := http2.NewFramer(nc, nc)
	nc.Write([]byte(Preface))
	fr.WriteSettings()
	return nc, fr
}

// getBlock is the header block of a GET / request (literals, no dynamic table).
func getBlock() []byte {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
	}
	return hb.Bytes()
}

// TestServeConnectionWindowUpdate: a response held back by the connection's window
// alone (the client allows streams 1 MB, the connection its initial 65,535 bytes)
// goes on when a WINDOW_UPDATE for the connection, and none for the stream, arrives.
func TestServeConnectionWindowUpdate(t *testing.T) {
	body := bytes.Repeat([]byte("w"), 100_000)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}), Config{})
	nc, fr := rawConn(t, s.addr)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: getBlock(), EndHeaders: true, EndStream: true})
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, updated := 0, false
	for got < len(body) {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d bytes of %d (connection window given back: %v): %v", got, len(body), updated, err)
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			got += len(d.Data())
			if got == 65535 && !updated {
				// The connection's window is spent, the stream's is not.
				fr.WriteWindowUpdate(0, 1<<20)
				updated = true
			}
			if got > 65535 && !updated {
				t.Fatalf("%d bytes sent past the connection's window of 65,535", got)
			}
		}
	}
}

// TestServeIdleTimeoutFromLastStream: the idle timeout counts from the end of the last
// stream, not from the first time the connection went idle, and a stream open when the
// timer fires keeps the connection; once it ends, the connection closes a timeout
// later.
func TestServeIdleTimeoutFromLastStream(t *testing.T) {
	// The sleeps are two thirds of the timeout: a request may take up to a third of it
	// (300 ms, under the race detector on a loaded machine) before the test misreads.
	const timeout = 900 * time.Millisecond
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(timeout + timeout/2)
		}
		io.WriteString(w, "ok")
	}), Config{IdleTimeout: timeout})
	c := client(t)
	get := func(path string) {
		t.Helper()
		resp, err := c.Get("http://" + s.addr + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n := s.count(); n != 1 {
			t.Fatalf("%s: %d connections, want the first kept", path, n)
		}
	}
	get("/")
	time.Sleep(timeout * 2 / 3)
	get("/") // idle again from here: the timer's first firing must not close
	time.Sleep(timeout * 2 / 3)
	get("/")
	get("/slow") // open past the timer's next firing
	ended := time.Now()
	select {
	case <-s.conn(0).Done():
		// The server's stream ended a little before the client had read it all.
		if idle := time.Since(ended); idle < timeout-timeout/20 {
			t.Errorf("closed %v after the last stream, before the idle timeout of %v", idle, timeout)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection still open after 5 s")
	}
}

// TestServeSettingsAckBeforeData: when a new initial window lets a blocked response
// go on, the SETTINGS acknowledgement goes out before its DATA (a peer may read
// nothing else until the acknowledgement: h2spec 6.9.2/1 does). 100 connections, the
// response held at a window of 0 until SETTINGS raises it to 1.
func TestServeSettingsAckBeforeData(t *testing.T) {
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}), Config{})
	for i := range 100 {
		nc, fr := rawConn(t, s.addr)
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		next := func() http2.Frame {
			t.Helper()
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			return f
		}
		// The server's SETTINGS and WINDOW_UPDATE, and two acknowledgements (rawConn's
		// SETTINGS and this one).
		for acks := 0; acks < 2; {
			if sf, ok := next().(*http2.SettingsFrame); ok && sf.IsAck() {
				acks++
			}
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: getBlock(), EndHeaders: true, EndStream: true})
		for { // the head; the body waits for window
			f := next()
			if _, ok := f.(*http2.DataFrame); ok {
				t.Fatalf("connection %d: DATA at a window of 0", i)
			}
			if _, ok := f.(*http2.HeadersFrame); ok {
				break
			}
		}
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		for {
			f := next()
			if _, ok := f.(*http2.DataFrame); ok {
				t.Fatalf("connection %d: DATA before the SETTINGS acknowledgement", i)
			}
			if sf, ok := f.(*http2.SettingsFrame); ok && sf.IsAck() {
				break
			}
		}
		if d, ok := next().(*http2.DataFrame); !ok || len(d.Data()) != 1 {
			t.Fatalf("connection %d: no DATA of 1 byte after the acknowledgement", i)
		}
		nc.Close()
	}
}

package pool

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/stats"
)

func TestLimitsTable(t *testing.T) {
	cases := []struct {
		name string
		th   Thresholds
		cx   int64 // connections that fit
		rq   int64
		pend int64
		rt   int64
	}{
		{"defaults", DefaultThresholds(), DefaultMaxConnections, DefaultMaxRequests, DefaultMaxPendingRequests, DefaultMaxRetries},
		{"small", Thresholds{MaxConnections: 2, MaxPendingRequests: 3, MaxRequests: 4, MaxRetries: 1}, 2, 4, 3, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := NewStats(stats.New(), "c")
			l := NewLimits(tc.th, st)
			count := func(take func() bool) int64 {
				var n int64
				for n < 5000 && take() {
					n++
				}
				return n
			}
			if n := count(l.acquireConn); n != tc.cx {
				t.Errorf("connections %d, want %d", n, tc.cx)
			}
			if n := count(l.AcquireRequest); n != tc.rq {
				t.Errorf("requests %d, want %d", n, tc.rq)
			}
			if n := count(l.acquirePending); n != tc.pend {
				t.Errorf("pending %d, want %d", n, tc.pend)
			}
			if n := count(func() bool { _, ok := l.TryRetry(); return ok }); n != tc.rt {
				t.Errorf("retries %d, want %d", n, tc.rt)
			}
			if st.CxOpen.Value() != 1 || st.RqOpen.Value() != 1 || st.RqPendingOpen.Value() != 1 || st.RqRetryOpen.Value() != 1 {
				t.Error("circuit breaker open gauges not set at the limit")
			}
			if st.RqPendingOverflow.Value() != 2 || st.RqRetryOverflow.Value() != 1 {
				t.Errorf("overflow counters: pending %d retry %d", st.RqPendingOverflow.Value(), st.RqRetryOverflow.Value())
			}
			l.releaseConn()
			if st.CxOpen.Value() != 0 {
				t.Error("cx_open still set after a release")
			}
		})
	}
}

func newPool(t *testing.T, cfg Config, h http.HandlerFunc) (*Pool, *httptest.Server) {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	cfg.Limits = NewLimits(DefaultThresholds(), NewStats(stats.New(), "t"))
	if err := cfg.Init(); err != nil {
		t.Fatal(err)
	}
	p := New(&cfg, s.Listener.Addr().String())
	t.Cleanup(p.Close)
	return p, s
}

func get(t *testing.T, p *Pool) error {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://svc.test/", nil)
	resp, err := p.RoundTrip(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

func TestPoolMaxIdle(t *testing.T) {
	release := make(chan struct{})
	var entered sync.WaitGroup
	p, _ := newPool(t, Config{MaxIdle: 1}, func(w http.ResponseWriter, r *http.Request) {
		entered.Done()
		<-release
	})
	entered.Add(3)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); get(t, p) }()
	}
	entered.Wait()
	if n := p.ActiveConnections(); n != 3 {
		t.Fatalf("%d connections for 3 concurrent requests", n)
	}
	close(release)
	wg.Wait()
	if n := p.ActiveConnections(); n != 1 {
		t.Fatalf("%d connections kept with MaxIdle 1", n)
	}
}

func TestPoolCloseFailsWaiters(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	defer s.Close()
	defer close(release)
	th := DefaultThresholds()
	th.MaxConnections = 1
	cfg := Config{Limits: NewLimits(th, NewStats(stats.New(), "w"))}
	if err := cfg.Init(); err != nil {
		t.Fatal(err)
	}
	p := New(&cfg, s.Listener.Addr().String())
	go get(t, p)
	<-entered
	errc := make(chan error, 1)
	go func() { errc <- get(t, p) }()
	time.Sleep(50 * time.Millisecond) // let it wait for the connection
	p.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("waiter got %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not released by Close")
	}
}

func TestDialDirectUncounted(t *testing.T) {
	p, s := newPool(t, Config{}, func(w http.ResponseWriter, r *http.Request) {})
	conn, err := p.cfg.DialDirect(context.Background(), s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if cx, _, _, _ := p.cfg.Limits.Active(); cx != 0 {
		t.Fatalf("a health check connection counted against max_connections (%d)", cx)
	}
}

// TestPoolServerClosesAllIdle: a server that drains closes every idle keep-alive
// connection at the same instant. A request taken right after (too soon for the idle
// check) lands on a closed connection; its retry must not land on another closed one:
// the pool drops its other idle connections and dials. With 8 idle connections and 4
// attempts, trying idle connections one after another fails.
func TestPoolServerClosesAllIdle(t *testing.T) {
	release := make(chan struct{})
	var entered sync.WaitGroup
	var gate sync.Mutex
	gated := true
	p, s := newPool(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		gate.Lock()
		g := gated
		gate.Unlock()
		if g {
			entered.Done()
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	const idle = 8
	entered.Add(idle)
	var wg sync.WaitGroup
	for i := 0; i < idle; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = get(t, p) }()
	}
	entered.Wait()
	gate.Lock()
	gated = false
	gate.Unlock()
	close(release)
	wg.Wait()
	if n := p.ActiveConnections(); n != idle {
		t.Fatalf("%d idle connections, want %d", n, idle)
	}
	// The server closes its idle connections, as a drain does.
	s.Config.SetKeepAlivesEnabled(false)
	time.Sleep(20 * time.Millisecond) // the FINs arrive; still under the pool's idle check
	s.Config.SetKeepAlivesEnabled(true)
	for i := 0; i < 3; i++ {
		if err := get(t, p); err != nil {
			t.Fatalf("request %d after the server closed its idle connections: %v", i, err)
		}
	}
}

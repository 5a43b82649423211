package httpconn

import (
	"net/http"
	"regexp"
	"sync"
	"testing"

	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// TestRecycleOnlyClean: the connection keeps an exchange's storage and gives its header
// maps back only when the exchange ended cleanly; otherwise the next request gets new
// storage and the maps stay as they were (someone may still read them).
func TestRecycleOnlyClean(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(ex *h1exchange)
		bodyOK bool
		clean  bool
	}{
		{"clean", func(*h1exchange) {}, true, true},
		{"one attempt", func(ex *h1exchange) { ex.st.info.Attempts = 1 }, true, true},
		{"retried", func(ex *h1exchange) { ex.st.info.Attempts = 2 }, true, false},
		{"response flag", func(ex *h1exchange) { ex.st.info.SetFlag(stream.UpstreamConnectionTermination) }, true, false},
		{"aborted", func(ex *h1exchange) { ex.w.aborted = true }, true, false},
		{"body still held", func(*h1exchange) {}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := &h1exchange{}
			hc := &h1conn{ex: ex}
			req := &http.Request{Header: http.Header{"X-Req": {"1"}}}
			ex.w.header = http.Header{"X-Resp": {"1"}}
			tc.setup(ex)
			hc.recycle(ex, req, tc.bodyOK)
			if kept := hc.ex == ex; kept != tc.clean {
				t.Fatalf("storage kept = %v, want %v", kept, tc.clean)
			}
			// RecycleHeader empties what it takes.
			if given := len(req.Header) == 0 && len(ex.w.header) == 0; given != tc.clean {
				t.Fatalf("header maps given back = %v (request %v, response %v), want %v", given, req.Header, ex.w.header, tc.clean)
			}
		})
	}
}

// TestNewRequestID: a version 4 UUID in Envoy's form, each different, as a header value
// of one field in one allocation.
func TestNewRequestID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	// Several buffers' worth, from concurrent goroutines: all different.
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				v := newRequestID()
				mu.Lock()
				dup := seen[v[0]]
				seen[v[0]] = true
				mu.Unlock()
				if len(v) != 1 || cap(v) != 1 || !re.MatchString(v[0]) || dup {
					t.Errorf("%q (cap %d, seen before %v)", v, cap(v), dup)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := testing.AllocsPerRun(100, func() { _ = newRequestID() }); n != 1 && !raceEnabled {
		t.Fatalf("%v allocations, want 1", n)
	}
}

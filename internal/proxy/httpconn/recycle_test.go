package httpconn

import (
	"net/http"
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

package router

import (
	"net/http"
	"testing"
)

// forward deletes hop-by-hop and control fields only when its one pass over the
// request's fields saw one: each of them, alone among ordinary fields, must be seen,
// or it would reach the upstream.
func TestScanRequestHeadsSeesEveryDroppedField(t *testing.T) {
	base := func() http.Header {
		return http.Header{"User-Agent": {"fortio"}, "Content-Type": {"text/plain"}, "X-Request-Id": {"1"}, "X-Envoy-Expected-Rq-Timeout-Ms": {"100"}}
	}
	if hs := scanRequestHeads(base()); hs.drop {
		t.Fatalf("ordinary fields: drop = true")
	}
	for _, k := range append(append([]string(nil), hopHeaders...), controlHeaders...) {
		h := base()
		h[k] = []string{"x"}
		if hs := scanRequestHeads(h); !hs.drop {
			t.Errorf("%s: not seen, would be forwarded", k)
		}
	}
	h := base()
	h[hdrRetryOn] = []string{"5xx", "ignored"}
	h[hdrMaxRetries] = []string{"3"}
	h[hdrUpstreamTimeout] = []string{"250"}
	h[hdrPerTryTimeout] = []string{"50"}
	h[hdrGRPCTimeout] = []string{"1S"}
	h["Upgrade"] = []string{"websocket"}
	h["Connection"] = []string{"keep-alive, Upgrade"}
	hs := scanRequestHeads(h)
	if hs.retryOn != "5xx" || hs.maxRetries != "3" || hs.upstreamTimeout != "250" || hs.perTryTimeout != "50" ||
		hs.grpcTimeout != "1S" || hs.expectedTimeout != "100" || !hs.webSocketUpgrade(1) || hs.webSocketUpgrade(2) {
		t.Errorf("values: %+v", hs)
	}
}

func TestScanResponseHeadsSeesEveryHopField(t *testing.T) {
	base := func() http.Header {
		return http.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"0"}, "Date": {"now"}}
	}
	rh := scanResponseHeads(base())
	if rh.hop || rh.contentType != "application/grpc" || rh.grpcStatus != "0" {
		t.Fatalf("ordinary fields: %+v", rh)
	}
	for _, k := range hopHeaders {
		h := base()
		h[k] = []string{"x"}
		if rh := scanResponseHeads(h); !rh.hop {
			t.Errorf("%s: not seen, would be forwarded", k)
		}
	}
}

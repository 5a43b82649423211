package router

import (
	"net/http"
	"testing"
)

// forward deletes the hop-by-hop and control fields its one pass over the request's
// fields saw: each of them, alone among ordinary fields, must be seen and deleted, or
// it would reach the upstream; so must all of them at once, more than the scan notes
// one by one. TE as "trailers" alone is forwarded as it is, another TE as "trailers"
// when it has that token; a WebSocket upgrade keeps Upgrade and Connection.
func TestScanRequestHeadsSeesEveryDroppedField(t *testing.T) {
	base := func() http.Header {
		return http.Header{"User-Agent": {"fortio"}, "Content-Type": {"text/plain"}, "X-Request-Id": {"1"}, "X-Envoy-Expected-Rq-Timeout-Ms": {"100"}}
	}
	strip := func(h http.Header, upgrade bool) http.Header {
		hs := scanRequestHeads(h)
		if hs.nDrop > 0 {
			stripHopHeaders(h, &hs, upgrade)
		}
		return h
	}
	if hs := scanRequestHeads(base()); hs.nDrop != 0 {
		t.Fatalf("ordinary fields: %d to drop", hs.nDrop)
	}
	all := base()
	for _, k := range append(append([]string(nil), hopHeaders...), controlHeaders...) {
		h := base()
		h[k] = []string{"x"}
		all[k] = []string{"x"}
		if h := strip(h, false); len(h) != len(base()) || h[k] != nil {
			t.Errorf("%s: not seen, would be forwarded: %v", k, h)
		}
	}
	if hs := scanRequestHeads(all); hs.nDrop <= len(hs.drop) {
		t.Fatalf("all of them: %d to drop, want more than the %d noted one by one", hs.nDrop, len(hs.drop))
	}
	if h := strip(all, false); len(h) != len(base()) {
		t.Errorf("all of them at once: %v left", h)
	}
	if h := strip(http.Header{"Te": {"trailers"}, "Grpc-Timeout": {"1S"}}, false); len(h) != 2 || h["Te"][0] != "trailers" {
		t.Errorf("TE trailers: %v", h)
	}
	if h := strip(http.Header{"Connection": {"keep-alive, X-Hop"}, "X-Hop": {"1"}, "Upgrade": {"websocket"}, "X-Keep": {"1"}}, true); len(h) != 4 || h["Connection"][0] != "Upgrade" || h["Upgrade"] == nil {
		t.Errorf("WebSocket upgrade: %v", h)
	}
	if h := strip(http.Header{"Connection": {"keep-alive, X-Hop"}, "X-Hop": {"1"}, "X-Keep": {"1"}}, false); len(h) != 1 || h["X-Keep"] == nil {
		t.Errorf("fields the Connection header names: %v", h)
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

package bookinfo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// propagated are the request headers every service copies onto its calls to
// upstreams. A mesh can only stitch one trace out of the spans its proxies
// emit if the application carries the trace context from its inbound request
// to its outbound ones (Istio's distributed-tracing docs ask this of every
// app); Bookinfo also carries end-user (the routing key of Istio's
// jason-v2 rules), the user agent, cookies and credentials, as Istio's
// productpage does. Canonical form, fixed at init.
var propagated = []string{
	"X-Request-Id",
	"Traceparent",
	"Tracestate",
	"X-B3-Traceid",
	"X-B3-Spanid",
	"X-B3-Parentspanid",
	"X-B3-Sampled",
	"X-B3-Flags",
	"B3",
	"X-Ot-Span-Context",
	"X-Cloud-Trace-Context",
	"Grpc-Trace-Bin",
	"Sw8",
	"End-User",
	"User-Agent",
	"Cookie",
	"Authorization",
}

// propagatedPrefixes covers header families whose members vary by tracer
// version (x-datadog-trace-id, -parent-id, -sampling-priority, -origin, ...).
var propagatedPrefixes = []string{"X-Datadog-"}

// forwardHeaders returns the headers of in that go onto an upstream call.
func forwardHeaders(in http.Header) http.Header {
	out := make(http.Header, len(propagated))
	for _, k := range propagated {
		if v, ok := in[k]; ok {
			out[k] = append([]string(nil), v...)
		}
	}
	for k, v := range in {
		for _, p := range propagatedPrefixes {
			if strings.HasPrefix(k, p) {
				out[k] = append([]string(nil), v...)
			}
		}
	}
	return out
}

// maxUpstreamBody bounds what a service reads from an upstream: Bookinfo's
// answers are a few hundred bytes.
const maxUpstreamBody = 1 << 20

// getJSON makes one GET to url with hdr, bounded by timeout, and returns the
// status and the raw body. A non-200 answer is an error that still reports
// the status.
func getJSON(ctx context.Context, client *http.Client, url string, hdr http.Header, timeout time.Duration) (int, json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", url, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err // a *url.Error: already names the method and URL
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("GET %s: reading body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, body, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	if !json.Valid(body) {
		return resp.StatusCode, nil, fmt.Errorf("GET %s: body is not JSON", url)
	}
	return resp.StatusCode, body, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// statusWriter records the status a handler wrote, for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog logs one line per response.
func accessLog(service, version string, log *slog.Logger, next http.Handler) http.Handler {
	log = log.With("service", service, "version", version)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", sw.status),
			slog.Duration("duration", time.Since(start)),
			slog.String("request_id", r.Header.Get("X-Request-Id")),
		)
	})
}

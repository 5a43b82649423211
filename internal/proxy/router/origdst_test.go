package router

import (
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/internal/proxy/stream"
)

const passthrough = "PassthroughCluster"

// headerPassthroughCluster is an Explicit-mode sidecar's PassthroughCluster:
// ORIGINAL_DST with original_dst_lb_config.use_http_header.
func headerPassthroughCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 passthrough,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{
			OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true},
		},
	}
}

// TestOriginalDstHeaderNeverFallsBackToLocal: with use_http_header the destination is
// the header's IP:port or nothing. A missing or malformed header, or one naming the
// proxy's own listener, is a 503 UH with details saying why, and no upstream
// connection is made — in particular not to the connection's local address, the
// sidecar itself (the Explicit-mode passthrough loop).
func TestOriginalDstHeaderNeverFallsBackToLocal(t *testing.T) {
	a := startUpstream(t, "a", false, nil)
	b := startUpstream(t, "b", false, nil)
	plain := &routev3.RouteConfiguration{Name: "plain", VirtualHosts: []*routev3.VirtualHost{
		vhost("allow_any", []string{"*"}, prefixRoute("/", passthrough)),
	}}
	// What route generation emits for the Explicit-mode catch-all: the destination
	// is the request's authority, and a client's own header is overwritten.
	fromAuthority := &routev3.RouteConfiguration{Name: "authority", VirtualHosts: []*routev3.VirtualHost{
		vhost("allow_any", []string{"*"}, prefixRoute("/", passthrough)),
	}}
	fromAuthority.VirtualHosts[0].Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{
		hdrAdd("x-envoy-original-dst-host", "%REQ(:authority)%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
	}

	type want struct {
		code     int
		upstream string // X-Upstream of a 200
		details  string
		body     string // substring of a 503's body
	}
	self := "" // the proxy's own address, known once it runs
	for _, tc := range []struct {
		name   string
		rc     *routev3.RouteConfiguration
		host   string // "self" for the proxy's own address
		header string // x-envoy-original-dst-host sent by the client; "self" as above
		want   want
	}{
		{"no header", plain, "", "", want{code: 503, details: "original_dst_header_missing", body: "x-envoy-original-dst-host, which is missing"}},
		{"header without port", plain, "", "127.0.0.1", want{code: 503, details: "original_dst_header_invalid", body: "not an IP:port"}},
		{"hostname header", plain, "", "example.com:80", want{code: 503, details: "original_dst_header_invalid", body: "not an IP:port"}},
		{"port 0", plain, "", "127.0.0.1:0", want{code: 503, details: "original_dst_header_invalid"}},
		{"header names the proxy", plain, "", "self", want{code: 503, details: "original_dst_is_self", body: "own address"}},
		{"header names a host", plain, "", a.addr, want{code: 200, upstream: "a", details: "via_upstream"}},
		{"authority IP:port", fromAuthority, a.addr, "", want{code: 200, upstream: "a", details: "via_upstream"}},
		{"authority overrides the client's header", fromAuthority, b.addr, a.addr, want{code: 200, upstream: "b", details: "via_upstream"}},
		{"authority hostname", fromAuthority, "example.com", "", want{code: 503, details: "original_dst_header_invalid"}},
		{"authority hostname:port", fromAuthority, "example.com:8080", a.addr, want{code: 503, details: "original_dst_header_invalid"}},
		{"authority is the proxy", fromAuthority, "self", "", want{code: 503, details: "original_dst_is_self"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy(t, tc.rc, []*clusterv3.Cluster{headerPassthroughCluster()}, proxyOpt{})
			self = strings.TrimPrefix(p.url, "http://")
			sub := func(s string) string {
				if s == "self" {
					return self
				}
				return s
			}
			o := reqOpt{host: sub(tc.host), header: map[string]string{}}
			if tc.header != "" {
				o.header["X-Envoy-Original-Dst-Host"] = sub(tc.header)
			}
			hitsA, hitsB := a.hits.Load(), b.hits.Load()
			resp, body := p.do("/x", o)
			info := p.nextInfo()
			if resp.StatusCode != tc.want.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.want.code)
			}
			if info.ResponseDetails != tc.want.details {
				t.Errorf("details %q, want %q", info.ResponseDetails, tc.want.details)
			}
			cx, _ := p.stats.Value("cluster." + passthrough + ".upstream_cx_total")
			if tc.want.code == 200 {
				if got := resp.Header.Get("X-Upstream"); got != tc.want.upstream {
					t.Errorf("answered by %q, want %q", got, tc.want.upstream)
				}
				if info.Flags.Has(stream.NoHealthyUpstream) {
					t.Errorf("flags %v", info.Flags)
				}
				return
			}
			if !info.Flags.Has(stream.NoHealthyUpstream) {
				t.Errorf("flags %v, want UH", info.Flags)
			}
			if !strings.Contains(body, tc.want.body) || !strings.HasPrefix(body, "no healthy upstream") {
				t.Errorf("body %q, want it to say %q", body, tc.want.body)
			}
			if info.UpstreamFailure == "" {
				t.Errorf("no upstream failure reason for the access log")
			}
			if cx != 0 || info.UpstreamHost != "" {
				t.Errorf("%d upstream connections (host %q), want none", cx, info.UpstreamHost)
			}
			if a.hits.Load() != hitsA || b.hits.Load() != hitsB {
				t.Errorf("an upstream was reached")
			}
			// The proxy served this one request only: it did not call itself.
			select {
			case extra := <-p.infos:
				t.Errorf("the proxy served another request (%s %s): it looped", extra.Authority, extra.Path)
			default:
			}
		})
	}
}

// TestOriginalDstHeaderGRPC: a gRPC request that cannot be passed through gets its
// local reply in gRPC form (UNAVAILABLE), like any other no-healthy-upstream answer.
func TestOriginalDstHeaderGRPC(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "plain", VirtualHosts: []*routev3.VirtualHost{
		vhost("allow_any", []string{"*"}, prefixRoute("/", passthrough)),
	}}
	p := newProxy(t, rc, []*clusterv3.Cluster{headerPassthroughCluster()}, proxyOpt{})
	resp, _ := p.do("/pkg.Svc/Call", reqOpt{method: http.MethodPost, body: "\x00\x00\x00\x00\x00", header: map[string]string{"Content-Type": "application/grpc"}})
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" {
		t.Fatalf("status %d grpc-status %q, want 200 with grpc-status 14", resp.StatusCode, resp.Header.Get("Grpc-Status"))
	}
	if m := resp.Header.Get("Grpc-Message"); !strings.Contains(m, "x-envoy-original-dst-host") {
		t.Fatalf("grpc-message %q does not say why", m)
	}
}

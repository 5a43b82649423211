package proxycheck

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/router"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
	"github.com/weft-mesh/weft/internal/xds/gen/cluster"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	genroute "github.com/weft-mesh/weft/internal/xds/gen/route"
)

// TestExplicitPassthroughOverLoopback: an Explicit-mode sidecar's generated HTTP proxy
// routes and generated PassthroughCluster, run by weft-proxy's router over loopback as
// the application's HTTP proxy. An IP:port destination passes through; a hostname, or
// the sidecar's own address, is a 503 UH — never a connection from the sidecar to
// itself.
func TestExplicitPassthroughOverLoopback(t *testing.T) {
	s := simtest.Bookinfo()
	p := simtest.SidecarProxy("productpage-v1", node.Explicit)
	rcs := genroute.Outbound(s, p)
	if len(rcs) != 1 || rcs[0].GetName() != names.HTTPProxyRoute {
		t.Fatalf("Explicit sidecar outbound routes: %d, want %s", len(rcs), names.HTTPProxyRoute)
	}
	table, err := router.Compile(rcs[0])
	if err != nil {
		t.Fatal(err)
	}
	var pt *clusterv3.Cluster
	for _, c := range cluster.Sidecar(s, p) {
		if c.GetName() == names.PassthroughCluster {
			pt = c
		}
	}
	if pt == nil || !pt.GetOriginalDstLbConfig().GetUseHttpHeader() {
		t.Fatalf("generated PassthroughCluster %v, want ORIGINAL_DST with use_http_header", pt)
	}
	st := stats.New()
	mgr := upstream.NewManager(upstream.Options{Stats: st})
	t.Cleanup(mgr.Close)
	if err := mgr.Update([]*clusterv3.Cluster{pt}); err != nil {
		t.Fatalf("weft-proxy rejects the generated PassthroughCluster: %v", err)
	}
	rt := router.NewRouter(nil, router.Options{Clusters: mgr, Stats: st})

	infos := make(chan *stream.Info, 64)
	sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As httpconn: the connection's local address is the sidecar's listener.
		info := &stream.Info{Start: time.Now()}
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			info.DownstreamLocal, _ = netip.ParseAddrPort(la.String())
		}
		x := &filter.Exchange{W: w, R: r, Info: info}
		if route, _ := table.Match(r); route != nil {
			x.Route = route
		}
		defer func() { infos <- info }()
		if err := rt.Serve(x); err != nil {
			t.Errorf("router: %v", err)
		}
	}))
	t.Cleanup(sidecar.Close)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "app "+r.Host+r.URL.Path)
	}))
	t.Cleanup(app.Close)

	// The application's client, configured with the sidecar as HTTP_PROXY.
	proxyURL, _ := url.Parse(sidecar.URL)
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	self := strings.TrimPrefix(sidecar.URL, "http://")
	for _, tc := range []struct {
		target  string
		code    int
		details string
	}{
		{app.URL + "/a", 200, "via_upstream"},
		{"http://example.com/b", 503, "original_dst_header_invalid"},
		{"http://" + self + "/loop", 503, "original_dst_is_self"},
	} {
		resp, err := c.Get(tc.target)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		info := <-infos
		if resp.StatusCode != tc.code || info.ResponseDetails != tc.details {
			t.Fatalf("GET %s: %d %q (%s), want %d %q", tc.target, resp.StatusCode, body, info.ResponseDetails, tc.code, tc.details)
		}
		if tc.code == 200 && string(body) != "app "+strings.TrimPrefix(app.URL, "http://")+"/a" {
			t.Fatalf("GET %s: body %q", tc.target, body)
		}
		if tc.code == 503 && !info.Flags.Has(stream.NoHealthyUpstream) {
			t.Fatalf("GET %s: flags %v, want UH", tc.target, info.Flags)
		}
		select {
		case extra := <-infos:
			t.Fatalf("GET %s: the sidecar served a second request (%s): it called itself", tc.target, extra.ResponseDetails)
		default:
		}
	}
	if n, _ := st.Value("cluster." + names.PassthroughCluster + ".upstream_cx_total"); n != 1 {
		t.Fatalf("PassthroughCluster opened %d connections, want 1 (to the app only)", n)
	}
}

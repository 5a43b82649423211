package router

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// bookinfoTable is shaped like Istio's outbound route config for port 9080 with
// Bookinfo's services: each virtual host lists the short name, FQDN and namespace forms
// with and without the port, and reviews has the "jason" header route and a weighted
// split, as in Istio's traffic-management samples.
func bookinfoTable(t testing.TB) *Table {
	ip := 10
	svc := func(name string, routes ...*routev3.Route) *routev3.VirtualHost {
		ip++
		d := []string{name, name + ".default", name + ".default.svc", name + ".default.svc.cluster.local", "10.96.0." + fmt.Sprint(ip)}
		var domains []string
		for _, x := range d {
			domains = append(domains, x, x+":9080")
		}
		if len(routes) == 0 {
			routes = []*routev3.Route{prefixRoute("/", "outbound|9080||"+name+".default.svc.cluster.local")}
		}
		return &routev3.VirtualHost{Name: name + ".default.svc.cluster.local:9080", Domains: domains, Routes: routes}
	}
	jason := routeWith(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
		{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("jason")}},
	}}, "outbound|9080|v2|reviews.default.svc.cluster.local")
	split := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "outbound|9080|v1|reviews.default.svc.cluster.local", Weight: wrapperspb.UInt32(50)},
			{Name: "outbound|9080|v3|reviews.default.svc.cluster.local", Weight: wrapperspb.UInt32(50)},
		}}},
	}}}
	return mustCompile(t, &routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{
		svc("details"), svc("productpage"), svc("ratings"), svc("reviews", jason, split),
		{Name: "allow_any", Domains: []string{"*"}, Routes: []*routev3.Route{prefixRoute("/", "PassthroughCluster")}},
	}})
}

func bigTable(t testing.TB, n int) *Table {
	rc := &routev3.RouteConfiguration{Name: "big"}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", i, i%10)
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: name, Domains: []string{name, name + ":80", fmt.Sprintf("svc-%d", i)},
			Routes: []*routev3.Route{prefixRoute("/api/v1", "v1-"+name), prefixRoute("/", name)}})
	}
	rc.VirtualHosts = append(rc.VirtualHosts, vhost("wild", []string{"*.example.com"}, prefixRoute("/", "wild")))
	return mustCompile(t, rc)
}

func matchN(t testing.TB, tb *Table, r *http.Request, n int, want string) {
	for i := 0; i < n; i++ {
		rt, _ := tb.Match(r)
		if rt == nil || (want != "" && rt.Cluster() != want) {
			t.Fatalf("matched %v, want %s", rt, want)
		}
	}
}

func bookinfoRequest() *http.Request {
	r := httptest.NewRequest("GET", "/reviews/0", nil)
	r.Host = "reviews:9080"
	r.Header.Set("End-User", "jason")
	return r
}

func bigRequest() *http.Request {
	r := httptest.NewRequest("GET", "/api/v1/items", nil)
	r.Host = "svc-777.ns-7.svc.cluster.local:80"
	return r
}

func BenchmarkMatchBookinfo(b *testing.B) {
	tb, r := bookinfoTable(b), bookinfoRequest()
	b.ReportAllocs()
	b.ResetTimer()
	matchN(b, tb, r, b.N, "outbound|9080|v2|reviews.default.svc.cluster.local")
}

func BenchmarkMatch1000VirtualHosts(b *testing.B) {
	tb, r := bigTable(b, 1000), bigRequest()
	b.ReportAllocs()
	b.ResetTimer()
	matchN(b, tb, r, b.N, "v1-svc-777.ns-7.svc.cluster.local")
}

// serveN sends n GET requests through the router over HTTP/1.1 on loopback.
func serveN(t testing.TB, p *proxy, n int) {
	for i := 0; i < n; i++ {
		resp, err := p.client.Get(p.url + "/productpage")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
}

func benchProxy(t testing.TB) *proxy {
	up := startUpstream(t, "a", false, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") })
	return newProxy(t, oneVhost(prefixRoute("/", "a")), []*clusterv3.Cluster{staticCluster(t, "a", up.addr)}, proxyOpt{})
}

func BenchmarkServeHTTP1(b *testing.B) {
	p := benchProxy(b)
	serveN(b, p, 10) // warm the pools
	b.ReportAllocs()
	b.ResetTimer()
	serveN(b, p, b.N)
}

// Size-1 twins of the benchmarks, so they cannot rot.
func TestBenchmarkTwins(t *testing.T) {
	matchN(t, bookinfoTable(t), bookinfoRequest(), 1, "outbound|9080|v2|reviews.default.svc.cluster.local")
	matchN(t, bigTable(t, 1), func() *http.Request { r := bigRequest(); r.Host = "svc-0:80"; return r }(), 1, "v1-svc-0.ns-0.svc.cluster.local")
	serveN(t, benchProxy(t), 1)
}

// Match must not allocate for the common shapes (host with port, prefix, header).
func TestMatchDoesNotAllocate(t *testing.T) {
	for name, c := range map[string]struct {
		tb *Table
		r  *http.Request
	}{"bookinfo": {bookinfoTable(t), bookinfoRequest()}, "1000 vhosts": {bigTable(t, 1000), bigRequest()}} {
		if n := testing.AllocsPerRun(100, func() { c.tb.Match(c.r) }); n != 0 {
			t.Errorf("%s: Match allocates %.1f times per call", name, n)
		}
	}
}

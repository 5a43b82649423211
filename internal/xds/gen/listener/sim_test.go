package listener

import (
	"fmt"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

const (
	reviews = "reviews.default.svc.cluster.local"
	ratings = "ratings.default.svc.cluster.local"
	details = "details.default.svc.cluster.local"
	product = "productpage.default.svc.cluster.local"
)

func out(sub, host string) string { return names.Cluster(names.Outbound, 9080, sub, host) }

// generate is what the composite generator sends a proxy: listeners and routes.
func generate(t *testing.T, s *snapshot.Snapshot, p *node.Proxy) ([]*listenerv3.Listener, []*routev3.RouteConfiguration) {
	t.Helper()
	var ls []*listenerv3.Listener
	var rcs []*routev3.RouteConfiguration
	switch p.Type {
	case node.Sidecar:
		ls = Sidecar(s, p)
		rcs = append(route.Outbound(s, p), route.Inbound(s, p)...)
	case node.Router:
		ls, rcs = Gateway(s, p), route.Gateway(s, p)
	case node.GRPC:
		ls, rcs = GRPC(s, p), route.GRPC(s, p)
	}
	validateAll(t, ls, rcs)
	return ls, rcs
}

// validateAll runs protoc-gen-validate rules on every resource, checks listener names
// and addresses are unique, and that every RDS name a listener uses is generated.
func validateAll(t *testing.T, ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration) {
	t.Helper()
	have := map[string]bool{}
	for _, rc := range rcs {
		if err := rc.ValidateAll(); err != nil {
			t.Fatalf("route configuration %s: %v", rc.GetName(), err)
		}
		if _, err := simtest.Domains(rc); err != nil {
			t.Fatal(err)
		}
		if have[rc.GetName()] {
			t.Fatalf("route configuration %s twice", rc.GetName())
		}
		have[rc.GetName()] = true
	}
	seen := map[string]bool{}
	for _, l := range ls {
		if err := l.ValidateAll(); err != nil {
			t.Fatalf("listener %s: %v", l.GetName(), err)
		}
		if seen[l.GetName()] {
			t.Fatalf("listener %s twice", l.GetName())
		}
		seen[l.GetName()] = true
		if l.GetApiListener() == nil {
			addr := simtest.ListenerAddress(l)
			if seen["addr "+addr] {
				t.Fatalf("two listeners on %s", addr)
			}
			seen["addr "+addr] = true
		}
		for _, rn := range rdsNames(t, l) {
			if !have[rn] {
				t.Fatalf("listener %s uses route configuration %q, which is not generated", l.GetName(), rn)
			}
		}
	}
}

func TestBookinfoSidecarSimulation(t *testing.T) {
	jason := map[string]string{"end-user": "jason"}
	type req struct {
		host    string
		headers map[string]string
		cluster string
		weights map[string]uint32
		abort   uint32
		delay   time.Duration
	}
	cases := []struct {
		files []string
		reqs  []req
	}{
		{nil, []req{{host: "reviews:9080", cluster: out("", reviews)}, {host: "example.com", cluster: names.PassthroughCluster}}},
		{[]string{"virtual-service-all-v1.yaml"}, []req{
			{host: "reviews:9080", cluster: out("v1", reviews)}, {host: "ratings:9080", cluster: out("v1", ratings)},
			{host: "details:9080", cluster: out("v1", details)}, {host: "productpage:9080", cluster: out("v1", product)},
		}},
		{[]string{"virtual-service-reviews-test-v2.yaml"}, []req{
			{host: "reviews:9080", headers: jason, cluster: out("v2", reviews)}, {host: "reviews:9080", cluster: out("v1", reviews)},
		}},
		{[]string{"virtual-service-reviews-80-20.yaml"}, []req{{host: "reviews:9080", weights: map[string]uint32{out("v1", reviews): 80, out("v2", reviews): 20}}}},
		{[]string{"virtual-service-reviews-50-v3.yaml"}, []req{{host: "reviews:9080", weights: map[string]uint32{out("v1", reviews): 50, out("v3", reviews): 50}}}},
		{[]string{"virtual-service-reviews-v3.yaml"}, []req{{host: "reviews:9080", cluster: out("v3", reviews)}}},
		{[]string{"virtual-service-ratings-test-delay.yaml"}, []req{
			{host: "ratings:9080", headers: jason, cluster: out("v1", ratings), delay: 7 * time.Second},
			{host: "ratings:9080", cluster: out("v1", ratings)},
		}},
		{[]string{"virtual-service-ratings-test-abort.yaml"}, []req{
			{host: "ratings:9080", headers: jason, cluster: out("v1", ratings), abort: 500},
			{host: "ratings:9080", cluster: out("v1", ratings)},
		}},
		{[]string{"fault-injection-details-v1.yaml"}, []req{{host: "details:9080", cluster: out("v1", details), abort: 555}}},
	}
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%v", mode, tc.files), func(t *testing.T) {
				s := simtest.BookinfoFiles(append([]string{"destination-rule-all.yaml"}, tc.files...)...)
				p := simtest.SidecarProxy("productpage-v1", mode)
				sim := simtest.New(generate(t, s, p))
				for _, r := range tc.reqs {
					// Explicit: the app sends the request to its sidecar's HTTP proxy.
					// Redirect: the app connects to the service (here an address the
					// mesh does not know, as without VIPs) and iptables captures it.
					rq := simtest.Request{Address: "10.0.0.1", Port: 9080, Host: r.host, Path: "/x", Headers: r.headers}
					if mode == node.Explicit {
						rq.Address, rq.Port = p.IP.String(), names.OutboundCapturePort
					}
					res, err := sim.Run(rq)
					if err != nil {
						t.Fatalf("%s: %v", r.host, err)
					}
					wantListener := names.VirtualOutbound
					if mode == node.Redirect {
						wantListener = names.Listener("0.0.0.0", 9080)
					}
					if res.Listener != wantListener {
						t.Fatalf("%s: listener %s, want %s", r.host, res.Listener, wantListener)
					}
					if r.weights != nil {
						if fmt.Sprint(res.Weighted) != fmt.Sprint(r.weights) {
							t.Fatalf("%s: weights %v, want %v", r.host, res.Weighted, r.weights)
						}
					} else if res.Cluster != r.cluster {
						t.Fatalf("%s %v: cluster %q, want %q", r.host, r.headers, res.Cluster, r.cluster)
					}
					if got := res.Fault.GetAbort().GetHttpStatus(); got != r.abort {
						t.Fatalf("%s: abort %d, want %d", r.host, got, r.abort)
					}
					if got := res.Fault.GetDelay().GetFixedDelay().AsDuration(); got != r.delay {
						t.Fatalf("%s: delay %v, want %v", r.host, got, r.delay)
					}
					if want := []string{route.FaultFilter, route.CorsFilter, route.RouterFilter}; fmt.Sprint(res.HTTPFilters) != fmt.Sprint(want) {
						t.Fatalf("http filters %v, want %v", res.HTTPFilters, want)
					}
				}
			})
		}
	}
}

// TestRedirectPassthrough: in Redirect mode, a TCP connection to an address and port
// the mesh does not know passes through virtualOutbound; one to 15001 itself is
// dropped; inbound to an undeclared port passes through to the workload.
func TestRedirectPassthrough(t *testing.T) {
	s := simtest.BookinfoFiles()
	p := simtest.SidecarProxy("reviews-v1", node.Redirect)
	sim := simtest.New(generate(t, s, p))
	for _, tc := range []struct {
		r               simtest.Request
		listener, clust string
	}{
		{simtest.Request{Address: "93.184.216.34", Port: 443, TCP: true}, names.VirtualOutbound, names.PassthroughCluster},
		{simtest.Request{Address: "10.0.0.1", Port: 15001, TCP: true}, names.VirtualOutbound, names.BlackHoleCluster},
		{simtest.Request{Address: p.IP.String(), Port: 9080, Inbound: true, Host: "reviews:9080", Path: "/"}, names.VirtualInbound, "inbound|9080||"},
		{simtest.Request{Address: p.IP.String(), Port: 7070, Inbound: true, TCP: true}, names.VirtualInbound, names.InboundPassthroughCluster},
		{simtest.Request{Address: p.IP.String(), Port: 15006, Inbound: true, TCP: true}, names.VirtualInbound, names.BlackHoleCluster},
	} {
		res, err := sim.Run(tc.r)
		if err != nil || res.Listener != tc.listener || res.Cluster != tc.clust {
			t.Errorf("%+v: %s %s %v, want %s %s", tc.r, res.Listener, res.Cluster, err, tc.listener, tc.clust)
		}
	}
}

// TestExplicitInbound: each workload's sidecar serves its port on its own address and
// sends to the inbound cluster.
func TestExplicitInbound(t *testing.T) {
	s := simtest.BookinfoFiles("virtual-service-all-v1.yaml")
	for _, w := range simtest.BookinfoWorkloads {
		p := simtest.SidecarProxy(w.Name, node.Explicit)
		ls, rcs := generate(t, s, p)
		if len(ls) != 2 || ls[0].GetName() != names.Listener(w.IP, 9080) || ls[1].GetName() != names.VirtualOutbound {
			t.Fatalf("%s: listeners %v", w.Name, listenerNames(ls))
		}
		sim := simtest.New(ls, rcs)
		res, err := sim.Run(simtest.Request{Address: w.IP, Port: 9080, Host: w.Service + ":9080", Path: "/health"})
		if err != nil || res.Cluster != "inbound|9080||" || res.RouteConfig != names.InboundRoute(9080) {
			t.Fatalf("%s inbound: %+v %v", w.Name, res, err)
		}
		// Another workload's address is not this sidecar's.
		if _, err := sim.Run(simtest.Request{Address: "127.2.0.99", Port: 9080, Host: "x", Path: "/"}); err == nil {
			t.Fatalf("%s: served an address that is not its own", w.Name)
		}
	}
}

func TestBookinfoGatewaySimulation(t *testing.T) {
	s := simtest.BookinfoFiles("bookinfo-gateway.yaml", "destination-rule-all.yaml", "virtual-service-all-v1.yaml")
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		p := simtest.GatewayProxy(mode)
		ls, rcs := generate(t, s, p)
		addr := "0.0.0.0"
		if mode == node.Explicit {
			addr = simtest.GatewayIP
		}
		if len(ls) != 1 || ls[0].GetName() != names.Listener(addr, 8080) {
			t.Fatalf("%s: gateway listeners %v", mode, listenerNames(ls))
		}
		sim := simtest.New(ls, rcs)
		for _, path := range []string{"/productpage", "/static/img/x.png", "/login", "/logout", "/api/v1/products"} {
			res, err := sim.Run(simtest.Request{Address: simtest.GatewayIP, Port: 8080, Host: "localhost:8080", Path: path})
			// The gateway VirtualService names no subset: it goes to the service,
			// unlike sidecars, which all-v1 sends to v1.
			if err != nil || res.Cluster != out("", product) {
				t.Fatalf("%s %s: %q %v", mode, path, res.Cluster, err)
			}
		}
		if _, err := sim.Run(simtest.Request{Address: simtest.GatewayIP, Port: 8080, Host: "localhost:8080", Path: "/reviews/0"}); err == nil {
			t.Fatalf("%s: /reviews/0 routed through the gateway", mode)
		}
		hcm := hcmOf(t, ls[0].GetFilterChains()[0])
		if !hcm.GetUseRemoteAddress().GetValue() {
			t.Fatalf("gateway HCM does not use the remote address")
		}
	}
}

func listenerNames(ls []*listenerv3.Listener) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.GetName())
	}
	return out
}

package route

import (
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

const (
	reviews = "reviews.default.svc.cluster.local"
	ratings = "ratings.default.svc.cluster.local"
	details = "details.default.svc.cluster.local"
	product = "productpage.default.svc.cluster.local"
)

func out(sub, host string) string { return names.Cluster(names.Outbound, 9080, sub, host) }

// want is what a simulated request must reach.
type want struct {
	cluster  string
	weighted map[string]uint32
	abort    uint32        // fault abort HTTP status at 100%
	delay    time.Duration // fault fixed delay at 100%
	noFault  bool
}

func (w want) check(t *testing.T, res simtest.Result) {
	t.Helper()
	if w.weighted != nil {
		if len(res.Weighted) != len(w.weighted) {
			t.Fatalf("weighted clusters = %v, want %v", res.Weighted, w.weighted)
		}
		for c, wt := range w.weighted {
			if res.Weighted[c] != wt {
				t.Fatalf("weighted clusters = %v, want %v", res.Weighted, w.weighted)
			}
		}
	} else if res.Cluster != w.cluster {
		t.Fatalf("cluster = %q (weighted %v), want %q", res.Cluster, res.Weighted, w.cluster)
	}
	full := &typev3.FractionalPercent{Numerator: 1000000, Denominator: typev3.FractionalPercent_MILLION}
	if w.abort != 0 {
		a := res.Fault.GetAbort()
		if a.GetHttpStatus() != w.abort || a.GetPercentage().GetNumerator() != full.Numerator || a.GetPercentage().GetDenominator() != full.Denominator {
			t.Fatalf("fault abort = %v, want %d at 100%%", a, w.abort)
		}
	}
	if w.delay != 0 {
		d := res.Fault.GetDelay()
		if d.GetFixedDelay().AsDuration() != w.delay || d.GetPercentage().GetNumerator() != full.Numerator || d.GetPercentage().GetDenominator() != full.Denominator {
			t.Fatalf("fault delay = %v, want %v at 100%%", d, w.delay)
		}
	}
	if w.noFault && res.Fault != nil {
		t.Fatalf("fault = %v, want none", res.Fault)
	}
}

// validate checks every route configuration against its proto constraints and
// Envoy's unique-domain rule.
func validate(t *testing.T, rcs []*routev3.RouteConfiguration) {
	t.Helper()
	for _, rc := range rcs {
		if err := rc.ValidateAll(); err != nil {
			t.Fatalf("route configuration %s: %v", rc.GetName(), err)
		}
		if _, err := simtest.Domains(rc); err != nil {
			t.Fatal(err)
		}
	}
}

func byName(rcs []*routev3.RouteConfiguration, name string) *routev3.RouteConfiguration {
	for _, rc := range rcs {
		if rc.GetName() == name {
			return rc
		}
	}
	return nil
}

// TestBookinfoOutbound routes the Bookinfo samples' requests from a sidecar, in both
// interception modes, and checks the destination Envoy would pick.
func TestBookinfoOutbound(t *testing.T) {
	jason := map[string]string{"end-user": "jason"}
	bob := map[string]string{"end-user": "bob"}
	type req struct {
		host    string
		headers map[string]string
		want    want
	}
	cases := []struct {
		name  string
		files []string
		reqs  []req
	}{
		{"no virtual services", nil, []req{
			{"reviews:9080", nil, want{cluster: out("", reviews), noFault: true}},
			{"ratings.default.svc.cluster.local:9080", nil, want{cluster: out("", ratings)}},
			{"details.default:9080", nil, want{cluster: out("", details)}},
			{"productpage.default.svc:9080", nil, want{cluster: out("", product)}},
			// Port-less names are only claimed for port 80; anything else passes through.
			{"reviews", nil, want{cluster: names.PassthroughCluster}},
			{"example.com", nil, want{cluster: names.PassthroughCluster}},
		}},
		{"all v1", []string{"virtual-service-all-v1.yaml"}, []req{
			{"reviews:9080", nil, want{cluster: out("v1", reviews)}},
			{"reviews:9080", jason, want{cluster: out("v1", reviews)}},
			{"ratings.default.svc.cluster.local:9080", nil, want{cluster: out("v1", ratings)}},
			{"details.default:9080", nil, want{cluster: out("v1", details)}},
			{"productpage:9080", nil, want{cluster: out("v1", product)}},
		}},
		{"reviews test v2", []string{"virtual-service-reviews-test-v2.yaml"}, []req{
			{"reviews:9080", jason, want{cluster: out("v2", reviews)}},
			{"reviews:9080", bob, want{cluster: out("v1", reviews)}},
			{"reviews:9080", nil, want{cluster: out("v1", reviews)}},
			{"ratings:9080", jason, want{cluster: out("", ratings)}},
		}},
		{"reviews 80-20", []string{"virtual-service-reviews-80-20.yaml"}, []req{
			{"reviews:9080", nil, want{weighted: map[string]uint32{out("v1", reviews): 80, out("v2", reviews): 20}}},
		}},
		{"reviews 90-10", []string{"virtual-service-reviews-90-10.yaml"}, []req{
			{"reviews:9080", nil, want{weighted: map[string]uint32{out("v1", reviews): 90, out("v2", reviews): 10}}},
		}},
		{"reviews 50 v3", []string{"virtual-service-reviews-50-v3.yaml"}, []req{
			{"reviews:9080", nil, want{weighted: map[string]uint32{out("v1", reviews): 50, out("v3", reviews): 50}}},
		}},
		{"reviews v3", []string{"virtual-service-reviews-v3.yaml"}, []req{
			{"reviews:9080", jason, want{cluster: out("v3", reviews)}},
		}},
		{"reviews jason v2 v3", []string{"virtual-service-reviews-jason-v2-v3.yaml"}, []req{
			{"reviews:9080", jason, want{cluster: out("v2", reviews)}},
			{"reviews:9080", bob, want{cluster: out("v3", reviews)}},
		}},
		{"ratings delay", []string{"virtual-service-ratings-test-delay.yaml"}, []req{
			{"ratings:9080", jason, want{cluster: out("v1", ratings), delay: 7 * time.Second}},
			{"ratings:9080", bob, want{cluster: out("v1", ratings), noFault: true}},
		}},
		{"ratings abort", []string{"virtual-service-ratings-test-abort.yaml"}, []req{
			{"ratings:9080", jason, want{cluster: out("v1", ratings), abort: 500}},
			{"ratings:9080", nil, want{cluster: out("v1", ratings), noFault: true}},
		}},
		{"details fault", []string{"fault-injection-details-v1.yaml"}, []req{
			{"details:9080", nil, want{cluster: out("v1", details), abort: 555}},
			{"details:9080", jason, want{cluster: out("v1", details), abort: 555}},
		}},
	}
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		for _, tc := range cases {
			t.Run(string(mode)+"/"+tc.name, func(t *testing.T) {
				s := simtest.BookinfoFiles(append([]string{"destination-rule-all.yaml"}, tc.files...)...)
				rcs := Outbound(s, simtest.SidecarProxy("reviews-v2", mode))
				validate(t, rcs)
				name := names.HTTPProxyRoute
				if mode == node.Redirect {
					name = names.OutboundRoute(9080)
				}
				if len(rcs) != 1 || rcs[0].GetName() != name {
					t.Fatalf("route configurations = %d, want only %q", len(rcs), name)
				}
				for _, r := range tc.reqs {
					res, err := simtest.RunRoute(rcs[0], simtest.Request{Host: r.host, Path: "/reviews/0", Headers: r.headers})
					if err != nil {
						t.Fatalf("%s %v: %v", r.host, r.headers, err)
					}
					t.Run(strings.ReplaceAll(r.host, ":", "_"), func(t *testing.T) { r.want.check(t, res) })
				}
			})
		}
	}
}

// TestBookinfoGatewayRoutes routes requests through the ingress gateway's routes.
func TestBookinfoGatewayRoutes(t *testing.T) {
	s := simtest.BookinfoFiles("bookinfo-gateway.yaml", "destination-rule-all.yaml")
	rcs := Gateway(s, simtest.GatewayProxy(node.Explicit))
	validate(t, rcs)
	if len(rcs) != 1 || rcs[0].GetName() != names.GatewayRoute(8080) {
		t.Fatalf("gateway routes = %v, want one %q", rcs, names.GatewayRoute(8080))
	}
	for _, tc := range []struct {
		host, path string
		ok         bool
	}{
		{"localhost:8080", "/productpage", true},
		{"bookinfo.example.com", "/productpage?u=normal", true},
		{"localhost:8080", "/static/tailwind/tailwind.css", true},
		{"localhost:8080", "/login", true},
		{"localhost:8080", "/logout", true},
		{"localhost:8080", "/api/v1/products/0/reviews", true},
		{"localhost:8080", "/productpage/x", false},
		{"localhost:8080", "/", false},
		{"localhost:8080", "/admin", false},
	} {
		res, err := simtest.RunRoute(rcs[0], simtest.Request{Host: tc.host, Path: tc.path})
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s%s: %v", tc.host, tc.path, err)
		case tc.ok && res.Cluster != out("", product):
			t.Errorf("%s%s: cluster %q, want %q", tc.host, tc.path, res.Cluster, out("", product))
		case !tc.ok && err == nil:
			t.Errorf("%s%s: routed to %q, want no route (404)", tc.host, tc.path, res.Cluster)
		}
	}
	// A sidecar does not get the gateway's VirtualService.
	for _, rc := range Outbound(s, simtest.SidecarProxy("productpage-v1", node.Explicit)) {
		res, err := simtest.RunRoute(rc, simtest.Request{Host: "productpage:9080", Path: "/static/x"})
		if err != nil || res.Cluster != out("", product) {
			t.Fatalf("sidecar: %v %v, want default route", res.Cluster, err)
		}
	}
	// A proxy the Gateway does not select gets nothing.
	other := simtest.GatewayProxy(node.Explicit)
	other.Labels = map[string]string{"istio": "egressgateway"}
	if rcs := Gateway(s, other); len(rcs) != 0 {
		t.Fatalf("unselected gateway got %d route configurations", len(rcs))
	}
}

// TestInbound checks the inbound route configuration of each Bookinfo workload.
func TestInbound(t *testing.T) {
	s := simtest.BookinfoFiles("virtual-service-all-v1.yaml")
	for _, w := range simtest.BookinfoWorkloads {
		for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
			rcs := Inbound(s, simtest.SidecarProxy(w.Name, mode))
			validate(t, rcs)
			if len(rcs) != 1 || rcs[0].GetName() != names.InboundRoute(9080) {
				t.Fatalf("%s: inbound = %v", w.Name, rcs)
			}
			res, err := simtest.RunRoute(rcs[0], simtest.Request{Host: "anything:1234", Path: "/x"})
			if err != nil || res.Cluster != "inbound|9080||" {
				t.Fatalf("%s: inbound route to %q (%v), want inbound|9080||", w.Name, res.Cluster, err)
			}
			if res.Route.GetRoute().GetRetryPolicy() != nil {
				t.Fatalf("%s: inbound route retries", w.Name)
			}
		}
	}
	// A proxy at an address without instances serves nothing.
	p := simtest.SidecarProxy("ratings-v1", node.Explicit)
	p.IP = p.AppIP
	if rcs := Inbound(s, p); len(rcs) != 0 {
		t.Fatalf("inbound for an address without instances: %v", rcs)
	}
}

// TestGRPCRoutes checks the route configurations of a proxyless client: named by the
// dial target, with a virtual host whose domains contain that name.
func TestGRPCRoutes(t *testing.T) {
	s := simtest.BookinfoFiles("virtual-service-reviews-test-v2.yaml", "virtual-service-ratings-test-abort.yaml")
	rcs := GRPC(s, simtest.GRPCProxy("default"))
	validate(t, rcs)
	var got []string
	for _, rc := range rcs {
		got = append(got, rc.GetName())
		if len(rc.GetVirtualHosts()) != 1 {
			t.Fatalf("%s: %d virtual hosts", rc.GetName(), len(rc.GetVirtualHosts()))
		}
		res, err := simtest.RunRoute(rc, simtest.Request{Host: rc.GetName(), Path: "/pkg.Svc/Method", Headers: map[string]string{"end-user": "jason"}})
		if err != nil {
			t.Fatalf("%s: %v", rc.GetName(), err)
		}
		if res.Cors != nil {
			t.Fatalf("%s: CORS config reaches a gRPC client", rc.GetName())
		}
	}
	wantNames := "details.default.svc.cluster.local:9080 details:9080 productpage.default.svc.cluster.local:9080 productpage:9080 ratings.default.svc.cluster.local:9080 ratings:9080 reviews.default.svc.cluster.local:9080 reviews:9080"
	if strings.Join(got, " ") != wantNames {
		t.Fatalf("names = %v\nwant %v", got, wantNames)
	}
	res, _ := simtest.RunRoute(byName(rcs, "reviews:9080"), simtest.Request{Host: "reviews:9080", Path: "/x", Headers: map[string]string{"end-user": "jason"}})
	if res.Cluster != out("v2", reviews) {
		t.Fatalf("reviews:9080 for jason = %q", res.Cluster)
	}
	res, _ = simtest.RunRoute(byName(rcs, "ratings.default.svc.cluster.local:9080"), simtest.Request{Host: "ratings.default.svc.cluster.local:9080", Path: "/x", Headers: map[string]string{"end-user": "jason"}})
	if res.Fault.GetAbort().GetHttpStatus() != 500 {
		t.Fatalf("ratings abort for jason = %v", res.Fault)
	}
	// Another namespace's client gets only the FQDN forms.
	for _, rc := range GRPC(s, simtest.GRPCProxy("other")) {
		if !strings.Contains(rc.GetName(), ".svc.cluster.local:") {
			t.Fatalf("client in another namespace got short name %q", rc.GetName())
		}
	}
	if len(GRPC(s, simtest.SidecarProxy("ratings-v1", node.Explicit))) != 0 {
		t.Fatal("a sidecar got gRPC route configurations")
	}
}

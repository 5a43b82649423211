package proxycheck

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weft-mesh/weft/internal/node"
	_ "github.com/weft-mesh/weft/internal/proxy/filter/all" // the proxy registers its filters' per-route config types
	"github.com/weft-mesh/weft/internal/proxy/router"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	genroute "github.com/weft-mesh/weft/internal/xds/gen/route"
)

// scenarios are Bookinfo sample sets; each is checked for every proxy kind.
var scenarios = [][]string{
	nil,
	{"virtual-service-all-v1.yaml"},
	{"virtual-service-reviews-test-v2.yaml", "virtual-service-ratings-test-delay.yaml"},
	{"virtual-service-reviews-80-20.yaml", "virtual-service-ratings-test-abort.yaml", "fault-injection-details-v1.yaml"},
	{"virtual-service-reviews-jason-v2-v3.yaml", "bookinfo-gateway.yaml"},
}

// extra exercises the translation's less common fields.
const extra = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage}
spec:
  hosts: [productpage]
  http:
  - match: [{uri: {regex: "/re/[0-9]+"}, ignoreUriCase: true}, {queryParams: {q: {exact: "1"}}}]
    route: [{destination: {host: details}}]
  - match: [{withoutHeaders: {x-a: {}}, headers: {x-b: {prefix: b}}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {prefix: /direct}}]
    directResponse: {status: 503, body: {string: busy}}
  - match: [{uri: {exact: /rw}}]
    rewrite: {uri: /rewritten, authority: a.example}
    retries: {attempts: 3, retryOn: "gateway-error,503"}
    timeout: 2s
    mirror: {host: ratings}
    corsPolicy: {allowOrigins: [{exact: "https://x.example"}], allowMethods: [GET]}
    headers: {request: {set: {x-s: "1"}, add: {x-a: "2"}, remove: [x-r]}}
    route: [{destination: {host: productpage}}]
  - route: [{destination: {host: productpage}}]
`

var requests = []simtest.Request{
	{Host: "reviews:9080", Path: "/reviews/0"},
	{Host: "reviews:9080", Path: "/reviews/0", Headers: map[string]string{"end-user": "jason"}},
	{Host: "ratings.default.svc.cluster.local:9080", Path: "/ratings/0", Headers: map[string]string{"end-user": "jason"}},
	{Host: "details.default:9080", Path: "/details/0"},
	{Host: "productpage:9080", Path: "/RE/42"},
	{Host: "productpage:9080", Path: "/x?q=1"},
	{Host: "productpage:9080", Path: "/x", Headers: map[string]string{"x-b": "bee"}},
	{Host: "productpage:9080", Path: "/direct"},
	{Host: "productpage:9080", Path: "/rw"},
	{Host: "productpage:9080", Path: "/other"},
	{Host: "example.com", Path: "/"},
	{Host: "localhost:8080", Path: "/productpage"},
	{Host: "localhost:8080", Path: "/static/x.css"},
	{Host: "localhost:8080", Path: "/nothing"},
	{Host: "reviews:9080", Path: "/grpc.Svc/M", Method: "POST"},
	{Host: "anything", Path: "/inbound"},
}

func httpRequest(t *testing.T, r simtest.Request) *http.Request {
	t.Helper()
	u, err := url.ParseRequestURI(r.Path)
	if err != nil {
		t.Fatal(err)
	}
	m := r.Method
	if m == "" {
		m = http.MethodGet
	}
	req := &http.Request{Method: m, URL: u, Host: r.Host, Header: http.Header{}}
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	return req
}

func TestProxyAcceptsAndAgrees(t *testing.T) {
	for _, files := range scenarios {
		s := simtest.Bookinfo(append(load(t, append([]string{"destination-rule-all.yaml"}, files...)), simtest.MustParse(extra))...)
		var rcs []*routev3.RouteConfiguration
		for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
			p := simtest.SidecarProxy("productpage-v1", mode)
			rcs = append(rcs, genroute.Outbound(s, p)...)
			rcs = append(rcs, genroute.Inbound(s, p)...)
		}
		rcs = append(rcs, genroute.Gateway(s, simtest.GatewayProxy(node.Explicit))...)
		rcs = append(rcs, genroute.GRPC(s, simtest.GRPCProxy("default"))...)
		for _, rc := range rcs {
			table, err := router.Compile(rc)
			if err != nil {
				t.Fatalf("%v: weft-proxy rejects route configuration %s: %v", files, rc.GetName(), err)
			}
			for _, r := range requests {
				want, simErr := simtest.RunRoute(rc, r)
				got, vh := table.Match(httpRequest(t, r))
				switch {
				case simErr != nil && got != nil:
					t.Errorf("%v %s %s%s: proxy matched route %q, simulator: %v", files, rc.GetName(), r.Host, r.Path, got.Name(), simErr)
				case simErr == nil && got == nil:
					t.Errorf("%v %s %s%s: proxy found no route, simulator chose %q in %s", files, rc.GetName(), r.Host, r.Path, want.RouteName, want.VirtualHost)
				case simErr == nil && (vh.Name() != want.VirtualHost || slices.Index(vh.Routes(), got) != routeIndex(rc, want.VirtualHost, want.Route)):
					t.Errorf("%v %s %s%s: proxy chose %s/%q, simulator %s/%q", files, rc.GetName(), r.Host, r.Path, vh.Name(), got.Name(), want.VirtualHost, want.RouteName)
				}
			}
		}
	}
}

// routeIndex is the position of rt among the routes of rc's virtual host named vhost
// (the compiled table keeps them in that order), -1 when it is not one of them.
func routeIndex(rc *routev3.RouteConfiguration, vhost string, rt *routev3.Route) int {
	for _, vh := range rc.GetVirtualHosts() {
		if vh.GetName() == vhost {
			return slices.Index(vh.GetRoutes(), rt)
		}
	}
	return -1
}

func load(t *testing.T, files []string) []simtest.Configs {
	t.Helper()
	var out []simtest.Configs
	for _, f := range files {
		c, err := simtest.LoadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

package convert

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/config"
	"github.com/weft-mesh/weft/internal/config/validation"
)

func parse(t *testing.T, doc string) []*config.Resource {
	t.Helper()
	fr := config.ParseFile("t.yaml", []byte(doc))
	if !fr.OK() {
		t.Fatalf("parse: %v", fr.Err())
	}
	return fr.Resources
}

// mustValid checks a generated resource passes weft's own validation: translation must
// never produce configuration a user could not have written.
func mustValid(t *testing.T, r *config.Resource) {
	t.Helper()
	res := validation.Validate(validation.Meta{Name: r.Name, Namespace: r.Namespace}, r.Spec)
	if !res.OK() {
		t.Fatalf("generated %s is invalid: %s", r, res.String())
	}
}

// describeRoutes renders a VirtualService's HTTP routes compactly for assertions.
func describeRoutes(vs *networking.VirtualService) []string {
	var out []string
	for _, h := range vs.Http {
		m := "*"
		if len(h.Match) > 0 && h.Match[0].Uri != nil {
			u := h.Match[0].Uri
			switch {
			case u.GetExact() != "":
				m = "exact " + u.GetExact()
			case u.GetPrefix() != "":
				m = "prefix " + u.GetPrefix()
			default:
				m = "regex " + u.GetRegex()
			}
		}
		var dests []string
		for _, d := range h.Route {
			s := d.Destination.Host
			if d.Destination.Port != nil {
				s += fmt.Sprintf(":%d", d.Destination.Port.Number)
			}
			if d.Weight != 0 {
				s += fmt.Sprintf("@%d", d.Weight)
			}
			dests = append(dests, s)
		}
		if h.DirectResponse != nil {
			dests = append(dests, fmt.Sprintf("status %d", h.DirectResponse.Status))
		}
		if rw := h.Rewrite; rw != nil && rw.Uri != "" {
			dests = append(dests, "rewrite "+rw.Uri)
		}
		out = append(out, m+" -> "+strings.Join(dests, ","))
	}
	return out
}

func TestBookinfoGatewayAPISamples(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "..", "shared", "istio-samples", "samples", "bookinfo", "gateway-api")
	if _, err := os.Stat(dir); err != nil {
		t.Skip("Istio samples not present")
	}
	o := Options{}
	read := func(name string) []*config.Resource {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return parse(t, string(data))
	}

	rs := read("bookinfo-gateway.yaml")
	gw, err := KubernetesGateway(rs[0])
	if err != nil {
		t.Fatal(err)
	}
	mustValid(t, gw)
	srv := gw.Spec.(*networking.Gateway).Servers[0]
	if gw.Name != "bookinfo-gateway-gateway-api" || srv.Port.Number != 80 || srv.Port.Protocol != "HTTP" || srv.Hosts[0] != "./*" {
		t.Errorf("gateway = %s %v", gw.Name, srv)
	}
	vss, err := HTTPRoute(rs[1], o)
	if err != nil || len(vss) != 1 {
		t.Fatalf("HTTPRoute: %v, %d resources", err, len(vss))
	}
	mustValid(t, vss[0])
	vs := vss[0].Spec.(*networking.VirtualService)
	if fmt.Sprint(vs.Gateways) != "[default/bookinfo-gateway-gateway-api]" || fmt.Sprint(vs.Hosts) != "[*]" {
		t.Errorf("binding: hosts %v gateways %v", vs.Hosts, vs.Gateways)
	}
	pp := "productpage.default.svc.cluster.local:9080"
	want := []string{
		"exact /api/v1/products -> " + pp, // longest exact first
		"exact /productpage -> " + pp,
		"exact /static -> " + pp, // same length as /logout: document order
		"exact /logout -> " + pp,
		"exact /login -> " + pp,
		"prefix /api/v1/products/ -> " + pp,
		"prefix /static/ -> " + pp,
	}
	if got := describeRoutes(vs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("routes:\n got %q\nwant %q", got, want)
	}

	vss, err = HTTPRoute(read("route-reviews-90-10.yaml")[0], o)
	if err != nil || len(vss) != 1 {
		t.Fatalf("90-10: %v %d", err, len(vss))
	}
	mustValid(t, vss[0])
	vs = vss[0].Spec.(*networking.VirtualService)
	if fmt.Sprint(vs.Hosts) != "[reviews.default.svc.cluster.local]" || fmt.Sprint(vs.Gateways) != "[mesh]" {
		t.Errorf("mesh binding: %v %v", vs.Hosts, vs.Gateways)
	}
	if got := describeRoutes(vs); fmt.Sprint(got) != "[* -> reviews-v1.default.svc.cluster.local:9080@90,reviews-v2.default.svc.cluster.local:9080@10]" {
		t.Errorf("90-10 routes: %q", got)
	}

	// Every sample translates to valid Istio configuration.
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		for _, r := range read(filepath.Base(f)) {
			switch r.Kind {
			case config.KindHTTPRoute:
				out, err := HTTPRoute(r, o)
				if err != nil {
					t.Errorf("%s: %v", f, err)
				}
				for _, v := range out {
					mustValid(t, v)
				}
			case config.KindKubernetesGateway:
				g, err := KubernetesGateway(r)
				if err != nil {
					t.Errorf("%s: %v", f, err)
				}
				mustValid(t, g)
			}
		}
	}
}

func TestHTTPRouteFilters(t *testing.T) {
	rs := parse(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old/}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Env, value: prod}], remove: [x-debug]}
    backendRefs: [{name: web, port: 8080}]
  - matches: [{path: {type: Exact, value: /down}}]
    backendRefs: [{name: web, port: 8080, weight: 0}]
  - matches: [{path: {type: Exact, value: /http}, headers: [{name: X-Proto, value: http}]}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
`)
	vss, err := HTTPRoute(rs[0], Options{DomainSuffix: "mesh.local"})
	if err != nil || len(vss) != 1 {
		t.Fatalf("%v %d", err, len(vss))
	}
	mustValid(t, vss[0])
	vs := vss[0].Spec.(*networking.VirtualService)
	web := "web.shop.svc.mesh.local:8080"
	want := []string{
		"exact /http -> ",           // same path length as /down, but a header match ranks it first
		"exact /down -> status 500", // weight 0 everywhere: 500 as the Gateway API requires
		"exact /old -> " + web + ",rewrite /new",
		"prefix /old/ -> " + web + ",rewrite /new/",
	}
	if got := describeRoutes(vs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("routes:\n got %q\nwant %q", got, want)
	}
	rd := vs.Http[0].Redirect
	if rd == nil || rd.Scheme != "https" || rd.RedirectCode != 302 || rd.GetDerivePort() != networking.HTTPRedirect_FROM_PROTOCOL_DEFAULT {
		t.Errorf("redirect = %v", rd)
	}
	if h := vs.Http[2].Headers.GetRequest(); h.GetSet()["x-env"] != "prod" || h.GetRemove()[0] != "x-debug" {
		t.Errorf("header ops = %v", h)
	}

	cross := parse(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, namespace: other, port: 80}]}]
`)
	if _, err := HTTPRoute(cross[0], Options{}); err == nil || !strings.Contains(err.Error(), "ReferenceGrant") {
		t.Errorf("cross-namespace backend: %v", err)
	}
}

func TestGRPCRouteAndTrafficSplit(t *testing.T) {
	rs := parse(t, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter}]
  rules:
  - matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
    backendRefs: [{name: greeter-v2, port: 50051}]
  - backendRefs: [{name: greeter-v1, port: 50051}]
---
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: ts}
spec:
  service: website
  backends: [{service: website-v1, weight: 750m}, {service: website-v2, weight: 250m}]
`)
	vss, err := GRPCRoute(rs[0], Options{})
	if err != nil || len(vss) != 1 {
		t.Fatalf("%v %d", err, len(vss))
	}
	mustValid(t, vss[0])
	got := describeRoutes(vss[0].Spec.(*networking.VirtualService))
	want := []string{"exact /helloworld.Greeter/SayHello -> greeter-v2.default.svc.cluster.local:50051", "* -> greeter-v1.default.svc.cluster.local:50051"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("grpc routes %q", got)
	}
	ts, err := TrafficSplit(rs[1], Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustValid(t, ts)
	if got := describeRoutes(ts.Spec.(*networking.VirtualService)); fmt.Sprint(got) != "[* -> website-v1.default.svc.cluster.local@750,website-v2.default.svc.cluster.local@250]" {
		t.Errorf("split = %q", got)
	}
}

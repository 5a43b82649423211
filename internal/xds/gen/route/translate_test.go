package route

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// httpbin is a two-port service beside Bookinfo, and "echo" lives in namespace other.
const (
	httpbin = "httpbin.default.svc.cluster.local"
	echo    = "echo.other.svc.cluster.local"
)

func mesh(yamlText string) *snapshot.Snapshot {
	in := simtest.BookinfoInput(simtest.MustParse(yamlText))
	in.Services = append(in.Services,
		&registry.Service{Hostname: httpbin, Name: "httpbin", Namespace: "default", Ports: []registry.Port{
			{Name: "http", Number: 8000, Protocol: registry.HTTP}, {Name: "http-alt", Number: 8001, Protocol: registry.HTTP},
			{Name: "tcp", Number: 9000, Protocol: registry.TCP}}},
		&registry.Service{Hostname: echo, Name: "echo", Namespace: "other", Ports: []registry.Port{{Name: "http", Number: 80, Protocol: registry.HTTP}}},
	)
	return snapshot.Build(in)
}

// route runs one request from productpage's sidecar (Explicit) and fails on error.
func routeOf(t *testing.T, s *snapshot.Snapshot, p *node.Proxy, r simtest.Request) simtest.Result {
	t.Helper()
	rcs := Outbound(s, p)
	validate(t, rcs)
	if r.Path == "" {
		r.Path = "/"
	}
	res, err := simtest.RunRoute(rcs[0], r)
	if err != nil {
		t.Fatalf("%s%s: %v", r.Host, r.Path, err)
	}
	return res
}

func pp() *node.Proxy { return simtest.SidecarProxy("productpage-v1", node.Explicit) }

func TestMatchTranslation(t *testing.T) {
	s := mesh(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - name: exact
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: httpbin, subset: exact}}]
  - name: regex
    match: [{uri: {regex: "/re/[0-9]+"}}]
    route: [{destination: {host: httpbin, subset: regex}}]
  - name: nocase
    match: [{uri: {prefix: /CaSe}, ignoreUriCase: true}]
    route: [{destination: {host: httpbin, subset: nocase}}]
  - name: headers
    match:
    - headers:
        x-prefix: {prefix: ab}
        x-regex: {regex: "v[0-9]"}
    route: [{destination: {host: httpbin, subset: headers}}]
  - name: present
    match: [{headers: {x-present: {}}}]
    route: [{destination: {host: httpbin, subset: present}}]
  - name: without
    match: [{uri: {prefix: /without}, withoutHeaders: {x-skip: {exact: "1"}}}]
    route: [{destination: {host: httpbin, subset: without}}]
  - name: query
    match: [{queryParams: {q: {exact: "1"}, r: {regex: "[a-z]+"}}}]
    route: [{destination: {host: httpbin, subset: query}}]
  - name: method
    match: [{method: {exact: POST}, uri: {prefix: /m}}]
    route: [{destination: {host: httpbin, subset: method}}]
  - name: authority
    match: [{authority: {prefix: "httpbin.default"}, uri: {prefix: /a}}]
    route: [{destination: {host: httpbin, subset: authority}}]
  - name: port
    match:
    - {port: 8001, uri: {prefix: /p}, name: alt}
    - {port: 8000, uri: {prefix: /p}, name: main}
    route: [{destination: {host: httpbin, subset: port}}]
  - name: labels
    match: [{sourceLabels: {app: reviews}, uri: {prefix: /l}}]
    route: [{destination: {host: httpbin, subset: labels}}]
  - name: ns
    match: [{sourceNamespace: other, uri: {prefix: /n}}]
    route: [{destination: {host: httpbin, subset: ns}}]
  - name: gw
    match: [{gateways: [some-gateway], uri: {prefix: /g}}]
    route: [{destination: {host: httpbin, subset: gw}}]
  - route: [{destination: {host: httpbin, subset: rest}}]
`)
	cl := func(port uint32, subset string) string { return names.Cluster(names.Outbound, port, subset, httpbin) }
	for _, tc := range []struct {
		name string
		r    simtest.Request
		want string
		rn   string
	}{
		{"exact", simtest.Request{Host: "httpbin:8000", Path: "/exact"}, cl(8000, "exact"), "exact"},
		{"exact is not prefix", simtest.Request{Host: "httpbin:8000", Path: "/exact/x"}, cl(8000, "rest"), ""},
		{"exact ignores query", simtest.Request{Host: "httpbin:8000", Path: "/exact?x=1"}, cl(8000, "exact"), "exact"},
		{"regex", simtest.Request{Host: "httpbin:8000", Path: "/re/42"}, cl(8000, "regex"), "regex"},
		{"regex is full match", simtest.Request{Host: "httpbin:8000", Path: "/re/42x"}, cl(8000, "rest"), ""},
		{"ignore case", simtest.Request{Host: "httpbin:8000", Path: "/case/x"}, cl(8000, "nocase"), "nocase"},
		{"headers all", simtest.Request{Host: "httpbin:8000", Headers: map[string]string{"X-Prefix": "abc", "x-regex": "v1"}}, cl(8000, "headers"), "headers"},
		{"headers one missing", simtest.Request{Host: "httpbin:8000", Headers: map[string]string{"x-prefix": "abc"}}, cl(8000, "rest"), ""},
		{"header regex full", simtest.Request{Host: "httpbin:8000", Headers: map[string]string{"x-prefix": "abc", "x-regex": "v1x"}}, cl(8000, "rest"), ""},
		{"present", simtest.Request{Host: "httpbin:8000", Headers: map[string]string{"x-present": ""}}, cl(8000, "present"), "present"},
		{"without header absent", simtest.Request{Host: "httpbin:8000", Path: "/without"}, cl(8000, "without"), "without"},
		{"without header other value", simtest.Request{Host: "httpbin:8000", Path: "/without", Headers: map[string]string{"x-skip": "2"}}, cl(8000, "without"), "without"},
		{"without header set", simtest.Request{Host: "httpbin:8000", Path: "/without", Headers: map[string]string{"x-skip": "1"}}, cl(8000, "rest"), ""},
		{"query", simtest.Request{Host: "httpbin:8000", Path: "/?q=1&r=abc"}, cl(8000, "query"), "query"},
		{"query regex", simtest.Request{Host: "httpbin:8000", Path: "/?q=1&r=ABC"}, cl(8000, "rest"), ""},
		{"method", simtest.Request{Host: "httpbin:8000", Path: "/m", Method: "POST"}, cl(8000, "method"), "method"},
		{"method other", simtest.Request{Host: "httpbin:8000", Path: "/m"}, cl(8000, "rest"), ""},
		{"authority", simtest.Request{Host: "httpbin.default:8000", Path: "/a"}, cl(8000, "authority"), "authority"},
		{"authority other", simtest.Request{Host: "httpbin:8000", Path: "/a"}, cl(8000, "rest"), ""},
		// The destination has no port: the virtual host's port is used.
		{"port 8001", simtest.Request{Host: "httpbin:8001", Path: "/p"}, cl(8001, "port"), "port.alt"},
		{"port 8000", simtest.Request{Host: "httpbin:8000", Path: "/p"}, cl(8000, "port"), "port.main"},
		// productpage's labels and namespace do not match: those routes are not generated.
		{"source labels", simtest.Request{Host: "httpbin:8000", Path: "/l"}, cl(8000, "rest"), ""},
		{"source namespace", simtest.Request{Host: "httpbin:8000", Path: "/n"}, cl(8000, "rest"), ""},
		{"match gateway", simtest.Request{Host: "httpbin:8000", Path: "/g"}, cl(8000, "rest"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := routeOf(t, s, pp(), tc.r)
			if res.Cluster != tc.want || res.RouteName != tc.rn {
				t.Fatalf("cluster %q route %q, want %q route %q", res.Cluster, res.RouteName, tc.want, tc.rn)
			}
		})
	}
	// The reviews sidecar has the labels.
	res := routeOf(t, s, simtest.SidecarProxy("reviews-v1", node.Explicit), simtest.Request{Host: "httpbin:8000", Path: "/l"})
	if res.Cluster != cl(8000, "labels") {
		t.Fatalf("source labels for reviews: %q", res.Cluster)
	}
}

func TestActions(t *testing.T) {
	s := mesh(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /redirect}}]
    redirect: {uri: /new, authority: example.com, redirectCode: 308, scheme: https, port: 8443}
  - match: [{uri: {prefix: /derive}}]
    redirect: {uri: /d, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /direct}}]
    directResponse: {status: 418, body: {string: "teapot"}}
  - match: [{uri: {prefix: /old/}}, {uri: {exact: /exact}}]
    rewrite: {uri: /new/, authority: backend.internal}
    route: [{destination: {host: httpbin, port: {number: 8001}}}]
  - match: [{uri: {prefix: /rx}}]
    rewrite: {uriRegexRewrite: {match: "^/rx/(.*)$", rewrite: "/\\1"}}
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /timeout}}]
    timeout: 3s
    retries: {attempts: 4, perTryTimeout: 1s, retryOn: "5xx,503,gateway-error,429", retryRemoteLocalities: true}
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /noretry}}]
    retries: {attempts: 0}
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /mirror}}]
    mirror: {host: echo.other.svc.cluster.local}
    mirrorPercentage: {value: 12.5}
    mirrors:
    - destination: {host: ratings, subset: v1}
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-set: a, host: rewritten.example}, add: {x-add: b}, remove: [x-drop]}
      response: {set: {x-resp: c}, remove: [server]}
    route:
    - destination: {host: httpbin}
      headers: {request: {add: {x-dest: d}}}
  - match: [{uri: {prefix: /weights}}]
    route:
    - {destination: {host: httpbin, subset: a}, weight: 0}
    - {destination: {host: httpbin, subset: b}, weight: 100, headers: {request: {set: {x-b: "1"}}}}
  - match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: httpbin, subset: a}, weight: 25, headers: {response: {set: {x-a: "1"}}}}
    - {destination: {host: httpbin, subset: b}, weight: 75}
  - match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*\\.b\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /fault}}]
    fault:
      delay: {fixedDelay: 2s, percent: 30}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0.1}}
    route: [{destination: {host: httpbin}}]
`)
	run := func(path string, port uint32) simtest.Result {
		return routeOf(t, s, pp(), simtest.Request{Host: "httpbin:" + map[uint32]string{8000: "8000", 8001: "8001"}[port], Path: path})
	}
	t.Run("redirect", func(t *testing.T) {
		rd := run("/redirect/x", 8000).Redirect
		if rd.GetPathRedirect() != "/new" || rd.GetHostRedirect() != "example.com" || rd.GetSchemeRedirect() != "https" ||
			rd.GetPortRedirect() != 8443 || rd.GetResponseCode() != routev3.RedirectAction_PERMANENT_REDIRECT {
			t.Fatalf("redirect = %v", rd)
		}
		rd = run("/derive", 8001).Redirect
		if rd.GetPortRedirect() != 8001 || rd.GetResponseCode() != routev3.RedirectAction_MOVED_PERMANENTLY {
			t.Fatalf("derived redirect = %v", rd)
		}
	})
	t.Run("direct response", func(t *testing.T) {
		dr := run("/direct", 8000).DirectResponse
		if dr.GetStatus() != 418 || dr.GetBody().GetInlineString() != "teapot" {
			t.Fatalf("direct response = %v", dr)
		}
	})
	t.Run("rewrite", func(t *testing.T) {
		res := run("/old/x", 8000)
		ra := res.Route.GetRoute()
		if res.Cluster != names.Cluster(names.Outbound, 8001, "", httpbin) || ra.GetPrefixRewrite() != "/new/" || ra.GetHostRewriteLiteral() != "backend.internal" {
			t.Fatalf("prefix rewrite: %v", ra)
		}
		ra = run("/exact", 8000).Route.GetRoute()
		if ra.GetPrefixRewrite() != "" || ra.GetRegexRewrite().GetSubstitution() != "/new/" || ra.GetRegexRewrite().GetPattern().GetRegex() != "^.*$" {
			t.Fatalf("exact rewrite: %v", ra)
		}
		ra = run("/rx/a", 8000).Route.GetRoute()
		if ra.GetRegexRewrite().GetPattern().GetRegex() != "^/rx/(.*)$" || ra.GetRegexRewrite().GetSubstitution() != `/\1` {
			t.Fatalf("regex rewrite: %v", ra)
		}
	})
	t.Run("timeout and retries", func(t *testing.T) {
		ra := run("/timeout", 8000).Route.GetRoute()
		rp := ra.GetRetryPolicy()
		if ra.GetTimeout().AsDuration() != 3*time.Second || rp.GetNumRetries().GetValue() != 4 || rp.GetPerTryTimeout().AsDuration() != time.Second {
			t.Fatalf("timeout/retries: %v", ra)
		}
		if rp.GetRetryOn() != "5xx,gateway-error,retriable-status-codes" || len(rp.GetRetriableStatusCodes()) != 2 ||
			rp.GetRetriableStatusCodes()[0] != 503 || rp.GetRetriableStatusCodes()[1] != 429 {
			t.Fatalf("retry_on %q codes %v", rp.GetRetryOn(), rp.GetRetriableStatusCodes())
		}
		if rp.GetRetryPriority().GetName() != "envoy.retry_priorities.previous_priorities" || len(rp.GetRetryHostPredicate()) != 1 {
			t.Fatalf("retry priority/predicate: %v", rp)
		}
		if rp := run("/noretry", 8000).Route.GetRoute().GetRetryPolicy(); rp != nil {
			t.Fatalf("attempts 0: retry policy %v", rp)
		}
		rcs := Outbound(s, pp())
		if res, err := simtest.RunRoute(rcs[0], simtest.Request{Host: "httpbin:8000", Path: "/other"}); err == nil {
			t.Fatalf("path no route matches was routed to %q", res.Cluster)
		}
	})
	t.Run("mirror", func(t *testing.T) {
		ms := run("/mirror", 8000).Route.GetRoute().GetRequestMirrorPolicies()
		if len(ms) != 2 || ms[0].GetCluster() != names.Cluster(names.Outbound, 80, "", echo) ||
			ms[0].GetRuntimeFraction().GetDefaultValue().GetNumerator() != 125000 ||
			ms[0].GetRuntimeFraction().GetDefaultValue().GetDenominator() != typev3.FractionalPercent_MILLION ||
			ms[1].GetCluster() != names.Cluster(names.Outbound, 9080, "v1", ratings) ||
			ms[1].GetRuntimeFraction().GetDefaultValue().GetNumerator() != 100 {
			t.Fatalf("mirrors = %v", ms)
		}
	})
	t.Run("headers", func(t *testing.T) {
		r := run("/headers", 8000).Route
		hv := func(hs []*corev3.HeaderValueOption) map[string]string {
			m := map[string]string{}
			for _, h := range hs {
				m[h.GetHeader().GetKey()] = h.GetHeader().GetValue() + "/" + h.GetAppendAction().String()
			}
			return m
		}
		req := hv(r.GetRequestHeadersToAdd())
		if len(req) != 3 || req["x-set"] != "a/OVERWRITE_IF_EXISTS_OR_ADD" || req["x-add"] != "b/APPEND_IF_EXISTS_OR_ADD" || req["x-dest"] != "d/APPEND_IF_EXISTS_OR_ADD" {
			t.Fatalf("request headers = %v", req)
		}
		if r.GetRoute().GetHostRewriteLiteral() != "rewritten.example" {
			t.Fatalf("host set: rewrite = %q", r.GetRoute().GetHostRewriteLiteral())
		}
		if rm := r.GetRequestHeadersToRemove(); len(rm) != 1 || rm[0] != "x-drop" {
			t.Fatalf("request remove = %v", rm)
		}
		if resp := hv(r.GetResponseHeadersToAdd()); resp["x-resp"] != "c/OVERWRITE_IF_EXISTS_OR_ADD" || len(r.GetResponseHeadersToRemove()) != 1 {
			t.Fatalf("response headers = %v %v", resp, r.GetResponseHeadersToRemove())
		}
	})
	t.Run("weights", func(t *testing.T) {
		res := run("/weights", 8000)
		if res.Cluster != names.Cluster(names.Outbound, 8000, "b", httpbin) {
			t.Fatalf("weight 0 + 100 = %v %v, want the plain cluster of b", res.Cluster, res.Weighted)
		}
		if hs := res.Route.GetRequestHeadersToAdd(); len(hs) != 1 || hs[0].GetHeader().GetKey() != "x-b" {
			t.Fatalf("lone destination's headers = %v", hs)
		}
		res = run("/split", 8000)
		if res.Weighted[names.Cluster(names.Outbound, 8000, "a", httpbin)] != 25 || res.Weighted[names.Cluster(names.Outbound, 8000, "b", httpbin)] != 75 {
			t.Fatalf("split = %v", res.Weighted)
		}
		if cw := res.Route.GetRoute().GetWeightedClusters().GetClusters()[0]; len(cw.GetResponseHeadersToAdd()) != 1 {
			t.Fatalf("weighted cluster headers = %v", cw)
		}
	})
	t.Run("cors", func(t *testing.T) {
		c := run("/cors", 8000).Cors
		if len(c.GetAllowOriginStringMatch()) != 2 || c.GetAllowOriginStringMatch()[0].GetExact() != "https://a.example" ||
			c.GetAllowOriginStringMatch()[1].GetSafeRegex().GetRegex() != `https://.*\.b\.example` ||
			c.GetAllowMethods() != "GET,POST" || c.GetAllowHeaders() != "x-a" || c.GetExposeHeaders() != "x-b" ||
			c.GetMaxAge() != "86400" || !c.GetAllowCredentials().GetValue() || !c.GetForwardNotMatchingPreflights().GetValue() {
			t.Fatalf("cors = %v", c)
		}
	})
	t.Run("fault", func(t *testing.T) {
		f := run("/fault", 8000).Fault
		d, a := f.GetDelay(), f.GetAbort()
		if d.GetFixedDelay().AsDuration() != 2*time.Second || d.GetPercentage().GetNumerator() != 30 || d.GetPercentage().GetDenominator() != typev3.FractionalPercent_HUNDRED {
			t.Fatalf("delay = %v", d)
		}
		if a.GetGrpcStatus() != 14 || a.GetPercentage().GetNumerator() != 1000 || a.GetPercentage().GetDenominator() != typev3.FractionalPercent_MILLION {
			t.Fatalf("abort = %v", a)
		}
	})
}

func TestHashPolicy(t *testing.T) {
	s := mesh(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: X-User}}
    portLevelSettings:
    - port: {number: 8001}
      loadBalancer: {consistentHash: {useSourceIp: true}}
  subsets:
  - name: cookie
    labels: {v: c}
    trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: sticky, ttl: 60s, path: /}}}}
  - name: query
    labels: {v: q}
    trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - match: [{uri: {prefix: /cookie}}]
    route: [{destination: {host: httpbin, subset: cookie}}]
  - match: [{uri: {prefix: /query}}]
    route: [{destination: {host: httpbin, subset: query}}]
  - match: [{uri: {prefix: /mixed}}]
    route:
    - {destination: {host: httpbin, subset: query}, weight: 50}
    - {destination: {host: httpbin, subset: cookie}, weight: 50}
  - route: [{destination: {host: httpbin}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-hash}
spec:
  host: ratings.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-ratings}}}
`)
	hash := func(host, path string) *routev3.RouteAction_HashPolicy {
		hp := routeOf(t, s, pp(), simtest.Request{Host: host, Path: path}).Route.GetRoute().GetHashPolicy()
		if len(hp) == 0 {
			return nil
		}
		return hp[0]
	}
	if h := hash("httpbin:8000", "/"); h.GetHeader().GetHeaderName() != "x-user" {
		t.Fatalf("top-level header hash = %v", h)
	}
	if h := hash("httpbin:8001", "/"); !h.GetConnectionProperties().GetSourceIp() {
		t.Fatalf("port-level source ip hash = %v", h)
	}
	if h := hash("httpbin:8000", "/cookie"); h.GetCookie().GetName() != "sticky" || h.GetCookie().GetTtl().AsDuration() != time.Minute || h.GetCookie().GetPath() != "/" {
		t.Fatalf("subset cookie hash = %v", h)
	}
	if h := hash("httpbin:8000", "/query"); h.GetQueryParameter().GetName() != "user" {
		t.Fatalf("subset query hash = %v", h)
	}
	if h := hash("httpbin:8000", "/mixed"); h != nil {
		t.Fatalf("disagreeing destinations hash = %v, want none", h)
	}
	// A service without a VirtualService: the default route carries the hash policy.
	if h := hash("ratings:9080", "/"); h.GetHeader().GetHeaderName() != "x-ratings" {
		t.Fatalf("default route hash = %v", h)
	}
	if h := hash("details:9080", "/"); h != nil {
		t.Fatalf("no DestinationRule: hash = %v", h)
	}
}

func TestScope(t *testing.T) {
	const vs = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: other}
spec:
  hosts: [echo]
  exportTo: ["."]
  http:
  - route: [{destination: {host: echo, subset: private}}]
`
	domains := func(s *snapshot.Snapshot, p *node.Proxy) map[string]bool {
		rcs := Outbound(s, p)
		validate(t, rcs)
		ds, _ := simtest.Domains(rcs[0])
		m := map[string]bool{}
		for _, d := range ds {
			m[d] = true
		}
		return m
	}
	t.Run("virtual service exportTo", func(t *testing.T) {
		s := mesh(vs)
		res := routeOf(t, s, pp(), simtest.Request{Host: "echo.other"})
		if res.Cluster != names.Cluster(names.Outbound, 80, "", echo) {
			t.Fatalf("from default: %q, want the default route (VirtualService not exported)", res.Cluster)
		}
		p := pp()
		p.Namespace = "other"
		res = routeOf(t, s, p, simtest.Request{Host: "echo"})
		if res.Cluster != names.Cluster(names.Outbound, 80, "private", echo) {
			t.Fatalf("from other: %q", res.Cluster)
		}
	})
	t.Run("service exportTo", func(t *testing.T) {
		in := simtest.BookinfoInput()
		in.Services = append(in.Services, &registry.Service{Hostname: echo, Name: "echo", Namespace: "other", ExportTo: []string{"."},
			Ports: []registry.Port{{Number: 80, Protocol: registry.HTTP}}})
		s := snapshot.Build(in)
		if d := domains(s, pp()); d["echo.other:80"] || !d["reviews:9080"] {
			t.Fatalf("domains = %v", d)
		}
	})
	t.Run("port 80 names", func(t *testing.T) {
		d := domains(mesh(""), pp())
		for _, want := range []string{"echo.other", "echo.other:80", "echo.other.svc", "echo.other.svc.cluster.local", "echo.other.svc.cluster.local:80"} {
			if !d[want] {
				t.Errorf("missing domain %q", want)
			}
		}
		if d["echo"] || d["echo:80"] {
			t.Errorf("short name of another namespace's service claimed")
		}
	})
	t.Run("sidecar egress", func(t *testing.T) {
		s := mesh(vs + `
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - hosts: ["./reviews.default.svc.cluster.local", "istio-system/*"]
  - port: {number: 8001, protocol: HTTP, name: http}
    hosts: ["./httpbin.default.svc.cluster.local"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`)
		d := domains(s, pp())
		if !d["reviews:9080"] || d["ratings:9080"] || d["echo.other:80"] || d["httpbin:8000"] || !d["httpbin:8001"] {
			t.Fatalf("domains = %v", d)
		}
		res := routeOf(t, s, pp(), simtest.Request{Host: "ratings:9080"})
		if res.DirectResponse.GetStatus() != 502 {
			t.Fatalf("REGISTRY_ONLY unknown host: %v", res)
		}
		// A workload-specific Sidecar beats the namespace default.
		s2 := mesh(`
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./reviews.default.svc.cluster.local"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pp, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress: [{hosts: ["*/*"]}]
`)
		if d := domains(s2, pp()); !d["ratings:9080"] || !d["echo.other:80"] {
			t.Fatalf("workload Sidecar: %v", d)
		}
		if d := domains(s2, simtest.SidecarProxy("reviews-v1", node.Explicit)); d["ratings:9080"] {
			t.Fatalf("namespace Sidecar not applied to reviews: %v", d)
		}
	})
}

// TestSidecarVirtualServicePrecedence: a sidecar uses one VirtualService per host —
// an exact host beats a wildcard, then the oldest wins; others are ignored.
func TestSidecarVirtualServicePrecedence(t *testing.T) {
	s := mesh(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-wild}
spec:
  hosts: ["*.default.svc.cluster.local"]
  http: [{route: [{destination: {host: reviews, subset: wild}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: old}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: old}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: new}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: new}}]
`)
	if c := routeOf(t, s, pp(), simtest.Request{Host: "reviews:9080", Headers: map[string]string{"end-user": "jason"}}).Cluster; c != out("old", reviews) {
		t.Fatalf("reviews: %q, want the oldest exact VirtualService's", c)
	}
	if c := routeOf(t, s, pp(), simtest.Request{Host: "ratings:9080"}).Cluster; c != out("wild", reviews) {
		t.Fatalf("ratings: %q, want the wildcard VirtualService's", c)
	}
}

// TestNonServiceHosts: a VirtualService for a host no service has gets its own virtual
// host.
func TestNonServiceHosts(t *testing.T) {
	s := mesh(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  http:
  - route: [{destination: {host: httpbin.default.svc.cluster.local, port: {number: 8000}}}]
`)
	for _, host := range []string{"api.example.com", "api.example.com:8443"} {
		if c := routeOf(t, s, pp(), simtest.Request{Host: host}).Cluster; c != names.Cluster(names.Outbound, 8000, "", httpbin) {
			t.Fatalf("%s: %q", host, c)
		}
	}
	p := simtest.SidecarProxy("productpage-v1", node.Redirect)
	rcs := Outbound(s, p)
	validate(t, rcs)
	var got []string
	for _, rc := range rcs {
		got = append(got, rc.GetName())
		res, err := simtest.RunRoute(rc, simtest.Request{Host: "api.example.com:" + rc.GetName(), Path: "/"})
		if err != nil || res.Cluster != names.Cluster(names.Outbound, 8000, "", httpbin) {
			t.Fatalf("%s: %v %v", rc.GetName(), res.Cluster, err)
		}
	}
	if len(got) != 4 || got[0] != "80" || got[1] != "8000" || got[2] != "8001" || got[3] != "9080" {
		t.Fatalf("redirect route configurations = %v (TCP port 9000 must have none)", got)
	}
}

func TestGatewayMerge(t *testing.T) {
	s := mesh(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["default/*.example.com"]
    tls: {mode: SIMPLE, credentialName: example-cert}
  - port: {number: 8080, name: http-alt, protocol: HTTP}
    hosts: ["other/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: first}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: productpage}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: second}
spec:
  hosts: [shop.example.com, "*"]
  gateways: [istio-system/gw, mesh]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: httpbin, port: {number: 8000}}}]
  - match: [{uri: {prefix: /gw-only}, gateways: [istio-system/gw]}]
    route: [{destination: {host: details}}]
`)
	rcs := Gateway(s, simtest.GatewayProxy(node.Redirect))
	validate(t, rcs)
	if len(rcs) != 3 {
		t.Fatalf("gateway route configurations: %d", len(rcs))
	}
	https := byName(rcs, names.GatewayRoute(443))
	// "shop.example.com" merges "first" (oldest, catch-all) and "second" (narrowed from
	// "*"): the catch-all moves last so /api reaches httpbin.
	for _, tc := range []struct{ host, path, want string }{
		{"shop.example.com", "/", out("", product)},
		{"shop.example.com", "/api/x", names.Cluster(names.Outbound, 8000, "", httpbin)},
		{"shop.example.com:443", "/gw-only", out("", details)},
		{"other.example.com", "/api", names.Cluster(names.Outbound, 8000, "", httpbin)},
	} {
		res, err := simtest.RunRoute(https, simtest.Request{Host: tc.host, Path: tc.path})
		if err != nil || res.Cluster != tc.want {
			t.Errorf("https %s%s: %q %v, want %q", tc.host, tc.path, res.Cluster, err, tc.want)
		}
	}
	for _, vh := range byName(rcs, names.GatewayRoute(80)).GetVirtualHosts() {
		if vh.GetRequireTls() != routev3.VirtualHost_ALL {
			t.Errorf("http vhost %s: require_tls %v, want ALL (httpsRedirect)", vh.GetName(), vh.GetRequireTls())
		}
	}
	// Port 8080 only admits VirtualServices from namespace "other".
	if vhs := byName(rcs, names.GatewayRoute(8080)).GetVirtualHosts(); len(vhs) != 0 {
		t.Fatalf("8080 virtual hosts from namespace default: %v", vhs)
	}
	// The mesh side of "second": hosts "*" applies to every service a sidecar calls,
	// without the match that names only the gateway (so /gw-only finds no route).
	if res, err := simtest.RunRoute(Outbound(s, pp())[0], simtest.Request{Host: "ratings:9080", Path: "/gw-only"}); err == nil {
		t.Fatalf("sidecar: gateway-only match applied: %q", res.Cluster)
	}
	if c := routeOf(t, s, pp(), simtest.Request{Host: "httpbin:8001", Path: "/api"}).Cluster; c != names.Cluster(names.Outbound, 8000, "", httpbin) {
		t.Fatalf("sidecar: %q", c)
	}
}

// TestOneDotHosts: "reviews.default" names the service; "example.com" stays itself.
func TestOneDotHosts(t *testing.T) {
	s := mesh(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: site}
spec:
  hosts: [example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: reviews.default, port: {number: 9080}}}]}]
`)
	rcs := Gateway(s, simtest.GatewayProxy(node.Redirect))
	validate(t, rcs)
	res, err := simtest.RunRoute(rcs[0], simtest.Request{Host: "example.com", Path: "/"})
	if err != nil || res.Cluster != out("", reviews) || res.VirtualHost != "example.com:80" {
		t.Fatalf("example.com: %+v %v", res, err)
	}
}

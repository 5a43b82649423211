package validation_test

import (
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/config"
)

// doc builds a document of the given kind from a spec written in YAML (indented by 2).
func doc(apiVersion, kind, spec string) string {
	return "apiVersion: " + apiVersion + "\nkind: " + kind + "\nmetadata:\n  name: x\n  namespace: ns\nspec:\n" + indent(spec)
}

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

const (
	net  = "networking.istio.io/v1"
	sec  = "security.istio.io/v1"
	tel  = "telemetry.istio.io/v1"
	gwa  = "gateway.networking.k8s.io/v1"
	smiV = "split.smi-spec.io/v1alpha4"
)

type vcase struct {
	name       string
	apiVersion string
	kind       string
	spec       string
	// errs are substrings that must each appear in some error ("path: message");
	// nil means the document must be valid.
	errs []string
	// warns are substrings that must appear in some warning.
	warns []string
}

func run(t *testing.T, cases []vcase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fr := config.ParseFile("f.yaml", []byte(doc(c.apiVersion, c.kind, c.spec)))
			var errs, warns []string
			for _, e := range fr.Errors {
				errs = append(errs, e.Error())
			}
			for _, w := range fr.Warnings {
				warns = append(warns, w.Error())
			}
			if c.errs == nil && len(errs) > 0 {
				t.Fatalf("valid document rejected:\n  %s", strings.Join(errs, "\n  "))
			}
			if c.errs != nil && len(errs) == 0 {
				t.Fatalf("invalid document accepted (want %q)", c.errs)
			}
			for _, want := range c.errs {
				if !containsAny(errs, want) {
					t.Errorf("no error contains %q; got:\n  %s", want, strings.Join(errs, "\n  "))
				}
			}
			for _, want := range c.warns {
				if !containsAny(warns, want) {
					t.Errorf("no warning contains %q; got:\n  %s", want, strings.Join(warns, "\n  "))
				}
			}
		})
	}
}

func containsAny(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

const okRoute = "http:\n- route:\n  - destination: {host: r}"

func TestVirtualService(t *testing.T) {
	vs := func(name, spec string, errs ...string) vcase {
		c := vcase{name: name, apiVersion: net, kind: "VirtualService", spec: spec}
		if len(errs) > 0 {
			c.errs = errs
		}
		return c
	}
	run(t, []vcase{
		vs("minimal", "hosts: [r]\n"+okRoute),
		vs("fqdn, wildcard and short hosts", "hosts: [r, r.ns.svc.cluster.local, '*.example.com']\n"+okRoute),
		vs("ip host", "hosts: [10.0.0.1]\n"+okRoute),
		vs("bad host", "hosts: ['foo_bar']\n"+okRoute, `spec.hosts[0]: Invalid value: "foo_bar"`),
		vs("wildcard in middle", "hosts: ['foo.*.com']\n"+okRoute, `spec.hosts[0]`),
		vs("star host on mesh", "hosts: ['*']\n"+okRoute, "wildcard host * is not allowed for virtual services bound to the mesh gateway"),
		{name: "star host on gateway", apiVersion: net, kind: "VirtualService", spec: "hosts: ['*']\ngateways: [ns/gw]\n" + okRoute},
		vs("duplicate hosts", "hosts: [a.com, '*.com']\n"+okRoute, "spec.hosts[1]: Duplicate value"),
		vs("no routes", "hosts: [r]", "http, tcp or tls must be provided"),
		vs("bad gateway ref", "hosts: [r]\ngateways: ['ns/Bad_Name', '/gw']\n"+okRoute,
			`spec.gateways[0]: Invalid value: "ns/Bad_Name": invalid value for gateway name`, "spec.gateways[1]"),
		{name: "legacy gateway ref warns", apiVersion: net, kind: "VirtualService", spec: "hosts: [r]\ngateways: [gw.ns]\n" + okRoute,
			warns: []string{`prefer the <namespace>/<name> format: "ns/gw"`}},
		vs("empty destination list", "hosts: [r]\nhttp:\n- match: [{uri: {prefix: /}}]", "spec.http[0]: HTTP route, redirect, directResponse or delegate is required"),
		vs("missing destination host", "hosts: [r]\nhttp:\n- route:\n  - destination: {subset: v1}", "spec.http[0].route[0].destination.host: Required value"),
		vs("negative weight", "hosts: [r]\nhttp:\n- route:\n  - {destination: {host: a}, weight: 100}\n  - {destination: {host: b}, weight: -1}",
			"spec.http[0].route[1].weight: Invalid value: -1: must be >= 0"),
		vs("zero total", "hosts: [r]\nhttp:\n- route:\n  - {destination: {host: a}, weight: 0}\n  - {destination: {host: b}, weight: 0}",
			"spec.http[0].route: total destination weight = 0"),
		{name: "weights not summing to 100 are relative", apiVersion: net, kind: "VirtualService",
			spec:  "hosts: [r]\nhttp:\n- route:\n  - {destination: {host: a}, weight: 1}\n  - {destination: {host: b}, weight: 3}",
			warns: []string{"spec.http[0].route: destination weights sum to 4"}},
		vs("port out of range", "hosts: [r]\nhttp:\n- route:\n  - destination: {host: a, port: {number: 0}}",
			"spec.http[0].route[0].destination.port.number: Invalid value: 0: port must be between 1-65535"),
		vs("bad subset", "hosts: [r]\nhttp:\n- route:\n  - destination: {host: a, subset: V_1}", `spec.http[0].route[0].destination.subset: Invalid value: "V_1"`),
		vs("bad regex", "hosts: [r]\nhttp:\n- match: [{uri: {regex: '(a'}}]\n  route: [{destination: {host: a}}]",
			"spec.http[0].match[0].uri.regex", "RE2"),
		vs("lookahead is not RE2", "hosts: [r]\nhttp:\n- match: [{headers: {x-a: {regex: '(?=a)'}}}]\n  route: [{destination: {host: a}}]",
			"spec.http[0].match[0].headers[x-a].regex"),
		vs("bad header name", "hosts: [r]\nhttp:\n- match: [{headers: {'x a': {exact: b}}}]\n  route: [{destination: {host: a}}]",
			`spec.http[0].match[0].headers[x a]: Invalid value: "x a"`),
		vs("bad query param regex", "hosts: [r]\nhttp:\n- match: [{queryParams: {q: {regex: '['}}}]\n  route: [{destination: {host: a}}]",
			"spec.http[0].match[0].queryParams[q].regex"),
		vs("two string match types", "hosts: [r]\nhttp:\n- match: [{uri: {exact: /a, prefix: /b}}]\n  route: [{destination: {host: a}}]",
			"spec.http[0].match[0].uri.prefix", "only one of"),
		vs("jwt claim routing off gateway", "hosts: [r]\nhttp:\n- match: [{headers: {'@request.auth.claims.group': {exact: a}}}]\n  route: [{destination: {host: a}}]",
			"JWT claim based routing"),
		{name: "jwt claim routing on gateway", apiVersion: net, kind: "VirtualService",
			spec: "hosts: [r.com]\ngateways: [ns/gw]\nhttp:\n- match: [{headers: {'@request.auth.claims.group': {exact: a}}}]\n  route: [{destination: {host: a}}]"},
		vs("redirect and route", "hosts: [r]\nhttp:\n- redirect: {uri: /b}\n  route: [{destination: {host: a}}]",
			"spec.http[0]: only one of route, redirect, directResponse or delegate may be set, found route and redirect"),
		vs("redirect and directResponse", "hosts: [r]\nhttp:\n- redirect: {uri: /b}\n  directResponse: {status: 503}", "found redirect and directResponse"),
		vs("redirect with rewrite", "hosts: [r]\nhttp:\n- redirect: {uri: /b}\n  rewrite: {uri: /c}", "spec.http[0].rewrite: HTTP route rule cannot contain both rewrite and redirect"),
		vs("empty redirect", "hosts: [r]\nhttp:\n- redirect: {redirectCode: 301}", "spec.http[0].redirect: redirect must specify URI, authority, scheme, or port"),
		vs("redirect code", "hosts: [r]\nhttp:\n- redirect: {uri: /b, redirectCode: 200}", "spec.http[0].redirect.redirectCode: Invalid value: 200: must be a 3xx code"),
		vs("redirect scheme", "hosts: [r]\nhttp:\n- redirect: {uri: /b, scheme: ftp}", `spec.http[0].redirect.scheme: Unsupported value: "ftp"`),
		vs("direct response status", "hosts: [r]\nhttp:\n- directResponse: {status: 99}", "spec.http[0].directResponse.status: Invalid value: 99"),
		vs("direct response", "hosts: [r]\nhttp:\n- directResponse: {status: 503, body: {string: unavailable}}"),
		vs("rewrite uri and regex", "hosts: [r]\nhttp:\n- rewrite: {uri: /a, uriRegexRewrite: {match: 'a', rewrite: b}}\n  route: [{destination: {host: a}}]",
			"spec.http[0].rewrite: rewrite may only contain one of uri or uriRegexRewrite"),
		vs("empty rewrite", "hosts: [r]\nhttp:\n- rewrite: {}\n  route: [{destination: {host: a}}]", "rewrite must specify at least one of"),
		vs("authority twice", "hosts: [r]\nhttp:\n- rewrite: {authority: a}\n  headers: {request: {set: {':authority': b}}}\n  route: [{destination: {host: a}}]",
			"authority header cannot be set multiple times"),
		vs("timeout too small", "hosts: [r]\nhttp:\n- timeout: 100us\n  route: [{destination: {host: a}}]",
			`spec.http[0].timeout: Invalid value: "100us": must be a valid duration greater than 1ms`),
		vs("timeout not a duration", "hosts: [r]\nhttp:\n- timeout: soon\n  route: [{destination: {host: a}}]", "spec.http[0].timeout"),
		vs("per try timeout", "hosts: [r]\nhttp:\n- retries: {attempts: 2, perTryTimeout: 0s}\n  route: [{destination: {host: a}}]",
			"spec.http[0].retries.perTryTimeout"),
		vs("negative attempts", "hosts: [r]\nhttp:\n- retries: {attempts: -1}\n  route: [{destination: {host: a}}]",
			"spec.http[0].retries.attempts: Invalid value: -1: attempts cannot be negative"),
		vs("retryOn", "hosts: [r]\nhttp:\n- retries: {attempts: 2, retryOn: 'gateway-error,connect-failure,503,bogus'}\n  route: [{destination: {host: a}}]",
			`spec.http[0].retries.retryOn: Unsupported value: "bogus"`),
		vs("retry policy with zero attempts", "hosts: [r]\nhttp:\n- retries: {attempts: 0, retryOn: 5xx}\n  route: [{destination: {host: a}}]",
			"http retry policy configured when attempts are set to 0"),
		vs("fault percent", "hosts: [r]\nhttp:\n- fault: {delay: {fixedDelay: 5s, percentage: {value: 101}}}\n  route: [{destination: {host: a}}]",
			"spec.http[0].fault.delay.percentage.value: Invalid value: 101"),
		vs("fault abort status", "hosts: [r]\nhttp:\n- fault: {abort: {httpStatus: 700, percentage: {value: 10}}}\n  route: [{destination: {host: a}}]",
			"spec.http[0].fault.abort.httpStatus: Invalid value: 700"),
		vs("fault grpc status", "hosts: [r]\nhttp:\n- fault: {abort: {grpcStatus: NOPE}}\n  route: [{destination: {host: a}}]",
			`spec.http[0].fault.abort.grpcStatus: Unsupported value: "NOPE"`),
		vs("empty fault", "hosts: [r]\nhttp:\n- fault: {}\n  route: [{destination: {host: a}}]", "HTTP fault injection must have an abort and/or a delay"),
		vs("bookinfo delay", "hosts: [ratings]\nhttp:\n- match: [{headers: {end-user: {exact: jason}}}]\n  fault: {delay: {percentage: {value: 100.0}, fixedDelay: 7s}}\n  route: [{destination: {host: ratings, subset: v1}}]\n- route: [{destination: {host: ratings, subset: v1}}]"),
		vs("mirror percentage", "hosts: [r]\nhttp:\n- mirror: {host: m}\n  mirrorPercentage: {value: 150}\n  route: [{destination: {host: a}}]",
			"spec.http[0].mirrorPercentage.value: Invalid value: 150"),
		vs("mirrors", "hosts: [r]\nhttp:\n- mirrors: [{destination: {host: m}, percentage: {value: -1}}]\n  route: [{destination: {host: a}}]",
			"spec.http[0].mirrors[0].percentage.value"),
		vs("cors", "hosts: [r]\nhttp:\n- corsPolicy: {allowOrigins: [{exact: ''}], allowMethods: [GET, FETCH], allowHeaders: ['*', 'bad header'], maxAge: 1500ms}\n  route: [{destination: {host: a}}]",
			"spec.http[0].corsPolicy.allowOrigins[0]", `spec.http[0].corsPolicy.allowMethods[1]: Unsupported value: "FETCH"`,
			"spec.http[0].corsPolicy.allowHeaders[1]", "spec.http[0].corsPolicy.maxAge"),
		vs("header operations", "hosts: [r]\nhttp:\n- headers: {request: {set: {':path': /x}}, response: {remove: [host]}}\n  route: [{destination: {host: a}}]",
			`spec.http[0].headers.request.set[:path]: Invalid value: ":path": header cannot have ":" prefix`,
			`spec.http[0].headers.response.remove[0]: Invalid value: "host": cannot set Host header`),
		vs("header value percent", "hosts: [r]\nhttp:\n- headers: {request: {add: {x-a: '100%'}}}\n  route: [{destination: {host: a}}]",
			"spec.http[0].headers.request.add[x-a]"),
		vs("header value variable", "hosts: [r]\nhttp:\n- headers: {request: {add: {x-a: '%HOSTNAME% 100%%'}}}\n  route: [{destination: {host: a}}]"),
		vs("tcp route", "hosts: [r]\ntcp:\n- match: [{port: 70000, destinationSubnets: [10.0.0.0/33]}]\n  route: [{destination: {host: a, port: {number: 80}}}]",
			"spec.tcp[0].match[0].port: Invalid value: 70000", "spec.tcp[0].match[0].destinationSubnets[0]"),
		vs("tls route sni", "hosts: ['*.example.com']\ngateways: [ns/gw]\ntls:\n- match: [{sniHosts: [other.com]}]\n  route: [{destination: {host: a}}]",
			`spec.tls[0].match[0].sniHosts[0]: Invalid value: "other.com": SNI host is not a compatible subset`),
		vs("delegate with gateways", "gateways: [ns/gw]\n"+okRoute, "spec.gateways: delegate virtual service must have no gateways specified"),
		vs("exportTo", "hosts: [r]\nexportTo: [., ns, '~']\n"+okRoute, `spec.exportTo[1]: Duplicate value: "ns"`, "spec.exportTo[2]"),
		{name: "unreachable rule", apiVersion: net, kind: "VirtualService",
			spec:  "hosts: [r]\nhttp:\n- route: [{destination: {host: a}}]\n- match: [{uri: {exact: /x}}]\n  route: [{destination: {host: b}}]",
			warns: []string{"spec.http[1]: rule not used"}},
		{name: "duplicate match", apiVersion: net, kind: "VirtualService",
			spec:  "hosts: [r]\nhttp:\n- match: [{uri: {exact: /x}}]\n  route: [{destination: {host: a}}]\n- match: [{uri: {exact: /x}, name: other}]\n  route: [{destination: {host: b}}]\n- route: [{destination: {host: c}}]",
			warns: []string{"spec.http[1]: rule not used: all matches used by prior rules"}},
	})
}

func TestDestinationRule(t *testing.T) {
	dr := func(name, spec string, errs ...string) vcase {
		c := vcase{name: name, apiVersion: net, kind: "DestinationRule", spec: spec}
		if len(errs) > 0 {
			c.errs = errs
		}
		return c
	}
	run(t, []vcase{
		dr("bookinfo", "host: reviews\nsubsets:\n- {name: v1, labels: {version: v1}}\n- {name: v2, labels: {version: v2}}\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL}}"),
		dr("missing host", "subsets: [{name: v1}]", "spec.host: Required value"),
		dr("bad host", "host: 'a..b'", `spec.host: Invalid value: "a..b"`),
		dr("duplicate subsets", "host: r\nsubsets: [{name: v1}, {name: v1}]", `spec.subsets[1].name: Duplicate value: "v1"`),
		dr("subset name", "host: r\nsubsets: [{name: v_1}]", `spec.subsets[0].name: Invalid value: "v_1"`),
		dr("subset labels", "host: r\nsubsets: [{name: v1, labels: {'bad key!': x}}]", "spec.subsets[0].labels[bad key!]"),
		dr("empty traffic policy", "host: r\ntrafficPolicy: {}", "spec.trafficPolicy: traffic policy must have at least one field"),
		dr("negative connection pool", "host: r\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}, http: {http2MaxRequests: -5}}}",
			"spec.trafficPolicy.connectionPool.tcp.maxConnections: Invalid value: -1: must be non-negative",
			"spec.trafficPolicy.connectionPool.http.http2MaxRequests"),
		dr("outlier percentages", "host: r\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 101, minHealthPercent: -1, interval: 0s}}",
			"spec.trafficPolicy.outlierDetection.maxEjectionPercent: Invalid value: 101",
			"spec.trafficPolicy.outlierDetection.minHealthPercent", "spec.trafficPolicy.outlierDetection.interval"),
		dr("local origin without split", "host: r\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}",
			"spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures"),
		dr("mutual tls without certs", "host: r\ntrafficPolicy: {tls: {mode: MUTUAL}}",
			"spec.trafficPolicy.tls.clientCertificate: client certificate required", "spec.trafficPolicy.tls.privateKey"),
		dr("mutual tls with credentialName", "host: r\ntrafficPolicy: {tls: {mode: MUTUAL, credentialName: client-cred}}"),
		dr("credentialName and files", "host: r\ntrafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}}",
			"cannot specify client certificates or CA certificate or CA CRL if credentialName is set"),
		dr("insecure skip verify with ca", "host: r\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}}",
			"insecureSkipVerify"),
		dr("maglev", "host: r\ntrafficPolicy: {loadBalancer: {consistentHash: {maglev: {tableSize: 1000}, httpHeaderName: x}}}",
			"spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: Invalid value: 1000: tableSize must be a prime number"),
		dr("cookie without name", "host: r\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 0s}}}}",
			"spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: Required value"),
		dr("session cookie ttl 0 is fine", "host: r\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: s, ttl: 0s}}}}"),
		dr("locality weights", "host: r\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: us-west/*, to: {us-west/*: 60, us-east/*: 30}}]}}}",
			"spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: Invalid value: 90: total locality weight must be 100"),
		dr("locality distribute and failover", "host: r\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a, to: {b: 100}}], failover: [{from: a, to: b}]}}}",
			"can not simultaneously specify 'distribute' and 'failover'"),
		dr("port level settings", "host: r\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 0}\n    connectionPool: {tcp: {maxConnections: 10}}\n  - port: {number: 80}",
			"spec.trafficPolicy.portLevelSettings[0].port.number: Invalid value: 0", "spec.trafficPolicy.portLevelSettings[1]: port traffic policy must have at least one field"),
		dr("warmup", "host: r\ntrafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 10s, minimumPercent: 101}}}",
			"spec.trafficPolicy.loadBalancer.warmup.minimumPercent: Invalid value: 101"),
		dr("tunnel", "host: r\ntrafficPolicy: {tunnel: {protocol: GET, targetHost: 'not a host', targetPort: 0}}",
			`spec.trafficPolicy.tunnel.protocol: Unsupported value: "GET"`, "spec.trafficPolicy.tunnel.targetHost", "spec.trafficPolicy.tunnel.targetPort"),
		dr("selector with exportTo", "host: r\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: ['*']\ntrafficPolicy: {tls: {mode: DISABLE}}",
			"destination rule with workload selector cannot have exportTo beyond current namespace"),
	})
}

func TestGatewaySidecarServiceEntry(t *testing.T) {
	run(t, []vcase{
		{name: "bookinfo gateway", apiVersion: net, kind: "Gateway", spec: "selector: {istio: ingressgateway}\nservers:\n- port: {number: 8080, name: http, protocol: HTTP}\n  hosts: ['*']"},
		{name: "no servers", apiVersion: net, kind: "Gateway", spec: "selector: {istio: ingressgateway}", errs: []string{"spec.servers: Required value"}},
		{name: "server checks", apiVersion: net, kind: "Gateway", spec: `servers:
- port: {number: 80, name: http, protocol: FOO}
  hosts: ['bad/ns/host']
- port: {number: 443, name: http, protocol: HTTPS}
  hosts: ['ns/*.example.com', 'example']
- port: {number: 8443, name: https2, protocol: HTTPS}
  hosts: ['*.b.com']
  tls: {mode: SIMPLE}
- port: {number: 9443, name: https3, protocol: HTTPS}
  hosts: ['*.c.com']
  tls: {mode: MUTUAL, credentialName: c-cred}`, errs: []string{
			`spec.servers[0].port.protocol: Unsupported value: "FOO"`,
			"spec.servers[1].port.name: Duplicate value",
			"spec.servers[1].tls: Required value",
			`spec.servers[1].hosts[1]: Invalid value: "example": short names (non FQDN) are not allowed`,
			"spec.servers[2].tls.serverCertificate: SIMPLE TLS requires a server certificate",
		}},
		{name: "istio mutual with cert", apiVersion: net, kind: "Gateway", spec: "servers:\n- port: {number: 443, name: tls, protocol: TLS}\n  hosts: ['*']\n  tls: {mode: ISTIO_MUTUAL, credentialName: x}",
			errs: []string{"spec.servers[0].tls.credentialName: ISTIO_MUTUAL TLS cannot have associated credentialName"}},
		{name: "sidecar", apiVersion: net, kind: "Sidecar", spec: "egress:\n- hosts: ['./*', 'istio-system/*']"},
		{name: "sidecar bad egress host", apiVersion: net, kind: "Sidecar", spec: "egress:\n- hosts: ['reviews', '*/foo']\n- hosts: ['./*']\n  port: {number: 0}",
			errs: []string{`spec.egress[0].hosts[0]: Invalid value: "reviews": host must be of form namespace/dnsName`,
				`spec.egress[0].hosts[1]: Invalid value: "foo": short names`,
				"spec.egress[0]: the egress listener with empty port should be the last listener in the list",
				"spec.egress[1].bind: ports with 0 value must have a unix domain socket bind address"}},
		{name: "sidecar ingress", apiVersion: net, kind: "Sidecar", spec: "ingress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  defaultEndpoint: 10.0.0.1:8080\n- port: {number: 9080, protocol: HTTP, name: http2}\n  defaultEndpoint: 127.0.0.1:8080",
			errs: []string{"spec.ingress[0].defaultEndpoint", "spec.ingress[1].port.number: Duplicate value: 9080"}},
		{name: "sidecar empty", apiVersion: net, kind: "Sidecar", spec: "workloadSelector: {labels: {app: a}}", errs: []string{"sidecar: empty configuration provided"}},
		{name: "service entry", apiVersion: net, kind: "ServiceEntry", spec: "hosts: [api.example.com]\nports: [{number: 443, name: https, protocol: TLS}]\nresolution: DNS\nlocation: MESH_EXTERNAL"},
		{name: "service entry static endpoints", apiVersion: net, kind: "ServiceEntry",
			spec: "hosts: [db.internal]\naddresses: [10.1.0.0/16]\nports: [{number: 5432, name: tcp, protocol: TCP}]\nresolution: STATIC\nendpoints: [{address: 10.1.0.4, ports: {tcp: 5433}}, {address: db.example.com}, {address: 10.1.0.5, ports: {other: 1}}]",
			errs: []string{`spec.endpoints[1].address: Invalid value: "db.example.com": endpoint address is not a valid IP address`,
				"spec.endpoints[2].ports[other]: Invalid value: \"other\": endpoint port is not defined by the service entry"}},
		{name: "service entry dns short host", apiVersion: net, kind: "ServiceEntry", spec: "hosts: ['*.example.com']\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS",
			errs: []string{"hosts must be FQDN if no endpoints are provided for resolution mode DNS"}},
		{name: "service entry multi host tcp", apiVersion: net, kind: "ServiceEntry", spec: "hosts: [a.com, b.com]\nports: [{number: 3306, name: mysql, protocol: MYSQL}]\nresolution: DNS",
			errs: []string{"multiple hosts provided with non-HTTP, non-TLS ports"}},
		{name: "service entry bad protocol", apiVersion: net, kind: "ServiceEntry", spec: "hosts: [a.com]\nports: [{number: 80, name: Http_1, protocol: HTTP3}]",
			errs: []string{`spec.ports[0].name: Invalid value: "Http_1"`, `spec.ports[0].protocol: Unsupported value: "HTTP3"`}},
		{name: "workload entry", apiVersion: net, kind: "WorkloadEntry", spec: "address: 10.0.0.1\nlabels: {app: ratings}\nports: {http: 9080}"},
	})
}

func TestSecurity(t *testing.T) {
	run(t, []vcase{
		{name: "strict mtls", apiVersion: sec, kind: "PeerAuthentication", spec: "mtls: {mode: STRICT}"},
		{name: "port level needs selector", apiVersion: sec, kind: "PeerAuthentication", spec: "portLevelMtls: {'8080': {mode: DISABLE}}",
			errs: []string{"portLevelMtls requires selector"}},
		{name: "allow", apiVersion: sec, kind: "AuthorizationPolicy", spec: `selector: {matchLabels: {app: reviews}}
action: ALLOW
rules:
- from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}]
  to: [{operation: {methods: [GET], paths: ['/reviews/*'], ports: ['9080']}}]
  when: [{key: 'request.headers[version]', values: [v1]}]`},
		{name: "deny without rules", apiVersion: sec, kind: "AuthorizationPolicy", spec: "action: DENY", errs: []string{"spec.rules: DENY action without `rules`"}},
		{name: "custom without provider", apiVersion: sec, kind: "AuthorizationPolicy", spec: "action: CUSTOM\nrules: [{}]", errs: []string{"spec.provider.name: Required value"}},
		{name: "provider with allow", apiVersion: sec, kind: "AuthorizationPolicy", spec: "action: ALLOW\nprovider: {name: ext}\nrules: [{}]",
			errs: []string{"spec.provider: `provider` must not be with non CUSTOM action"}},
		{name: "rule checks", apiVersion: sec, kind: "AuthorizationPolicy", spec: `rules:
- from: [{source: {ipBlocks: [10.0.0.0/40], namespaces: ['']}}, {source: {}}]
  to: [{operation: {ports: ['http'], paths: ['/a/{**}/{*}']}}]
  when:
  - {key: source.ip, values: [not-an-ip]}
  - {key: request.headers, values: [x]}
  - {key: 'destination.labels[app]', values: [x]}
  - {key: request.time, values: [x]}
  - {key: destination.port}`, errs: []string{
			`spec.rules[0].from[0].source.ipBlocks[0]: Invalid value: "10.0.0.0/40": bad CIDR range`,
			`spec.rules[0].from[0].source.namespaces[0]: Invalid value: "": empty value not allowed`,
			"spec.rules[0].from[1].source: `from.source` must not be empty",
			`spec.rules[0].to[0].operation.ports[0]: Invalid value: "http"`,
			`spec.rules[0].to[0].operation.paths[0]`,
			`spec.rules[0].when[0].values[0]: Invalid value: "not-an-ip"`,
			"spec.rules[0].when[1].values: Invalid value: \"request.headers\": bad key request.headers: should have format a[b]",
			"attribute destination.labels[app] is replaced by the workload selector",
			"unknown attribute: request.time",
			"spec.rules[0].when[4]: at least one of `values` or `notValues` must be set",
		}},
		{name: "deny http only warns", apiVersion: sec, kind: "AuthorizationPolicy", spec: "action: DENY\nrules: [{to: [{operation: {methods: [POST]}}]}]",
			warns: []string{"deny all traffic to TCP ports"}},
		{name: "jwt", apiVersion: sec, kind: "RequestAuthentication", spec: "selector: {matchLabels: {app: a}}\njwtRules: [{issuer: 'https://issuer', jwksUri: 'https://issuer/jwks.json', fromHeaders: [{name: x-jwt, prefix: 'Bearer '}]}]"},
		{name: "jwt checks", apiVersion: sec, kind: "RequestAuthentication", spec: "jwtRules:\n- jwksUri: 'ftp://x'\n  jwks: '{\"keys\": []}'\n- issuer: i\n  jwks: 'not json'",
			errs: []string{"spec.jwtRules[0].issuer: Required value", "spec.jwtRules[0]: Invalid value: \"object\": only one of jwks or jwksUri can be set",
				`spec.jwtRules[0].jwksUri: Invalid value: "ftp://x": url must have scheme http:// or https://`, "spec.jwtRules[1].jwks"}},
		{name: "dry-run annotation on wrong kind", apiVersion: net, kind: "DestinationRule", spec: "host: r",
			errs: nil},
	})
	// The dry-run annotation is only valid on AuthorizationPolicy.
	fr := config.ParseFile("f.yaml", []byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\n  annotations: {istio.io/dry-run: 'true'}\nspec: {host: r}\n"))
	if fr.OK() || !strings.Contains(fr.Err().Error(), "metadata.annotations[istio.io/dry-run]") {
		t.Errorf("dry-run annotation on a DestinationRule: %v", fr.Err())
	}
}

func TestTelemetryGatewayAPISMI(t *testing.T) {
	run(t, []vcase{
		{name: "telemetry", apiVersion: tel, kind: "Telemetry", spec: "tracing: [{randomSamplingPercentage: 10.0, providers: [{name: zipkin}]}]"},
		{name: "telemetry checks", apiVersion: tel, kind: "Telemetry", spec: "tracing: [{randomSamplingPercentage: 110.0}]\nmetrics: [{reportingInterval: 0s}]",
			errs: []string{"spec.tracing[0].randomSamplingPercentage: Invalid value: 110", "spec.metrics[0].reportingInterval"}},
		{name: "gateway", apiVersion: gwa, kind: "Gateway", spec: "gatewayClassName: istio\nlisteners:\n- {name: http, port: 80, protocol: HTTP}\n- name: https\n  port: 443\n  protocol: HTTPS\n  hostname: '*.example.com'\n  tls: {certificateRefs: [{name: cert}]}"},
		{name: "gateway checks", apiVersion: gwa, kind: "Gateway", spec: "listeners:\n- {name: http, port: 0, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}\n- {name: http, port: 443, protocol: HTTPS}\n- {name: Bad, port: 80, protocol: SCTP, hostname: 10.0.0.1}",
			errs: []string{"spec.gatewayClassName: Required value", "spec.listeners[0].port: Invalid value: 0", "spec.listeners[0].tls: tls must not be specified",
				`spec.listeners[1].name: Duplicate value: "http"`, "spec.listeners[1].tls: tls must be specified", `spec.listeners[2].protocol: Unsupported value: "SCTP"`,
				`spec.listeners[2].hostname: Invalid value: "10.0.0.1"`}},
		{name: "httproute checks", apiVersion: gwa, kind: "HTTPRoute", spec: `parentRefs: [{name: gw, port: 70000}]
hostnames: ['*.example.com', 'Bad.Example']
rules:
- matches:
  - path: {type: PathPrefix, value: 'api'}
    headers: [{name: 'bad header', value: x}, {name: X-A, value: a}, {name: x-a, value: b}]
    method: FETCH
  - path: {type: RegularExpression, value: '('}
  filters: [{type: RequestRedirect, requestRedirect: {statusCode: 305}}]
  backendRefs: [{name: svc, weight: -1}]
  timeouts: {request: 10 seconds}`, errs: []string{
			"spec.parentRefs[0].port: Invalid value: 70000", `spec.hostnames[1]: Invalid value: "Bad.Example"`,
			`spec.rules[0].matches[0].path.value: Invalid value: "api"`, `spec.rules[0].matches[0].headers[0].name`,
			`spec.rules[0].matches[0].headers[2].name: Duplicate value`, `spec.rules[0].matches[0].method: Unsupported value: "FETCH"`,
			"spec.rules[0].matches[1].path.value", "spec.rules[0].filters[0].requestRedirect.statusCode: Unsupported value: 305",
			"spec.rules[0]: RequestRedirect filter must not be used together with backendRefs",
			"spec.rules[0].backendRefs[0].port: Required value: must have port for Service reference",
			"spec.rules[0].backendRefs[0].weight: Invalid value: -1", "spec.rules[0].timeouts.request"}},
		{name: "httproute filter field mismatch", apiVersion: gwa, kind: "HTTPRoute", spec: "parentRefs: [{name: gw}]\nrules: [{filters: [{type: RequestHeaderModifier, urlRewrite: {hostname: a.com}}]}]",
			errs: []string{"spec.rules[0].filters[0].requestHeaderModifier: Required value", "spec.rules[0].filters[0].urlRewrite: must not be set when type is RequestHeaderModifier"}},
		{name: "grpcroute", apiVersion: gwa, kind: "GRPCRoute", spec: "parentRefs: [{name: gw}]\nrules:\n- matches: [{method: {service: helloworld.Greeter, method: SayHello}}]\n  backendRefs: [{name: greeter, port: 50051}]"},
		{name: "grpcroute checks", apiVersion: gwa, kind: "GRPCRoute", spec: "parentRefs: [{name: gw}]\nrules:\n- matches: [{method: {service: 'bad service'}}, {method: {type: Exact}}]",
			errs: []string{`spec.rules[0].matches[0].method.service: Invalid value: "bad service"`, "spec.rules[0].matches[1].method: one or both of 'service' or 'method' must be specified"}},
		{name: "trafficsplit", apiVersion: smiV, kind: "TrafficSplit", spec: "service: web\nbackends: [{service: web-v1, weight: 50}, {service: web-v2, weight: 50}]"},
		{name: "trafficsplit checks", apiVersion: smiV, kind: "TrafficSplit", spec: "backends: []",
			errs: []string{"spec.service: Required value", "spec.backends: Required value"}},
	})
}

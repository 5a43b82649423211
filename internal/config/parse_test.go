package config

import (
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/internal/config/smi"
)

const mixedFile = `# Bookinfo-style file with other kinds mixed in
apiVersion: v1
kind: Service
metadata:
  name: reviews
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
  labels: {app: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 1m30s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,reset,503"}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v2}
      weight: 25
---
---
# only a comment
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {interval: 5m, baseEjectionTime: 15m, consecutive5xxErrors: 7}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

func TestParseMixedFile(t *testing.T) {
	fr := ParseFile("bookinfo.yaml", []byte(mixedFile))
	if !fr.OK() {
		t.Fatalf("errors: %v", fr.Err())
	}
	if fr.Docs != 3 || len(fr.Resources) != 2 || len(fr.Ignored) != 1 {
		t.Fatalf("docs=%d resources=%d ignored=%d", fr.Docs, len(fr.Resources), len(fr.Ignored))
	}
	if ig := fr.Ignored[0]; ig.Kind != "Service" || ig.Name != "reviews" || ig.Doc != 0 || ig.Line != 2 {
		t.Errorf("ignored = %+v", ig)
	}
	vs := fr.Resources[0]
	if vs.Kind != KindVirtualService || vs.Namespace != "bookinfo" || vs.Labels["app"] != "reviews" ||
		vs.Source != (Source{File: "bookinfo.yaml", Doc: 1, Line: 7}) {
		t.Errorf("vs = %+v", vs)
	}
	spec := vs.Spec.(*networking.VirtualService)
	if d := spec.Http[0].Timeout.AsDuration(); d != 90*time.Second {
		t.Errorf("timeout = %v (Go duration syntax must be accepted, as Istio does)", d)
	}
	dr := fr.Resources[1]
	if dr.Namespace != DefaultNamespace || dr.Source.Doc != 2 {
		t.Errorf("dr = %s doc %d", dr, dr.Source.Doc)
	}
	if d := dr.Spec.(*networking.DestinationRule).TrafficPolicy.OutlierDetection.BaseEjectionTime.AsDuration(); d != 15*time.Minute {
		t.Errorf("baseEjectionTime = %v", d)
	}
}

// TestParseErrors: every error names file, resource and field, and all errors of a file
// come back at once.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"unknown field with path", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - route:
    - destination: {host: r}
      wieght: 10`, []string{`f.yaml: VirtualService default/r: spec.http[0].route[0].wieght: unknown field "wieght"`}},
		{"negative weight", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 110
    - destination: {host: reviews, subset: v2}
      weight: -10`, []string{"f.yaml: VirtualService default/reviews: spec.http[0].route[1].weight: Invalid value: -10: must be >= 0"}},
		{"enum", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec: {host: d, trafficPolicy: {tls: {mode: STRICT}}}`, []string{`spec.trafficPolicy.tls.mode: Unsupported value: "STRICT": supported values: "DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"`}},
		{"type", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec: {hosts: r, http: [{route: [{destination: {host: r}}]}]}`, []string{`spec.hosts: Invalid value: "string": spec.hosts in body must be of type array`}},
		{"unknown top-level and metadata fields", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, lables: {a: b}}
spec: {host: d}
extra: 1`, []string{`DestinationRule default/d: extra: unknown field "extra"`, `metadata: unknown field "lables"`}},
		{"bad version", `apiVersion: networking.istio.io/v2
kind: VirtualService
metadata: {name: r}`, []string{`VirtualService default/r: apiVersion: Unsupported value: "v2"`}},
		{"unknown kind in an istio group", `apiVersion: networking.istio.io/v1
kind: VirtualServce
metadata: {name: r}`, nil},
		{"missing kind", `apiVersion: v1
metadata: {name: x}`, []string{"f.yaml: document 0: apiVersion and kind are required"}},
		{"yaml syntax", "apiVersion: [", []string{"f.yaml: document 0: invalid YAML"}},
		{"duplicate yaml key", "apiVersion: a\napiVersion: b\nkind: X", []string{"invalid YAML"}},
		{"bad name", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: Bad_Name}
spec: {host: d}`, []string{`metadata.name: Invalid value: "Bad_Name"`}},
		{"List", `apiVersion: v1
kind: List
items: []`, []string{"kind List is not supported"}},
		{"gateway api unknown field", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: s, port: 80, wieght: 1}]}]`, []string{`HTTPRoute default/h: spec.rules[0].backendRefs[0].wieght: unknown field`}},
		{"several errors at once", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - route: [{destination: {host: r}, weight: -1}]
    timeout: 0.5ms
    retries: {attempts: -2}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g}
spec:
  servers:
  - port: {number: 70000, name: http, protocol: HTTP}
    hosts: ["*"]`, []string{
			"VirtualService default/r: spec.http[0].route[0].weight",
			"VirtualService default/r: spec.http[0].retries.attempts",
			"Gateway default/g: spec.servers[0].port.number: Invalid value: 70000: port must be between 1-65535",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fr := ParseFile("f.yaml", []byte(c.doc))
			if c.want == nil {
				if len(fr.Ignored) != 1 || len(fr.Warnings) != 1 {
					t.Fatalf("want an ignored document with a warning, got ignored=%v warnings=%v errors=%v", fr.Ignored, fr.Warnings, fr.Errors)
				}
				return
			}
			if fr.OK() {
				t.Fatalf("accepted")
			}
			all := fr.Err().Error()
			for _, w := range c.want {
				if !strings.Contains(all, w) {
					t.Errorf("errors lack %q:\n%s", w, all)
				}
			}
			if len(fr.Resources) != 0 && strings.Contains(c.name, "negative") {
				t.Errorf("invalid resource returned")
			}
		})
	}
}

func TestParseJSON(t *testing.T) {
	data := `[
  {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "google"},
   "spec": {"hosts": ["www.googleapis.com"], "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}],
            "resolution": "DNS", "location": "MESH_EXTERNAL"}}
]
{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": "istio-system"},
 "spec": {"mtls": {"mode": "STRICT"}}}`
	fr := ParseFile("c.json", []byte(data))
	if !fr.OK() || len(fr.Resources) != 2 {
		t.Fatalf("resources=%d err=%v", len(fr.Resources), fr.Err())
	}
	if fr.Resources[1].Source.Line != 6 || fr.Resources[1].Kind != KindPeerAuthentication {
		t.Errorf("second = %s at line %d", fr.Resources[1], fr.Resources[1].Source.Line)
	}
}

func TestParseGatewayAPIAndSMI(t *testing.T) {
	data := `apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 90}
    - {name: reviews-v2, port: 9080, weight: 10}
---
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: ts}
spec:
  service: website
  backends:
  - {service: website-v1, weight: 500m}
  - {service: website-v2, weight: "1"}
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: ts4}
spec:
  service: website
  backends:
  - {service: website-v1, weight: 90}
  - {service: website-v2, weight: 10}
`
	fr := ParseFile("f.yaml", []byte(data))
	if !fr.OK() || len(fr.Resources) != 3 {
		t.Fatalf("resources=%d err=%v", len(fr.Resources), fr.Err())
	}
	hr := fr.Resources[0].Spec.(*gwv1.HTTPRouteSpec)
	if *hr.Rules[0].BackendRefs[1].Weight != 10 {
		t.Errorf("weight = %d", *hr.Rules[0].BackendRefs[1].Weight)
	}
	ts := fr.Resources[1].Spec.(*smi.TrafficSplitSpec)
	if w := ts.Normalize(); w[0] != 500 || w[1] != 1000 {
		t.Errorf("v1alpha1 quantities normalised to %v, want [500 1000]", w)
	}
	ts4 := fr.Resources[2].Spec.(*smi.TrafficSplitSpec)
	if w := ts4.Normalize(); w[0] != 90 || w[1] != 10 {
		t.Errorf("v1alpha4 weights = %v", w)
	}

	bad := ParseFile("f.yaml", []byte(`apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: ts}
spec:
  service: website
  backends: [{service: a, weight: -1}, {service: b, weight: 0}]`))
	if bad.OK() || !strings.Contains(bad.Err().Error(), "TrafficSplit default/ts: spec.backends[0].weight: Invalid value: -1: must be >= 0") {
		t.Errorf("negative SMI weight: %v", bad.Err())
	}
}

func TestLookupKind(t *testing.T) {
	for _, c := range []struct {
		apiVersion, kind string
		want             Kind
		ok, versionOK    bool
	}{
		{"networking.istio.io/v1alpha3", "VirtualService", KindVirtualService, true, true},
		{"networking.istio.io/v1", "Gateway", KindGateway, true, true},
		{"gateway.networking.k8s.io/v1", "Gateway", KindKubernetesGateway, true, true},
		{"gateway.networking.k8s.io/v1beta1", "HTTPRoute", KindHTTPRoute, true, true},
		{"telemetry.istio.io/v1alpha1", "Telemetry", KindTelemetry, true, true},
		{"security.istio.io/v1alpha1", "PeerAuthentication", KindPeerAuthentication, true, false},
		{"apps/v1", "Deployment", KindUnknown, false, false},
	} {
		k, ok, vok := LookupKind(c.apiVersion, c.kind)
		if k != c.want || ok != c.ok || vok != c.versionOK {
			t.Errorf("LookupKind(%s, %s) = %v %v %v", c.apiVersion, c.kind, k, ok, vok)
		}
	}
	// Every kind has a name, a group and a spec type, in declaration order.
	for i, k := range Kinds() {
		if k != Kind(i+1) || k.String() == "Unknown" || k.Group() == "" || k.NewSpec() == nil {
			t.Errorf("kind %d incomplete", k)
		}
	}
	if KindKubernetesGateway.Label() != "Gateway.gateway.networking.k8s.io" || KindGateway.Label() != "Gateway" {
		t.Error("gateway labels")
	}
}

func TestValidateResource(t *testing.T) {
	if res := ValidateResource(testVS("default", "ok", "ok")); !res.OK() {
		t.Fatalf("valid resource: %s", res.String())
	}
	bad := testVS("default", "bad", "ok")
	bad.Spec.(*networking.VirtualService).Http[0].Route[0].Weight = -3
	if res := ValidateResource(bad); res.OK() || !strings.Contains(res.String(), "spec.http[0].route[0].weight") {
		t.Fatalf("invalid resource: %s", res.String())
	}
	if res := ValidateResource(nil); res.OK() {
		t.Fatal("nil accepted")
	}
}

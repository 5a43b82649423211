package cluster

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// scenario is one snapshot and proxy whose clusters and endpoints have a golden file.
type scenario struct {
	name  string
	input func(t *testing.T) snapshot.Input
	proxy func() *node.Proxy
}

// generate runs the generator for the proxy's type, as the composite generator does.
func generate(s *snapshot.Snapshot, p *node.Proxy) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	var cs []*clusterv3.Cluster
	switch p.Type {
	case node.Router:
		cs = Gateway(s, p)
	case node.GRPC:
		cs = GRPC(s, p)
	default:
		cs = Sidecar(s, p)
	}
	return cs, Endpoints(s, p, cs)
}

// trafficPolicyDR exercises every translated DestinationRule field on reviews.
const trafficPolicyDR = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews-policy
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 2s
        tcpKeepalive:
          probes: 3
          time: 600s
          interval: 75s
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 5
        maxRetries: 2
        idleTimeout: 30s
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 3
      interval: 5s
      baseEjectionTime: 1m
      maxEjectionPercent: 50
      minHealthPercent: 20
    portLevelSettings:
    - port:
        number: 9091
      loadBalancer:
        consistentHash:
          httpHeaderName: x-user
          ringHash:
            minimumRingSize: 4096
      connectionPool:
        http:
          h2UpgradePolicy: UPGRADE
          http2MaxRequests: 500
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
  - name: v3
    labels:
      version: v3
    trafficPolicy:
      portLevelSettings:
      - port:
          number: 9080
        loadBalancer:
          consistentHash:
            useSourceIp: true
            maglev:
              tableSize: 65537
        outlierDetection:
          consecutive5xxErrors: 0
`

// serviceEntries are a DNS entry (Istio's googleapis sample), a STATIC one with
// WorkloadEntry-like inline endpoints, and a NONE one.
const serviceEntries = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: static-db
spec:
  hosts:
  - db.internal.example
  location: MESH_INTERNAL
  ports:
  - number: 5432
    name: tcp-postgres
    protocol: TCP
  resolution: STATIC
  endpoints:
  - address: 127.3.0.1
    labels:
      security.istio.io/tlsMode: istio
    serviceAccount: db
  - address: 127.3.0.2
    weight: 3
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: passthrough
spec:
  hosts:
  - legacy.example.com
  - "*.wild.example.com"
  ports:
  - number: 8000
    name: http
    protocol: HTTP
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: rr
spec:
  hosts:
  - rr.example.com
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: DNS_ROUND_ROBIN
  endpoints:
  - address: a.rr.example.com
  - address: b.rr.example.com
`

// withSecondReviewsPort gives reviews a second HTTP port, 9091, so that port-level
// settings can differ from the top-level policy.
func withSecondReviewsPort(in snapshot.Input) snapshot.Input {
	for i, svc := range in.Services {
		if svc.Name == "reviews" {
			c := *svc
			c.Ports = append(append([]registry.Port(nil), svc.Ports...), registry.Port{Name: "http-alt", Number: 9091, Protocol: registry.HTTP})
			in.Services[i] = &c
		}
	}
	for _, inst := range in.Instances {
		if inst.Service == "reviews.default.svc.cluster.local" {
			c := *inst
			c.ServicePort, c.Port = 9091, 9091
			in.Instances = append(in.Instances, &c)
		}
	}
	return in
}

// localityInput gives reviews three localities and a DR with distribute; ratings gets
// failover with outlier detection.
func localityInput(t *testing.T) snapshot.Input {
	in := bookinfo()
	for _, inst := range in.Instances {
		switch inst.Workload {
		case "reviews-v1":
			inst.Locality = "us-east/zone1/a"
		case "reviews-v2":
			inst.Locality = "us-east/zone2"
		case "reviews-v3":
			inst.Locality = "eu-west/zone1"
			inst.Weight = 2
		}
	}
	r2 := *in.Instances[len(in.Instances)-1] // ratings-v1
	r2.Address, r2.Workload, r2.Locality, r2.Healthy = "127.2.0.7", "ratings-v1b", "us-east/zone1", false
	in.Instances = append(in.Instances, &r2)
	addYAML(t, &in, "locality.yaml", `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews-locality
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: "*"
          to:
            "us-east/*": 80
            "eu-west/*": 20
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings-failover
spec:
  host: ratings
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
    loadBalancer:
      localityLbSetting:
        failover:
        - from: us-east
          to: eu-west
`)
	return in
}

func scenarios() []scenario {
	withFiles := func(files ...string) func(t *testing.T) snapshot.Input {
		return func(t *testing.T) snapshot.Input {
			in := bookinfo()
			for _, f := range files {
				loadYAML(t, &in, filepath.Join(istioSamples, f))
			}
			return in
		}
	}
	return []scenario{
		{"bookinfo-explicit", withFiles(), sidecarProxy},
		{"bookinfo-redirect", withFiles(), redirectProxy},
		{"bookinfo-dr-all", withFiles("destination-rule-all.yaml"), sidecarProxy},
		{"bookinfo-dr-all-mtls", withFiles("destination-rule-all-mtls.yaml"), sidecarProxy},
		{"traffic-policy", func(t *testing.T) snapshot.Input {
			in := withSecondReviewsPort(bookinfo())
			addYAML(t, &in, "traffic-policy.yaml", trafficPolicyDR)
			return in
		}, sidecarProxy},
		{"serviceentries-redirect", func(t *testing.T) snapshot.Input {
			in := bookinfo()
			loadYAML(t, &in, filepath.Join(istioSamples, "egress-rule-google-apis.yaml"))
			addYAML(t, &in, "serviceentries.yaml", serviceEntries)
			return in
		}, redirectProxy},
		{"serviceentries-explicit", func(t *testing.T) snapshot.Input {
			in := bookinfo()
			loadYAML(t, &in, filepath.Join(istioSamples, "egress-rule-google-apis.yaml"))
			addYAML(t, &in, "serviceentries.yaml", serviceEntries)
			return in
		}, sidecarProxy},
		{"locality", localityInput, sidecarProxy},
		{"gateway", withFiles("destination-rule-all-mtls.yaml"), gatewayProxy},
		{"grpc", func(t *testing.T) snapshot.Input {
			in := withFiles("destination-rule-all-mtls.yaml")(t)
			in.DestinationRules[1].Spec.TrafficPolicy.LoadBalancer = trafficLB(t)
			return in
		}, grpcProxy},
	}
}

// trafficLB is a consistentHash load balancer with a ring size.
func trafficLB(t *testing.T) *networking.LoadBalancerSettings {
	var in snapshot.Input
	addYAML(t, &in, "lb.yaml", `
kind: DestinationRule
metadata:
  name: x
spec:
  host: x
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        ringHash:
          minimumRingSize: 2048
`)
	return in.DestinationRules[0].Spec.GetTrafficPolicy().GetLoadBalancer()
}

// goldenJSON renders clusters and endpoints as indented JSON with stable spacing
// (protojson's own spacing is deliberately unstable).
func goldenJSON(t *testing.T, cs []*clusterv3.Cluster, eps []*endpointv3.ClusterLoadAssignment) []byte {
	t.Helper()
	raw := func(m proto.Message) json.RawMessage {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatalf("protojson: %v", err)
		}
		return b
	}
	doc := struct {
		Clusters  []json.RawMessage `json:"clusters"`
		Endpoints []json.RawMessage `json:"endpoints"`
	}{Clusters: []json.RawMessage{}, Endpoints: []json.RawMessage{}}
	for _, c := range cs {
		doc.Clusters = append(doc.Clusters, raw(c))
	}
	for _, e := range eps {
		doc.Endpoints = append(doc.Endpoints, raw(e))
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	return append(out, '\n')
}

func TestGolden(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			s := snapshot.Build(sc.input(t))
			cs, eps := generate(s, sc.proxy())
			got := goldenJSON(t, cs, eps)
			path := filepath.Join("testdata", sc.name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the generated output; run go test -update and review the diff", path)
			}
		})
	}
}

package cluster

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// istioSamples is where Istio's own Bookinfo rules live.
const istioSamples = "/work/shared/istio-samples/samples/bookinfo/networking"

// loadYAML adds the Istio resources of a (multi-document) YAML file to in, in file
// order. Specs are decoded by the istio.io/api types' own JSON methods.
func loadYAML(t *testing.T, in *snapshot.Input, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	addYAML(t, in, filepath.Base(path), string(data))
}

// addYAML adds the resources of YAML text to in.
func addYAML(t *testing.T, in *snapshot.Input, source, text string) {
	t.Helper()
	for i, doc := range strings.Split(text, "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Spec json.RawMessage `json:"spec"`
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}
		if err := json.Unmarshal(js, &obj); err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}
		ns := obj.Metadata.Namespace
		if ns == "" {
			ns = "default"
		}
		meta := snapshot.Meta{Name: obj.Metadata.Name, Namespace: ns, Source: source + ": " + obj.Kind + " " + ns + "/" + obj.Metadata.Name}
		meta.CreationIndex = uint64(len(in.DestinationRules) + len(in.VirtualServices) + len(in.ServiceEntries) + len(in.Sidecars) + len(in.PeerAuthentications))
		decode := func(m interface{ UnmarshalJSON([]byte) error }) {
			if err := m.UnmarshalJSON(obj.Spec); err != nil {
				t.Fatalf("%s: %s %s: spec: %v", source, obj.Kind, obj.Metadata.Name, err)
			}
		}
		switch obj.Kind {
		case "DestinationRule":
			spec := &networking.DestinationRule{}
			decode(spec)
			in.DestinationRules = append(in.DestinationRules, snapshot.Config[*networking.DestinationRule]{Meta: meta, Spec: spec})
		case "VirtualService":
			spec := &networking.VirtualService{}
			decode(spec)
			in.VirtualServices = append(in.VirtualServices, snapshot.Config[*networking.VirtualService]{Meta: meta, Spec: spec})
		case "ServiceEntry":
			spec := &networking.ServiceEntry{}
			decode(spec)
			in.ServiceEntries = append(in.ServiceEntries, snapshot.Config[*networking.ServiceEntry]{Meta: meta, Spec: spec})
		case "Sidecar":
			spec := &networking.Sidecar{}
			decode(spec)
			in.Sidecars = append(in.Sidecars, snapshot.Config[*networking.Sidecar]{Meta: meta, Spec: spec})
		case "PeerAuthentication":
			spec := &security.PeerAuthentication{}
			decode(spec)
			in.PeerAuthentications = append(in.PeerAuthentications, snapshot.Config[*security.PeerAuthentication]{Meta: meta, Spec: spec})
		case "Gateway":
			spec := &networking.Gateway{}
			decode(spec)
			in.Gateways = append(in.Gateways, snapshot.Config[*networking.Gateway]{Meta: meta, Spec: spec})
		default:
			t.Fatalf("%s: document %d: kind %q not handled by the test loader", source, i, obj.Kind)
		}
	}
}

// bookinfo is Bookinfo as weft's local mesh runs it: four services on 9080 in
// "default", one workload per version at 127.2.0.x with sidecars.
func bookinfo() snapshot.Input {
	in := snapshot.Input{Mesh: snapshot.DefaultMeshConfig()}
	http := []registry.Port{{Name: "http", Number: 9080, Protocol: registry.HTTP}}
	type wl struct {
		svc, version, ip string
	}
	for _, name := range []string{"productpage", "details", "reviews", "ratings"} {
		in.Services = append(in.Services, &registry.Service{
			Hostname: name + ".default.svc.cluster.local", Name: name, Namespace: "default", Ports: http, Source: "test",
		})
	}
	for _, w := range []wl{
		{"productpage", "v1", "127.2.0.1"},
		{"details", "v1", "127.2.0.2"},
		{"reviews", "v1", "127.2.0.3"},
		{"reviews", "v2", "127.2.0.4"},
		{"reviews", "v3", "127.2.0.5"},
		{"ratings", "v1", "127.2.0.6"},
	} {
		in.Instances = append(in.Instances, &registry.Instance{
			Service: w.svc + ".default.svc.cluster.local", ServicePort: 9080, Address: w.ip, Port: 9080,
			Workload: w.svc + "-" + w.version, Namespace: "default",
			Labels:         map[string]string{"app": w.svc, "version": w.version},
			ServiceAccount: "bookinfo-" + w.svc, Weight: 1, Healthy: true, Sidecar: true,
		})
	}
	return in
}

// sidecarProxy is productpage's sidecar in local (Explicit) mode.
func sidecarProxy() *node.Proxy {
	return &node.Proxy{
		ID: "sidecar~127.2.0.1~productpage-v1.default~default.svc.cluster.local", Type: node.Sidecar,
		IP: netip.MustParseAddr("127.2.0.1"), AppIP: netip.MustParseAddr("127.1.0.1"),
		Workload: "productpage-v1", Namespace: "default", ServiceAccount: "bookinfo-productpage",
		Labels: map[string]string{"app": "productpage", "version": "v1"}, Interception: node.Explicit,
		DNSDomain: "default.svc.cluster.local",
	}
}

// redirectProxy is the same sidecar in Redirect (Kubernetes-style) mode.
func redirectProxy() *node.Proxy {
	p := sidecarProxy()
	p.Interception = node.Redirect
	p.AppIP = p.IP
	return p
}

func gatewayProxy() *node.Proxy {
	return &node.Proxy{
		ID: "router~127.0.0.1~ingressgateway.istio-system~istio-system.svc.cluster.local", Type: node.Router,
		IP: netip.MustParseAddr("127.0.0.1"), AppIP: netip.MustParseAddr("127.0.0.1"),
		Workload: "ingressgateway", Namespace: "istio-system", ServiceAccount: "ingressgateway",
		Labels: map[string]string{"istio": "ingressgateway"}, Interception: node.Explicit,
	}
}

func grpcProxy() *node.Proxy {
	return &node.Proxy{
		ID: "grpc-client", Type: node.GRPC, Namespace: "default", ServiceAccount: "default",
		Labels: map[string]string{}, Interception: node.Redirect,
	}
}

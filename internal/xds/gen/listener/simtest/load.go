// Package simtest is test support for the listener and route generators: a loader for
// Istio YAML specs, the Bookinfo mesh as a snapshot, and a simulator that sends a
// described request through generated listeners and route configurations with Envoy's
// matching rules and reports where it goes (Istio's pilot/pkg/simulation idea). Tests
// assert on destinations rather than on proto shapes. Only tests import it.
package simtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// BookinfoDir holds Istio's Bookinfo networking samples.
const BookinfoDir = "/work/shared/istio-samples/samples/bookinfo/networking"

// Configs are Istio resources read from YAML.
type Configs struct {
	VirtualServices  []snapshot.Config[*networking.VirtualService]
	DestinationRules []snapshot.Config[*networking.DestinationRule]
	Gateways         []snapshot.Config[*networking.Gateway]
	Sidecars         []snapshot.Config[*networking.Sidecar]
	ServiceEntries   []snapshot.Config[*networking.ServiceEntry]
}

// Add appends other's resources.
func (c *Configs) Add(o Configs) {
	c.VirtualServices = append(c.VirtualServices, o.VirtualServices...)
	c.DestinationRules = append(c.DestinationRules, o.DestinationRules...)
	c.Gateways = append(c.Gateways, o.Gateways...)
	c.Sidecars = append(c.Sidecars, o.Sidecars...)
	c.ServiceEntries = append(c.ServiceEntries, o.ServiceEntries...)
}

// creation hands out CreationIndex values in load order, as a store would.
var creation uint64

// LoadFile reads a (multi-document) YAML file of Istio resources; a relative name is
// looked up in BookinfoDir. Resources without a namespace go to "default".
func LoadFile(name string) (Configs, error) {
	if !filepath.IsAbs(name) {
		name = filepath.Join(BookinfoDir, name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return Configs{}, fmt.Errorf("simtest: %w", err)
	}
	c, err := Parse(filepath.Base(name), data)
	if err != nil {
		return Configs{}, err
	}
	return c, nil
}

// MustLoad is LoadFile for tests that cannot go on without the file.
func MustLoad(name string) Configs {
	c, err := LoadFile(name)
	if err != nil {
		panic(err)
	}
	return c
}

// Parse reads YAML documents of Istio resources.
func Parse(source string, data []byte) (Configs, error) {
	var out Configs
	for i, doc := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return out, fmt.Errorf("simtest: %s: document %d: %w", source, i, err)
		}
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Spec json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(js, &obj); err != nil {
			return out, fmt.Errorf("simtest: %s: document %d: %w", source, i, err)
		}
		if obj.Kind == "" {
			continue
		}
		creation++
		meta := snapshot.Meta{Name: obj.Metadata.Name, Namespace: obj.Metadata.Namespace, CreationIndex: creation,
			Source: fmt.Sprintf("%s: %s %s", source, obj.Kind, obj.Metadata.Name)}
		if meta.Namespace == "" {
			meta.Namespace = "default"
		}
		var perr error
		switch obj.Kind {
		case "VirtualService":
			spec := &networking.VirtualService{}
			perr = spec.UnmarshalJSON(obj.Spec)
			out.VirtualServices = append(out.VirtualServices, snapshot.Config[*networking.VirtualService]{Meta: meta, Spec: spec})
		case "DestinationRule":
			spec := &networking.DestinationRule{}
			perr = spec.UnmarshalJSON(obj.Spec)
			out.DestinationRules = append(out.DestinationRules, snapshot.Config[*networking.DestinationRule]{Meta: meta, Spec: spec})
		case "Gateway":
			spec := &networking.Gateway{}
			perr = spec.UnmarshalJSON(obj.Spec)
			out.Gateways = append(out.Gateways, snapshot.Config[*networking.Gateway]{Meta: meta, Spec: spec})
		case "Sidecar":
			spec := &networking.Sidecar{}
			perr = spec.UnmarshalJSON(obj.Spec)
			out.Sidecars = append(out.Sidecars, snapshot.Config[*networking.Sidecar]{Meta: meta, Spec: spec})
		case "ServiceEntry":
			spec := &networking.ServiceEntry{}
			perr = spec.UnmarshalJSON(obj.Spec)
			out.ServiceEntries = append(out.ServiceEntries, snapshot.Config[*networking.ServiceEntry]{Meta: meta, Spec: spec})
		default:
			return out, fmt.Errorf("simtest: %s: document %d: kind %q not supported", source, i, obj.Kind)
		}
		if perr != nil {
			return out, fmt.Errorf("simtest: %s: %s %s: spec: %w", source, obj.Kind, meta.Name, perr)
		}
	}
	return out, nil
}

// MustParse is Parse for literal YAML in tests.
func MustParse(yamlText string) Configs {
	c, err := Parse("inline", []byte(yamlText))
	if err != nil {
		panic(err)
	}
	return c
}

// Workload is one Bookinfo workload: its mesh address (sidecar IP) and app address.
type Workload struct {
	Name, Service, Version string
	IP, AppIP              string
}

// Bookinfo's workloads on weft's local-mode loopback addresses.
var BookinfoWorkloads = []Workload{
	{"productpage-v1", "productpage", "v1", "127.2.0.1", "127.1.0.1"},
	{"details-v1", "details", "v1", "127.2.0.2", "127.1.0.2"},
	{"reviews-v1", "reviews", "v1", "127.2.0.3", "127.1.0.3"},
	{"reviews-v2", "reviews", "v2", "127.2.0.4", "127.1.0.4"},
	{"reviews-v3", "reviews", "v3", "127.2.0.5", "127.1.0.5"},
	{"ratings-v1", "ratings", "v1", "127.2.0.6", "127.1.0.6"},
}

// GatewayIP is the local ingress gateway's address.
const GatewayIP = "127.2.0.100"

// BookinfoInput is the Bookinfo mesh (services on port 9080 in "default", HTTP) plus
// the given resources.
func BookinfoInput(cfgs ...Configs) snapshot.Input {
	in := snapshot.Input{Mesh: snapshot.DefaultMeshConfig()}
	for _, name := range []string{"details", "productpage", "ratings", "reviews"} {
		in.Services = append(in.Services, &registry.Service{
			Hostname: name + ".default.svc.cluster.local", Name: name, Namespace: "default",
			Ports:  []registry.Port{{Name: "http", Number: 9080, Protocol: registry.HTTP}},
			Source: "mesh file",
		})
	}
	for _, w := range BookinfoWorkloads {
		in.Instances = append(in.Instances, &registry.Instance{
			Service: w.Service + ".default.svc.cluster.local", ServicePort: 9080,
			Address: w.IP, Port: 9080, Workload: w.Name, Namespace: "default",
			Labels:         map[string]string{"app": w.Service, "version": w.Version},
			ServiceAccount: "bookinfo-" + w.Service, Weight: 1, Healthy: true, Sidecar: true,
		})
	}
	var all Configs
	for _, c := range cfgs {
		all.Add(c)
	}
	in.VirtualServices = all.VirtualServices
	in.DestinationRules = all.DestinationRules
	in.Gateways = all.Gateways
	in.Sidecars = all.Sidecars
	in.ServiceEntries = all.ServiceEntries
	return in
}

// Bookinfo builds the Bookinfo snapshot with the given resources.
func Bookinfo(cfgs ...Configs) *snapshot.Snapshot { return snapshot.Build(BookinfoInput(cfgs...)) }

// BookinfoFiles builds the Bookinfo snapshot with the named sample files.
func BookinfoFiles(files ...string) *snapshot.Snapshot {
	var cs []Configs
	for _, f := range files {
		cs = append(cs, MustLoad(f))
	}
	return Bookinfo(cs...)
}

// SidecarProxy is the sidecar of a Bookinfo workload ("productpage-v1").
func SidecarProxy(workload string, mode node.Interception) *node.Proxy {
	for _, w := range BookinfoWorkloads {
		if w.Name == workload {
			ip := netip.MustParseAddr(w.IP)
			return &node.Proxy{
				ID: node.ID(node.Sidecar, ip, w.Name, "default", "default.svc.cluster.local"), Type: node.Sidecar,
				IP: ip, AppIP: netip.MustParseAddr(w.AppIP), Workload: w.Name, Namespace: "default",
				ServiceAccount: "bookinfo-" + w.Service, Labels: map[string]string{"app": w.Service, "version": w.Version},
				Interception: mode, DNSDomain: "default.svc.cluster.local",
			}
		}
	}
	panic("simtest: no workload " + workload)
}

// GatewayProxy is the ingress gateway (labels istio=ingressgateway).
func GatewayProxy(mode node.Interception) *node.Proxy {
	ip := netip.MustParseAddr(GatewayIP)
	return &node.Proxy{
		ID: node.ID(node.Router, ip, "istio-ingressgateway", "istio-system", "istio-system.svc.cluster.local"), Type: node.Router,
		IP: ip, AppIP: ip, Workload: "istio-ingressgateway", Namespace: "istio-system", ServiceAccount: "istio-ingressgateway",
		Labels: map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}, Interception: mode,
		DNSDomain: "istio-system.svc.cluster.local",
	}
}

// GRPCProxy is a proxyless gRPC client in namespace ns.
func GRPCProxy(ns string) *node.Proxy {
	return &node.Proxy{ID: "grpc-client", Type: node.GRPC, Namespace: ns, Labels: map[string]string{"app": "client"},
		ServiceAccount: "default", Interception: node.Redirect, DNSDomain: ns + ".svc.cluster.local"}
}

// lower is strings.ToLower, for header names.
func lower(s string) string { return strings.ToLower(s) }

// Package snapshot is the immutable, indexed view of the mesh that the xDS generators
// read: services and their instances from the registry, and the operator's Istio
// resources from the config store, taken together at one moment. A new snapshot is built
// after each (debounced) change; generators never see a half-applied change, and the
// same snapshot always yields the same xDS bytes.
package snapshot

import (
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/weft-mesh/weft/internal/registry"
)

// Meta is what every config resource carries besides its spec.
type Meta struct {
	Name, Namespace string
	Labels          map[string]string
	Annotations     map[string]string
	// Source names the resource for errors and status: "reviews.yaml: VirtualService
	// default/reviews".
	Source string
	// CreationIndex orders resources that Istio orders by creation time (older first):
	// the order they entered the store.
	CreationIndex uint64
}

// Config is one resource with its spec.
type Config[T any] struct {
	Meta
	Spec T
}

// MeshConfig is the mesh-wide settings (Istio's MeshConfig subset weft uses).
type MeshConfig struct {
	TrustDomain   string // "cluster.local"
	RootNamespace string // "istio-system": mesh-wide policies live here
	// EnableAutoMTLS: sidecars originate ISTIO_MUTUAL to workloads that have sidecars
	// unless a DestinationRule says otherwise (Istio's default: true).
	EnableAutoMTLS bool
	// AccessLogFile: "/dev/stdout" turns on access logs in every proxy.
	AccessLogFile string
	// IngressGatewayLabels are the labels of the local ingress gateway.
	IngressGatewayLabels map[string]string
}

// DefaultMeshConfig is Istio's defaults.
func DefaultMeshConfig() MeshConfig {
	return MeshConfig{TrustDomain: "cluster.local", RootNamespace: "istio-system", EnableAutoMTLS: true}
}

// Snapshot is the mesh at one moment. Never modify one after Build.
type Snapshot struct {
	Mesh MeshConfig
	// Services sorted by hostname, then namespace.
	Services []*registry.Service

	VirtualServices        []Config[*networking.VirtualService]
	DestinationRules       []Config[*networking.DestinationRule]
	Gateways               []Config[*networking.Gateway]
	ServiceEntries         []Config[*networking.ServiceEntry]
	WorkloadEntries        []Config[*networking.WorkloadEntry]
	Sidecars               []Config[*networking.Sidecar]
	PeerAuthentications    []Config[*security.PeerAuthentication]
	AuthorizationPolicies  []Config[*security.AuthorizationPolicy]
	RequestAuthentications []Config[*security.RequestAuthentication]

	// inServices, inInstances: Build's input lists, as given, for Unchanged.
	inServices  []*registry.Service
	inInstances []*registry.Instance

	byHost    map[string][]*registry.Service // hostname -> services (one per namespace)
	instances map[instKey][]*registry.Instance
	byAddr    map[string][]*registry.Instance // address -> instances (the workload's ports)
}

type instKey struct {
	host string
	port uint32
}

// Input is what Build takes. Lists need no order: Build sorts them.
type Input struct {
	Mesh      MeshConfig
	Services  []*registry.Service
	Instances []*registry.Instance

	VirtualServices        []Config[*networking.VirtualService]
	DestinationRules       []Config[*networking.DestinationRule]
	Gateways               []Config[*networking.Gateway]
	ServiceEntries         []Config[*networking.ServiceEntry]
	WorkloadEntries        []Config[*networking.WorkloadEntry]
	Sidecars               []Config[*networking.Sidecar]
	PeerAuthentications    []Config[*security.PeerAuthentication]
	AuthorizationPolicies  []Config[*security.AuthorizationPolicy]
	RequestAuthentications []Config[*security.RequestAuthentication]
}

// Build indexes an input into a snapshot. ServiceEntry and WorkloadEntry resources are
// turned into services and instances here (see serviceentry.go), so generators see one
// registry.
func Build(in Input) *Snapshot {
	s := &Snapshot{
		Mesh:                   in.Mesh,
		VirtualServices:        sorted(in.VirtualServices),
		DestinationRules:       sorted(in.DestinationRules),
		Gateways:               sorted(in.Gateways),
		ServiceEntries:         sorted(in.ServiceEntries),
		WorkloadEntries:        sorted(in.WorkloadEntries),
		Sidecars:               sorted(in.Sidecars),
		PeerAuthentications:    sorted(in.PeerAuthentications),
		AuthorizationPolicies:  sorted(in.AuthorizationPolicies),
		RequestAuthentications: sorted(in.RequestAuthentications),
		byHost:                 map[string][]*registry.Service{},
		instances:              map[instKey][]*registry.Instance{},
		byAddr:                 map[string][]*registry.Instance{},
		inServices:             slices.Clone(in.Services),
		inInstances:            slices.Clone(in.Instances),
	}
	if s.Mesh.TrustDomain == "" {
		s.Mesh.TrustDomain = "cluster.local"
	}
	if s.Mesh.RootNamespace == "" {
		s.Mesh.RootNamespace = "istio-system"
	}
	svcs := append([]*registry.Service(nil), in.Services...)
	insts := append([]*registry.Instance(nil), in.Instances...)
	seSvcs, seInsts := fromServiceEntries(s.ServiceEntries, s.WorkloadEntries)
	svcs = append(svcs, seSvcs...)
	insts = append(insts, seInsts...)

	sort.SliceStable(svcs, func(i, j int) bool {
		if svcs[i].Hostname != svcs[j].Hostname {
			return svcs[i].Hostname < svcs[j].Hostname
		}
		return svcs[i].Namespace < svcs[j].Namespace
	})
	for _, svc := range svcs {
		if dup := s.byHost[svc.Hostname]; len(dup) > 0 && dup[len(dup)-1].Namespace == svc.Namespace {
			continue // first source wins for the same host in the same namespace
		}
		s.Services = append(s.Services, svc)
		s.byHost[svc.Hostname] = append(s.byHost[svc.Hostname], svc)
	}
	registry.SortInstances(insts)
	for _, in := range insts {
		k := instKey{in.Service, in.ServicePort}
		s.instances[k] = append(s.instances[k], in)
		s.byAddr[in.Address] = append(s.byAddr[in.Address], in)
	}
	return s
}

func sorted[T any](in []Config[T]) []Config[T] {
	out := append([]Config[T](nil), in...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Service returns the service with that hostname visible from namespace ns: the one in
// ns if there is one, else the first by namespace. nil when none.
func (s *Snapshot) Service(host, ns string) *registry.Service {
	list := s.byHost[host]
	for _, svc := range list {
		if svc.Namespace == ns {
			return svc
		}
	}
	if len(list) > 0 {
		return list[0]
	}
	return nil
}

// Instances returns the instances of a service port, sorted.
func (s *Snapshot) Instances(host string, port uint32) []*registry.Instance {
	return s.instances[instKey{host, port}]
}

// InstancesAt returns the instances whose address is addr: the service ports a workload
// serves (a sidecar's inbound side).
func (s *Snapshot) InstancesAt(addr string) []*registry.Instance {
	return s.byAddr[addr]
}

// ResolveHost turns a host as written in a rule ("reviews", "reviews.default",
// "reviews.default.svc.cluster.local") into an FQDN, relative to the rule's namespace,
// as Istio does for short names.
func (s *Snapshot) ResolveHost(host, ns string) string {
	if host == "*" || strings.HasPrefix(host, "*.") && strings.Count(host, ".") > 1 {
		return host
	}
	suffix := ".svc." + s.Mesh.TrustDomain
	switch strings.Count(host, ".") {
	case 0:
		return host + "." + ns + suffix
	case 1:
		if s.byHost[host] == nil {
			return host + suffix
		}
	}
	return host
}

// Visible reports whether a config or service with exportTo is visible from namespace
// ns (Istio's exportTo: "." own namespace, "*" all, or namespace names).
func Visible(exportTo []string, owner, ns string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		if e == "*" || e == ns || (e == "." && owner == ns) {
			return true
		}
	}
	return false
}

// Parts name groups of a snapshot's inputs, for Unchanged.
type Parts uint32

const (
	// PartRegistry: the mesh config, the registry's services and instances, and the
	// ServiceEntries and WorkloadEntries (which become services and instances).
	PartRegistry Parts = 1 << iota
	PartVirtualServices
	PartDestinationRules
	PartGateways
	PartSidecars
	PartPeerAuthentications
	PartAuthorizationPolicies
	PartRequestAuthentications
)

// Unchanged reports whether s and o were built from the same inputs in parts: the same
// objects, in the same order. Inputs are never modified once given to Build, so the
// same objects mean the same content, and what a generator computed from those parts
// of o holds for s: a push after a VirtualService change need not rebuild what only
// reads the registry and DestinationRules. False when unsure (nil, other objects of
// equal content).
func (s *Snapshot) Unchanged(o *Snapshot, parts Parts) bool {
	if s == nil || o == nil {
		return false
	}
	if s == o {
		return true
	}
	if parts&PartRegistry != 0 {
		if !reflect.DeepEqual(s.Mesh, o.Mesh) || !slices.Equal(s.inServices, o.inServices) ||
			!slices.Equal(s.inInstances, o.inInstances) ||
			!sameConfigs(s.ServiceEntries, o.ServiceEntries) || !sameConfigs(s.WorkloadEntries, o.WorkloadEntries) {
			return false
		}
	}
	return (parts&PartVirtualServices == 0 || sameConfigs(s.VirtualServices, o.VirtualServices)) &&
		(parts&PartDestinationRules == 0 || sameConfigs(s.DestinationRules, o.DestinationRules)) &&
		(parts&PartGateways == 0 || sameConfigs(s.Gateways, o.Gateways)) &&
		(parts&PartSidecars == 0 || sameConfigs(s.Sidecars, o.Sidecars)) &&
		(parts&PartPeerAuthentications == 0 || sameConfigs(s.PeerAuthentications, o.PeerAuthentications)) &&
		(parts&PartAuthorizationPolicies == 0 || sameConfigs(s.AuthorizationPolicies, o.AuthorizationPolicies)) &&
		(parts&PartRequestAuthentications == 0 || sameConfigs(s.RequestAuthentications, o.RequestAuthentications))
}

// sameConfigs: the same specs under the same names, in the same order.
func sameConfigs[T comparable](a, b []Config[T]) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Spec != y.Spec || x.Name != y.Name || x.Namespace != y.Namespace || x.CreationIndex != y.CreationIndex ||
			!maps.Equal(x.Labels, y.Labels) || !maps.Equal(x.Annotations, y.Annotations) {
			return false
		}
	}
	return true
}

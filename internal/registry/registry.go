// Package registry is the control plane's service registry: the services of the mesh and
// the workload instances behind each of their ports, whatever told us about them — the
// local mesh file, Istio ServiceEntry and WorkloadEntry resources, and later Kubernetes
// Services and EndpointSlices. Sources feed it; the snapshot builder reads it.
//
// Every value here is immutable once handed out: a source replaces its whole set, and
// readers hold on to what they got.
package registry

import (
	"sort"
	"strings"
	"sync"
)

// Protocol is an Istio port protocol (the port name prefix or appProtocol in Kubernetes).
type Protocol string

const (
	HTTP    Protocol = "HTTP"
	HTTP2   Protocol = "HTTP2"
	GRPC    Protocol = "GRPC"
	HTTPS   Protocol = "HTTPS"
	TLS     Protocol = "TLS"
	TCP     Protocol = "TCP"
	Unknown Protocol = "" // sniffed by the proxy
)

// ParseProtocol reads an Istio protocol name (case-insensitive); unknown names are TCP,
// as Istio treats them.
func ParseProtocol(s string) Protocol {
	switch strings.ToUpper(s) {
	case "HTTP", "HTTP1", "HTTP/1.1":
		return HTTP
	case "HTTP2", "H2", "H2C":
		return HTTP2
	case "GRPC", "GRPC-WEB":
		return GRPC
	case "HTTPS":
		return HTTPS
	case "TLS":
		return TLS
	case "":
		return Unknown
	}
	return TCP
}

// IsHTTP reports whether the proxy handles the protocol at L7.
func (p Protocol) IsHTTP() bool { return p == HTTP || p == HTTP2 || p == GRPC }

// IsHTTP2 reports whether upstream connections should be HTTP/2.
func (p Protocol) IsHTTP2() bool { return p == HTTP2 || p == GRPC }

// Port is a service port.
type Port struct {
	Name     string
	Number   uint32
	Protocol Protocol
}

// Resolution is how a proxy finds a service's endpoints (ServiceEntry resolution).
type Resolution uint8

const (
	// ClientSideLB: the control plane sends the endpoints (EDS). Istio's STATIC and
	// every mesh service.
	ClientSideLB Resolution = iota
	// DNSLB: the proxy resolves the hosts itself (STRICT_DNS).
	DNSLB
	// DNSRoundRobinLB: the proxy resolves one host per connection (LOGICAL_DNS).
	DNSRoundRobinLB
	// Passthrough: the proxy forwards to the original destination (ServiceEntry NONE).
	Passthrough
)

// Service is one service of the mesh, by hostname.
type Service struct {
	// Hostname is the FQDN the mesh routes by: "reviews.default.svc.cluster.local", or
	// a ServiceEntry host such as "api.example.com" or "*.example.com".
	Hostname  string
	Name      string // short name ("reviews")
	Namespace string
	Ports     []Port
	// Addresses are the service's virtual IPs or CIDRs, when it has any.
	Addresses    []string
	MeshExternal bool
	Resolution   Resolution
	// ExportTo limits which namespaces see the service ("." = its own, "*" = all);
	// empty means all.
	ExportTo []string
	// Source names where the service came from, for errors and status: "mesh file",
	// "ServiceEntry default/foo".
	Source string
}

// Port returns the service port with that number.
func (s *Service) Port(n uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Number == n {
			return p, true
		}
	}
	return Port{}, false
}

// Instance is a workload instance serving one port of a service: an endpoint.
type Instance struct {
	Service     string // hostname
	ServicePort uint32
	// Address and Port are where the mesh sends traffic for this instance: the
	// workload's (sidecar's) address and the port it serves the service port on.
	Address string
	Port    uint32
	// Workload names the workload ("reviews-v2-1").
	Workload  string
	Namespace string
	Labels    map[string]string
	// ServiceAccount is the workload's identity (its SPIFFE ID ends in
	// /ns/<Namespace>/sa/<ServiceAccount>).
	ServiceAccount string
	// Locality is region/zone/subzone.
	Locality string
	Weight   uint32
	Healthy  bool
	// Sidecar is true when the workload has a weft (or Istio) proxy, so mTLS can be
	// used to reach it (Istio's tlsMode: istio label).
	Sidecar bool
}

// Source is one provider of services and instances.
type Source interface {
	Name() string
	Services() []*Service
	Instances() []*Instance
}

// Registry merges sources. Safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	sources  map[string]Source
	order    []string
	version  uint64
	onChange []func()
}

// New returns an empty registry.
func New() *Registry { return &Registry{sources: map[string]Source{}} }

// Set adds or replaces a source (by name) and notifies the listeners.
func (r *Registry) Set(s Source) {
	r.mu.Lock()
	if _, ok := r.sources[s.Name()]; !ok {
		r.order = append(r.order, s.Name())
		sort.Strings(r.order)
	}
	r.sources[s.Name()] = s
	r.version++
	fns := append([]func(){}, r.onChange...)
	r.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

// OnChange registers f to run after each change.
func (r *Registry) OnChange(f func()) {
	r.mu.Lock()
	r.onChange = append(r.onChange, f)
	r.mu.Unlock()
}

// Version increases on every change.
func (r *Registry) Version() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.version
}

// Services returns every service, sorted by hostname then namespace. When two sources
// define the same hostname in the same namespace, the first source by name wins.
func (r *Registry) Services() []*Service {
	r.mu.RLock()
	defer r.mu.RUnlock()
	seen := map[string]bool{}
	var out []*Service
	for _, name := range r.order {
		for _, s := range r.sources[name].Services() {
			k := s.Namespace + "/" + s.Hostname
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Hostname != out[j].Hostname {
			return out[i].Hostname < out[j].Hostname
		}
		return out[i].Namespace < out[j].Namespace
	})
	return out
}

// Instances returns every instance, sorted by service, service port, address, port.
func (r *Registry) Instances() []*Instance {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*Instance
	for _, name := range r.order {
		out = append(out, r.sources[name].Instances()...)
	}
	SortInstances(out)
	return out
}

// SortInstances orders instances deterministically.
func SortInstances(in []*Instance) {
	sort.Slice(in, func(i, j int) bool {
		a, b := in[i], in[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.ServicePort != b.ServicePort {
			return a.ServicePort < b.ServicePort
		}
		if a.Address != b.Address {
			return a.Address < b.Address
		}
		return a.Port < b.Port
	})
}

// Static is a Source with a fixed content.
type Static struct {
	SourceName string
	Svcs       []*Service
	Insts      []*Instance
}

func (s *Static) Name() string           { return s.SourceName }
func (s *Static) Services() []*Service   { return s.Svcs }
func (s *Static) Instances() []*Instance { return s.Insts }

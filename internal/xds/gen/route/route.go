// Package route generates the RDS resources of a proxy: Envoy RouteConfigurations
// translated from the mesh's services and Istio VirtualServices, with Istio's names and
// semantics. It is one of the per-type generators the composite xDS generator calls
// (internal/xds/gen); every function here is a pure function of (snapshot, proxy) with
// deterministic output.
//
//   - Outbound: a sidecar's outbound routes — names.HTTPProxyRoute (Explicit mode, the
//     application's HTTP proxy) or one per HTTP port names.OutboundRoute(port) (Redirect).
//   - Inbound: names.InboundRoute(port) per HTTP port the workload serves.
//   - Gateway: names.GatewayRoute(port) per HTTP/terminated-HTTPS Gateway server port.
//   - GRPC: for proxyless gRPC clients, one per listener name "host:port".
//
// Scope (scope.go) decides what a proxy can see; http.go and policy.go translate one
// VirtualService http route; the listener generator (../listener) uses Scope, the
// gateway server helpers and the L4 route helpers (l4.go) to build matching listeners.
package route

import (
	"sort"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// Virtual host names of the catch-all virtual hosts (Istio's).
const (
	AllowAnyVirtualHost = "allow_any"
	BlockAllVirtualHost = "block_all"
)

// IsHTTPPort reports whether a sidecar handles a port at L7: HTTP, HTTP2, gRPC, and
// unknown protocols (which the proxy sniffs; an HTTP request is routed by the route
// configuration).
func IsHTTPPort(p registry.Protocol) bool { return p.IsHTTP() || p == registry.Unknown }

// Outbound builds the route configurations of a sidecar's outbound side: one
// names.HTTPProxyRoute for an Explicit-mode sidecar (its application uses the sidecar
// as HTTP proxy, so every HTTP service port is a virtual host), or one
// names.OutboundRoute(port) per HTTP port in Redirect mode. Sorted by name.
func Outbound(s *snapshot.Snapshot, p *node.Proxy) []*routev3.RouteConfiguration {
	if p.Type != node.Sidecar {
		return nil
	}
	sc := NewScope(s, p)
	if p.Interception == node.Explicit {
		return []*routev3.RouteConfiguration{sc.outboundConfig(names.HTTPProxyRoute, 0)}
	}
	var ports []uint32
	seen := map[uint32]bool{}
	for _, sp := range sc.ServicePorts() {
		if IsHTTPPort(sp.Port.Protocol) && !seen[sp.Port.Number] {
			seen[sp.Port.Number] = true
			ports = append(ports, sp.Port.Number)
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	out := make([]*routev3.RouteConfiguration, 0, len(ports))
	for _, port := range ports {
		out = append(out, sc.outboundConfig(names.OutboundRoute(port), port))
	}
	sortConfigs(out)
	return out
}

// outboundConfig is one outbound route configuration: the service ports on port (0:
// every port), the VirtualService hosts that are not services, and the catch-all.
func (sc *Scope) outboundConfig(name string, port uint32) *routev3.RouteConfiguration {
	ds := domainSet{}
	var vhosts []*routev3.VirtualHost
	for _, sp := range sc.ServicePorts() {
		if !IsHTTPPort(sp.Port.Protocol) || (port != 0 && sp.Port.Number != port) {
			continue
		}
		if vh := sc.serviceVirtualHost(sp, ds, false); vh != nil {
			vhosts = append(vhosts, vh)
		}
	}
	vhosts = append(vhosts, sc.nonServiceVirtualHosts(port, ds)...)
	sort.SliceStable(vhosts, func(i, j int) bool { return vhosts[i].Name < vhosts[j].Name })
	vhosts = append(vhosts, sc.catchAll())
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhosts, ValidateClusters: wrapperspb.Bool(false)}
}

// serviceVirtualHost routes one service port: by the VirtualService for its host, or
// the default route. nil when every domain is taken by an earlier virtual host.
func (sc *Scope) serviceVirtualHost(sp ServicePort, ds domainSet, grpc bool, extraDomains ...string) *routev3.VirtualHost {
	host := sp.Service.Hostname
	domains := ds.claim(append(extraDomains, Domains(sp.Service, sp.Port.Number, sc.p.Namespace, sc.s.Mesh.TrustDomain)...))
	if len(domains) == 0 {
		return nil
	}
	e := &env{sc: sc, gateway: Mesh, port: sp.Port.Number, grpc: grpc}
	var routes []*routev3.Route
	if vs := sc.MeshVirtualService(host); vs != nil {
		routes = e.virtualServiceRoutes(vs)
	}
	if len(routes) == 0 {
		routes = []*routev3.Route{e.defaultRoute(host, sp.Port.Number)}
	}
	return &routev3.VirtualHost{Name: host + ":" + strconv.FormatUint(uint64(sp.Port.Number), 10), Domains: domains, Routes: routes}
}

// nonServiceVirtualHosts are virtual hosts for VirtualService hosts that name no
// service in scope (a host only a VirtualService knows, or a wildcard that covers no
// service). On a port-specific configuration the domains carry the port; on the HTTP
// proxy configuration (port 0) any port is accepted for an exact host.
func (sc *Scope) nonServiceVirtualHosts(port uint32, ds domainSet) []*routev3.VirtualHost {
	var out []*routev3.VirtualHost
	done := map[string]bool{}
	for _, vs := range sc.vss {
		if !BoundTo(vs, Mesh) {
			continue
		}
		for _, h := range sc.ResolvedHosts(vs) {
			if h == "*" || done[h] || !sc.egressAllows(vs.Namespace, h, port) || sc.coversService(h) {
				continue
			}
			done[h] = true
			var domains []string
			name := h
			switch {
			case port != 0:
				p := strconv.FormatUint(uint64(port), 10)
				name = h + ":" + p
				domains = []string{name}
				if port == 80 {
					domains = append(domains, h)
				}
			case h[0] == '*':
				domains = []string{h}
			default:
				domains = []string{h, h + ":*"}
			}
			domains = ds.claim(domains)
			if len(domains) == 0 {
				continue
			}
			e := &env{sc: sc, gateway: Mesh, port: port}
			routes := e.virtualServiceRoutes(vs)
			if len(routes) == 0 {
				continue
			}
			out = append(out, &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes})
		}
	}
	return out
}

// coversService reports whether a VirtualService host applies to a service in scope.
func (sc *Scope) coversService(h string) bool {
	for _, svc := range sc.services {
		if HostMatch(h, svc.Hostname) {
			return true
		}
	}
	return false
}

// OriginalDstHeader is the request header an Explicit-mode sidecar's
// PassthroughCluster takes its destination from (original_dst_lb_config.use_http_header
// with the default http_header_name).
const OriginalDstHeader = "x-envoy-original-dst-host"

// catchAll is the last virtual host: unknown hosts go to PassthroughCluster
// (ALLOW_ANY) or get a 502 (REGISTRY_ONLY), as Istio's.
//
// An Explicit-mode sidecar is the application's HTTP proxy: the connection's
// destination is the sidecar itself, so its PassthroughCluster reads the destination
// from OriginalDstHeader, which the route sets from the request's authority
// (overwriting any the client sent). An IP:port authority passes through; for a
// hostname the proxy answers 503 (weft has no dynamic forward proxy: a ServiceEntry
// gives the host a DNS cluster of its own).
func (sc *Scope) catchAll() *routev3.VirtualHost {
	if sc.AllowAny() {
		r := &routev3.Route{
			Name:  AllowAnyVirtualHost,
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: names.PassthroughCluster},
				Timeout:          durationpb.New(0),
			}},
		}
		if sc.p.Interception == node.Explicit {
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: OriginalDstHeader, Value: "%REQ(:authority)%"},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}
		}
		return &routev3.VirtualHost{Name: AllowAnyVirtualHost, Domains: []string{"*"}, Routes: []*routev3.Route{r}}
	}
	return &routev3.VirtualHost{Name: BlockAllVirtualHost, Domains: []string{"*"}, Routes: []*routev3.Route{{
		Name:   BlockAllVirtualHost,
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
	}}}
}

// defaultRoute sends everything to the service port's cluster with Istio's default
// retry policy and no timeout.
func (e *env) defaultRoute(host string, port uint32) *routev3.Route {
	return &routev3.Route{
		Name:  "default",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: names.Cluster(names.Outbound, port, "", host)},
			Timeout:          durationpb.New(0),
			RetryPolicy:      DefaultRetryPolicy(),
			HashPolicy:       e.hashPolicy(host, "", port),
		}},
	}
}

// InboundPort is a port the proxy's workload serves.
type InboundPort struct {
	Port     uint32 // the workload's port (the instance port)
	Protocol registry.Protocol
	Service  *registry.Service // the first service (by hostname) that selects it
}

// InboundPorts lists the ports the proxy's workload serves (the instances at its IP),
// one per port, sorted. When services disagree on a port's protocol, the first service
// by hostname decides.
func InboundPorts(s *snapshot.Snapshot, p *node.Proxy) []InboundPort {
	if !p.IP.IsValid() {
		return nil
	}
	var out []InboundPort
	seen := map[uint32]bool{}
	for _, in := range s.InstancesAt(p.IP.String()) {
		if seen[in.Port] {
			continue
		}
		svc := s.Service(in.Service, in.Namespace)
		if svc == nil {
			continue
		}
		sp, ok := svc.Port(in.ServicePort)
		if !ok {
			continue
		}
		seen[in.Port] = true
		out = append(out, InboundPort{Port: in.Port, Protocol: sp.Protocol, Service: svc})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}

// Inbound builds names.InboundRoute(port) for each HTTP port the proxy's workload
// serves: one virtual host "*" sending everything to "inbound|port||".
func Inbound(s *snapshot.Snapshot, p *node.Proxy) []*routev3.RouteConfiguration {
	if p.Type != node.Sidecar {
		return nil
	}
	var out []*routev3.RouteConfiguration
	for _, ip := range InboundPorts(s, p) {
		if !IsHTTPPort(ip.Protocol) {
			continue
		}
		port := strconv.FormatUint(uint64(ip.Port), 10)
		out = append(out, &routev3.RouteConfiguration{
			Name:             names.InboundRoute(ip.Port),
			ValidateClusters: wrapperspb.Bool(false),
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "inbound|http|" + port,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "default",
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: names.Cluster(names.Inbound, ip.Port, "", "")},
						Timeout:          durationpb.New(0),
					}},
				}},
			}},
		})
	}
	sortConfigs(out)
	return out
}

// GRPCTarget is one dial target a proxyless gRPC client may use for a service port:
// the listener and route configuration name "host:port".
type GRPCTarget struct {
	Name string
	ServicePort
}

// GRPCTargets lists the names grpc-go may ask for: "fqdn:port" for every HTTP service
// port in scope, and "name:port" for those in the client's namespace (the short target
// "xds:///reviews:9080"). Sorted by name.
func (sc *Scope) GRPCTargets() []GRPCTarget {
	var out []GRPCTarget
	seen := map[string]bool{}
	add := func(n string, sp ServicePort) {
		if !seen[n] {
			seen[n] = true
			out = append(out, GRPCTarget{n, sp})
		}
	}
	for _, sp := range sc.ServicePorts() {
		if !IsHTTPPort(sp.Port.Protocol) {
			continue
		}
		add(names.GRPCListener(sp.Service.Hostname, sp.Port.Number), sp)
		svc := sp.Service
		if svc.Namespace == sc.p.Namespace && svc.Name != "" && svc.Hostname == svc.Name+"."+svc.Namespace+".svc."+sc.s.Mesh.TrustDomain {
			add(names.GRPCListener(svc.Name, sp.Port.Number), sp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// GRPC builds, for each listener name a proxyless gRPC client may ask for (GRPCTargets),
// the route configuration of the same name: one virtual host whose domains include the
// name (grpc-go matches the dial target against them), routes from the service's
// VirtualService without the filters grpc-go lacks.
func GRPC(s *snapshot.Snapshot, p *node.Proxy) []*routev3.RouteConfiguration {
	if p.Type != node.GRPC {
		return nil
	}
	sc := NewScope(s, p)
	var out []*routev3.RouteConfiguration
	for _, t := range sc.GRPCTargets() {
		vh := sc.serviceVirtualHost(t.ServicePort, domainSet{}, true, t.Name)
		out = append(out, &routev3.RouteConfiguration{Name: t.Name, VirtualHosts: []*routev3.VirtualHost{vh}, ValidateClusters: wrapperspb.Bool(false)})
	}
	return out
}

func sortConfigs(rcs []*routev3.RouteConfiguration) {
	sort.Slice(rcs, func(i, j int) bool { return rcs[i].Name < rcs[j].Name })
}

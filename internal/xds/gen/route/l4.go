package route

import (
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// WeightedCluster is one destination of an L4 route.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// L4Route is where one filter chain of a TCP or TLS listener sends connections: the
// chain matches the destination subnets or SNI hosts (both empty: the listener's
// default), and the tcp_proxy goes to one cluster, or several by weight.
type L4Route struct {
	Subnets  []string
	SNIHosts []string
	Clusters []WeightedCluster
}

// l4Match is the part TCP and TLS matches share.
type l4Match interface {
	GetPort() uint32
	GetSourceLabels() map[string]string
	GetSourceNamespace() string
	GetGateways() []string
}

func (e *env) l4Applies(vs *VirtualService, m l4Match) bool {
	if m.GetPort() != 0 && m.GetPort() != e.port {
		return false
	}
	if len(m.GetSourceLabels()) > 0 && !snapshot.Matches(m.GetSourceLabels(), e.sc.p.Labels) {
		return false
	}
	if m.GetSourceNamespace() != "" && m.GetSourceNamespace() != e.sc.p.Namespace {
		return false
	}
	return len(m.GetGateways()) == 0 || containsGateway(m.GetGateways(), vs.Namespace, e.gateway)
}

// l4Clusters resolves route destinations, with HTTP's weight rules.
func (e *env) l4Clusters(vs *VirtualService, rds []*networking.RouteDestination) []WeightedCluster {
	var out []WeightedCluster
	zero := 0
	for _, rd := range rds {
		c := e.cluster(rd.GetDestination(), vs.Namespace)
		if c == "" {
			continue
		}
		w := uint32(max(rd.GetWeight(), 0))
		if w == 0 {
			zero++
		}
		out = append(out, WeightedCluster{c, w})
	}
	switch {
	case len(out) == 1:
		out[0].Weight = 1
	case len(out) > 1 && zero == len(out):
		for i := range out {
			out[i].Weight = 1
		}
	case len(out) > 1:
		kept := out[:0]
		for _, wc := range out {
			if wc.Weight > 0 {
				kept = append(kept, wc)
			}
		}
		out = kept
	}
	return out
}

// tcpRoutes translates a VirtualService's tcp routes: routes with destination subnets
// become their own filter chains (a subnet is claimed by the first route naming it, as
// Envoy rejects two chains with one match); the first route without subnets is the
// default, and the routes after it are unreachable.
func (e *env) tcpRoutes(vs *VirtualService) (out []L4Route, def *L4Route) {
	claimed := map[string]bool{}
	for _, t := range vs.Spec.GetTcp() {
		matches := t.GetMatch()
		if len(matches) == 0 {
			matches = []*networking.L4MatchAttributes{{}}
		}
		for _, m := range matches {
			if !e.l4Applies(vs, m) {
				continue
			}
			cl := e.l4Clusters(vs, t.GetRoute())
			if len(cl) == 0 {
				continue
			}
			if len(m.GetDestinationSubnets()) == 0 {
				return out, &L4Route{Clusters: cl}
			}
			var subnets []string
			for _, sn := range m.GetDestinationSubnets() {
				if !claimed[sn] {
					claimed[sn] = true
					subnets = append(subnets, sn)
				}
			}
			if len(subnets) > 0 {
				out = append(out, L4Route{Subnets: subnets, Clusters: cl})
			}
		}
	}
	return out, nil
}

// MeshTCPRoutes are a sidecar's routes for a TCP service port: the chains from the
// service's VirtualService tcp routes, last the default (the VirtualService's, else the
// service port's cluster).
func (sc *Scope) MeshTCPRoutes(svc *registry.Service, port uint32) []L4Route {
	e := &env{sc: sc, gateway: Mesh, port: port}
	var out []L4Route
	var def *L4Route
	if vs := sc.MeshVirtualService(svc.Hostname); vs != nil {
		out, def = e.tcpRoutes(vs)
	}
	if def == nil {
		def = &L4Route{Clusters: []WeightedCluster{{names.Cluster(names.Outbound, port, "", svc.Hostname), 1}}}
	}
	return append(out, *def)
}

// boundVirtualServices are the VirtualServices bound to a gateway server whose hosts
// meet the server's.
func (sc *Scope) boundVirtualServices(g GatewayServer) []*VirtualService {
	var out []*VirtualService
	for _, vs := range sc.vss {
		if !BoundTo(vs, g.Name) {
			continue
		}
		if hostsMeet(sc.ResolvedHosts(vs), g.Hosts(vs.Namespace)) {
			out = append(out, vs)
		}
	}
	return out
}

func hostsMeet(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if _, ok := intersectHosts(x, y); ok {
				return true
			}
		}
	}
	return false
}

// GatewayTCPRoutes are the routes of a gateway TCP server (or a TLS server it
// terminates) from the tcp routes of the VirtualServices bound to it, oldest first; the
// first default wins. Empty when nothing routes the server.
func (sc *Scope) GatewayTCPRoutes(g GatewayServer) []L4Route {
	e := &env{sc: sc, gateway: g.Name, port: g.Port()}
	var out []L4Route
	claimed := map[string]bool{}
	for _, vs := range sc.boundVirtualServices(g) {
		routes, def := e.tcpRoutes(vs)
		for _, r := range routes {
			var subnets []string
			for _, sn := range r.Subnets {
				if !claimed[sn] {
					claimed[sn] = true
					subnets = append(subnets, sn)
				}
			}
			if len(subnets) > 0 {
				r.Subnets = subnets
				out = append(out, r)
			}
		}
		if def != nil {
			return append(out, *def)
		}
	}
	return out
}

// GatewayTLSRoutes are the SNI routes of a gateway TLS PASSTHROUGH server, from the tls
// routes of the VirtualServices bound to it, oldest first. Each SNI host (narrowed to
// the server's hosts) is claimed by the first route naming it.
func (sc *Scope) GatewayTLSRoutes(g GatewayServer) []L4Route {
	e := &env{sc: sc, gateway: g.Name, port: g.Port()}
	var out []L4Route
	claimed := map[string]bool{}
	for _, vs := range sc.boundVirtualServices(g) {
		serverHosts := g.Hosts(vs.Namespace)
		for _, t := range vs.Spec.GetTls() {
			for _, m := range t.GetMatch() {
				if !e.l4Applies(vs, m) {
					continue
				}
				var snis []string
				for _, sni := range m.GetSniHosts() {
					for _, sh := range serverHosts {
						if h, ok := intersectHosts(strings.ToLower(sni), sh); ok && !claimed[h] {
							claimed[h] = true
							snis = append(snis, h)
						}
					}
				}
				if len(snis) == 0 {
					continue
				}
				if cl := e.l4Clusters(vs, t.GetRoute()); len(cl) > 0 {
					out = append(out, L4Route{SNIHosts: snis, Subnets: m.GetDestinationSubnets(), Clusters: cl})
				}
			}
		}
	}
	return out
}

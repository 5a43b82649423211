package route

import (
	"sort"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// GatewayServer is one server of a Gateway that selects the proxy.
type GatewayServer struct {
	// Name is the Gateway's "namespace/name", as VirtualServices' gateways name it.
	Name    string
	Gateway *snapshot.Config[*networking.Gateway]
	Server  *networking.Server
}

// Port is the server's port number.
func (g GatewayServer) Port() uint32 { return g.Server.GetPort().GetNumber() }

// Protocol is the server port's protocol, upper case ("HTTP", "HTTPS", "TLS", ...).
func (g GatewayServer) Protocol() string { return strings.ToUpper(g.Server.GetPort().GetProtocol()) }

// TLSMode is the server's TLS mode (PASSTHROUGH when no tls block is given).
func (g GatewayServer) TLSMode() networking.ServerTLSSettings_TLSmode {
	return g.Server.GetTls().GetMode()
}

// TerminatesHTTP reports whether the proxy serves HTTP on the server: an HTTP, HTTP2 or
// gRPC port, or an HTTPS port whose TLS the gateway terminates.
func (g GatewayServer) TerminatesHTTP() bool {
	switch g.Protocol() {
	case "HTTP", "HTTP2", "GRPC", "GRPC-WEB":
		return true
	case "HTTPS":
		return g.TerminatesTLS()
	}
	return false
}

// TerminatesTLS reports whether the gateway terminates the server's TLS (SIMPLE,
// MUTUAL, ISTIO_MUTUAL, OPTIONAL_MUTUAL).
func (g GatewayServer) TerminatesTLS() bool {
	if g.Server.GetTls() == nil {
		return false
	}
	switch g.TLSMode() {
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL,
		networking.ServerTLSSettings_ISTIO_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		return true
	}
	return false
}

// Hosts are the server's hosts that a VirtualService in namespace ns may bind to, with
// the "namespace/" part removed ("*/" or no prefix: any; "./": the Gateway's own).
func (g GatewayServer) Hosts(ns string) []string {
	var out []string
	for _, h := range g.Server.GetHosts() {
		hns, host, ok := strings.Cut(h, "/")
		if !ok {
			hns, host = "*", h
		}
		if hns == "." {
			hns = g.Gateway.Namespace
		}
		if ns != "" && hns != "*" && hns != ns {
			continue
		}
		out = append(out, strings.ToLower(host))
	}
	return out
}

// GatewayServers lists the servers of the Gateways whose selector matches a router
// proxy's labels, sorted by port, then Gateway age, then server order.
func GatewayServers(s *snapshot.Snapshot, p *node.Proxy) []GatewayServer {
	if p.Type != node.Router {
		return nil
	}
	var gws []*snapshot.Config[*networking.Gateway]
	for i := range s.Gateways {
		g := &s.Gateways[i]
		if g.Spec != nil && snapshot.Matches(g.Spec.GetSelector(), p.Labels) {
			gws = append(gws, g)
		}
	}
	sort.SliceStable(gws, func(i, j int) bool { return createdBefore(gws[i].Meta, gws[j].Meta) })
	var out []GatewayServer
	for _, g := range gws {
		for _, srv := range g.Spec.GetServers() {
			if srv.GetPort().GetNumber() == 0 {
				continue
			}
			out = append(out, GatewayServer{Name: g.Namespace + "/" + g.Name, Gateway: g, Server: srv})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Port() < out[j].Port() })
	return out
}

// Gateway builds names.GatewayRoute(port) for every port on which a Gateway selecting
// the proxy serves HTTP (plain, or HTTPS it terminates). Virtual hosts come from the
// VirtualServices bound to those Gateways: one per host, the VirtualService's host
// narrowed to the server's when one covers the other. Unlike sidecars, several
// VirtualServices for one host are merged (Istio's rule for gateways): their routes are
// concatenated oldest first, then catch-all routes are moved behind the others so a
// catch-all of an older VirtualService does not hide a newer one's specific routes.
func Gateway(s *snapshot.Snapshot, p *node.Proxy) []*routev3.RouteConfiguration {
	servers := GatewayServers(s, p)
	if len(servers) == 0 {
		return nil
	}
	sc := NewScope(s, p)
	byPort := map[uint32][]GatewayServer{}
	var ports []uint32
	for _, g := range servers {
		if !g.TerminatesHTTP() {
			continue
		}
		if byPort[g.Port()] == nil {
			ports = append(ports, g.Port())
		}
		byPort[g.Port()] = append(byPort[g.Port()], g)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	var out []*routev3.RouteConfiguration
	for _, port := range ports {
		out = append(out, sc.gatewayConfig(port, byPort[port]))
	}
	return out
}

// gatewayVHost collects one gateway virtual host.
type gatewayVHost struct {
	host       string
	routes     []*routev3.Route
	from       map[*VirtualService]bool
	requireTLS bool
}

func (sc *Scope) gatewayConfig(port uint32, servers []GatewayServer) *routev3.RouteConfiguration {
	vhosts := map[string]*gatewayVHost{}
	var order []string
	for _, g := range servers {
		redirect := g.Protocol() != "HTTPS" && g.Server.GetTls().GetHttpsRedirect()
		for _, vs := range sc.vss {
			if !BoundTo(vs, g.Name) {
				continue
			}
			for _, vh := range sc.ResolvedHosts(vs) {
				for _, sh := range g.Hosts(vs.Namespace) {
					host, ok := intersectHosts(vh, sh)
					if !ok {
						continue
					}
					gv := vhosts[host]
					if gv == nil {
						gv = &gatewayVHost{host: host, from: map[*VirtualService]bool{}}
						vhosts[host] = gv
						order = append(order, host)
					}
					gv.requireTLS = gv.requireTLS || redirect
					if gv.from[vs] {
						continue
					}
					gv.from[vs] = true
					e := &env{sc: sc, gateway: g.Name, port: port}
					gv.routes = append(gv.routes, e.virtualServiceRoutes(vs)...)
				}
			}
		}
		// A server with httpsRedirect and no VirtualService still redirects.
		if redirect {
			for _, sh := range g.Hosts("") {
				if vhosts[sh] == nil {
					vhosts[sh] = &gatewayVHost{host: sh, from: map[*VirtualService]bool{}, requireTLS: true}
					order = append(order, sh)
				}
			}
		}
	}
	sort.Strings(order)
	p := strconv.FormatUint(uint64(port), 10)
	ds := domainSet{}
	var out []*routev3.VirtualHost
	for _, host := range order {
		gv := vhosts[host]
		if len(gv.routes) == 0 && !gv.requireTLS {
			continue
		}
		var domains []string
		switch {
		case host == "*":
			domains = []string{"*"}
		case host[0] == '*': // a suffix wildcard cannot also be a prefix wildcard
			domains = []string{host, host + ":" + p}
		default:
			domains = []string{host, host + ":*"}
		}
		if domains = ds.claim(domains); len(domains) == 0 {
			continue
		}
		routes := gv.routes
		if len(gv.from) > 1 {
			routes = catchAllLast(routes)
		}
		vh := &routev3.VirtualHost{Name: host + ":" + p, Domains: domains, Routes: routes}
		if gv.requireTLS {
			vh.RequireTls = routev3.VirtualHost_ALL
		}
		out = append(out, vh)
	}
	return &routev3.RouteConfiguration{Name: names.GatewayRoute(port), VirtualHosts: out, ValidateClusters: wrapperspb.Bool(false)}
}

// catchAllLast moves routes that match every request behind the others, keeping order.
func catchAllLast(routes []*routev3.Route) []*routev3.Route {
	out := make([]*routev3.Route, 0, len(routes))
	var tail []*routev3.Route
	for _, r := range routes {
		m := r.GetMatch()
		if m.GetPrefix() == "/" && len(m.GetHeaders()) == 0 && len(m.GetQueryParameters()) == 0 {
			tail = append(tail, r)
			continue
		}
		out = append(out, r)
	}
	return append(out, tail...)
}

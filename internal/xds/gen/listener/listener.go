// Package listener generates the LDS resources of a proxy: Envoy Listeners for
// sidecars (Explicit and Redirect interception), gateways, and proxyless gRPC clients,
// with Istio's names and shapes. It is one of the per-type generators the composite
// xDS generator calls (internal/xds/gen); each function is a pure function of
// (snapshot, proxy) with deterministic output. HTTP connection managers fetch their
// routes over RDS from the route configurations internal/xds/gen/route generates, and
// send traffic to clusters named by internal/xds/gen/names.
//
// hcm.go holds the HTTP filter chain (one declared list) and access logs; inbound.go
// the inbound chains and the one hook where mTLS (PeerAuthentication) plugs in;
// gateway.go and grpc.go the gateway and proxyless listeners.
package listener

import (
	"net/netip"
	"sort"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

// Listener filter names.
const (
	OriginalDst   = "envoy.filters.listener.original_dst"
	TLSInspector  = "envoy.filters.listener.tls_inspector"
	HTTPInspector = "envoy.filters.listener.http_inspector"
)

func listenerFilter(name string) *listenerv3.ListenerFilter {
	var cfg proto.Message
	switch name {
	case OriginalDst:
		cfg = &originaldstv3.OriginalDst{}
	case TLSInspector:
		cfg = &tlsinspectorv3.TlsInspector{}
	default:
		cfg = &httpinspectorv3.HttpInspector{}
	}
	return &listenerv3.ListenerFilter{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// Sidecar builds a sidecar's listeners.
//
// Explicit mode (no capture; weft's local mode): a listener per port the workload
// serves, bound to the proxy's IP, names.Listener(IP, port), going to "inbound|port||";
// and names.VirtualOutbound on IP:15001, an HTTP proxy whose route configuration
// names.HTTPProxyRoute covers every HTTP service.
//
// Redirect mode (iptables capture; Istio's shape): names.VirtualOutbound on
// 0.0.0.0:15001 handing connections to the listener of their original destination,
// else passing them through; "0.0.0.0_<port>" listeners (not bound) for HTTP service
// ports with RDS names.OutboundRoute(port); "<vip>_<port>" listeners for TCP services;
// names.VirtualInbound on 0.0.0.0:15006 with a chain per inbound port.
//
// Sorted by name.
func Sidecar(s *snapshot.Snapshot, p *node.Proxy) []*listenerv3.Listener {
	return sidecar(s, p, inboundSecurity)
}

func sidecar(s *snapshot.Snapshot, p *node.Proxy, sec InboundSecurity) []*listenerv3.Listener {
	if p.Type != node.Sidecar {
		return nil
	}
	var out []*listenerv3.Listener
	if p.Interception == node.Explicit {
		// The Explicit listeners name no service (one HTTP proxy listener with RDS, the
		// inbound ones): no scope to compute, which for a large mesh is most of the cost.
		out = explicit(s, p, sec)
	} else {
		out = redirect(route.NewScope(s, p), sec)
	}
	sortListeners(out)
	return out
}

// explicit builds an Explicit-mode sidecar's listeners.
func explicit(s *snapshot.Snapshot, p *node.Proxy, sec InboundSecurity) []*listenerv3.Listener {
	ip := "127.0.0.1"
	if p.IP.IsValid() {
		ip = p.IP.String()
	}
	var out []*listenerv3.Listener
	for _, in := range route.InboundPorts(s, p) {
		var insp inspectors
		chains := inboundChains(s, p, in, sec(s, p, in.Port), false, &insp)
		out = append(out, &listenerv3.Listener{
			Name:             names.Listener(ip, in.Port),
			Address:          address(ip, in.Port),
			TrafficDirection: corev3.TrafficDirection_INBOUND,
			ListenerFilters:  insp.filters(),
			FilterChains:     normalize(chains),
		})
	}
	fc := FilterContext{Snapshot: s, Proxy: p, Side: SideOutbound, Port: 0}
	hcm := httpConnectionManager(fc, "outbound_"+names.Listener(ip, names.OutboundCapturePort), names.HTTPProxyRoute)
	out = append(out, &listenerv3.Listener{
		Name:             names.VirtualOutbound,
		Address:          address(ip, names.OutboundCapturePort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Name: names.HTTPProxyRoute, Filters: []*listenerv3.Filter{hcmFilter(hcm)}}},
	})
	return out
}

// redirect builds a Redirect-mode sidecar's listeners.
func redirect(sc *route.Scope, sec InboundSecurity) []*listenerv3.Listener {
	s, p := sc.Snapshot(), sc.Proxy()
	const any4 = "0.0.0.0"
	passthrough := names.PassthroughCluster
	if !sc.AllowAny() {
		passthrough = names.BlackHoleCluster
	}
	var out []*listenerv3.Listener

	// virtualOutbound: connections whose original destination has no listener.
	out = append(out, &listenerv3.Listener{
		Name:             names.VirtualOutbound,
		Address:          address(any4, names.OutboundCapturePort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		UseOriginalDst:   wrapperspb.Bool(true),
		ListenerFilters:  []*listenerv3.ListenerFilter{listenerFilter(OriginalDst)},
		FilterChains: []*listenerv3.FilterChain{{
			// A connection to 15001 itself would loop.
			Name:             "virtualOutbound-blackhole",
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(names.OutboundCapturePort)},
			Filters:          []*listenerv3.Filter{tcpProxyFilter(s, one(names.BlackHoleCluster))},
		}},
		DefaultFilterChain: &listenerv3.FilterChain{
			Name:    "virtualOutbound-catchall-tcp",
			Filters: []*listenerv3.Filter{tcpProxyFilter(s, one(passthrough))},
		},
	})

	// Outbound per port. HTTP ports share "0.0.0.0_<port>" (the route configuration
	// tells services apart by Host); TCP ports need a destination IP to tell services
	// apart, so they get "<vip>_<port>", or "0.0.0.0_<port>" when the service has no
	// VIP and no other listener claims that port (first service by hostname wins).
	httpPorts := map[uint32]bool{}
	sniffAny := map[uint32]bool{}
	type tcpSP struct {
		sp   route.ServicePort
		addr string
	}
	var tcps []tcpSP
	for _, sp := range sc.ServicePorts() {
		vips := serviceVIPs(sp.Service)
		switch {
		case sp.Port.Protocol.IsHTTP():
			httpPorts[sp.Port.Number] = true
		case sp.Port.Protocol == registry.Unknown && len(vips) == 0:
			// Sniffed without a VIP: HTTP by Host on the shared listener, other
			// protocols passed through.
			httpPorts[sp.Port.Number] = true
			sniffAny[sp.Port.Number] = true
		default:
			if len(vips) == 0 {
				tcps = append(tcps, tcpSP{sp, any4})
			}
			for _, v := range vips {
				tcps = append(tcps, tcpSP{sp, v})
			}
		}
	}
	claimed := map[string]bool{}
	ports := make([]uint32, 0, len(httpPorts))
	for port := range httpPorts {
		ports = append(ports, port)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	for _, port := range ports {
		name := names.Listener(any4, port)
		claimed[name] = true
		fc := FilterContext{Snapshot: s, Proxy: p, Side: SideOutbound, Port: port}
		hcm := hcmFilter(httpConnectionManager(fc, "outbound_"+name, names.OutboundRoute(port)))
		l := &listenerv3.Listener{
			Name:             name,
			Address:          address(any4, port),
			TrafficDirection: corev3.TrafficDirection_OUTBOUND,
			BindToPort:       wrapperspb.Bool(false),
		}
		if sniffAny[port] {
			l.ListenerFilters = []*listenerv3.ListenerFilter{listenerFilter(HTTPInspector)}
			l.FilterChains = []*listenerv3.FilterChain{
				{Name: name + "-http", FilterChainMatch: &listenerv3.FilterChainMatch{ApplicationProtocols: sniffedHTTP()}, Filters: []*listenerv3.Filter{hcm}},
				{Name: name + "-tcp", Filters: []*listenerv3.Filter{tcpProxyFilter(s, one(passthrough))}},
			}
		} else {
			l.FilterChains = []*listenerv3.FilterChain{{Name: name, Filters: []*listenerv3.Filter{hcm}}}
		}
		out = append(out, l)
	}
	for _, t := range tcps {
		port := t.sp.Port.Number
		name := names.Listener(t.addr, port)
		if claimed[name] {
			continue
		}
		claimed[name] = true
		l := &listenerv3.Listener{
			Name:             name,
			Address:          address(t.addr, port),
			TrafficDirection: corev3.TrafficDirection_OUTBOUND,
			BindToPort:       wrapperspb.Bool(false),
		}
		var chains []*listenerv3.FilterChain
		if t.sp.Port.Protocol == registry.Unknown {
			// Sniffed on a VIP: HTTP goes through the port's route configuration.
			l.ListenerFilters = []*listenerv3.ListenerFilter{listenerFilter(HTTPInspector)}
			fc := FilterContext{Snapshot: s, Proxy: p, Side: SideOutbound, Port: port}
			hcm := hcmFilter(httpConnectionManager(fc, "outbound_"+name, names.OutboundRoute(port)))
			chains = append(chains, &listenerv3.FilterChain{Name: name + "-http", FilterChainMatch: &listenerv3.FilterChainMatch{ApplicationProtocols: sniffedHTTP()}, Filters: []*listenerv3.Filter{hcm}})
		}
		for i, r := range sc.MeshTCPRoutes(t.sp.Service, port) {
			fcm := &listenerv3.FilterChainMatch{PrefixRanges: cidrs(r.Subnets)}
			chains = append(chains, &listenerv3.FilterChain{Name: name + "-tcp-" + strconv.Itoa(i), FilterChainMatch: fcm, Filters: []*listenerv3.Filter{tcpProxyFilter(s, r.Clusters)}})
		}
		l.FilterChains = normalize(chains)
		out = append(out, l)
	}

	// virtualInbound: every inbound port by destination port; the rest passes through
	// to the original destination.
	insp := inspectors{originalDst: true}
	chains := []*listenerv3.FilterChain{{
		Name:             "virtualInbound-blackhole",
		FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(names.InboundCapturePort)},
		Filters:          []*listenerv3.Filter{tcpProxyFilter(s, one(names.BlackHoleCluster))},
	}}
	for _, in := range route.InboundPorts(s, p) {
		chains = append(chains, inboundChains(s, p, in, sec(s, p, in.Port), true, &insp)...)
	}
	// Ports the workload does not declare pass through to the original destination.
	// This is a chain without a port, not default_filter_chain: a connection to a
	// declared port that fails that port's chains (plaintext to a STRICT port) must
	// find no chain and be closed, not fall back to the default.
	chains = append(chains, &listenerv3.FilterChain{
		Name:    "virtualInbound-catchall",
		Filters: tcpChain(FilterContext{Snapshot: s, Proxy: p, Side: SideInbound, Port: 0}, one(names.InboundPassthroughCluster)),
	})
	out = append(out, &listenerv3.Listener{
		Name:             names.VirtualInbound,
		Address:          address(any4, names.InboundCapturePort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters:  insp.filters(),
		FilterChains:     normalize(chains),
	})
	return out
}

func one(cluster string) []route.WeightedCluster {
	return []route.WeightedCluster{{Name: cluster, Weight: 1}}
}

// serviceVIPs are a service's virtual IP addresses (CIDRs are not listener addresses).
func serviceVIPs(svc *registry.Service) []string {
	var out []string
	for _, a := range svc.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, ip.String())
		}
	}
	return out
}

// cidrs parses destination subnets ("10.0.0.0/8", or an address for a single host).
func cidrs(subnets []string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	for _, sn := range subnets {
		pfx, err := netip.ParsePrefix(sn)
		if err != nil {
			ip, err := netip.ParseAddr(sn)
			if err != nil {
				continue
			}
			pfx = netip.PrefixFrom(ip, ip.BitLen())
		}
		pfx = pfx.Masked()
		out = append(out, &corev3.CidrRange{AddressPrefix: pfx.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(pfx.Bits()))})
	}
	return out
}

func address(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// normalize drops empty filter chain matches (they match everything either way) and
// chains whose match repeats an earlier one: Envoy rejects a listener with two equal
// matches, and the first is the one the config meant.
func normalize(chains []*listenerv3.FilterChain) []*listenerv3.FilterChain {
	seen := map[string]bool{}
	out := chains[:0]
	mo := proto.MarshalOptions{Deterministic: true}
	for _, c := range chains {
		if c.FilterChainMatch != nil && proto.Size(c.FilterChainMatch) == 0 {
			c.FilterChainMatch = nil
		}
		b, _ := mo.Marshal(c.FilterChainMatch)
		if seen[string(b)] {
			continue
		}
		seen[string(b)] = true
		out = append(out, c)
	}
	return out
}

// sortListeners orders listeners by name and finishes them: a listener that inspects
// the first bytes (TLS or HTTP) goes on to the default chains when a client does not
// speak first (a server-first protocol on an undeclared port), rather than closing.
func sortListeners(ls []*listenerv3.Listener) {
	for _, l := range ls {
		for _, lf := range l.GetListenerFilters() {
			if lf.GetName() == TLSInspector || lf.GetName() == HTTPInspector {
				l.ContinueOnListenerFiltersTimeout = true
			}
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
}

// Package cluster builds the CDS and EDS resources of one proxy: an outbound cluster per
// service port and DestinationRule subset the proxy may reach, a sidecar's inbound
// clusters to its own application, the special BlackHole and Passthrough clusters, and
// the ClusterLoadAssignments of the EDS clusters. It sits between the snapshot (services,
// instances, DestinationRules, Sidecars) and the composite generator in internal/xds/gen,
// and translates Istio's DestinationRule semantics into Envoy Cluster fields. Every
// function is pure: the same snapshot and proxy give the same bytes.
//
// Cluster names are Istio's (internal/xds/gen/names); the listener and route builders
// point at them:
//
//	outbound|<port>|<subset>|<host>   one per visible service port and subset
//	inbound|<port>||                  a sidecar's own ports (STATIC to the application)
//	BlackHoleCluster                  no endpoints: connections to it fail
//	PassthroughCluster                ORIGINAL_DST (see passthrough for Explicit mode)
//	InboundPassthroughCluster         ORIGINAL_DST, Redirect-mode sidecars only
//
// For a DestinationRule consistentHash the cluster gets RING_HASH or MAGLEV; the route
// builder adds the matching route hash_policy (the cluster side carries no hash key).
package cluster

import (
	"net/netip"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// Defaults Istio applies to every cluster it generates.
const (
	// defaultConnectTimeout is MeshConfig.connectTimeout's default.
	defaultConnectTimeout = 10 * time.Second
	// dnsRefreshRate is MeshConfig.dnsRefreshRate's default, for STRICT_DNS and
	// LOGICAL_DNS clusters.
	dnsRefreshRate = 60 * time.Second
)

// Sidecar returns a sidecar's clusters: outbound clusters for every service port (and
// DestinationRule subset) it may reach, inbound clusters for the ports its workload
// serves, BlackHoleCluster and PassthroughCluster (and InboundPassthroughCluster in
// Redirect mode). Sorted by name.
func Sidecar(s *snapshot.Snapshot, p *node.Proxy) []*clusterv3.Cluster {
	out := append(SidecarShared(s, p), SidecarInbound(s, p)...)
	sortClusters(out)
	return out
}

// SidecarShared is the part of Sidecar that does not depend on the workload the proxy
// stands for: the outbound clusters, BlackHoleCluster and the passthrough clusters. It
// reads only the proxy's type, namespace, interception mode, IP family and the labels
// that selectors in the snapshot name (see internal/xds/gen's class key), so proxies
// alike in those get equal output. Sorted by name.
func SidecarShared(s *snapshot.Snapshot, p *node.Proxy) []*clusterv3.Cluster {
	b := newBuilder(s, p)
	out := b.outbound()
	out = append(out, blackHole(), b.passthrough(names.PassthroughCluster))
	if p.Interception != node.Explicit {
		out = append(out, b.passthrough(names.InboundPassthroughCluster))
	}
	sortClusters(out)
	return out
}

// SidecarInbound is the workload's part of Sidecar: its "inbound|<port>||" clusters.
// It needs no scope, so it skips newBuilder's walk over every service.
func SidecarInbound(s *snapshot.Snapshot, p *node.Proxy) []*clusterv3.Cluster {
	b := &builder{s: s, p: p}
	out := b.inbound()
	sortClusters(out)
	return out
}

// Gateway returns a gateway's clusters: outbound clusters for every service port (and
// subset) visible from its namespace, as Istio sends them (not only those its
// VirtualServices route to), and BlackHoleCluster. Sorted by name.
func Gateway(s *snapshot.Snapshot, p *node.Proxy) []*clusterv3.Cluster {
	b := newBuilder(s, p)
	out := append(b.outbound(), blackHole())
	sortClusters(out)
	return out
}

// GRPC returns a proxyless gRPC client's clusters: EDS clusters in the form grpc-go's
// xDS client accepts (lb_policy ROUND_ROBIN or RING_HASH, ADS EDS config, no transport
// socket unless the DestinationRule asks for ISTIO_MUTUAL, which uses certificate
// provider instances), for every visible service port and subset. Sorted by name.
func GRPC(s *snapshot.Snapshot, p *node.Proxy) []*clusterv3.Cluster {
	b := newBuilder(s, p)
	b.grpc = true
	out := b.outbound()
	sortClusters(out)
	return out
}

// builder holds what one generation for one proxy computes once.
type builder struct {
	s     *snapshot.Snapshot
	p     *node.Proxy
	rules *rules
	scope *scope
	grpc  bool
	// services the proxy gets clusters for, in hostname order, one per hostname.
	services []*registry.Service
	byHost   map[string]*registry.Service
}

func newBuilder(s *snapshot.Snapshot, p *node.Proxy) *builder {
	b := &builder{s: s, p: p, rules: newRules(s, p), scope: newScope(s, p), grpc: p.Type == node.GRPC,
		byHost: map[string]*registry.Service{}}
	// A hostname defined in several namespaces (ServiceEntries) names one cluster: the
	// proxy's own namespace's definition when it sees one, else the first visible by
	// namespace, as Istio picks.
	for _, svc := range s.Services {
		if !b.scope.includes(svc) {
			continue
		}
		prev := b.byHost[svc.Hostname]
		switch {
		case prev == nil:
			b.services = append(b.services, svc)
		case svc.Namespace == p.Namespace:
			b.services[len(b.services)-1] = svc // s.Services is sorted by hostname
		default:
			continue
		}
		b.byHost[svc.Hostname] = svc
	}
	return b
}

// target is one outbound cluster: a service port, maybe narrowed to a subset, with its
// effective traffic policy.
type target struct {
	svc    *registry.Service
	port   registry.Port
	subset string
	labels map[string]string // subset labels; nil for the whole service
	policy *networking.TrafficPolicy
}

func (t *target) name() string {
	return names.Cluster(names.Outbound, t.port.Number, t.subset, t.svc.Hostname)
}

// instances are the endpoints of the target: the service port's instances, those
// carrying every subset label for a subset.
func (t *target) instances(s *snapshot.Snapshot) []*registry.Instance {
	all := serviceInstances(s, t.svc, t.port.Number)
	if len(t.labels) == 0 {
		return all
	}
	var out []*registry.Instance
	for _, in := range all {
		if snapshot.Matches(t.labels, in.Labels) {
			out = append(out, in)
		}
	}
	return out
}

// serviceInstances are the instances of one service port. The snapshot indexes them by
// hostname, which several namespaces may define (ServiceEntries): only the service's own
// namespace's count.
func serviceInstances(s *snapshot.Snapshot, svc *registry.Service, port uint32) []*registry.Instance {
	all := s.Instances(svc.Hostname, port)
	for i, in := range all {
		if in.Namespace != "" && in.Namespace != svc.Namespace {
			out := append([]*registry.Instance(nil), all[:i]...)
			for _, in := range all[i+1:] {
				if in.Namespace == "" || in.Namespace == svc.Namespace {
					out = append(out, in)
				}
			}
			return out
		}
	}
	return all
}

// targets lists the outbound clusters of the proxy, in service, port, subset order.
func (b *builder) targets() []*target {
	var out []*target
	for _, svc := range b.services {
		r := b.rules.lookup(svc)
		var top *networking.TrafficPolicy
		if r != nil {
			top = r.policy
		}
		for _, port := range svc.Ports {
			out = append(out, &target{svc: svc, port: port, policy: effective(top, nil, port.Number)})
			if r == nil {
				continue
			}
			for _, ss := range r.subsets {
				out = append(out, &target{
					svc: svc, port: port, subset: ss.GetName(), labels: ss.GetLabels(),
					policy: effective(top, ss, port.Number),
				})
			}
		}
	}
	return out
}

// lookupTarget rebuilds the target of an outbound cluster name (for Endpoints); nil
// when the proxy has no such cluster.
func (b *builder) lookupTarget(name string) *target {
	dir, port, subset, host, ok := names.ParseCluster(name)
	if !ok || dir != names.Outbound {
		return nil
	}
	svc := b.byHost[host]
	if svc == nil {
		return nil
	}
	sp, ok := svc.Port(port)
	if !ok {
		return nil
	}
	r := b.rules.lookup(svc)
	var top *networking.TrafficPolicy
	if r != nil {
		top = r.policy
	}
	if subset == "" {
		return &target{svc: svc, port: sp, policy: effective(top, nil, port)}
	}
	ss := r.subset(subset)
	if ss == nil {
		return nil
	}
	return &target{svc: svc, port: sp, subset: subset, labels: ss.GetLabels(), policy: effective(top, ss, port)}
}

func (b *builder) outbound() []*clusterv3.Cluster {
	var out []*clusterv3.Cluster
	for _, t := range b.targets() {
		if b.grpc && t.svc.Resolution == registry.Passthrough {
			continue // grpc-go has no ORIGINAL_DST clusters
		}
		out = append(out, b.build(t))
	}
	return out
}

// build translates one target into a Cluster.
func (b *builder) build(t *target) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:           t.name(),
		ConnectTimeout: durationpb.New(defaultConnectTimeout),
	}
	lb := t.policy.GetLoadBalancer()
	// loadBalancer PASSTHROUGH forwards to the address the client connected to, which
	// only a capturing sidecar or gateway has; proxyless clients and Explicit-mode
	// sidecars keep the service's own resolution.
	passthroughLB := lb.GetSimple() == networking.LoadBalancerSettings_PASSTHROUGH &&
		!b.grpc && b.p.Interception != node.Explicit
	switch {
	case passthroughLB || t.svc.Resolution == registry.Passthrough:
		b.originalDst(c, t)
	case t.svc.Resolution == registry.DNSLB && !b.grpc:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		b.dnsCluster(c, t, false)
	case t.svc.Resolution == registry.DNSLB, t.svc.Resolution == registry.DNSRoundRobinLB:
		// grpc-go resolves LOGICAL_DNS clusters itself (one host name); it has no
		// STRICT_DNS.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
		b.dnsCluster(c, t, true)
	default:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = edsConfig(c.Name)
	}
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST {
		applyLB(c, lb, b.grpc)
	}
	applyPool(c, t.policy.GetConnectionPool(), t.port.Protocol, b.grpc)
	applyOutlier(c, t.policy.GetOutlierDetection())
	b.applyTLS(c, t)
	return c
}

func edsConfig(name string) *clusterv3.Cluster_EdsClusterConfig {
	return &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name}
}

// adsSource is a config source on the ADS stream the proxy already has.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// originalDst makes c forward to the address the client asked for: ServiceEntry
// resolution NONE and DestinationRule loadBalancer PASSTHROUGH. In Explicit mode there is
// no original destination (the application talks to the sidecar as an HTTP proxy), so
// a service with a concrete hostname is resolved by DNS instead (LOGICAL_DNS to
// host:port), and a wildcard host takes the address from the request header as
// PassthroughCluster does.
func (b *builder) originalDst(c *clusterv3.Cluster, t *target) {
	if b.p.Interception == node.Explicit && !strings.HasPrefix(t.svc.Hostname, "*") {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
		c.DnsLookupFamily = b.dnsFamily()
		c.DnsRefreshRate = durationpb.New(dnsRefreshRate)
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
			ClusterName: c.Name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				Locality:            &corev3.Locality{},
				LoadBalancingWeight: u32(1),
				LbEndpoints:         []*endpointv3.LbEndpoint{lbEndpoint(t.svc.Hostname, t.port.Number, 1, true, nil)},
			}},
		}
		return
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
	c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	if b.p.Interception == node.Explicit {
		c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{
			OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true},
		}
	}
}

// dnsCluster fills the load assignment of a STRICT_DNS or LOGICAL_DNS cluster from the
// target's instances (hostnames or IPs). LOGICAL_DNS takes exactly one: the first.
func (b *builder) dnsCluster(c *clusterv3.Cluster, t *target, logical bool) {
	c.DnsLookupFamily = b.dnsFamily()
	c.DnsRefreshRate = durationpb.New(dnsRefreshRate)
	insts := t.instances(b.s)
	if logical {
		var first []*registry.Instance
		for _, in := range insts {
			if validHost(in.Address) {
				first = []*registry.Instance{in}
				break
			}
		}
		insts = first
	}
	c.LoadAssignment = b.loadAssignment(c.Name, t, insts, true)
}

// dnsFamily is V4_ONLY for IPv4 (and unknown) proxies, as Istio resolves for them.
func (b *builder) dnsFamily() clusterv3.Cluster_DnsLookupFamily {
	if b.p.IP.Is6() && !b.p.IP.Is4In6() {
		return clusterv3.Cluster_V6_ONLY
	}
	return clusterv3.Cluster_V4_ONLY
}

// inbound builds a sidecar's "inbound|<port>||" clusters, one per port its workload
// serves (the instances at the proxy's address), each STATIC to the application:
// AppIP:<port> when the application listens on its own address (local mode), else
// 127.0.0.1:<port> (Redirect mode, where the application shares the pod's address).
func (b *builder) inbound() []*clusterv3.Cluster {
	if !b.p.IP.IsValid() {
		return nil
	}
	appAddr := "127.0.0.1"
	if b.p.AppIP.IsValid() && b.p.AppIP != b.p.IP {
		appAddr = b.p.AppIP.String()
	}
	seen := map[uint32]bool{}
	var out []*clusterv3.Cluster
	for _, in := range b.s.InstancesAt(b.p.IP.String()) {
		if seen[in.Port] {
			continue
		}
		// The same ports the inbound listeners serve (route.InboundPorts): instances of
		// known service ports only.
		svc := b.s.Service(in.Service, in.Namespace)
		if svc == nil {
			continue
		}
		sp, ok := svc.Port(in.ServicePort)
		if !ok {
			continue
		}
		seen[in.Port] = true
		proto := sp.Protocol
		name := names.Cluster(names.Inbound, in.Port, "", "")
		c := &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(defaultConnectTimeout),
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
			CircuitBreakers:      defaultBreakers(),
			LoadAssignment: &endpointv3.ClusterLoadAssignment{
				ClusterName: name,
				Endpoints: []*endpointv3.LocalityLbEndpoints{{
					Locality:            &corev3.Locality{},
					LoadBalancingWeight: u32(1),
					LbEndpoints:         []*endpointv3.LbEndpoint{lbEndpoint(appAddr, in.Port, 1, true, nil)},
				}},
			},
		}
		setProtocol(c, protocolOptions{proto: proto})
		out = append(out, c)
	}
	return out
}

// blackHole is Istio's BlackHoleCluster: STATIC without endpoints, so every request
// routed to it fails with no healthy upstream.
func blackHole() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 names.BlackHoleCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

// passthrough is PassthroughCluster (or InboundPassthroughCluster): ORIGINAL_DST,
// speaking whatever protocol the client spoke.
//
// In Explicit mode the sidecar has no original destination: the application sends its
// requests to the sidecar's HTTP proxy listener, whose local address is the sidecar
// itself. PassthroughCluster then takes the destination from the
// x-envoy-original-dst-host request header (original_dst_lb_config.use_http_header),
// which the outbound route must set from the request authority. Only an IP:port
// authority can be passed through this way; weft has no dynamic forward proxy, so a
// hostname not declared by a ServiceEntry fails (declare it: a ServiceEntry host gets
// its own DNS-resolved cluster).
func (b *builder) passthrough(name string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		CircuitBreakers:      defaultBreakers(),
	}
	if b.p.Interception == node.Explicit {
		c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{
			OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true},
		}
	}
	setProtocol(c, protocolOptions{proto: registry.Unknown})
	return c
}

// validHost reports whether an instance address can be an endpoint address of a DNS
// cluster: an IP or a DNS name (not a wildcard, not a Unix socket).
func validHost(addr string) bool {
	if addr == "" || strings.ContainsAny(addr, "*/") {
		return false
	}
	return true
}

// isIP reports whether addr is an IP address (EDS endpoints must be).
func isIP(addr string) bool {
	_, err := netip.ParseAddr(addr)
	return err == nil
}

package cluster

import (
	securityapi "istio.io/api/security/v1beta1"

	"github.com/weft-mesh/weft/internal/xds/gen/security"
	"math"
	"sort"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// Endpoints returns the ClusterLoadAssignments of the EDS clusters among clusters (by
// eds_cluster_config.service_name, else the cluster name), one per cluster even when it
// has no endpoints, so that the proxy does not wait for them. Sorted by cluster name.
func Endpoints(s *snapshot.Snapshot, p *node.Proxy, clusters []*clusterv3.Cluster) []*endpointv3.ClusterLoadAssignment {
	b := newBuilder(s, p)
	seen := map[string]bool{}
	var out []*endpointv3.ClusterLoadAssignment
	for _, c := range clusters {
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		t := b.lookupTarget(name)
		if t == nil {
			out = append(out, &endpointv3.ClusterLoadAssignment{ClusterName: name})
			continue
		}
		out = append(out, b.loadAssignment(name, t, t.instances(s), false))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GetClusterName() < out[j].GetClusterName() })
	return out
}

// group is one LocalityLbEndpoints being built.
type group struct {
	locality string
	priority uint32
	weight   uint32 // locality weight; 0 means the sum of the endpoint weights
	eps      []*endpointv3.LbEndpoint
	sum      uint64
}

// loadAssignment builds a cluster's endpoints from instances: grouped by locality (every
// group with a Locality and a non-zero weight, which grpc-go requires), with the
// DestinationRule's locality settings applied (distribute weights; failover or
// failoverPriority priorities, which need outlier detection as in Istio), each endpoint
// with its weight, health and the tlsMode metadata auto mTLS matches on. dns allows
// DNS names (STRICT_DNS/LOGICAL_DNS); EDS endpoints must be IPs. Duplicate addresses
// keep the first instance (grpc-go rejects duplicates).
func (b *builder) loadAssignment(name string, t *target, insts []*registry.Instance, dns bool) *endpointv3.ClusterLoadAssignment {
	ls := localitySetting(t.policy.GetLoadBalancer())
	failover := ls != nil && len(ls.GetDistribute()) == 0 && t.policy.GetOutlierDetection() != nil
	proxyLoc := "" // node metadata does not carry the proxy's locality yet

	groups := map[string]*group{}
	var keys []string
	seen := map[string]bool{}
	for _, in := range insts {
		if dns && !validHost(in.Address) || !dns && !isIP(in.Address) || in.Port == 0 {
			continue
		}
		addrKey := in.Address + "|" + strconv.Itoa(int(in.Port))
		if seen[addrKey] {
			continue
		}
		seen[addrKey] = true
		var prio uint32
		if failover {
			prio = b.failoverPriority(ls, proxyLoc, in)
		}
		k := strconv.Itoa(int(prio)) + "|" + in.Locality
		g := groups[k]
		if g == nil {
			g = &group{locality: in.Locality, priority: prio}
			groups[k] = g
			keys = append(keys, k)
		}
		w := max(in.Weight, 1)
		var meta *corev3.Metadata
		// Istio marks an endpoint whose port its PeerAuthentication DISABLEs as
		// plaintext, so auto mTLS does not originate TLS the server cannot take.
		if in.Sidecar && security.WorkloadPeerMode(b.s, in.Namespace, in.Labels, in.Port) != security.Mode(securityapi.PeerAuthentication_MutualTLS_DISABLE) {
			meta = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				TransportSocketMatchKey: {Fields: map[string]*structpb.Value{TLSModeKey: structpb.NewStringValue(TLSModeIstio)}},
			}}
		}
		g.eps = append(g.eps, lbEndpoint(in.Address, in.Port, w, in.Healthy, meta))
		g.sum += uint64(w)
	}

	list := make([]*group, 0, len(keys))
	for _, k := range keys {
		list = append(list, groups[k])
	}
	if ls != nil && len(ls.GetDistribute()) > 0 {
		list = distribute(ls, proxyLoc, list)
	}
	compactPriorities(list)
	sort.Slice(list, func(i, j int) bool {
		if list[i].priority != list[j].priority {
			return list[i].priority < list[j].priority
		}
		return list[i].locality < list[j].locality
	})

	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for _, g := range list {
		w := g.weight
		if w == 0 {
			w = uint32(min(g.sum, math.MaxUint32))
		}
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            parseLocality(g.locality),
			LbEndpoints:         g.eps,
			LoadBalancingWeight: u32(max(w, 1)),
			Priority:            g.priority,
		})
	}
	return cla
}

func lbEndpoint(addr string, port, weight uint32, healthy bool, meta *corev3.Metadata) *endpointv3.LbEndpoint {
	hs := corev3.HealthStatus_HEALTHY
	if !healthy {
		hs = corev3.HealthStatus_UNHEALTHY
	}
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address:       addr,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus:        hs,
		LoadBalancingWeight: u32(weight),
		Metadata:            meta,
	}
}

// parseLocality reads "region/zone/subzone" (any part may be missing).
func parseLocality(s string) *corev3.Locality {
	parts := strings.SplitN(s, "/", 3)
	l := &corev3.Locality{Region: parts[0]}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.SubZone = parts[2]
	}
	return l
}

// localityMatch reports whether a locality matches a DestinationRule locality pattern
// "region/zone/subzone", where "*" or a missing part matches anything (Istio's rule).
func localityMatch(pattern, loc string) bool {
	p, l := parseLocality(pattern), parseLocality(loc)
	part := func(want, have string) bool { return want == "*" || want == "" || want == have }
	if p.Region == "*" {
		return true
	}
	return p.Region == l.Region && part(p.Zone, l.Zone) && part(p.SubZone, l.SubZone)
}

// specificity of a locality pattern: the number of non-wildcard parts.
func specificity(pattern string) int {
	n := 0
	for _, p := range strings.Split(pattern, "/") {
		if p == "*" {
			break
		}
		n++
	}
	return n
}

// distribute applies localityLbSetting.distribute: the first entry whose "from" matches
// the proxy's locality gives each "to" pattern its percentage of the traffic, shared
// evenly by the localities the pattern (the most specific one for each locality)
// covers; localities no pattern covers get no traffic and are left out, as in Istio.
// Weights are scaled by 1000 so that shares keep their proportions in integers.
func distribute(ls *networking.LocalityLoadBalancerSetting, proxyLoc string, list []*group) []*group {
	var rule *networking.LocalityLoadBalancerSetting_Distribute
	for _, d := range ls.GetDistribute() {
		if localityMatch(d.GetFrom(), proxyLoc) {
			rule = d
			break
		}
	}
	if rule == nil {
		return list
	}
	patterns := sortedKeys(rule.GetTo())
	assigned := make([]string, len(list))
	count := map[string]int{}
	for i, g := range list {
		best := ""
		for _, p := range patterns {
			if localityMatch(p, g.locality) && (best == "" || specificity(p) > specificity(best)) {
				best = p
			}
		}
		assigned[i] = best
		if best != "" {
			count[best]++
		}
	}
	var out []*group
	for i, g := range list {
		p := assigned[i]
		if p == "" || rule.GetTo()[p] == 0 {
			continue
		}
		g.weight = max(uint32(uint64(rule.GetTo()[p])*1000/uint64(count[p])), 1)
		out = append(out, g)
	}
	return out
}

// failoverPriority is an endpoint's priority under locality failover. With
// failoverPriority labels: the number of labels, in order, before the first the endpoint
// does not share with the proxy, counted from the end (all shared: 0). Otherwise by
// locality: same region/zone/subzone 0, same zone 1, same region 2, a failover target
// region of the proxy's region 3, anything else 4. Priorities are compacted afterwards.
func (b *builder) failoverPriority(ls *networking.LocalityLoadBalancerSetting, proxyLoc string, in *registry.Instance) uint32 {
	if labels := ls.GetFailoverPriority(); len(labels) > 0 {
		matched := 0
		for _, l := range labels {
			key, want, hasValue := strings.Cut(l, "=")
			have := instanceLabel(in, key)
			if !hasValue {
				want = proxyLabel(b.p, proxyLoc, key)
			}
			if have != want {
				break
			}
			matched++
		}
		return uint32(len(labels) - matched)
	}
	pr := parseLocality(proxyLoc)
	el := parseLocality(in.Locality)
	switch {
	case el.Region == pr.Region && el.Zone == pr.Zone && el.SubZone == pr.SubZone:
		return 0
	case el.Region == pr.Region && el.Zone == pr.Zone:
		return 1
	case el.Region == pr.Region:
		return 2
	}
	for _, f := range ls.GetFailover() {
		if f.GetFrom() == pr.Region && f.GetTo() == el.Region {
			return 3
		}
	}
	return 4
}

// Locality labels failoverPriority may name; their values come from localities.
const (
	labelRegion  = "topology.kubernetes.io/region"
	labelZone    = "topology.kubernetes.io/zone"
	labelSubzone = "topology.istio.io/subzone"
)

func instanceLabel(in *registry.Instance, key string) string {
	if v, ok := localityLabel(in.Locality, key); ok {
		return v
	}
	return in.Labels[key]
}

func proxyLabel(p *node.Proxy, loc, key string) string {
	if v, ok := localityLabel(loc, key); ok {
		return v
	}
	return p.Labels[key]
}

func localityLabel(loc, key string) (string, bool) {
	l := parseLocality(loc)
	switch key {
	case labelRegion:
		return l.Region, true
	case labelZone:
		return l.Zone, true
	case labelSubzone:
		return l.SubZone, true
	}
	return "", false
}

// compactPriorities renumbers priorities 0..n-1 keeping their order: Envoy and grpc-go
// require them contiguous.
func compactPriorities(list []*group) {
	var ps []uint32
	seen := map[uint32]bool{}
	for _, g := range list {
		if !seen[g.priority] {
			seen[g.priority] = true
			ps = append(ps, g.priority)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	index := map[uint32]uint32{}
	for i, p := range ps {
		index[p] = uint32(i)
	}
	for _, g := range list {
		g.priority = index[g.priority]
	}
}

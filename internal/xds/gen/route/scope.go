package route

import (
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// Mesh is the gateway name of the sidecars in a VirtualService's gateways field.
const Mesh = "mesh"

// VirtualService is one VirtualService config as the generators see it.
type VirtualService = snapshot.Config[*networking.VirtualService]

// Scope is what one proxy may reach: the services and VirtualServices visible to it
// through exportTo and its Sidecar resource's egress hosts (Istio's SidecarScope). With
// no Sidecar resource everything visible is in scope. Build one per generation with
// NewScope; it is read-only afterwards.
type Scope struct {
	s *snapshot.Snapshot
	p *node.Proxy
	// sidecar is the Sidecar resource that applies to the proxy, nil for the default.
	sidecar *snapshot.Config[*networking.Sidecar]
	egress  []egressRule
	// services in scope, sorted by hostname; one per hostname (the proxy's namespace's
	// when several namespaces define it, as snapshot.Service picks).
	services []*registry.Service
	// vss are the VirtualServices visible to the proxy, in creation order, and
	// vsHosts their hosts resolved to FQDNs.
	vss     []*VirtualService
	vsHosts map[*VirtualService][]string
	// meshExact is, per host, the oldest mesh-bound VirtualService naming it exactly;
	// meshWild the mesh-bound wildcard hosts in creation order.
	meshExact map[string]*VirtualService
	meshWild  []hostVS
	// drs are the visible DestinationRules with resolved hosts; drFor memoizes
	// DestinationRule.
	drs   []drEntry
	drFor map[string]*snapshot.Config[*networking.DestinationRule]
}

type hostVS struct {
	host string
	vs   *VirtualService
}

type drEntry struct {
	c    *snapshot.Config[*networking.DestinationRule]
	host string
}

// egressRule is one "namespace/host" entry of a Sidecar egress listener.
type egressRule struct {
	port uint32 // 0: every port
	ns   string // "*" any, "~" none, else a namespace
	host string // "*", "*.suffix" or a host
}

// NewScope computes the proxy's scope.
func NewScope(s *snapshot.Snapshot, p *node.Proxy) *Scope {
	sc := &Scope{s: s, p: p}
	sc.sidecar = sidecarFor(s, p)
	if sc.sidecar != nil {
		for _, l := range sc.sidecar.Spec.GetEgress() {
			for _, h := range l.GetHosts() {
				ns, host, ok := strings.Cut(h, "/")
				if !ok { // Istio requires ns/host; a bare host means any namespace
					ns, host = "*", h
				}
				if ns == "." {
					ns = sc.sidecar.Namespace
				}
				sc.egress = append(sc.egress, egressRule{port: l.GetPort().GetNumber(), ns: ns, host: strings.ToLower(host)})
			}
		}
	}
	seen := map[string]bool{}
	for _, svc := range s.Services {
		if seen[svc.Hostname] {
			continue
		}
		// Among same-host services, the one snapshot.Service picks for the proxy's
		// namespace stands for the host.
		pick := s.Service(svc.Hostname, p.Namespace)
		if pick == nil || !snapshot.Visible(pick.ExportTo, pick.Namespace, p.Namespace) {
			continue
		}
		if !sc.egressAllows(pick.Namespace, pick.Hostname, 0) {
			continue
		}
		seen[svc.Hostname] = true
		sc.services = append(sc.services, pick)
	}
	for i := range s.VirtualServices {
		vs := &s.VirtualServices[i]
		if vs.Spec == nil || !snapshot.Visible(vs.Spec.GetExportTo(), vs.Namespace, p.Namespace) {
			continue
		}
		sc.vss = append(sc.vss, vs)
	}
	sort.SliceStable(sc.vss, func(i, j int) bool { return createdBefore(sc.vss[i].Meta, sc.vss[j].Meta) })
	sc.vsHosts = make(map[*VirtualService][]string, len(sc.vss))
	sc.meshExact = map[string]*VirtualService{}
	for _, vs := range sc.vss {
		hosts := make([]string, 0, len(vs.Spec.GetHosts()))
		for _, h := range vs.Spec.GetHosts() {
			hosts = append(hosts, resolveHost(s, h, vs.Namespace))
		}
		sc.vsHosts[vs] = hosts
		if !BoundTo(vs, Mesh) {
			continue
		}
		for _, h := range hosts {
			if !sc.egressAllows(vs.Namespace, h, 0) {
				continue
			}
			if strings.HasPrefix(h, "*") {
				sc.meshWild = append(sc.meshWild, hostVS{h, vs})
			} else if sc.meshExact[h] == nil {
				sc.meshExact[h] = vs
			}
		}
	}
	for i := range s.DestinationRules {
		dr := &s.DestinationRules[i]
		if dr.Spec == nil || !snapshot.Visible(dr.Spec.GetExportTo(), dr.Namespace, p.Namespace) {
			continue
		}
		if sel := dr.Spec.GetWorkloadSelector().GetMatchLabels(); len(sel) > 0 &&
			(dr.Namespace != p.Namespace || !snapshot.Matches(sel, p.Labels)) {
			continue
		}
		sc.drs = append(sc.drs, drEntry{dr, resolveHost(s, dr.Spec.GetHost(), dr.Namespace)})
	}
	sc.drFor = map[string]*snapshot.Config[*networking.DestinationRule]{}
	return sc
}

// createdBefore orders configs as Istio does where creation time matters: older first,
// then by namespace and name.
func createdBefore(a, b snapshot.Meta) bool {
	if a.CreationIndex != b.CreationIndex {
		return a.CreationIndex < b.CreationIndex
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// sidecarFor picks the Sidecar resource of a proxy as Istio does: one in the proxy's
// namespace whose workloadSelector matches it, else one in its namespace without a
// selector, else the root namespace's without a selector. Oldest first within each.
func sidecarFor(s *snapshot.Snapshot, p *node.Proxy) *snapshot.Config[*networking.Sidecar] {
	if p.Type != node.Sidecar || len(s.Sidecars) == 0 {
		return nil
	}
	list := make([]*snapshot.Config[*networking.Sidecar], 0, len(s.Sidecars))
	for i := range s.Sidecars {
		if s.Sidecars[i].Spec != nil {
			list = append(list, &s.Sidecars[i])
		}
	}
	sort.SliceStable(list, func(i, j int) bool { return createdBefore(list[i].Meta, list[j].Meta) })
	for _, c := range list {
		if sel := c.Spec.GetWorkloadSelector().GetLabels(); c.Namespace == p.Namespace && len(sel) > 0 && snapshot.Matches(sel, p.Labels) {
			return c
		}
	}
	for _, c := range list {
		if c.Namespace == p.Namespace && len(c.Spec.GetWorkloadSelector().GetLabels()) == 0 {
			return c
		}
	}
	for _, c := range list {
		if c.Namespace == s.Mesh.RootNamespace && len(c.Spec.GetWorkloadSelector().GetLabels()) == 0 {
			return c
		}
	}
	return nil
}

// egressAllows reports whether the Sidecar's egress hosts let the proxy reach host (in
// namespace ns) on port (0: on some port).
func (sc *Scope) egressAllows(ns, host string, port uint32) bool {
	if sc.sidecar == nil || len(sc.sidecar.Spec.GetEgress()) == 0 {
		return true
	}
	for _, r := range sc.egress {
		if port != 0 && r.port != 0 && r.port != port {
			continue
		}
		if r.ns == "~" || (r.ns != "*" && r.ns != ns) {
			continue
		}
		if HostMatch(r.host, host) || HostMatch(host, r.host) {
			return true
		}
	}
	return false
}

// Snapshot is the snapshot the scope was built from.
func (sc *Scope) Snapshot() *snapshot.Snapshot { return sc.s }

// Proxy is the proxy the scope is for.
func (sc *Scope) Proxy() *node.Proxy { return sc.p }

// Services are the services in scope, sorted by hostname.
func (sc *Scope) Services() []*registry.Service { return sc.services }

// ServicePort is one port of a service in scope.
type ServicePort struct {
	Service *registry.Service
	Port    registry.Port
}

// ServicePorts lists the ports in scope (a Sidecar egress listener with a port limits
// its hosts to that port), sorted by hostname then port.
func (sc *Scope) ServicePorts() []ServicePort {
	var out []ServicePort
	for _, svc := range sc.services {
		ports := append([]registry.Port(nil), svc.Ports...)
		sort.SliceStable(ports, func(i, j int) bool { return ports[i].Number < ports[j].Number })
		for _, port := range ports {
			if sc.egressAllows(svc.Namespace, svc.Hostname, port.Number) {
				out = append(out, ServicePort{svc, port})
			}
		}
	}
	return out
}

// AllowAny reports whether traffic to hosts outside the registry is passed through
// (Istio's outboundTrafficPolicy ALLOW_ANY, the default) rather than blocked
// (REGISTRY_ONLY), per the proxy's Sidecar resource.
func (sc *Scope) AllowAny() bool {
	if sc.sidecar == nil || sc.sidecar.Spec.GetOutboundTrafficPolicy() == nil {
		return true
	}
	return sc.sidecar.Spec.GetOutboundTrafficPolicy().GetMode() == networking.OutboundTrafficPolicy_ALLOW_ANY
}

// VirtualServices are the VirtualServices visible to the proxy, oldest first.
func (sc *Scope) VirtualServices() []*VirtualService { return sc.vss }

// MeshVirtualService is the VirtualService that routes a sidecar's traffic to host:
// among the visible ones bound to the mesh gateway and allowed by the Sidecar's egress
// hosts, one naming the host exactly beats a wildcard, and among equals the oldest
// wins. Istio merges VirtualServices for the same host only on gateways; a sidecar uses
// one, and the later ones are ignored for that host. nil when none applies.
func (sc *Scope) MeshVirtualService(host string) *VirtualService {
	if vs := sc.meshExact[host]; vs != nil {
		return vs
	}
	for _, w := range sc.meshWild {
		if HostMatch(w.host, host) {
			return w.vs
		}
	}
	return nil
}

// ResolvedHosts are a VirtualService's hosts as FQDNs (short names relative to its
// namespace).
func (sc *Scope) ResolvedHosts(vs *VirtualService) []string {
	if hosts, ok := sc.vsHosts[vs]; ok {
		return hosts
	}
	out := make([]string, 0, len(vs.Spec.GetHosts()))
	for _, h := range vs.Spec.GetHosts() {
		out = append(out, resolveHost(sc.s, h, vs.Namespace))
	}
	return out
}

// BoundTo reports whether a VirtualService applies to a gateway ("ns/name", or Mesh for
// sidecars). An empty gateways list means the mesh only.
func BoundTo(vs *VirtualService, gateway string) bool {
	gws := vs.Spec.GetGateways()
	if len(gws) == 0 {
		return gateway == Mesh
	}
	return containsGateway(gws, vs.Namespace, gateway)
}

// containsGateway reports whether a gateways list (entries "mesh", "name" relative to
// ns, or "ns/name") names gateway.
func containsGateway(gws []string, ns, gateway string) bool {
	for _, g := range gws {
		if qualifyGateway(g, ns) == gateway {
			return true
		}
	}
	return false
}

// qualifyGateway turns a gateway reference into "ns/name" (or Mesh).
func qualifyGateway(g, ns string) string {
	if g == Mesh || strings.Contains(g, "/") {
		return g
	}
	// Istio also accepts "name.namespace.svc.cluster.local"-style references.
	if name, rest, ok := strings.Cut(g, "."); ok {
		gns, _, _ := strings.Cut(rest, ".")
		return gns + "/" + name
	}
	return ns + "/" + g
}

// HostMatch reports whether pattern ("*", "*.example.com" or a host) covers host, which
// may itself be a wildcard: "*.example.com" covers "a.example.com" and "*.b.example.com".
func HostMatch(pattern, host string) bool {
	if pattern == "*" || pattern == host {
		return true
	}
	if strings.HasPrefix(pattern, "*") {
		suffix := pattern[1:]
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return false
}

// intersectHosts is the narrower of two hosts when one covers the other.
func intersectHosts(a, b string) (string, bool) {
	switch {
	case HostMatch(a, b):
		return b, true
	case HostMatch(b, a):
		return a, true
	}
	return "", false
}

// resolveHost turns a host written in a rule into the FQDN the mesh routes by
// (snapshot.ResolveHost: "reviews" -> "reviews.<ns>.svc.<trust domain>"), except that a
// name with one dot is expanded ("reviews.default") only when that names a service: as
// in Istio, "example.com" in a VirtualService or DestinationRule means example.com.
func resolveHost(s *snapshot.Snapshot, host, ns string) string {
	host = strings.ToLower(host)
	fqdn := s.ResolveHost(host, ns)
	if fqdn != host && strings.Count(host, ".") == 1 && s.Service(fqdn, ns) == nil {
		return host
	}
	return fqdn
}

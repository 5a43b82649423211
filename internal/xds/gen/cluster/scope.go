package cluster

import (
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// scope decides which services a proxy gets outbound clusters for: the services exported
// to its namespace (Istio's exportTo), narrowed by the egress hosts of the Sidecar
// resource that applies to it (Istio's SidecarScope), plus the destinations of the
// VirtualServices those hosts select, so a route never points at a missing cluster.
type scope struct {
	ns string
	// egress is nil without a Sidecar resource (every exported service), else the
	// "namespace/host" pairs of every egress listener.
	egress []egressHost
	// extra holds the hosts that VirtualServices selected by egress route to.
	extra map[string]bool
}

type egressHost struct {
	ns   string // "*", or a namespace; "~" (no namespace) never gets here
	host string // "*", "*.suffix" or an FQDN
}

// newScope builds the scope of a proxy. Gateways and proxyless clients are not scoped
// by Sidecar resources.
func newScope(s *snapshot.Snapshot, p *node.Proxy) *scope {
	sc := &scope{ns: p.Namespace}
	if p.Type != node.Sidecar {
		return sc
	}
	sidecar := sidecarFor(s, p)
	if sidecar == nil {
		return sc
	}
	sc.egress = []egressHost{}
	for _, l := range sidecar.Spec.GetEgress() {
		for _, h := range l.GetHosts() {
			ns, host, ok := strings.Cut(h, "/")
			if !ok {
				ns, host = "*", h // Istio requires "ns/host"; a bare host means any namespace
			}
			if ns == "~" || host == "" {
				continue // "~/..." imports nothing
			}
			host = strings.ToLower(host)
			if ns == "." {
				// "." is the Sidecar's namespace; for the mesh-wide default in the root
				// namespace Istio reads it as the workload's own namespace.
				ns = p.Namespace
			}
			if host != "*" && !strings.HasPrefix(host, "*.") {
				host = s.ResolveHost(host, ns)
			}
			sc.egress = append(sc.egress, egressHost{ns: ns, host: host})
		}
	}
	sc.extra = map[string]bool{}
	for _, vs := range s.VirtualServices {
		if !snapshot.Visible(vs.Spec.GetExportTo(), vs.Namespace, p.Namespace) || !forMesh(vs.Spec.GetGateways()) {
			continue
		}
		selected := false
		for _, h := range vs.Spec.GetHosts() {
			if sc.egressMatch(vs.Namespace, s.ResolveHost(h, vs.Namespace)) {
				selected = true
				break
			}
		}
		if !selected {
			continue
		}
		for _, d := range destinations(vs.Spec) {
			sc.extra[s.ResolveHost(d.GetHost(), vs.Namespace)] = true
		}
	}
	return sc
}

// sidecarFor picks the Sidecar resource of a proxy as Istio does: one in its namespace
// whose workloadSelector matches its labels, else the one in its namespace without a
// selector, else the mesh default (root namespace, no selector). Oldest first.
func sidecarFor(s *snapshot.Snapshot, p *node.Proxy) *snapshot.Config[*networking.Sidecar] {
	var nsDefault, rootDefault *snapshot.Config[*networking.Sidecar]
	var selected *snapshot.Config[*networking.Sidecar]
	older := func(a, b *snapshot.Config[*networking.Sidecar]) bool {
		return b == nil || a.CreationIndex < b.CreationIndex
	}
	for i := range s.Sidecars {
		sc := &s.Sidecars[i]
		sel := sc.Spec.GetWorkloadSelector().GetLabels()
		switch {
		case sc.Namespace == p.Namespace && len(sel) > 0:
			if snapshot.Matches(sel, p.Labels) && older(sc, selected) {
				selected = sc
			}
		case sc.Namespace == p.Namespace:
			if older(sc, nsDefault) {
				nsDefault = sc
			}
		case sc.Namespace == s.Mesh.RootNamespace && len(sel) == 0:
			if older(sc, rootDefault) {
				rootDefault = sc
			}
		}
	}
	switch {
	case selected != nil:
		return selected
	case nsDefault != nil:
		return nsDefault
	}
	return rootDefault
}

// forMesh reports whether a VirtualService applies to sidecars (gateways empty or
// listing the reserved "mesh").
func forMesh(gateways []string) bool {
	if len(gateways) == 0 {
		return true
	}
	for _, g := range gateways {
		if g == "mesh" {
			return true
		}
	}
	return false
}

// destinations lists every destination a VirtualService routes or mirrors to.
func destinations(vs *networking.VirtualService) []*networking.Destination {
	var out []*networking.Destination
	for _, r := range vs.GetHttp() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination())
		}
		if m := r.GetMirror(); m != nil {
			out = append(out, m)
		}
		for _, m := range r.GetMirrors() {
			out = append(out, m.GetDestination())
		}
	}
	for _, r := range vs.GetTcp() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination())
		}
	}
	for _, r := range vs.GetTls() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination())
		}
	}
	return out
}

// includes reports whether the proxy gets clusters for svc.
func (sc *scope) includes(svc *registry.Service) bool {
	if !snapshot.Visible(svc.ExportTo, svc.Namespace, sc.ns) {
		return false
	}
	if sc.egress == nil {
		return true
	}
	return sc.egressMatch(svc.Namespace, svc.Hostname) || sc.extra[svc.Hostname]
}

func (sc *scope) egressMatch(ns, host string) bool {
	for _, e := range sc.egress {
		if (e.ns == "*" || e.ns == ns) && hostMatch(e.host, host) {
			return true
		}
	}
	return false
}

// hostMatch reports whether the pattern (an FQDN, "*.suffix" or "*") covers host, which
// may itself be a wildcard ServiceEntry host.
func hostMatch(pattern, host string) bool {
	if pattern == host || pattern == "*" {
		return true
	}
	if strings.HasPrefix(pattern, "*") {
		suffix := pattern[1:] // ".example.com"
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return false
}

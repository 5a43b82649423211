package cluster

import (
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// rule is the DestinationRule that applies to one service for one proxy: the
// DestinationRules of the best-matching host in the chosen namespace, merged (Istio
// merges rules for the same host: the oldest traffic policy wins and subsets are
// unioned, the first of a name winning).
type rule struct {
	host    string // resolved spec.host
	ns      string
	source  string
	policy  *networking.TrafficPolicy
	subsets []*networking.Subset
}

// subset returns the named subset, nil when the rule has none of that name.
func (r *rule) subset(name string) *networking.Subset {
	if r == nil {
		return nil
	}
	for _, ss := range r.subsets {
		if ss.GetName() == name {
			return ss
		}
	}
	return nil
}

type drEntry struct {
	cfg  *snapshot.Config[*networking.DestinationRule]
	host string // spec.host resolved against the rule's namespace
	// selected: the rule has a workloadSelector that matches the proxy (only in the
	// proxy's namespace; other selector rules are dropped).
	selected bool
}

// rules indexes the DestinationRules visible to one proxy by namespace.
type rules struct {
	proxyNS, rootNS string
	byNS            map[string][]drEntry
}

func newRules(s *snapshot.Snapshot, p *node.Proxy) *rules {
	r := &rules{proxyNS: p.Namespace, rootNS: s.Mesh.RootNamespace, byNS: map[string][]drEntry{}}
	for i := range s.DestinationRules {
		dr := &s.DestinationRules[i]
		if dr.Spec == nil || !snapshot.Visible(dr.Spec.GetExportTo(), dr.Namespace, p.Namespace) {
			continue
		}
		e := drEntry{cfg: dr, host: s.ResolveHost(dr.Spec.GetHost(), dr.Namespace)}
		if sel := dr.Spec.GetWorkloadSelector().GetMatchLabels(); len(sel) > 0 {
			// Istio applies a rule with a workloadSelector only to the workloads it
			// selects, in its own namespace.
			if dr.Namespace != p.Namespace || !snapshot.Matches(sel, p.Labels) {
				continue
			}
			e.selected = true
		}
		r.byNS[dr.Namespace] = append(r.byNS[dr.Namespace], e)
	}
	return r
}

// lookup finds the rule for a service host in Istio's order: the proxy's namespace,
// then the service's namespace, then the root namespace.
func (r *rules) lookup(svc *registry.Service) *rule {
	for _, ns := range []string{r.proxyNS, svc.Namespace, r.rootNS} {
		if rl := r.best(ns, svc.Hostname); rl != nil {
			return rl
		}
	}
	return nil
}

// best merges the rules of one namespace whose host most specifically matches host;
// rules selecting the proxy by workloadSelector win over namespace-wide ones.
func (r *rules) best(ns, host string) *rule {
	list := r.byNS[ns]
	if len(list) == 0 {
		return nil
	}
	for _, selected := range []bool{true, false} {
		bestHost := ""
		var picked []drEntry
		for _, e := range list {
			if e.selected != selected || !hostMatch(e.host, host) {
				continue
			}
			switch {
			case bestHost == "" || moreSpecific(e.host, bestHost):
				bestHost, picked = e.host, []drEntry{e}
			case e.host == bestHost:
				picked = append(picked, e)
			}
		}
		if len(picked) > 0 {
			return merge(picked)
		}
	}
	return nil
}

// moreSpecific orders matching hosts: an exact host beats a wildcard, a longer wildcard
// beats a shorter one.
func moreSpecific(a, b string) bool {
	aw, bw := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	if aw != bw {
		return !aw
	}
	return len(a) > len(b)
}

func merge(list []drEntry) *rule {
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i].cfg, list[j].cfg
		if a.CreationIndex != b.CreationIndex {
			return a.CreationIndex < b.CreationIndex
		}
		return a.Name < b.Name
	})
	first := list[0].cfg
	out := &rule{host: list[0].host, ns: first.Namespace, source: first.Source}
	seen := map[string]bool{}
	for _, e := range list {
		spec := e.cfg.Spec
		if out.policy == nil {
			out.policy = spec.GetTrafficPolicy()
		}
		for _, ss := range spec.GetSubsets() {
			if ss.GetName() == "" || seen[ss.GetName()] {
				continue
			}
			seen[ss.GetName()] = true
			out.subsets = append(out.subsets, ss)
		}
	}
	return out
}

// effective is the traffic policy for one port of a service, optionally of one subset,
// following Istio's merge: the rule's policy, replaced as a whole (connectionPool,
// loadBalancer, outlierDetection, tls) by a matching portLevelSettings entry; then each
// field the subset's policy sets overrides, and the subset's own matching
// portLevelSettings replaces the four fields again. Port-level settings do not inherit:
// an omitted field there means Istio's default. The result shares the rule's messages
// and must not be modified.
func effective(top *networking.TrafficPolicy, ss *networking.Subset, port uint32) *networking.TrafficPolicy {
	out := atPort(top, port)
	sp := ss.GetTrafficPolicy()
	if sp == nil {
		return out
	}
	if out == nil {
		out = &networking.TrafficPolicy{}
	}
	if sp.GetConnectionPool() != nil {
		out.ConnectionPool = sp.GetConnectionPool()
	}
	if sp.GetLoadBalancer() != nil {
		out.LoadBalancer = sp.GetLoadBalancer()
	}
	if sp.GetOutlierDetection() != nil {
		out.OutlierDetection = sp.GetOutlierDetection()
	}
	if sp.GetTls() != nil {
		out.Tls = sp.GetTls()
	}
	if pl := portLevel(sp, port); pl != nil {
		out.ConnectionPool, out.LoadBalancer = pl.GetConnectionPool(), pl.GetLoadBalancer()
		out.OutlierDetection, out.Tls = pl.GetOutlierDetection(), pl.GetTls()
	}
	return out
}

// atPort is a policy with its portLevelSettings for port applied (a fresh message).
func atPort(tp *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy {
	if tp == nil {
		return nil
	}
	if pl := portLevel(tp, port); pl != nil {
		return &networking.TrafficPolicy{
			ConnectionPool: pl.GetConnectionPool(), LoadBalancer: pl.GetLoadBalancer(),
			OutlierDetection: pl.GetOutlierDetection(), Tls: pl.GetTls(),
		}
	}
	return &networking.TrafficPolicy{
		ConnectionPool: tp.GetConnectionPool(), LoadBalancer: tp.GetLoadBalancer(),
		OutlierDetection: tp.GetOutlierDetection(), Tls: tp.GetTls(),
	}
}

func portLevel(tp *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy_PortTrafficPolicy {
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == port {
			return pl
		}
	}
	return nil
}

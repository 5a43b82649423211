package gen

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/cluster"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

// A sidecar's outbound configuration (its outbound clusters, their endpoints, its
// outbound route configurations) is most of its size and depends on little of the
// proxy: its type, namespace, interception mode, IP family, and the values of the labels
// some selector in the snapshot names (Sidecar and DestinationRule workloadSelectors,
// VirtualService sourceLabels, DestinationRule failoverPriority). Proxies alike in
// those form a class; the class's output is built once per snapshot and the same
// resources (pointers) are handed to every member, so a push over a thousand sidecars
// of one namespace builds the outbound side once, and the xDS server's per-resource
// digests and the proxies' snapshots share it instead of holding a copy each.
//
// classKey must name everything cluster.SidecarShared, cluster.Endpoints and
// route.Outbound read from the proxy (the class is built for a representative that
// carries only the key's fields, so a builder reading more gets the representative's
// zero value, not a member's); TestClassSharedEqualsDirect compares every Bookinfo
// sidecar's output with its own generation under every kind of selector.

// classKey identifies a class of sidecars for one snapshot.
type classKey struct {
	typ          node.Type
	namespace    string
	interception node.Interception
	ipv6         bool
	// labels: "k=v\x00" for every selector-named label the proxy has, in key order.
	labels string
}

// shared is one class's outbound configuration, each list sorted by name. Its lists are
// never modified: they go to the xDS server as they are, or merged into new ones.
type shared struct {
	once      sync.Once
	built     atomic.Bool // once has run without a panic
	clusters  []types.Resource
	endpoints []types.Resource
	routes    []types.Resource
	err       any // a builder panic, re-raised in every member's Generate
}

// classCache holds the classes of one snapshot; a new snapshot starts a new cache (one
// pointer comparison per Generate), which keeps the previous one only to reuse what the
// change did not touch.
type classCache struct {
	snap *snapshot.Snapshot
	// prev is the cache of the snapshot before (its own prev dropped): a class whose
	// cluster inputs did not change takes its clusters and endpoints from there.
	prev *classCache
	// labelKeys: every label key a selector or failoverPriority of snap names, sorted.
	labelKeys []string

	mu      sync.Mutex
	classes map[classKey]*shared
	// workloads: each Explicit-mode sidecar's own resources built from this snapshot,
	// by proxy id (see workload).
	workloads map[string]*workloadPart
	// workloadReuse: whether the previous snapshot's workload parts hold for this one
	// (computed once).
	reuseOnce     sync.Once
	workloadReuse bool
}

// workloadPart is a sidecar's own resources (inbound clusters, listeners, inbound
// routes), sorted by name.
type workloadPart struct {
	proxy                           *node.Proxy
	inbound, eds, listeners, routes []types.Resource
}

// workloadParts are the snapshot inputs an Explicit-mode sidecar's own resources read:
// its inbound ports (registry) and their security (PeerAuthentication,
// AuthorizationPolicy, RequestAuthentication), the mesh config; Sidecars and
// DestinationRules too, to be safe. Its HTTP proxy listener names no service.
const workloadParts = snapshot.PartRegistry | snapshot.PartPeerAuthentications | snapshot.PartAuthorizationPolicies |
	snapshot.PartRequestAuthentications | snapshot.PartSidecars | snapshot.PartDestinationRules

// workload returns p's own resources: the previous snapshot's when p is the same
// proxy and their inputs did not change (a VirtualService change rebuilds none), else
// built by build. Only for Explicit-mode sidecars, whose listeners depend on no
// scope.
func (c *classCache) workload(p *node.Proxy, build func() *workloadPart) *workloadPart {
	if p.Type != node.Sidecar || p.Interception != node.Explicit {
		return build()
	}
	c.mu.Lock()
	prev := c.prev
	c.mu.Unlock()
	var w *workloadPart
	if prev != nil {
		c.reuseOnce.Do(func() { c.workloadReuse = c.snap.Unchanged(prev.snap, workloadParts) })
		if c.workloadReuse {
			prev.mu.Lock()
			if old := prev.workloads[p.ID]; old != nil && (old.proxy == p || reflect.DeepEqual(old.proxy, p)) {
				w = old
			}
			prev.mu.Unlock()
		}
	}
	if w == nil {
		w = build()
		w.proxy = p
	}
	c.mu.Lock()
	c.workloads[p.ID] = w
	c.mu.Unlock()
	return w
}

func newClassCache(s *snapshot.Snapshot, prev *classCache) *classCache {
	if prev != nil {
		prev.mu.Lock()
		prev.prev = nil
		prev.mu.Unlock()
	}
	return &classCache{snap: s, prev: prev, labelKeys: selectorLabelKeys(s), classes: map[classKey]*shared{},
		workloads: map[string]*workloadPart{}}
}

// clusterParts are the snapshot inputs outbound clusters and endpoints read.
// VirtualServices only count with Sidecar resources (their destinations widen a
// Sidecar's egress scope): see unchangedClusters.
const clusterParts = snapshot.PartRegistry | snapshot.PartDestinationRules | snapshot.PartPeerAuthentications |
	snapshot.PartSidecars

// reusable returns the previous snapshot's build of class k when its clusters and
// endpoints hold for this snapshot too, else nil.
func (c *classCache) reusable(k classKey) *shared {
	c.mu.Lock()
	prev := c.prev
	c.mu.Unlock()
	if prev == nil {
		return nil
	}
	parts := clusterParts
	if len(c.snap.Sidecars) > 0 {
		parts |= snapshot.PartVirtualServices
	}
	if !c.snap.Unchanged(prev.snap, parts) {
		return nil
	}
	prev.mu.Lock()
	sh := prev.classes[k]
	prev.mu.Unlock()
	if sh == nil || !sh.built.Load() {
		return nil
	}
	return sh
}

func (c *classCache) key(p *node.Proxy) classKey {
	k := classKey{typ: p.Type, namespace: p.Namespace, interception: p.Interception,
		ipv6: p.IP.Is6() && !p.IP.Is4In6()}
	if len(c.labelKeys) > 0 && len(p.Labels) > 0 {
		var b strings.Builder
		for _, lk := range c.labelKeys {
			if v, ok := p.Labels[lk]; ok {
				b.WriteString(lk)
				b.WriteByte('=')
				b.WriteString(v)
				b.WriteByte(0)
			}
		}
		k.labels = b.String()
	}
	return k
}

// sidecar returns p's class's outbound configuration, building it on first use. Members
// asking while it is built wait for it rather than build it again.
func (c *classCache) sidecar(p *node.Proxy) *shared {
	k := c.key(p)
	c.mu.Lock()
	sh := c.classes[k]
	if sh == nil {
		sh = &shared{}
		c.classes[k] = sh
	}
	c.mu.Unlock()
	sh.once.Do(func() {
		defer func() {
			if r := recover(); r != nil {
				sh.err = r
			}
		}()
		// Built for a representative that carries only what the key names, so the
		// output cannot depend on anything else by accident.
		rep := &node.Proxy{ID: "class~" + p.Namespace, Type: p.Type, Namespace: p.Namespace, Interception: p.Interception,
			Labels: map[string]string{}}
		if k.ipv6 {
			rep.IP = netip.IPv6Loopback()
		} else {
			rep.IP = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		for _, lk := range c.labelKeys {
			if v, ok := p.Labels[lk]; ok {
				rep.Labels[lk] = v
			}
		}
		s := c.snap
		if old := c.reusable(k); old != nil {
			// The same resources (pointers) as last push: nothing to build or encode.
			sh.clusters, sh.endpoints = old.clusters, old.endpoints
		} else {
			cs := cluster.SidecarShared(s, rep)
			sh.clusters = sortedByName(cs, clusterName)
			sh.endpoints = sortedByName(cluster.Endpoints(s, rep, cs), claName)
		}
		sh.routes = sortedByName(route.Outbound(s, rep), routeName)
		sh.built.Store(true)
	})
	if sh.err != nil {
		panic(sh.err)
	}
	return sh
}

// selectorLabelKeys lists the label keys whose values can change a sidecar's outbound
// configuration: those of Sidecar and DestinationRule workload selectors,
// VirtualService match sourceLabels, and DestinationRule failoverPriority entries.
func selectorLabelKeys(s *snapshot.Snapshot) []string {
	keys := map[string]bool{}
	add := func(m map[string]string) {
		for k := range m {
			keys[k] = true
		}
	}
	for _, sc := range s.Sidecars {
		add(sc.Spec.GetWorkloadSelector().GetLabels())
	}
	for _, dr := range s.DestinationRules {
		add(dr.Spec.GetWorkloadSelector().GetMatchLabels())
		failoverKeys(dr.Spec.GetTrafficPolicy(), keys)
		for _, ss := range dr.Spec.GetSubsets() {
			failoverKeys(ss.GetTrafficPolicy(), keys)
		}
	}
	for _, vs := range s.VirtualServices {
		for _, h := range vs.Spec.GetHttp() {
			for _, m := range h.GetMatch() {
				add(m.GetSourceLabels())
			}
		}
		for _, t := range vs.Spec.GetTcp() {
			for _, m := range t.GetMatch() {
				add(m.GetSourceLabels())
			}
		}
		for _, t := range vs.Spec.GetTls() {
			for _, m := range t.GetMatch() {
				add(m.GetSourceLabels())
			}
		}
	}
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// failoverKeys adds the label keys of every failoverPriority in a traffic policy (its
// own load balancer and its port-level ones).
func failoverKeys(tp *networking.TrafficPolicy, keys map[string]bool) {
	if tp == nil {
		return
	}
	lbs := []*networking.LoadBalancerSettings{tp.GetLoadBalancer()}
	for _, pl := range tp.GetPortLevelSettings() {
		lbs = append(lbs, pl.GetLoadBalancer())
	}
	for _, lb := range lbs {
		for _, l := range lb.GetLocalityLbSetting().GetFailoverPriority() {
			k, _, _ := strings.Cut(l, "=")
			keys[k] = true
		}
	}
}

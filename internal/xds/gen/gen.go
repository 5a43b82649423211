// Package gen is the control plane's composite xDS generator: for one connected proxy and
// the current snapshot it runs the per-concern builders (cluster, listener, route, and
// later the security ones) in a declared order and returns the proxy's whole
// configuration. Each builder is a pure function of (snapshot, proxy).
//
// A sidecar's outbound side is built once per class of alike sidecars and shared, and
// what did not change between snapshots is reused (class.go): the xDS server relies on
// getting the same resource objects for the same content to encode them once.
package gen

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds"
	"github.com/weft-mesh/weft/internal/xds/gen/cluster"
	"github.com/weft-mesh/weft/internal/xds/gen/listener"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

// SecretSource adds the SDS secrets a proxy needs (workload certificate, roots); the
// certificate authority implements it. Nil means no secrets.
type SecretSource interface {
	Secrets(p *node.Proxy) ([]types.Resource, error)
}

// Generator implements xds.Generator over the latest snapshot.
type Generator struct {
	snap    atomic.Pointer[snapshot.Snapshot]
	Secrets SecretSource

	// classes caches the current snapshot's per-class outbound configuration (see
	// class.go); replaced when a Generate sees a newer snapshot.
	classMu sync.Mutex
	classes *classCache
}

var _ xds.Generator = (*Generator)(nil)

// New returns a generator serving s until Set replaces it.
func New(s *snapshot.Snapshot) *Generator {
	g := &Generator{}
	g.snap.Store(s)
	return g
}

// Set makes s the snapshot later generations read.
func (g *Generator) Set(s *snapshot.Snapshot) { g.snap.Store(s) }

// Snapshot is the current snapshot.
func (g *Generator) Snapshot() *snapshot.Snapshot { return g.snap.Load() }

// Generate implements xds.Generator.
func (g *Generator) Generate(p *node.Proxy) (xds.Resources, error) {
	s := g.snap.Load()
	if s == nil {
		return nil, fmt.Errorf("gen: no snapshot yet")
	}
	var (
		clusters  []*clusterv3.Cluster
		listeners []*listenerv3.Listener
		routes    []*routev3.RouteConfiguration
		out       xds.Resources
	)
	switch p.Type {
	case node.Sidecar:
		// The class's outbound resources, shared, merged with the workload's own; a type
		// with nothing of the workload's (usually EDS) is the class's list itself.
		cc := g.classCache(s)
		sh := cc.sidecar(p)
		w := cc.workload(p, func() *workloadPart {
			inbound := cluster.SidecarInbound(s, p)
			w := &workloadPart{
				inbound:   sortedByName(inbound, clusterName),
				listeners: sortedByName(listener.Sidecar(s, p), listenerName),
				routes:    sortedByName(route.Inbound(s, p), routeName),
			}
			if hasEDS(inbound) {
				w.eds = sortedByName(cluster.Endpoints(s, p, inbound), claName)
			}
			return w
		})
		out = xds.Resources{
			resourcev3.ClusterType:  mergeByName(sh.clusters, w.inbound),
			resourcev3.ListenerType: w.listeners,
			resourcev3.RouteType:    mergeByName(sh.routes, w.routes),
			resourcev3.EndpointType: mergeByName(sh.endpoints, w.eds),
		}
	case node.Router:
		clusters = cluster.Gateway(s, p)
		listeners = listener.Gateway(s, p)
		routes = route.Gateway(s, p)
	case node.GRPC:
		clusters = cluster.GRPC(s, p)
		listeners = listener.GRPC(s, p)
		routes = route.GRPC(s, p)
	default:
		return nil, fmt.Errorf("gen: proxy %s: unknown type %q", p.ID, p.Type)
	}
	if p.Type != node.Sidecar {
		out = xds.Resources{
			resourcev3.ClusterType:  sortedByName(clusters, clusterName),
			resourcev3.ListenerType: sortedByName(listeners, listenerName),
			resourcev3.RouteType:    sortedByName(routes, routeName),
			resourcev3.EndpointType: sortedByName(cluster.Endpoints(s, p, clusters), claName),
		}
	}
	// A proxy with its own CA agent holds its key: never send it one.
	if g.Secrets != nil && !p.CAAgent {
		secrets, err := g.Secrets.Secrets(p)
		if err != nil {
			return nil, fmt.Errorf("gen: proxy %s: secrets: %w", p.ID, err)
		}
		out[resourcev3.SecretType] = secrets
	}
	return out, nil
}

// classCache is the class cache of s, a new one when s is newer than the last one's.
func (g *Generator) classCache(s *snapshot.Snapshot) *classCache {
	g.classMu.Lock()
	defer g.classMu.Unlock()
	if g.classes == nil || g.classes.snap != s {
		g.classes = newClassCache(s, g.classes)
	}
	return g.classes
}

func hasEDS(cs []*clusterv3.Cluster) bool {
	for _, c := range cs {
		if c.GetType() == clusterv3.Cluster_EDS {
			return true
		}
	}
	return false
}

func clusterName(c *clusterv3.Cluster) string            { return c.GetName() }
func listenerName(l *listenerv3.Listener) string         { return l.GetName() }
func routeName(r *routev3.RouteConfiguration) string     { return r.GetName() }
func claName(e *endpointv3.ClusterLoadAssignment) string { return e.GetClusterName() }

// mergeByName merges two lists sorted by name into a new one; a (shared) itself when
// b is empty.
func mergeByName(a, b []types.Resource) []types.Resource {
	if len(b) == 0 {
		return a
	}
	out := make([]types.Resource, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if cachev3.GetResourceName(b[j]) < cachev3.GetResourceName(a[i]) {
			out = append(out, b[j])
			j++
		} else {
			out = append(out, a[i])
			i++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// sortedByName copies in, sorted by name, into a new list; in itself may be shared and
// is not modified.
func sortedByName[T types.Resource](in []T, name func(T) string) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, r := range in {
		out[i] = r
	}
	if !slices.IsSortedFunc(in, func(a, b T) int { return strings.Compare(name(a), name(b)) }) {
		sort.SliceStable(out, func(i, j int) bool { return name(out[i].(T)) < name(out[j].(T)) })
	}
	return out
}

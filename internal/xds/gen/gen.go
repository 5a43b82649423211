// Package gen is the control plane's composite xDS generator: for one connected proxy and
// the current snapshot it runs the per-concern builders (cluster, listener, route, and
// later the security ones) in a declared order and returns the proxy's whole
// configuration. Each builder is a pure function of (snapshot, proxy).
package gen

import (
	"fmt"
	"sort"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
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
	)
	switch p.Type {
	case node.Sidecar:
		clusters = cluster.Sidecar(s, p)
		listeners = listener.Sidecar(s, p)
		routes = append(route.Outbound(s, p), route.Inbound(s, p)...)
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
	endpoints := cluster.Endpoints(s, p, clusters)

	out := xds.Resources{
		resourcev3.ClusterType:  sortedByName(clusters, func(c *clusterv3.Cluster) string { return c.GetName() }),
		resourcev3.ListenerType: sortedByName(listeners, func(l *listenerv3.Listener) string { return l.GetName() }),
		resourcev3.RouteType:    sortedByName(routes, func(r *routev3.RouteConfiguration) string { return r.GetName() }),
		resourcev3.EndpointType: sortedByName(endpoints, func(e *endpointv3.ClusterLoadAssignment) string { return e.GetClusterName() }),
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

func sortedByName[T types.Resource](in []T, name func(T) string) []types.Resource {
	sort.SliceStable(in, func(i, j int) bool { return name(in[i]) < name(in[j]) })
	out := make([]types.Resource, len(in))
	for i, r := range in {
		out[i] = r
	}
	return out
}

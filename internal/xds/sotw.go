package xds

import (
	"context"
	"fmt"
	"slices"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"google.golang.org/protobuf/types/known/anypb"
)

// typeResources are one xDS type's resources of a proxy snapshot, sorted by name. The
// proxies whose type has the same version share one (see encodingMemo.typeResources),
// and so do their responses: a wildcard response's resource list is this one.
type typeResources struct {
	typeURL, version string
	items            []*encoded
	anys             []*anypb.Any // items' Anys, for responses
	indexOnce        sync.Once
	byName           map[string]int // for named requests, built on the first
}

func newTypeResources(typeURL, version string, items []*encoded) *typeResources {
	t := &typeResources{typeURL: typeURL, version: version, items: items, anys: make([]*anypb.Any, len(items))}
	for i, e := range items {
		t.anys[i] = e.any
	}
	t.register()
	return t
}

func (t *typeResources) index() map[string]int {
	t.indexOnce.Do(func() {
		t.byName = make(map[string]int, len(t.items))
		for i, e := range t.items {
			t.byName[e.name] = i
		}
	})
	return t.byName
}

// wildcardReturned is the one entry of a wildcard response's returned resources: that
// the subscription has every resource of the version. go-control-plane's cache lists
// every name instead, a map per proxy and type that a mesh of thousands of services
// and proxies pays for in hundreds of MB; the subscription only hands it back to the
// cache, which is this one. (Each response gets its own map: the subscription deletes
// from it when its names change.)
const wildcardReturned = "*"

// proxySnapshot is one proxy's configuration as the cache serves it.
type proxySnapshot struct {
	types map[string]*typeResources

	cacheOnce sync.Once
	cacheSnap *cache.Snapshot
}

// GetVersion is the version of a type; "" for a type the snapshot does not have.
func (p *proxySnapshot) GetVersion(typeURL string) string {
	if t := p.types[typeURL]; t != nil {
		return t.version
	}
	return ""
}

// cacheSnapshot is the snapshot in go-control-plane's form, made on first use: for
// Delta streams, which go-control-plane's cache serves.
func (p *proxySnapshot) cacheSnapshot() *cache.Snapshot {
	p.cacheOnce.Do(func() {
		s := &cache.Snapshot{}
		for typeURL, t := range p.types {
			r := cache.Resources{Version: t.version, Items: make(map[string]types.ResourceWithTTL, len(t.items))}
			for _, e := range t.items {
				r.Items[e.name] = types.ResourceWithTTL{Resource: e}
			}
			s.Resources[cache.GetResponseType(typeURL)] = r
		}
		p.cacheSnap = s
	})
	return p.cacheSnap
}

// sotwCache is the cache the go-control-plane server reads. It answers State of the
// World watches itself, from proxy snapshots whose resources are encoded once and
// shared: a response is a list of shared Anys, so pushing a type to a thousand proxies
// marshals nothing (go-control-plane's snapshot cache marshals every resource again
// for every response). Delta watches go to a go-control-plane snapshot cache, given a
// proxy's snapshot only once the proxy opens a Delta stream.
//
// The watch semantics are the snapshot cache's (ads=false): a request whose version
// differs from the snapshot's is answered at once, one whose subscription asks for
// resources it was not sent is answered at once, others wait for the next snapshot; a
// request naming resources is answered with those of them the snapshot has.
type sotwCache struct {
	delta cache.SnapshotCache

	mu     sync.Mutex
	nodes  map[string]*sotwNode
	nextID int64
}

type sotwNode struct {
	snap    *proxySnapshot
	watches map[int64]sotwWatch
	// delta: the node has opened a Delta watch, so delta holds its snapshots too.
	delta bool
}

type sotwWatch struct {
	req   *cache.Request
	sub   cache.Subscription
	value chan cache.Response
}

var _ cache.Cache = (*sotwCache)(nil)

func newSotwCache(logger log.Logger) *sotwCache {
	return &sotwCache{delta: cache.NewSnapshotCache(false, cache.IDHash{}, logger), nodes: map[string]*sotwNode{}}
}

func (c *sotwCache) node(id string) *sotwNode {
	n := c.nodes[id]
	if n == nil {
		n = &sotwNode{watches: map[int64]sotwWatch{}}
		c.nodes[id] = n
	}
	return n
}

// SetSnapshot makes snap the node's configuration and answers its watches whose type
// changed version.
func (c *sotwCache) SetSnapshot(ctx context.Context, nodeID string, snap *proxySnapshot) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(nodeID)
	n.snap = snap
	for id, w := range n.watches {
		t := snap.types[w.req.GetTypeUrl()]
		if t.versionOf() == w.req.GetVersionInfo() {
			continue
		}
		delete(n.watches, id)
		if err := respond(ctx, w, t); err != nil {
			return err
		}
	}
	if n.delta {
		return c.delta.SetSnapshot(ctx, nodeID, snap.cacheSnapshot())
	}
	return nil
}

// GetSnapshot is the node's snapshot in go-control-plane's form.
func (c *sotwCache) GetSnapshot(nodeID string) (cache.ResourceSnapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[nodeID]
	if n == nil || n.snap == nil {
		return nil, fmt.Errorf("xds: no snapshot for node %s", nodeID)
	}
	return n.snap.cacheSnapshot(), nil
}

// ClearSnapshot forgets the node, its snapshot and watches.
func (c *sotwCache) ClearSnapshot(nodeID string) {
	c.mu.Lock()
	delete(c.nodes, nodeID)
	c.mu.Unlock()
	c.delta.ClearSnapshot(nodeID)
}

// CreateWatch implements cache.ConfigWatcher for State of the World streams.
func (c *sotwCache) CreateWatch(req *cache.Request, sub cache.Subscription, value chan cache.Response) (func(), error) {
	nodeID := req.GetNode().GetId()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(nodeID)
	w := sotwWatch{req: req, sub: sub, value: value}
	if n.snap != nil {
		t := n.snap.types[req.GetTypeUrl()]
		if t.versionOf() != req.GetVersionInfo() || unsent(t, sub) {
			if err := respond(context.Background(), w, t); err != nil {
				return nil, fmt.Errorf("xds: respond to %s of node %s: %w", ShortName(req.GetTypeUrl()), nodeID, err)
			}
			return func() {}, nil
		}
	}
	c.nextID++
	id := c.nextID
	n.watches[id] = w
	return func() {
		c.mu.Lock()
		if n := c.nodes[nodeID]; n != nil {
			delete(n.watches, id)
		}
		c.mu.Unlock()
	}, nil
}

// unsent reports whether the subscription wants resources of t (the version it has)
// that it was not sent: it became wildcard, or names a resource for the first time.
func unsent(t *typeResources, sub cache.Subscription) bool {
	if t == nil {
		return false
	}
	known := sub.ReturnedResources()
	if sub.IsWildcard() {
		return known[wildcardReturned] != t.version
	}
	if known[wildcardReturned] == t.version {
		return false // it was sent all of them
	}
	idx := t.index()
	for name := range sub.SubscribedResources() {
		if _, ok := known[name]; ok {
			continue
		}
		if _, ok := idx[name]; ok {
			return true
		}
	}
	return false
}

// versionOf is the version of a type, "" for one the snapshot does not have.
func (t *typeResources) versionOf() string {
	if t == nil {
		return ""
	}
	return t.version
}

// respond sends w its response from t (nil: the type has no resources). The channel
// has room: the server reads one response per watch it made.
func respond(ctx context.Context, w sotwWatch, t *typeResources) error {
	typeURL := w.req.GetTypeUrl()
	out := &discovery.DiscoveryResponse{VersionInfo: t.versionOf(), TypeUrl: typeURL}
	var returned map[string]string
	switch names := w.req.GetResourceNames(); {
	case t == nil:
		returned = map[string]string{}
	case len(names) == 0:
		out.Resources, returned = t.anys, map[string]string{wildcardReturned: t.version}
	default:
		// Those of the named resources the snapshot has, in name order.
		idx := t.index()
		returned = make(map[string]string, len(names))
		picked := make([]int, 0, len(names))
		for _, name := range names {
			if i, ok := idx[name]; ok {
				if _, dup := returned[name]; !dup {
					returned[name] = t.version
					picked = append(picked, i)
				}
			}
		}
		slices.Sort(picked)
		out.Resources = make([]*anypb.Any, len(picked))
		for j, i := range picked {
			out.Resources[j] = t.anys[i]
		}
	}
	resp := &cache.PassthroughResponse{Request: w.req, DiscoveryResponse: out, ReturnedResources: returned}
	select {
	case w.value <- resp:
		return nil
	case <-ctx.Done():
		return context.Canceled
	}
}

// CreateDeltaWatch implements cache.ConfigWatcher for Delta streams: go-control-plane's
// snapshot cache serves them, holding the node's snapshot from now on.
func (c *sotwCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, value chan cache.DeltaResponse) (func(), error) {
	nodeID := req.GetNode().GetId()
	c.mu.Lock()
	n := c.node(nodeID)
	if !n.delta {
		n.delta = true
		if n.snap != nil {
			if err := c.delta.SetSnapshot(context.Background(), nodeID, n.snap.cacheSnapshot()); err != nil {
				c.mu.Unlock()
				return nil, err
			}
		}
	}
	c.mu.Unlock()
	return c.delta.CreateDeltaWatch(req, sub, value)
}

// Fetch implements cache.ConfigFetcher (REST); the server's callbacks refuse REST
// before it gets here.
func (c *sotwCache) Fetch(ctx context.Context, req *cache.Request) (cache.Response, error) {
	return c.delta.Fetch(ctx, req)
}

package upstream

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
)

// Options configure a Manager.
type Options struct {
	Secrets  *tlsctx.Store // SDS and static secrets for UpstreamTlsContext
	Stats    *stats.Store
	Log      *slog.Logger
	Resolver *net.Resolver // nil: net.DefaultResolver (STRICT_DNS / LOGICAL_DNS)
	// MaxIdlePerHost bounds the idle HTTP/1.1 connections kept per host; 0 keeps every
	// one until common_http_protocol_options.idle_timeout, as Envoy does.
	MaxIdlePerHost int
}

// Manager holds the clusters of the current configuration (CDS state of the world) and
// the endpoint assignments (EDS). Safe for concurrent use; Get takes no lock.
type Manager struct {
	opts Options
	log  *slog.Logger

	clusters atomic.Pointer[map[string]*Cluster]

	mu     sync.Mutex
	cla    map[string]*loadAssignment // by EDS service name
	stats  map[string]*ClusterStats
	cm     managerStats
	closed bool
}

// managerStats are Envoy's cluster_manager.* figures: how many clusters are active, and
// how many each CDS update added, changed and removed.
type managerStats struct {
	active                   *stats.Gauge
	added, modified, removed *stats.Counter
}

// NewManager returns a Manager without clusters.
func NewManager(opts Options) *Manager {
	if opts.Stats == nil {
		opts.Stats = stats.New()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Secrets == nil {
		opts.Secrets = tlsctx.NewStore()
	}
	m := &Manager{
		opts:  opts,
		log:   opts.Log.With("component", "upstream"),
		cla:   map[string]*loadAssignment{},
		stats: map[string]*ClusterStats{},
		cm: managerStats{
			active:   opts.Stats.Gauge("cluster_manager.active_clusters"),
			added:    opts.Stats.Counter("cluster_manager.cluster_added"),
			modified: opts.Stats.Counter("cluster_manager.cluster_modified"),
			removed:  opts.Stats.Counter("cluster_manager.cluster_removed"),
		},
	}
	empty := map[string]*Cluster{}
	m.clusters.Store(&empty)
	return m
}

func (m *Manager) resolver() *net.Resolver {
	if m.opts.Resolver != nil {
		return m.opts.Resolver
	}
	return net.DefaultResolver
}

// clusterStats returns the metrics of a cluster name, kept across versions; m.mu held.
func (m *Manager) clusterStats(name string) *ClusterStats {
	if s, ok := m.stats[name]; ok {
		return s
	}
	s := newClusterStats(m.opts.Stats, name)
	m.stats[name] = s
	return s
}

// Get returns the cluster of that name in the current configuration, nil when unknown.
// The router looks clusters up per request (a map read, no lock), so a request always
// reaches the current version of a cluster.
func (m *Manager) Get(name string) *Cluster { return (*m.clusters.Load())[name] }

// Update replaces the whole set of clusters (CDS is state of the world). It validates
// every cluster first and changes nothing when one is invalid (the error names each
// violation as `cluster "NAME": field: reason`). A cluster whose proto is unchanged
// keeps its hosts, pools, health and outlier state; a changed one is rebuilt and the
// old version drains; a removed one drains (idle connections close now, busy ones when
// their requests end). Of the messages it is given the manager keeps what it compiled
// and a digest per cluster to tell the next update's unchanged clusters, not the
// messages: the decoded Cluster of a mesh service is 5-7 KB of heap, a sidecar that is
// told about every service of the mesh would hold one per service.
func (m *Manager) Update(clusters []*clusterv3.Cluster) error {
	return m.UpdateSeq(withoutErrors(clusters))
}

// withoutErrors yields the elements of s, each with a nil error.
func withoutErrors[T any](s []T) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for _, v := range s {
			if !yield(v, nil) {
				return
			}
		}
	}
}

// UpdateSeq is Update over clusters as seq yields them, one at a time: a caller that
// decodes each as it is asked for (CDS) holds one decoded Cluster at a time, not all.
// An error seq yields (a resource that did not decode) is one more violation. The
// manager keeps no message seq yields.
func (m *Manager) UpdateSeq(seq iter.Seq2[*clusterv3.Cluster, error]) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("upstream: manager closed")
	}
	cur := *m.clusters.Load()
	var bad []error
	type pending struct {
		name   string
		digest [sha256.Size]byte
		cfg    *clusterConfig // nil: unchanged
	}
	var all []pending
	seen := make(map[string]int, len(cur))
	i := -1
	for c, err := range seq {
		i++
		switch {
		case err != nil:
			bad = append(bad, err)
			continue
		case c == nil:
			bad = append(bad, fmt.Errorf("clusters[%d]: nil cluster", i))
			continue
		}
		if j, dup := seen[c.GetName()]; dup {
			bad = append(bad, fmt.Errorf("cluster %q: name: duplicate of clusters[%d]", c.GetName(), j))
			continue
		}
		seen[c.GetName()] = i
		d, err := digest(c)
		if err != nil {
			bad = append(bad, fmt.Errorf("cluster %q: %w", c.GetName(), err))
			continue
		}
		pc := pending{name: c.GetName(), digest: d}
		if old := cur[pc.name]; old == nil || old.digest != d {
			if pc.cfg, err = compileCluster(c, m.opts.Secrets); err != nil {
				bad = append(bad, err)
				continue
			}
		}
		all = append(all, pc)
	}
	if len(bad) > 0 {
		return fmt.Errorf("upstream: %w", errors.Join(bad...))
	}

	next := make(map[string]*Cluster, len(all))
	var created []*Cluster
	for _, pc := range all {
		if pc.cfg == nil {
			next[pc.name] = cur[pc.name] // unchanged: keeps all state
			continue
		}
		nc, err := newCluster(m, pc.digest, pc.cfg)
		if err != nil {
			for _, x := range created {
				x.close()
			}
			return fmt.Errorf("upstream: %w", err)
		}
		created = append(created, nc)
		next[pc.name] = nc
	}
	for _, nc := range created {
		m.startLocked(nc)
		nc.startChecks()
	}
	m.clusters.Store(&next)
	for name, old := range cur {
		if next[name] != old {
			old.drain()
		}
		if next[name] == nil {
			m.cm.removed.Inc()
		}
	}
	for _, nc := range created {
		if cur[nc.name] != nil {
			m.cm.modified.Inc()
		} else {
			m.cm.added.Inc()
		}
	}
	m.cm.active.Set(int64(len(next)))
	m.log.Debug("clusters updated", "total", len(next), "new_or_changed", len(created))
	return nil
}

// startLocked begins host discovery for a new cluster; m.mu is held.
func (m *Manager) startLocked(c *Cluster) {
	switch c.cfg.typ {
	case clusterv3.Cluster_STATIC:
		c.setHosts(c.cfg.endpoints)
		c.markWarm()
	case clusterv3.Cluster_LOGICAL_DNS:
		// One logical host named as configured; its pool resolves at each new
		// connection.
		eps := append([]endpointSpec(nil), c.cfg.endpoints...)
		for i := range eps {
			if eps[i].hostname == "" {
				eps[i].hostname = eps[i].host
			}
		}
		c.setHosts(eps)
		c.markWarm()
	case clusterv3.Cluster_STRICT_DNS:
		go c.runStrictDNS()
	case clusterv3.Cluster_EDS:
		if a := m.cla[c.cfg.edsName]; a != nil {
			c.applyAssignment(a)
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		c.markWarm()
		go c.runOriginalDstCleanup()
	}
}

// UpdateEndpoints applies EDS ClusterLoadAssignments (by cluster_name, which is the
// cluster's eds_cluster_config.service_name or else its name). Assignments for unknown
// clusters are kept and applied when the cluster arrives. Assignments not in cla are
// left as they are. Every assignment is validated first; on error nothing changes.
func (m *Manager) UpdateEndpoints(cla []*endpointv3.ClusterLoadAssignment) error {
	return m.UpdateEndpointsSeq(withoutErrors(cla))
}

// UpdateEndpointsSeq is UpdateEndpoints over assignments as seq yields them, one at a
// time (see UpdateSeq); an error seq yields is one more violation.
func (m *Manager) UpdateEndpointsSeq(seq iter.Seq2[*endpointv3.ClusterLoadAssignment, error]) error {
	type item struct {
		name string
		a    *loadAssignment
	}
	var bad []error
	var items []item
	i := -1
	for la, err := range seq {
		i++
		if err != nil {
			bad = append(bad, err)
			continue
		}
		name := la.GetClusterName()
		if name == "" {
			bad = append(bad, fmt.Errorf("cluster_load_assignment[%d]: cluster_name: must not be empty", i))
			continue
		}
		eps, errs := compileEndpoints(la, false, "")
		for _, err := range errs {
			bad = append(bad, fmt.Errorf("cluster_load_assignment %q: %w", name, trimDot(err)))
		}
		a := &loadAssignment{eps: eps, overprov: defaultOverprovisioning}
		if v := la.GetPolicy().GetOverprovisioningFactor(); v != nil {
			if a.overprov = v.GetValue(); a.overprov == 0 {
				bad = append(bad, fmt.Errorf("cluster_load_assignment %q: policy.overprovisioning_factor: must be greater than 0", name))
			}
		}
		items = append(items, item{name: name, a: a})
	}
	if len(bad) > 0 {
		return fmt.Errorf("upstream: %w", errors.Join(bad...))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	byName := map[string][]*Cluster{}
	for _, c := range *m.clusters.Load() {
		if c.cfg.typ == clusterv3.Cluster_EDS {
			byName[c.cfg.edsName] = append(byName[c.cfg.edsName], c)
		}
	}
	for _, it := range items {
		m.cla[it.name] = it.a
		for _, c := range byName[it.name] {
			c.applyAssignment(it.a)
		}
	}
	return nil
}

// trimDot drops the leading "." of a field path built from an empty prefix.
func trimDot(err error) error {
	s := err.Error()
	if len(s) > 0 && s[0] == '.' {
		return errors.New(s[1:])
	}
	return err
}

// loadAssignment is an EDS ClusterLoadAssignment, compiled. The endpoints are shared by
// the clusters of its service name and by the next version of a changed cluster, so
// they are never modified.
type loadAssignment struct {
	eps      []endpointSpec
	overprov uint32 // policy.overprovisioning_factor, or the default
}

// applyAssignment sets an EDS cluster's hosts from an assignment.
func (c *Cluster) applyAssignment(a *loadAssignment) {
	c.mu.Lock()
	c.overprov = a.overprov
	c.mu.Unlock()
	c.setHosts(a.eps)
	c.markWarm()
}

// digest identifies a cluster's configuration: the SHA-256 of its deterministic
// encoding. Messages proto.Equal calls equal have equal digests (but for a float zero
// of the other sign, which rebuilds the cluster); different ones do not collide.
func digest(c *clusterv3.Cluster) ([sha256.Size]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// EDSNames returns the sorted EDS service names the clusters subscribe to.
func (m *Manager) EDSNames() []string {
	set := map[string]bool{}
	for _, c := range *m.clusters.Load() {
		if c.cfg.typ == clusterv3.Cluster_EDS {
			set[c.cfg.edsName] = true
		}
	}
	return sortedKeys(set)
}

// SecretNames returns the sorted SDS secret names the clusters' TLS contexts use.
func (m *Manager) SecretNames() []string {
	set := map[string]bool{}
	for _, c := range *m.clusters.Load() {
		for _, n := range c.cfg.secretNames {
			set[n] = true
		}
	}
	return sortedKeys(set)
}

// Names returns the sorted names of the current clusters.
func (m *Manager) Names() []string {
	set := map[string]bool{}
	for n := range *m.clusters.Load() {
		set[n] = true
	}
	return sortedKeys(set)
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Close stops every cluster and closes every connection.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	for _, c := range *m.clusters.Load() {
		c.close()
	}
	empty := map[string]*Cluster{}
	m.clusters.Store(&empty)
}

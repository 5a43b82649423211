package upstream

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weft-mesh/weft/internal/proxy/upstream/health"
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
	"github.com/weft-mesh/weft/internal/proxy/upstream/outlier"
	"github.com/weft-mesh/weft/internal/proxy/upstream/pool"
)

var (
	// ErrNoHealthyUpstream is returned by Pick when no host can be chosen (503, flag UH).
	ErrNoHealthyUpstream = errors.New("upstream: no healthy upstream")
	// ErrOverflow is wrapped by errors of RoundTrip and Dial when a circuit breaker is
	// open (503, flag UO).
	ErrOverflow = pool.ErrOverflow
	// ErrConnectFailure is wrapped by errors of RoundTrip and Dial when no connection
	// could be made (503, flag UF).
	ErrConnectFailure = pool.ErrConnectFailure
)

// Cluster is one upstream cluster of the current configuration. Its methods are safe
// for concurrent use; Pick and RoundTrip take no lock (the host set is an immutable
// value behind an atomic pointer, swapped on each membership or health change).
type Cluster struct {
	name   string
	digest [sha256.Size]byte // of its Cluster message: the next update's same one keeps it
	cfg    *clusterConfig
	m      *Manager
	stats  *ClusterStats

	limits *pool.Limits
	// poolCfgs[socket][0] is the cluster protocol's pool config for transport socket
	// socket; [1] the HTTP/2 one when use_downstream_protocol_config.
	poolCfgs [][2]*pool.Config

	set atomic.Pointer[hostSet]

	mu     sync.Mutex       // serialises host updates
	hosts  map[string]*Host // by address
	order  []*Host          // hosts in update order (for stable snapshots)
	closed bool
	done   chan struct{} // closed when the cluster is removed or replaced

	// ORIGINAL_DST hosts, created on demand; read without a lock.
	origDst atomic.Pointer[map[netip.AddrPort]*Host]

	detector *outlier.Detector // nil without outlier_detection
	checker  *health.Checker   // nil without health_checks

	// byKey indexes the current hosts by address for the health and outlier
	// callbacks; copy-on-write under mu.
	byKey atomic.Pointer[map[string]*Host]
	// refreshMu orders balancer rebuilds and refreshes, so a health change never
	// lands on a host set that is being replaced.
	refreshMu sync.Mutex

	overprov uint32 // overprovisioning_factor of the current assignment; c.mu

	warmOnce sync.Once
	warm     chan struct{} // closed once the cluster first has its hosts
}

// hostSet is an immutable view of the hosts used to pick.
type hostSet struct {
	hosts []*Host
	ps    *lb.PrioritySet
}

func newCluster(m *Manager, digest [sha256.Size]byte, cfg *clusterConfig) (*Cluster, error) {
	c := &Cluster{
		name:     cfg.name,
		digest:   digest,
		cfg:      cfg,
		m:        m,
		stats:    m.clusterStats(cfg.name),
		hosts:    map[string]*Host{},
		done:     make(chan struct{}),
		warm:     make(chan struct{}),
		overprov: cfg.overprov,
	}
	c.limits = pool.NewLimits(cfg.thresholds, c.stats.Pool)
	for _, s := range cfg.sockets {
		var pair [2]*pool.Config
		pc := &pool.Config{
			Protocol:                 cfg.protocol,
			TLS:                      s.cfg,
			ConnectTimeout:           cfg.connectTimeout,
			IdleTimeout:              cfg.idleTimeout,
			MaxRequestsPerConnection: cfg.maxReqPerConn,
			MaxConcurrentStreams:     cfg.maxStreams,
			MaxIdle:                  m.opts.MaxIdlePerHost,
			Limits:                   c.limits,
		}
		if cfg.typ == clusterv3.Cluster_LOGICAL_DNS {
			pc.Resolve = c.resolveLogical
		}
		if err := pc.Init(); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", cfg.name, err)
		}
		pair[0] = pc
		if cfg.useDownstream {
			h2 := *pc
			h2.Protocol = pool.HTTP2
			if err := h2.Init(); err != nil {
				return nil, fmt.Errorf("cluster %q: %w", cfg.name, err)
			}
			pair[1] = &h2
		}
		c.poolCfgs = append(c.poolCfgs, pair)
	}
	empty := map[netip.AddrPort]*Host{}
	c.origDst.Store(&empty)
	noKeys := map[string]*Host{}
	c.byKey.Store(&noKeys)
	if err := c.initChecks(); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cfg.name, err)
	}
	c.set.Store(&hostSet{ps: c.buildBalancer(nil)})
	return c, nil
}

// Warmed is closed once the cluster has its first hosts: at once for STATIC,
// LOGICAL_DNS and ORIGINAL_DST, after the first resolution for STRICT_DNS, after the
// first assignment for EDS (Envoy's cluster warming).
func (c *Cluster) Warmed() <-chan struct{} { return c.warm }

func (c *Cluster) markWarm() { c.warmOnce.Do(func() { close(c.warm) }) }

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Stats returns the cluster's metrics (cluster.<name>.*).
func (c *Cluster) Stats() *ClusterStats { return c.stats }

// Hosts returns the hosts of the current host set (for admin and tests).
func (c *Cluster) Hosts() []*Host { return c.set.Load().hosts }

// OriginalDstHeader is the request header carrying the original destination for an
// ORIGINAL_DST cluster with original_dst_lb_config.use_http_header
// ("x-envoy-original-dst-host" unless http_header_name says otherwise), "" otherwise.
func (c *Cluster) OriginalDstHeader() string { return c.cfg.origDstHeader }

// IsOriginalDst reports whether the cluster is of type ORIGINAL_DST (Pick then needs
// the original destination).
func (c *Cluster) IsOriginalDst() bool { return c.cfg.typ == clusterv3.Cluster_ORIGINAL_DST }

// Pick chooses a host (priority, locality, lb policy, skipping unavailable and excluded
// hosts). For ORIGINAL_DST clusters the host is origDst. ErrNoHealthyUpstream when
// there is none.
func (c *Cluster) Pick(ctx *lb.Context, origDst netip.AddrPort) (*Host, error) {
	if c.cfg.typ == clusterv3.Cluster_ORIGINAL_DST {
		return c.pickOriginalDst(origDst)
	}
	h := c.set.Load().ps.Pick(ctx)
	if h == nil {
		return nil, ErrNoHealthyUpstream
	}
	return h.(*Host), nil
}

// RoundTrip sends req to h through the host's pool (HTTP/1.1 keep-alive or HTTP/2
// multiplexed, by the cluster's protocol options; the downstream protocol when
// use_downstream_protocol_config), under the cluster's circuit breakers. It returns
// ErrOverflow (wrapped) when a breaker is open, and an error wrapping
// ErrConnectFailure when no connection could be made. req.Context() bounds it.
//
// req.URL.Host should carry the authority (req.Host is used when it is empty); the
// address dialled is always h's. The response body must be read to EOF or closed.
func (c *Cluster) RoundTrip(req *http.Request, h *Host) (*http.Response, error) {
	p := h.pools[0]
	if h.pools[1] != nil && req.ProtoMajor == 2 {
		p = h.pools[1]
	}
	h.rqTotal.Add(1)
	return p.RoundTrip(req)
}

// Dial opens a TCP (or upstream TLS) connection to h for the TCP proxy and for
// WebSocket/CONNECT upgrades, under the max_connections breaker.
func (c *Cluster) Dial(ctx context.Context, h *Host) (net.Conn, error) {
	return h.pools[0].Dial(ctx)
}

// TryRetry takes a slot of the max_retries breaker; ok is false when it is full
// (upstream_rq_retry_overflow is counted then). Call release when the retry ends.
func (c *Cluster) TryRetry() (release func(), ok bool) {
	release, ok = c.limits.TryRetry()
	if ok {
		c.stats.UpstreamRqRetry.Inc()
	}
	return release, ok
}

// newHost creates a host with its pools; c.mu is held.
func (c *Cluster) newHost(addr string, ap netip.AddrPort, meta *hostMeta) *Host {
	h := &Host{addr: addr, ap: ap, cluster: c}
	meta.edsDown = edsUnhealthy(meta.status)
	h.meta.Store(meta)
	// With health_checks a new host is unhealthy until its first check passes.
	h.hcFailed.Store(c.checker != nil)
	h.od = c.detector.Track(addr)
	cfgs := c.poolCfgs[meta.socket]
	h.pools[0] = pool.New(cfgs[0], addr)
	if cfgs[1] != nil {
		h.pools[1] = pool.New(cfgs[1], addr)
	}
	return h
}

// setHosts replaces the cluster's endpoints: hosts whose address stays keep their
// state; new ones are created; removed ones drain.
func (c *Cluster) setHosts(eps []endpointSpec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	next := make(map[string]*Host, len(eps))
	order := make([]*Host, 0, len(eps))
	changed := false
	for i := range eps {
		e := &eps[i]
		addr := e.addr()
		if _, dup := next[addr]; dup {
			continue // Envoy keeps one host per address
		}
		meta := &hostMeta{
			weight: e.weight, priority: e.priority, locality: e.locality, locKey: e.locKey,
			locW: e.locW, status: e.status, edsDown: edsUnhealthy(e.status), hcPort: e.hcPort,
			socket: c.cfg.socketFor(e.socketMatch), hostname: e.hostname,
		}
		h := c.hosts[addr]
		if h != nil && h.meta.Load().socket != meta.socket {
			// A new transport socket needs new connections: a new host.
			h = nil
		}
		if h == nil {
			var ap netip.AddrPort
			if ip, err := netip.ParseAddr(e.host); err == nil {
				ap = netip.AddrPortFrom(ip, uint16(e.port))
			}
			h = c.newHost(addr, ap, meta)
			changed = true
		} else if *h.meta.Load() != *meta {
			h.meta.Store(meta)
			changed = true
		}
		next[addr] = h
		order = append(order, h)
	}
	for addr, h := range c.hosts {
		if next[addr] != h {
			changed = true
			h.drain()
			c.detector.Forget(addr)
		}
	}
	c.hosts = next
	c.order = order
	c.byKey.Store(&next)
	if changed || len(order) != len(c.set.Load().hosts) {
		c.stats.MembershipChange.Inc()
	} else {
		c.stats.UpdateNoRebuild.Inc()
	}
	c.rebuildLocked()
	if c.checker != nil {
		keys := make([]string, len(order))
		for i, h := range order {
			keys[i] = h.addr
		}
		c.checker.SetHosts(keys)
	}
}

// refresh recomputes priority loads and membership gauges after a health or
// ejection change (the balancers read Host.Available live; the loads are cached).
func (c *Cluster) refresh() {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	set := c.set.Load()
	if set.ps != nil {
		set.ps.Refresh()
	}
	c.membership(set.hosts)
}

func (c *Cluster) membership(hosts []*Host) {
	healthy, degraded := 0, 0
	for _, h := range hosts {
		if h.Available() {
			healthy++
			if h.meta.Load().status == corev3.HealthStatus_DEGRADED {
				degraded++
			}
		}
	}
	c.stats.MembershipTotal.Set(int64(len(hosts)))
	c.stats.MembershipHealthy.Set(int64(healthy - degraded))
	c.stats.MembershipDegraded.Set(int64(degraded))
}

// rebuildLocked publishes a new host set from c.order; c.mu is held.
func (c *Cluster) rebuildLocked() {
	hosts := c.order
	if c.cfg.typ == clusterv3.Cluster_ORIGINAL_DST {
		m := *c.origDst.Load()
		hosts = make([]*Host, 0, len(m))
		for _, h := range m {
			hosts = append(hosts, h)
		}
	}
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	var ps *lb.PrioritySet
	if c.cfg.typ != clusterv3.Cluster_ORIGINAL_DST {
		ps = c.buildBalancer(hosts)
	}
	c.set.Store(&hostSet{hosts: hosts, ps: ps})
	c.membership(hosts)
}

// drain stops the cluster: its hosts keep serving requests in flight, then close.
func (c *Cluster) drain() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.done)
	hosts := make([]*Host, 0, len(c.hosts))
	for _, h := range c.hosts {
		hosts = append(hosts, h)
	}
	for _, h := range *c.origDst.Load() {
		hosts = append(hosts, h)
	}
	c.mu.Unlock()
	for _, h := range hosts {
		h.drain()
	}
	// Stopping waits for checks in flight (up to their timeout): not on the update
	// path. Not under c.mu either: a health callback may be waiting for it.
	go c.stopChecks()
}

// close stops the cluster and closes every connection now.
func (c *Cluster) close() {
	c.drain()
	c.stopChecks() // waits, unlike drain
	c.mu.Lock()
	hosts := make([]*Host, 0, len(c.hosts))
	for _, h := range c.hosts {
		hosts = append(hosts, h)
	}
	for _, h := range *c.origDst.Load() {
		hosts = append(hosts, h)
	}
	c.mu.Unlock()
	for _, h := range hosts {
		h.close()
	}
}

// logger is the cluster's logger, made when something is to be logged (rarely): a
// logger kept per cluster was 250 bytes of every cluster of a mesh.
func (c *Cluster) logger() *slog.Logger { return c.m.log.With("cluster", c.name) }

// Package health is the proxy's active health checking (cluster.health_checks[]):
// HTTP and TCP checks run on an interval against every host of a cluster, and a host
// turns unhealthy after unhealthy_threshold failures (at once for an HTTP status that is
// neither expected nor retriable) and healthy again after healthy_threshold passes. The
// cluster turns the result into Host.Available, which the balancers read.
//
// New hosts start unhealthy and turn healthy on their first passing check (a single
// pass, not healthy_threshold), as Envoy treats hosts pending their first check. The
// first check runs as soon as a host is added (after initial_jitter, when set), so the
// window is one round trip; meanwhile the balancers' panic threshold still routes to
// a cluster whose hosts are all pending.
//
// Not implemented: grpc_health_check and custom_health_check (rejected),
// no_traffic_interval, event logs, tls_options / transport_socket_match_criteria
// (the cluster's dial is used), endpoint health_check_config (address, hostname),
// service_name_matcher, TCP connection reuse.
package health

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weft-mesh/weft/internal/proxy/stats"
)

// Options are a Checker's collaborators.
type Options struct {
	// Cluster is the cluster name: the HTTP Host header when http_health_check.host is
	// empty, and a log attribute.
	Cluster string
	// Dial opens connections for the checks; pass the cluster's dialer so upstream TLS
	// is reused. nil dials plain TCP.
	Dial DialFunc
	// OnChange reports a host turning healthy or unhealthy (not its initial unhealthy
	// state). It is never called concurrently for one key and always reports the
	// latest state; calls for different keys may run concurrently. It must not call
	// Stop. It may be called for a key just removed by SetHosts; ignore unknown keys.
	OnChange func(key string, healthy bool)
	// OnCheck, when set, is called after every check of a host with whether it passed
	// (outlier.HostState.ActiveCheckPassed, for
	// successful_active_health_check_uneject_host).
	OnCheck func(key string, passed bool)
	// Stats, with Tags, receives Envoy's cluster.<name>.health_check.* metrics.
	Stats *stats.Store
	Tags  []stats.Tag
	Log   *slog.Logger
}

// Checker runs one cluster's active health checks.
type Checker struct {
	checks []*check
	o      Options
	m      metrics

	mu      sync.Mutex
	hosts   map[string]*hostState
	ctx     context.Context // nil until Start
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped bool
}

type metrics struct {
	attempt, success, failure, networkFailure *stats.Counter
	healthy                                   *stats.Gauge
}

type hostState struct {
	key     string
	cancel  context.CancelFunc // nil while not running
	checks  []checkState       // guarded by Checker.mu
	healthy atomic.Bool        // all checks healthy
	removed atomic.Bool

	cbMu     sync.Mutex // serializes OnChange for this key
	reported bool       // last state given to OnChange (guarded by cbMu)
}

type checkState struct {
	healthy bool
	pending bool // no result yet: the first pass makes the host healthy
	passes  uint32
	fails   uint32
}

// New compiles cfg. An empty cfg means no active health checking: New returns a nil
// *Checker, whose methods are no-ops and whose Healthy is always true. Errors name the
// field as health_checks[i]... (the caller prefixes the cluster).
func New(cfg []*corev3.HealthCheck, o Options) (*Checker, error) {
	if len(cfg) == 0 {
		return nil, nil
	}
	checks, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	if o.Dial == nil {
		o.Dial = netDial
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{checks: checks, o: o, hosts: make(map[string]*hostState)}
	counter := func(name string) *stats.Counter {
		if o.Stats == nil {
			return new(stats.Counter)
		}
		return o.Stats.Counter("cluster.health_check."+name, o.Tags...)
	}
	c.m = metrics{
		attempt:        counter("attempt"),
		success:        counter("success"),
		failure:        counter("failure"),
		networkFailure: counter("network_failure"),
	}
	if o.Stats != nil {
		c.m.healthy = o.Stats.Gauge("cluster.health_check.healthy", o.Tags...)
	} else {
		c.m.healthy = new(stats.Gauge)
	}
	return c, nil
}

// SetHosts sets the hosts to check (keys are "ip:port"). Hosts already checked keep
// their state; new ones start unhealthy (Healthy false) until their first check passes;
// removed ones stop being checked. It does not wait for removed hosts' checks to end.
func (c *Checker) SetHosts(keys []string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	want := make(map[string]bool, len(keys))
	for _, k := range keys {
		want[k] = true
	}
	for k, h := range c.hosts {
		if !want[k] {
			h.removed.Store(true)
			if h.cancel != nil {
				h.cancel()
			}
			if h.healthy.Load() {
				c.m.healthy.Dec()
			}
			delete(c.hosts, k)
		}
	}
	for _, k := range keys {
		if _, ok := c.hosts[k]; ok {
			continue
		}
		h := &hostState{key: k, checks: make([]checkState, len(c.checks))}
		for i := range h.checks {
			h.checks[i].pending = true
		}
		c.hosts[k] = h
		if c.ctx != nil && !c.stopped {
			c.startHost(h)
		}
	}
}

// Healthy reports whether the host passes its active checks; true for a key the
// checker does not know. On the request path prefer a flag kept from OnChange.
func (c *Checker) Healthy(key string) bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	h, ok := c.hosts[key]
	c.mu.Unlock()
	return !ok || h.healthy.Load()
}

// Start begins checking every host (and hosts added later) until ctx is done or Stop.
func (c *Checker) Start(ctx context.Context) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx != nil || c.stopped {
		return
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	for _, h := range c.hosts {
		c.startHost(h)
	}
}

// Stop ends all checks and waits for them. A stopped Checker does not start again;
// its hosts leave the shared health_check.healthy gauge.
func (c *Checker) Stop() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.stopped = true
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	for k, h := range c.hosts {
		h.removed.Store(true)
		if h.healthy.Load() {
			c.m.healthy.Dec()
		}
		delete(c.hosts, k)
	}
	c.mu.Unlock()
}

// startHost runs one goroutine per check of h. Called with c.mu held.
func (c *Checker) startHost(h *hostState) {
	ctx, cancel := context.WithCancel(c.ctx)
	h.cancel = cancel
	addr := h.key
	for _, ck := range c.checks {
		a := addr
		if ck.altPort != "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				a = net.JoinHostPort(host, ck.altPort)
			}
		}
		p := newProber(ck, a, c.o.Cluster, c.o.Dial)
		c.wg.Add(1)
		go c.loop(ctx, h, ck, p)
	}
}

func (c *Checker) loop(ctx context.Context, h *hostState, ck *check, p prober) {
	defer c.wg.Done()
	defer p.close()
	if ck.initialJitter > 0 && !sleep(ctx, rand.N(ck.initialJitter)) {
		return
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, ck.timeout)
		out, err := p.probe(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		next := c.record(h, ck, out, err)
		if !sleep(ctx, next) {
			return
		}
	}
}

// record applies one outcome and returns the wait before the next check.
func (c *Checker) record(h *hostState, ck *check, out outcome, err error) time.Duration {
	c.m.attempt.Inc()
	switch out {
	case pass:
		c.m.success.Inc()
	case failNetwork:
		c.m.networkFailure.Inc()
		c.m.failure.Inc()
	default:
		c.m.failure.Inc()
	}
	c.mu.Lock()
	if h.removed.Load() {
		c.mu.Unlock()
		return ck.interval
	}
	s := &h.checks[ck.idx]
	was := s.healthy
	switch out {
	case pass:
		s.fails = 0
		if !s.healthy {
			s.passes++
			if s.pending || s.passes >= ck.healthyThreshold {
				s.healthy, s.passes = true, 0
			}
		}
	case failNow:
		s.passes, s.fails, s.healthy = 0, 0, false
	default:
		s.passes = 0
		if s.healthy {
			s.fails++
			if s.fails >= ck.unhealthyThreshold {
				s.healthy, s.fails = false, 0
			}
		}
	}
	s.pending = false
	now := s.healthy
	all := true
	for i := range h.checks {
		all = all && h.checks[i].healthy
	}
	if h.healthy.Swap(all) != all {
		if all {
			c.m.healthy.Inc()
		} else {
			c.m.healthy.Dec()
		}
	}
	c.mu.Unlock()

	if out != pass && was {
		c.o.Log.Debug("health check failed", "cluster", c.o.Cluster, "host", h.key, "check", ck.idx, "error", err)
	}
	if c.o.OnCheck != nil {
		c.o.OnCheck(h.key, out == pass)
	}
	c.report(h)

	switch {
	case now && !was:
		return jitter(ck, ck.healthyEdge)
	case !now && was:
		return jitter(ck, ck.unhealthyEdge)
	case now:
		return jitter(ck, ck.interval)
	default:
		return jitter(ck, ck.unhealthyInterval)
	}
}

// report gives OnChange the host's latest state if it differs from the last reported
// one. Reading the state under the per-key lock, rather than passing the value that
// caused the call, keeps reports from two checks of one host from arriving out of order.
func (c *Checker) report(h *hostState) {
	h.cbMu.Lock()
	defer h.cbMu.Unlock()
	cur := h.healthy.Load()
	if cur == h.reported || h.removed.Load() {
		return
	}
	h.reported = cur
	c.o.Log.Info("host health changed", "cluster", c.o.Cluster, "host", h.key, "healthy", cur)
	if c.o.OnChange != nil {
		c.o.OnChange(h.key, cur)
	}
}

func jitter(ck *check, d time.Duration) time.Duration {
	if ck.jitter > 0 {
		d += rand.N(ck.jitter)
	}
	if ck.jitterPercent > 0 {
		if j := d * time.Duration(ck.jitterPercent) / 100; j > 0 {
			d += rand.N(j)
		}
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

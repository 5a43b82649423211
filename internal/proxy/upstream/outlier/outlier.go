// Package outlier is the proxy's passive health checking: Envoy's outlier detection
// (cluster.outlier_detection) by consecutive failures. The router and TCP proxy report
// each request's outcome to the host's HostState; after enough consecutive failures the
// host is ejected (Host.Available false, so the balancers skip it) for
// base_ejection_time × the number of times it was ejected, capped at
// max_ejection_time, and returned to service by the detector's interval sweep.
//
// Implemented: consecutive_5xx, consecutive_gateway_failure,
// consecutive_local_origin_failure with split_external_local_origin_errors, their
// enforcing_* percentages, interval, base_ejection_time, max_ejection_time (+ jitter),
// max_ejection_percent, always_eject_one_host,
// successful_active_health_check_uneject_host. Not implemented: success-rate and
// failure-percentage ejection (their fields are accepted and ignored), degraded hosts.
package outlier

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/stats"
)

// Options are a Detector's collaborators; all are optional.
type Options struct {
	// Clock is the time source (tests pass a fake); nil is time.Now.
	Clock func() time.Time
	// OnChange is called after a host is ejected or returned to service, outside the
	// detector's lock: from Observe's goroutine for an ejection, from Sweep for an
	// un-ejection. The cluster refreshes its priority loads there.
	OnChange func()
	// Stats, with Tags (typically envoy_cluster_name), receives Envoy's
	// cluster.<name>.outlier_detection.* metrics. nil keeps private counters.
	Stats *stats.Store
	Tags  []stats.Tag
}

// Detector is one cluster's outlier detection. Its configuration is fixed; a changed
// outlier_detection builds a new Detector.
type Detector struct {
	cfg      config
	clock    func() time.Time
	onChange func()
	m        metrics

	mu     sync.Mutex
	hosts  map[string]*HostState
	active int // ejected hosts

	stop    context.CancelFunc
	stopped chan struct{}
}

// kind is a consecutive-failure detector.
type kind uint8

const (
	kind5xx kind = iota
	kindGateway
	kindLocal
	numKinds
)

type config struct {
	threshold   [numKinds]uint32 // 0: detector off
	enforcing   [numKinds]uint32 // percent
	split       bool
	interval    time.Duration
	base        time.Duration
	maxEjection time.Duration
	jitter      time.Duration
	maxPercent  uint32
	ejectOne    bool
	hcUneject   bool
}

type metrics struct {
	active        *stats.Gauge
	total         *stats.Counter // ejections_total (deprecated in Envoy, still emitted)
	overflow      *stats.Counter
	enforcedTotal *stats.Counter
	detected      [numKinds]*stats.Counter
	enforced      [numKinds]*stats.Counter
	deprecated5xx *stats.Counter // ejections_consecutive_5xx
}

var kindStat = [numKinds]string{"consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure"}

// HostState is one host's outlier state. Observe and Ejected are safe for concurrent
// use and lock free unless a threshold is reached.
type HostState struct {
	d      *Detector
	key    string
	count  [numKinds]atomic.Uint32
	ejects atomic.Bool

	// Guarded by d.mu.
	times       uint32    // ejection multiplier
	until       time.Time // end of the current ejection
	lastUneject time.Time
	tracked     bool
}

// New validates cfg and returns a stopped Detector. Errors name the field under
// outlier_detection.
//
// A nil cfg means outlier detection is off: New returns a nil *Detector, whose methods
// are no-ops (Track returns a nil *HostState, which never ejects), so the cluster needs
// no special case.
func New(cfg *clusterv3.OutlierDetection, o Options) (*Detector, error) {
	if cfg == nil {
		return nil, nil
	}
	c, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	d := &Detector{cfg: c, clock: o.Clock, onChange: o.OnChange, hosts: make(map[string]*HostState)}
	if d.clock == nil {
		d.clock = time.Now
	}
	d.m = newMetrics(o.Stats, o.Tags)
	return d, nil
}

func newMetrics(s *stats.Store, tags []stats.Tag) metrics {
	counter := func(name string) *stats.Counter {
		if s == nil {
			return new(stats.Counter)
		}
		return s.Counter("cluster.outlier_detection."+name, tags...)
	}
	var m metrics
	if s == nil {
		m.active = new(stats.Gauge)
	} else {
		m.active = s.Gauge("cluster.outlier_detection.ejections_active", tags...)
	}
	m.total = counter("ejections_total")
	m.overflow = counter("ejections_overflow")
	m.enforcedTotal = counter("ejections_enforced_total")
	for k := range numKinds {
		m.detected[k] = counter("ejections_detected_" + kindStat[k])
		m.enforced[k] = counter("ejections_enforced_" + kindStat[k])
	}
	m.deprecated5xx = counter("ejections_consecutive_5xx")
	return m
}

func compile(p *clusterv3.OutlierDetection) (config, error) {
	var errs []error
	u32 := func(v *wrapperspb.UInt32Value, def uint32) uint32 {
		if v == nil {
			return def
		}
		return v.GetValue()
	}
	pct := func(name string, v uint32) uint32 {
		if v > 100 {
			errs = append(errs, fmt.Errorf("outlier_detection.%s: %d exceeds 100", name, v))
			return 100
		}
		return v
	}
	dur := func(name string, d *durationpb.Duration, def time.Duration, positive bool) time.Duration {
		if d == nil {
			return def
		}
		if err := d.CheckValid(); err != nil {
			errs = append(errs, fmt.Errorf("outlier_detection.%s: %w", name, err))
			return def
		}
		v := d.AsDuration()
		if v < 0 || (positive && v == 0) {
			errs = append(errs, fmt.Errorf("outlier_detection.%s: %v must be positive", name, v))
			return def
		}
		return v
	}
	var c config
	c.threshold[kind5xx] = u32(p.GetConsecutive_5Xx(), 5)
	c.threshold[kindGateway] = u32(p.GetConsecutiveGatewayFailure(), 5)
	c.threshold[kindLocal] = u32(p.GetConsecutiveLocalOriginFailure(), 5)
	c.enforcing[kind5xx] = pct("enforcing_consecutive_5xx", u32(p.GetEnforcingConsecutive_5Xx(), 100))
	c.enforcing[kindGateway] = pct("enforcing_consecutive_gateway_failure", u32(p.GetEnforcingConsecutiveGatewayFailure(), 0))
	c.enforcing[kindLocal] = pct("enforcing_consecutive_local_origin_failure", u32(p.GetEnforcingConsecutiveLocalOriginFailure(), 100))
	c.maxPercent = pct("max_ejection_percent", u32(p.GetMaxEjectionPercent(), 10))
	// Fields of the detectors not implemented here are still range-checked, so a
	// config Envoy would reject is rejected here too.
	pct("enforcing_success_rate", p.GetEnforcingSuccessRate().GetValue())
	pct("enforcing_local_origin_success_rate", p.GetEnforcingLocalOriginSuccessRate().GetValue())
	pct("failure_percentage_threshold", p.GetFailurePercentageThreshold().GetValue())
	pct("enforcing_failure_percentage", p.GetEnforcingFailurePercentage().GetValue())
	pct("enforcing_failure_percentage_local_origin", p.GetEnforcingFailurePercentageLocalOrigin().GetValue())
	c.split = p.GetSplitExternalLocalOriginErrors()
	c.interval = dur("interval", p.GetInterval(), 10*time.Second, true)
	c.base = dur("base_ejection_time", p.GetBaseEjectionTime(), 30*time.Second, true)
	c.maxEjection = dur("max_ejection_time", p.GetMaxEjectionTime(), 300*time.Second, true)
	c.jitter = dur("max_ejection_time_jitter", p.GetMaxEjectionTimeJitter(), 0, false)
	if c.maxEjection < c.base {
		// Envoy rejects max_ejection_time below base_ejection_time.
		errs = append(errs, fmt.Errorf("outlier_detection.max_ejection_time: %v is below base_ejection_time %v", c.maxEjection, c.base))
	}
	c.ejectOne = p.GetAlwaysEjectOneHost().GetValue()
	c.hcUneject = p.SuccessfulActiveHealthCheckUnejectHost == nil || p.GetSuccessfulActiveHealthCheckUnejectHost().GetValue()
	return c, errors.Join(errs...)
}

// Track returns the state of the host with key ("ip:port"), creating it if needed; a
// host kept across an EDS update keeps its state.
func (d *Detector) Track(key string) *HostState {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h, ok := d.hosts[key]; ok {
		return h
	}
	h := &HostState{d: d, key: key, tracked: true}
	d.hosts[key] = h
	return h
}

// Forget drops a host that left the cluster. Its HostState stays usable but no longer
// counts toward max_ejection_percent.
func (d *Detector) Forget(key string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.hosts[key]
	if !ok {
		return
	}
	delete(d.hosts, key)
	h.tracked = false
	if h.ejects.Load() {
		h.ejects.Store(false)
		d.active--
		d.m.active.Dec()
	}
}

// Key is the host's key as given to Track.
func (h *HostState) Key() string {
	if h == nil {
		return ""
	}
	return h.key
}

// Ejected reports whether the host is ejected. One atomic load.
func (h *HostState) Ejected() bool { return h != nil && h.ejects.Load() }

// Observe records one request's outcome: status is the upstream HTTP status (0 when no
// response arrived) and localOriginFailure reports a failure of the proxy's own making:
// connect failure, timeout, reset. For TCP, report a connection as Observe(200, false)
// and a failed connect as Observe(0, true).
//
// Without split_external_local_origin_errors a local-origin failure counts as a 503
// (both a 5xx and a gateway failure), as in Envoy; with it, it counts only toward
// consecutive_local_origin_failure, and any response resets that count.
func (h *HostState) Observe(status int, localOriginFailure bool) {
	if h == nil {
		return
	}
	split := h.d.cfg.split
	if localOriginFailure {
		if split {
			h.fail(kindLocal)
			return
		}
		status = 503
	} else if split {
		h.reset(kindLocal)
	}
	if status >= 500 && status <= 599 {
		if status >= 502 && status <= 504 {
			h.fail(kindGateway)
		} else {
			h.reset(kindGateway)
		}
		h.fail(kind5xx)
		return
	}
	h.reset(kind5xx)
	h.reset(kindGateway)
}

// reset clears a count without writing the shared cache line when it is already 0,
// which is the common case.
func (h *HostState) reset(k kind) {
	if h.count[k].Load() != 0 {
		h.count[k].Store(0)
	}
}

func (h *HostState) fail(k kind) {
	t := h.d.cfg.threshold[k]
	if t == 0 {
		return
	}
	if h.count[k].Add(1) == t {
		h.d.consecutive(h, k)
	}
}

// ActiveCheckPassed is called after each successful active health check of the host:
// with successful_active_health_check_uneject_host (default true) it returns an
// ejected host to service and clears its counts.
func (h *HostState) ActiveCheckPassed() {
	if h == nil {
		return
	}
	d := h.d
	if !d.cfg.hcUneject || !h.ejects.Load() {
		return
	}
	d.mu.Lock()
	changed := h.tracked && h.ejects.Load()
	if changed {
		d.unejectLocked(h, d.clock())
	}
	d.mu.Unlock()
	if changed && d.onChange != nil {
		d.onChange()
	}
}

// consecutive handles a host reaching a consecutive-failure threshold: count the
// detection, then eject if the enforcing percentage and max_ejection_percent allow.
func (d *Detector) consecutive(h *HostState, k kind) {
	d.mu.Lock()
	// The count restarts either way, so a host that keeps failing gets another
	// chance at the threshold (e.g. once max_ejection_percent allows).
	h.count[k].Store(0)
	if !h.tracked || h.ejects.Load() {
		d.mu.Unlock()
		return
	}
	d.m.detected[k].Inc()
	if e := d.cfg.enforcing[k]; e == 0 || (e < 100 && rand.Uint32N(100) >= e) {
		d.mu.Unlock()
		return
	}
	// Envoy: eject only while (ejected+1)/hosts stays within max_ejection_percent,
	// unless always_eject_one_host and none is ejected yet.
	n := len(d.hosts)
	if uint64(d.active+1)*100 > uint64(d.cfg.maxPercent)*uint64(n) && !(d.cfg.ejectOne && d.active == 0) {
		d.m.overflow.Inc()
		d.mu.Unlock()
		return
	}
	now := d.clock()
	if uint64(h.times)*uint64(d.cfg.base) < uint64(d.cfg.maxEjection) {
		h.times++
	}
	dur := min(time.Duration(h.times)*d.cfg.base, d.cfg.maxEjection)
	if d.cfg.jitter > 0 {
		dur += rand.N(d.cfg.jitter)
	}
	h.until = now.Add(dur)
	for i := range h.count {
		h.count[i].Store(0)
	}
	h.ejects.Store(true)
	d.active++
	d.m.active.Inc()
	d.m.total.Inc()
	d.m.enforcedTotal.Inc()
	d.m.enforced[k].Inc()
	if k == kind5xx {
		d.m.deprecated5xx.Inc()
	}
	d.mu.Unlock()
	if d.onChange != nil {
		d.onChange()
	}
}

func (d *Detector) unejectLocked(h *HostState, now time.Time) {
	h.ejects.Store(false)
	h.lastUneject = now
	for i := range h.count {
		h.count[i].Store(0)
	}
	d.active--
	d.m.active.Dec()
}

// Sweep is one interval's pass: it returns to service every host whose ejection time
// is over, and lowers by one the ejection multiplier of each host that has stayed in
// service for a whole interval, so a host that recovered is not punished forever (as
// Envoy does). Start calls it every interval; tests call it directly.
func (d *Detector) Sweep() {
	if d == nil {
		return
	}
	now := d.clock()
	changed := false
	d.mu.Lock()
	for _, h := range d.hosts {
		switch {
		case h.ejects.Load():
			if !now.Before(h.until) {
				d.unejectLocked(h, now)
				changed = true
			}
		case h.times > 0 && now.Sub(h.lastUneject) >= d.cfg.interval:
			h.times--
		}
	}
	d.mu.Unlock()
	if changed && d.onChange != nil {
		d.onChange()
	}
}

// Start runs Sweep every interval until ctx is done or Stop is called.
func (d *Detector) Start(ctx context.Context) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	d.stop = cancel
	d.stopped = make(chan struct{})
	go func() {
		defer close(d.stopped)
		t := time.NewTicker(d.cfg.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				d.Sweep()
			}
		}
	}()
}

// Stop ends Start's loop and waits for it.
func (d *Detector) Stop() {
	if d == nil {
		return
	}
	d.mu.Lock()
	cancel, done := d.stop, d.stopped
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Close stops the detector for good when its cluster goes or its outlier_detection
// changes: every host returns to service (without OnChange) and its ejections leave the
// shared ejections_active gauge, which a replacement Detector will count afresh.
func (d *Detector) Close() {
	if d == nil {
		return
	}
	d.Stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, h := range d.hosts {
		h.tracked = false
		if h.ejects.Swap(false) {
			d.active--
			d.m.active.Dec()
		}
		delete(d.hosts, k)
	}
}

// Interval is the configured sweep interval.
func (d *Detector) Interval() time.Duration {
	if d == nil {
		return 0
	}
	return d.cfg.interval
}

// Counters is a snapshot of the detector's metrics (Envoy's names).
type Counters struct {
	EjectionsActive                                int64
	EjectionsTotal, EjectionsOverflow              uint64
	EjectionsEnforcedTotal                         uint64
	EjectionsEnforcedConsecutive5xx                uint64
	EjectionsDetectedConsecutive5xx                uint64
	EjectionsEnforcedConsecutiveGatewayFailure     uint64
	EjectionsDetectedConsecutiveGatewayFailure     uint64
	EjectionsEnforcedConsecutiveLocalOriginFailure uint64
	EjectionsDetectedConsecutiveLocalOriginFailure uint64
}

// Counters returns the current metric values.
func (d *Detector) Counters() Counters {
	if d == nil {
		return Counters{}
	}
	m := &d.m
	return Counters{
		EjectionsActive:        m.active.Value(),
		EjectionsTotal:         m.total.Value(),
		EjectionsOverflow:      m.overflow.Value(),
		EjectionsEnforcedTotal: m.enforcedTotal.Value(),

		EjectionsEnforcedConsecutive5xx:                m.enforced[kind5xx].Value(),
		EjectionsDetectedConsecutive5xx:                m.detected[kind5xx].Value(),
		EjectionsEnforcedConsecutiveGatewayFailure:     m.enforced[kindGateway].Value(),
		EjectionsDetectedConsecutiveGatewayFailure:     m.detected[kindGateway].Value(),
		EjectionsEnforcedConsecutiveLocalOriginFailure: m.enforced[kindLocal].Value(),
		EjectionsDetectedConsecutiveLocalOriginFailure: m.detected[kindLocal].Value(),
	}
}

// EjectedUntil reports whether the host with key is ejected and until when (admin).
func (d *Detector) EjectedUntil(key string) (time.Time, bool) {
	if d == nil {
		return time.Time{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.hosts[key]
	if !ok || !h.ejects.Load() {
		return time.Time{}, false
	}
	return h.until, true
}

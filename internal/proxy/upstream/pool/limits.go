package pool

import (
	"sync"
	"sync/atomic"

	"github.com/weft-mesh/weft/internal/proxy/stats"
)

// Thresholds are a cluster's circuit breaker limits (circuit_breakers.thresholds for
// the DEFAULT routing priority), taken literally: 0 allows nothing, as an explicit 0
// does in Envoy. Start from DefaultThresholds.
type Thresholds struct {
	MaxConnections     uint32 // max_connections
	MaxPendingRequests uint32 // max_pending_requests
	MaxRequests        uint32 // max_requests
	MaxRetries         uint32 // max_retries
}

// Envoy's defaults for circuit_breakers.thresholds.
const (
	DefaultMaxConnections     = 1024
	DefaultMaxPendingRequests = 1024
	DefaultMaxRequests        = 1024
	DefaultMaxRetries         = 3
)

// DefaultThresholds are Envoy's defaults: 1024 connections, pending requests and
// requests, 3 concurrent retries.
func DefaultThresholds() Thresholds {
	return Thresholds{DefaultMaxConnections, DefaultMaxPendingRequests, DefaultMaxRequests, DefaultMaxRetries}
}

// Stats are the cluster-wide metrics a pool updates, named as Envoy's
// cluster.<name>.* stats. Every field must be set (NewStats does it).
type Stats struct {
	CxActive          *stats.Gauge   // upstream_cx_active
	CxTotal           *stats.Counter // upstream_cx_total
	CxConnectFail     *stats.Counter // upstream_cx_connect_fail
	CxOverflow        *stats.Counter // upstream_cx_overflow
	CxDestroy         *stats.Counter // upstream_cx_destroy
	RqActive          *stats.Gauge   // upstream_rq_active
	RqTotal           *stats.Counter // upstream_rq_total
	RqPendingActive   *stats.Gauge   // upstream_rq_pending_active
	RqPendingTotal    *stats.Counter // upstream_rq_pending_total
	RqPendingOverflow *stats.Counter // upstream_rq_pending_overflow
	RqRetryOverflow   *stats.Counter // upstream_rq_retry_overflow
	// Circuit breaker state gauges (circuit_breakers.default.*_open): 1 while the
	// resource is at its limit.
	CxOpen        *stats.Gauge // circuit_breakers.default.cx_open
	RqPendingOpen *stats.Gauge // circuit_breakers.default.rq_pending_open
	RqOpen        *stats.Gauge // circuit_breakers.default.rq_open
	RqRetryOpen   *stats.Gauge // circuit_breakers.default.rq_retry_open
}

// ClusterTag is the tag every cluster metric carries (Envoy's envoy_cluster_name).
func ClusterTag(cluster string) stats.Tag {
	return stats.Tag{Key: "envoy_cluster_name", Value: cluster}
}

// NewStats looks up the pool metrics of one cluster in s.
func NewStats(s *stats.Store, cluster string) *Stats {
	t := ClusterTag(cluster)
	return &Stats{
		CxActive:          s.Gauge("cluster.upstream_cx_active", t),
		CxTotal:           s.Counter("cluster.upstream_cx_total", t),
		CxConnectFail:     s.Counter("cluster.upstream_cx_connect_fail", t),
		CxOverflow:        s.Counter("cluster.upstream_cx_overflow", t),
		CxDestroy:         s.Counter("cluster.upstream_cx_destroy", t),
		RqActive:          s.Gauge("cluster.upstream_rq_active", t),
		RqTotal:           s.Counter("cluster.upstream_rq_total", t),
		RqPendingActive:   s.Gauge("cluster.upstream_rq_pending_active", t),
		RqPendingTotal:    s.Counter("cluster.upstream_rq_pending_total", t),
		RqPendingOverflow: s.Counter("cluster.upstream_rq_pending_overflow", t),
		RqRetryOverflow:   s.Counter("cluster.upstream_rq_retry_overflow", t),
		CxOpen:            s.Gauge("cluster.circuit_breakers.default.cx_open", t),
		RqPendingOpen:     s.Gauge("cluster.circuit_breakers.default.rq_pending_open", t),
		RqOpen:            s.Gauge("cluster.circuit_breakers.default.rq_open", t),
		RqRetryOpen:       s.Gauge("cluster.circuit_breakers.default.rq_retry_open", t),
	}
}

// Limits is one cluster's circuit breaker state, shared by the pools of all its hosts
// (Envoy's breakers count per cluster and priority, not per host). Safe for concurrent
// use; every check is an atomic operation.
type Limits struct {
	maxCx, maxPending, maxRq, maxRetries int64

	cx, pending, rq, retries atomic.Int64

	st *Stats

	// cxFreed is closed and replaced when a connection slot frees while requests wait
	// for one, so requests pending on any host of the cluster retry.
	mu       sync.Mutex
	cxFreed  chan struct{}
	cxWaiter atomic.Int32
}

// NewLimits returns the breaker state for t, updating st.
func NewLimits(t Thresholds, st *Stats) *Limits {
	return &Limits{
		maxCx:      int64(t.MaxConnections),
		maxPending: int64(t.MaxPendingRequests),
		maxRq:      int64(t.MaxRequests),
		maxRetries: int64(t.MaxRetries),
		st:         st,
		cxFreed:    make(chan struct{}),
	}
}

// Stats returns the metrics the limits update.
func (l *Limits) Stats() *Stats { return l.st }

// take adds one to n when it stays within max.
func take(n *atomic.Int64, max int64, open *stats.Gauge) bool {
	for {
		v := n.Load()
		if v >= max {
			open.Set(1)
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			if v+1 >= max {
				open.Set(1)
			}
			return true
		}
	}
}

func give(n *atomic.Int64, max int64, open *stats.Gauge) {
	if n.Add(-1) < max {
		open.Set(0)
	}
}

// acquireConn takes a max_connections slot.
func (l *Limits) acquireConn() bool { return take(&l.cx, l.maxCx, l.st.CxOpen) }

func (l *Limits) releaseConn() {
	give(&l.cx, l.maxCx, l.st.CxOpen)
	if l.cxWaiter.Load() > 0 {
		l.mu.Lock()
		close(l.cxFreed)
		l.cxFreed = make(chan struct{})
		l.mu.Unlock()
	}
}

// connFreed returns a channel closed when the next connection slot frees.
func (l *Limits) connFreed() <-chan struct{} {
	l.mu.Lock()
	ch := l.cxFreed
	l.mu.Unlock()
	return ch
}

// AcquireRequest takes a max_requests slot; on overflow it counts
// upstream_rq_pending_overflow, as Envoy does for both pending and request overflow.
func (l *Limits) AcquireRequest() bool {
	if take(&l.rq, l.maxRq, l.st.RqOpen) {
		return true
	}
	l.st.RqPendingOverflow.Inc()
	return false
}

// ReleaseRequest gives back a max_requests slot.
func (l *Limits) ReleaseRequest() { give(&l.rq, l.maxRq, l.st.RqOpen) }

func (l *Limits) acquirePending() bool {
	if take(&l.pending, l.maxPending, l.st.RqPendingOpen) {
		l.st.RqPendingActive.Inc()
		l.st.RqPendingTotal.Inc()
		return true
	}
	l.st.RqPendingOverflow.Inc()
	return false
}

func (l *Limits) releasePending() {
	l.st.RqPendingActive.Dec()
	give(&l.pending, l.maxPending, l.st.RqPendingOpen)
}

// TryRetry takes a max_retries slot; ok is false (and upstream_rq_retry_overflow
// counted) when the breaker is open. release must be called once when the retry ends.
func (l *Limits) TryRetry() (release func(), ok bool) {
	if !take(&l.retries, l.maxRetries, l.st.RqRetryOpen) {
		l.st.RqRetryOverflow.Inc()
		return nil, false
	}
	return l.releaseRetry, true
}

func (l *Limits) releaseRetry() { give(&l.retries, l.maxRetries, l.st.RqRetryOpen) }

// Active reports the connections, pending requests, requests and retries in use.
func (l *Limits) Active() (cx, pending, rq, retries int64) {
	return l.cx.Load(), l.pending.Load(), l.rq.Load(), l.retries.Load()
}

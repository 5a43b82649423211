package upstream

import (
	"strconv"
	"sync/atomic"

	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/upstream/pool"
)

// ClusterStats are a cluster's metrics, named as Envoy's cluster.<name>.*. They are
// looked up once per cluster name; a cluster that is updated or removed and comes back
// finds its old counters, as in Envoy.
type ClusterStats struct {
	// Pool holds the connection and request counters the pools and breakers update
	// (upstream_cx_*, upstream_rq_total/active/pending_*, upstream_rq_retry_overflow).
	Pool *pool.Stats

	MembershipHealthy  *stats.Gauge   // membership_healthy
	MembershipDegraded *stats.Gauge   // membership_degraded
	MembershipTotal    *stats.Gauge   // membership_total
	MembershipChange   *stats.Counter // membership_change
	UpdateNoRebuild    *stats.Counter // update_no_rebuild
	UpstreamRqRetry    *stats.Counter // upstream_rq_retry
	UpstreamRqTimeout  *stats.Counter // upstream_rq_timeout
	DNSSuccess         *stats.Counter // update_success (DNS resolutions)
	DNSFailure         *stats.Counter // update_failure
	OriginalDstCleanup *stats.Counter // original_dst_host_invalid is Envoy's; weft counts cleanups

	store *stats.Store
	tag   stats.Tag
	class [6]*stats.Counter // upstream_rq_1xx .. upstream_rq_5xx (index 1..5)
	// codes caches upstream_rq_<code> by code, allocated on the cluster's first
	// response: 4.8 KB a cluster that no request reaches (most of a large mesh's, for
	// one sidecar) does not pay.
	codes atomic.Pointer[[600]atomic.Pointer[stats.Counter]]
}

func newClusterStats(s *stats.Store, name string) *ClusterStats {
	t := pool.ClusterTag(name)
	cs := &ClusterStats{
		Pool:               pool.NewStats(s, name),
		MembershipHealthy:  s.Gauge("cluster.membership_healthy", t),
		MembershipDegraded: s.Gauge("cluster.membership_degraded", t),
		MembershipTotal:    s.Gauge("cluster.membership_total", t),
		MembershipChange:   s.Counter("cluster.membership_change", t),
		UpdateNoRebuild:    s.Counter("cluster.update_no_rebuild", t),
		UpstreamRqRetry:    s.Counter("cluster.upstream_rq_retry", t),
		UpstreamRqTimeout:  s.Counter("cluster.upstream_rq_timeout", t),
		DNSSuccess:         s.Counter("cluster.update_success", t),
		DNSFailure:         s.Counter("cluster.update_failure", t),
		OriginalDstCleanup: s.Counter("cluster.original_dst_host_cleanup", t),
		store:              s,
		tag:                t,
	}
	for i := 1; i <= 5; i++ {
		cs.class[i] = s.Counter("cluster.upstream_rq_{envoy_response_code_class}xx", t,
			stats.Tag{Key: "envoy_response_code_class", Value: strconv.Itoa(i)})
	}
	return cs
}

// RecordStatus counts one upstream response: upstream_rq_<code> and
// upstream_rq_<N>xx. The router calls it once per response it got from the upstream
// (not for local replies). Codes outside 100..599 are ignored.
func (s *ClusterStats) RecordStatus(code int) {
	if code < 100 || code >= 600 {
		return
	}
	s.class[code/100].Inc()
	codes := s.codes.Load()
	if codes == nil {
		s.codes.CompareAndSwap(nil, new([600]atomic.Pointer[stats.Counter]))
		codes = s.codes.Load()
	}
	c := codes[code].Load()
	if c == nil {
		// First response with this code: one store lookup, then cached.
		c = s.store.Counter("cluster.upstream_rq_{envoy_response_code}", s.tag,
			stats.Tag{Key: "envoy_response_code", Value: strconv.Itoa(code)})
		codes[code].Store(c)
	}
	c.Inc()
}

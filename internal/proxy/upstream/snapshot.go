package upstream

import (
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// ClusterStatus is one cluster as admin /clusters shows it.
type ClusterStatus struct {
	Name           string
	Type           string // STATIC, STRICT_DNS, LOGICAL_DNS, EDS, ORIGINAL_DST
	EDSServiceName string
	LbPolicy       string
	// Circuit breaker thresholds in effect (DEFAULT priority).
	MaxConnections, MaxPendingRequests, MaxRequests, MaxRetries uint32
	Hosts                                                       []HostStatus
}

// HostStatus is one host of a ClusterStatus.
type HostStatus struct {
	Address  string
	Weight   uint32
	Priority uint32
	Region   string
	Zone     string
	SubZone  string

	Healthy            bool   // available for balancing
	FailedActiveHC     bool   // failed_active_hc
	FailedOutlierCheck bool   // failed_outlier_check
	EDSHealthStatus    string // health_status from EDS: UNKNOWN, HEALTHY, UNHEALTHY, DRAINING, TIMEOUT, DEGRADED

	RqTotal   uint64
	RqSuccess uint64
	RqError   uint64
	CxActive  int64
	RqActive  int64
}

// HealthFlags renders the host's health as Envoy's /clusters health_flags: "healthy",
// or the failures joined, e.g. "/failed_active_hc/failed_outlier_check".
func (h HostStatus) HealthFlags() string {
	var b strings.Builder
	if h.FailedActiveHC {
		b.WriteString("/failed_active_hc")
	}
	if h.FailedOutlierCheck {
		b.WriteString("/failed_outlier_check")
	}
	switch h.EDSHealthStatus {
	case "UNHEALTHY", "TIMEOUT":
		b.WriteString("/failed_eds_health")
	case "DRAINING":
		b.WriteString("/failed_eds_health/eds_status_draining")
	case "DEGRADED":
		b.WriteString("/degraded_eds_health")
	}
	if b.Len() == 0 {
		return "healthy"
	}
	return b.String()
}

// Snapshot describes every cluster and host, sorted by cluster name, for admin
// /clusters.
func (m *Manager) Snapshot() []ClusterStatus {
	cur := *m.clusters.Load()
	out := make([]ClusterStatus, 0, len(cur))
	for _, c := range cur {
		out = append(out, c.Status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status describes the cluster and its hosts.
func (c *Cluster) Status() ClusterStatus {
	cfg := c.cfg
	cs := ClusterStatus{
		Name:               c.name,
		Type:               cfg.typ.String(),
		EDSServiceName:     cfg.edsName,
		LbPolicy:           cfg.lbPolicy.String(),
		MaxConnections:     cfg.thresholds.MaxConnections,
		MaxPendingRequests: cfg.thresholds.MaxPendingRequests,
		MaxRequests:        cfg.thresholds.MaxRequests,
		MaxRetries:         cfg.thresholds.MaxRetries,
	}
	if cfg.typ == clusterv3.Cluster_ORIGINAL_DST {
		cs.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED.String()
	}
	for _, h := range c.set.Load().hosts {
		meta := h.meta.Load()
		hs := HostStatus{
			Address:            h.addr,
			Weight:             meta.weight,
			Priority:           meta.priority,
			Healthy:            h.Available(),
			FailedActiveHC:     h.hcFailed.Load(),
			FailedOutlierCheck: h.od.Ejected(),
			EDSHealthStatus:    corev3.HealthStatus_name[int32(meta.status)],
			RqTotal:            h.rqTotal.Load(),
			RqSuccess:          h.rqSuccess.Load(),
			RqError:            h.rqError.Load(),
			CxActive:           h.ActiveConnections(),
			RqActive:           h.ActiveRequests(),
		}
		if l := meta.locality; l != nil {
			hs.Region, hs.Zone, hs.SubZone = l.GetRegion(), l.GetZone(), l.GetSubZone()
		}
		cs.Hosts = append(cs.Hosts, hs)
	}
	sort.Slice(cs.Hosts, func(i, j int) bool { return cs.Hosts[i].Address < cs.Hosts[j].Address })
	return cs
}

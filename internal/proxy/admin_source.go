package proxy

import (
	"github.com/weft-mesh/weft/internal/proxy/admin"
)

// Clusters implements admin.ClusterSource: the upstream manager's view, in admin's shape.
func (p *Proxy) Clusters() []admin.ClusterStatus {
	snap := p.clusters.Snapshot()
	var dynamic map[string]bool
	if d := p.dynClusters.Load(); d != nil {
		dynamic = *d
	}
	out := make([]admin.ClusterStatus, 0, len(snap))
	for _, c := range snap {
		cs := admin.ClusterStatus{Name: c.Name, EDSServiceName: c.EDSServiceName, AddedViaAPI: dynamic[c.Name]}
		for _, h := range c.Hosts {
			cs.Hosts = append(cs.Hosts, admin.HostStatus{
				Address: h.Address, Weight: h.Weight, Priority: h.Priority,
				Region: h.Region, Zone: h.Zone, SubZone: h.SubZone,
				Health: admin.HostHealth{FailedActiveHC: h.FailedActiveHC, FailedOutlierCheck: h.FailedOutlierCheck, EDS: h.EDSHealthStatus},
				Stats: []admin.HostStat{
					{Name: "cx_active", Value: uint64(max(h.CxActive, 0)), Gauge: true},
					{Name: "rq_active", Value: uint64(max(h.RqActive, 0)), Gauge: true},
					{Name: "rq_error", Value: h.RqError},
					{Name: "rq_success", Value: h.RqSuccess},
					{Name: "rq_total", Value: h.RqTotal},
				},
			})
		}
		out = append(out, cs)
	}
	return out
}

var _ admin.ClusterSource = (*Proxy)(nil)
var _ admin.Source = (*Proxy)(nil)

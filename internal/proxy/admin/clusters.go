package admin

import (
	"bufio"
	"net"
	"net/http"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// ClusterStatus is one cluster as /clusters shows it. It is local to this package so admin
// does not import upstream; the proxy glue converts upstream's snapshot.
type ClusterStatus struct {
	Name              string
	ObservabilityName string // Istio's alt_stat_name, when set
	EDSServiceName    string
	AddedViaAPI       bool
	Hosts             []HostStatus
}

// HostStatus is one host of a cluster.
type HostStatus struct {
	Address  string // "ip:port"
	Hostname string
	Weight   uint32
	Priority uint32
	Region   string
	Zone     string
	SubZone  string
	Health   HostHealth
	// Stats are per-host metrics in the order to print them (cx_active, rq_total, ...).
	Stats []HostStat
}

// HostHealth holds the reasons a host is not healthy; the zero value is healthy.
type HostHealth struct {
	FailedActiveHC        bool
	FailedOutlierCheck    bool
	PendingDynamicRemoval bool
	PendingActiveHC       bool
	ActiveHCTimeout       bool
	// EDS is the health the control plane gave the endpoint: "" or "HEALTHY",
	// "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED", "UNKNOWN".
	EDS string
}

// HostStat is one per-host metric.
type HostStat struct {
	Name  string
	Value uint64
	Gauge bool
}

// flags renders the health as Envoy's /clusters health_flags: "healthy" or "/reason..." .
func (h HostHealth) flags() string {
	s := ""
	if h.FailedActiveHC {
		s += "/failed_active_hc"
	}
	if h.FailedOutlierCheck {
		s += "/failed_outlier_check"
	}
	switch h.EDS {
	case "UNHEALTHY", "DRAINING", "TIMEOUT":
		s += "/failed_eds_health"
	case "DEGRADED":
		s += "/degraded_eds_health"
	}
	if h.PendingDynamicRemoval {
		s += "/pending_dynamic_removal"
	}
	if h.PendingActiveHC {
		s += "/pending_active_hc"
	}
	if h.ActiveHCTimeout {
		s += "/active_hc_timeout"
	}
	if s == "" {
		return "healthy"
	}
	return s
}

func (s *Server) clusterList() []ClusterStatus {
	if cs, ok := s.opts.Source.(ClusterSource); ok {
		return cs.Clusters()
	}
	return nil
}

func (s *Server) clusters(w http.ResponseWriter, r *http.Request) {
	list := s.clusterList()
	if r.URL.Query().Get("format") == "json" {
		writeMessage(w, clustersMessage(list))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	bw := bufio.NewWriter(w)
	line := func(parts ...string) {
		for i, p := range parts {
			if i > 0 {
				bw.WriteString("::")
			}
			bw.WriteString(p)
		}
		bw.WriteByte('\n')
	}
	for _, c := range list {
		obs := c.ObservabilityName
		if obs == "" {
			obs = c.Name
		}
		line(c.Name, "observability_name", obs)
		if c.EDSServiceName != "" {
			line(c.Name, "eds_service_name", c.EDSServiceName)
		}
		line(c.Name, "added_via_api", strconv.FormatBool(c.AddedViaAPI))
		for _, h := range c.Hosts {
			for _, st := range h.Stats {
				line(c.Name, h.Address, st.Name, strconv.FormatUint(st.Value, 10))
			}
			line(c.Name, h.Address, "hostname", h.Hostname)
			line(c.Name, h.Address, "health_flags", h.Health.flags())
			line(c.Name, h.Address, "weight", strconv.FormatUint(uint64(h.Weight), 10))
			line(c.Name, h.Address, "region", h.Region)
			line(c.Name, h.Address, "zone", h.Zone)
			line(c.Name, h.Address, "sub_zone", h.SubZone)
			line(c.Name, h.Address, "canary", "false")
			line(c.Name, h.Address, "priority", strconv.FormatUint(uint64(h.Priority), 10))
			line(c.Name, h.Address, "success_rate", "-1")
			line(c.Name, h.Address, "local_origin_success_rate", "-1")
		}
	}
	_ = bw.Flush()
}

// clustersMessage is /clusters?format=json: Envoy's envoy.admin.v3.Clusters, which
// istioctl proxy-config endpoint reads.
func clustersMessage(list []ClusterStatus) *Message {
	statuses := make([]*Message, 0, len(list))
	for _, c := range list {
		hosts := make([]*Message, 0, len(c.Hosts))
		for _, h := range c.Hosts {
			var locality proto.Message
			if h.Region != "" || h.Zone != "" || h.SubZone != "" {
				locality = &corev3.Locality{Region: h.Region, Zone: h.Zone, SubZone: h.SubZone}
			}
			stats := make([]*Message, 0, len(h.Stats))
			for _, st := range h.Stats {
				typ := Enum{0, "COUNTER"}
				if st.Gauge {
					typ = Enum{1, "GAUGE"}
				}
				stats = append(stats, &Message{Type: "envoy.admin.v3.SimpleMetric", Fields: []Field{
					{"type", typ}, {"value", st.Value}, {"name", st.Name},
				}})
			}
			eds := edsHealth(h.Health.EDS)
			hosts = append(hosts, &Message{Type: "envoy.admin.v3.HostStatus", Fields: []Field{
				{"address", socketAddress(h.Address)},
				{"stats", stats},
				{"health_status", &Message{Type: "envoy.admin.v3.HostHealthStatus", Fields: []Field{
					{"failed_active_health_check", h.Health.FailedActiveHC},
					{"failed_outlier_check", h.Health.FailedOutlierCheck},
					{"eds_health_status", Enum{int32(eds), eds.String()}},
					{"pending_dynamic_removal", h.Health.PendingDynamicRemoval},
					{"pending_active_hc", h.Health.PendingActiveHC},
					{"active_hc_timeout", h.Health.ActiveHCTimeout},
				}}},
				{"weight", h.Weight},
				{"hostname", h.Hostname},
				{"priority", h.Priority},
				{"locality", locality},
			}})
		}
		statuses = append(statuses, &Message{Type: "envoy.admin.v3.ClusterStatus", Fields: []Field{
			{"name", c.Name},
			{"added_via_api", c.AddedViaAPI},
			{"host_statuses", hosts},
			{"observability_name", c.ObservabilityName},
			{"eds_service_name", c.EDSServiceName},
		}})
	}
	return &Message{Type: "envoy.admin.v3.Clusters", Fields: []Field{{"cluster_statuses", statuses}}}
}

func edsHealth(s string) corev3.HealthStatus {
	if s == "" {
		return corev3.HealthStatus_HEALTHY
	}
	if v, ok := corev3.HealthStatus_value[s]; ok {
		return corev3.HealthStatus(v)
	}
	return corev3.HealthStatus_UNKNOWN
}

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// A pipe or an address without a port.
		return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: hostport}}}
	}
	p, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}
}

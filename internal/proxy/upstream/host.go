package upstream

import (
	"net/netip"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
	"github.com/weft-mesh/weft/internal/proxy/upstream/outlier"
	"github.com/weft-mesh/weft/internal/proxy/upstream/pool"
)

// Host is one upstream endpoint of a cluster. A Host keeps its identity (pools,
// counters, health and outlier state) across EDS and DNS updates that keep its address,
// as Envoy's hosts do; what an update may change (weight, priority, locality, EDS
// health_status) is read atomically.
type Host struct {
	addr    string         // "ip:port"; "name:port" for LOGICAL_DNS
	ap      netip.AddrPort // zero for LOGICAL_DNS
	cluster *Cluster

	// pools[0] is the cluster's protocol; with use_downstream_protocol_config
	// pools[1] is the HTTP/2 one.
	pools [2]*pool.Pool

	meta atomic.Pointer[hostMeta]

	hcFailed atomic.Bool // failed_active_hc

	// od is the host's outlier detection state (failed_outlier_check); nil when the
	// cluster has no outlier_detection (its methods are nil-safe).
	od *outlier.HostState

	// used marks an ORIGINAL_DST host picked since the last cleanup.
	used atomic.Bool

	rqTotal   atomic.Uint64
	rqSuccess atomic.Uint64
	rqError   atomic.Uint64
}

// hostMeta is what an endpoint update may change; replaced whole.
type hostMeta struct {
	weight   uint32
	priority uint32
	locality *corev3.Locality
	locKey   string
	locW     uint32
	status   corev3.HealthStatus // EDS health_status
	edsDown  bool                // status keeps the host out of balancing
	hcPort   uint32
	socket   int
	hostname string
}

var _ lb.Host = (*Host)(nil)

// Addr is the host's address, "ip:port" ("name:port" for a LOGICAL_DNS host).
func (h *Host) Addr() string { return h.addr }

// Key identifies the host for hashing.
func (h *Host) Key() string { return h.addr }

// AddrPort is the host's IP address and port; zero for a LOGICAL_DNS host.
func (h *Host) AddrPort() netip.AddrPort { return h.ap }

// Weight is the endpoint's load_balancing_weight.
func (h *Host) Weight() uint32 { return h.meta.Load().weight }

// Hostname is the endpoint's hostname (EDS endpoint.hostname, or the DNS name of a
// STRICT_DNS / LOGICAL_DNS host), "" when unknown; the router's auto_host_rewrite uses
// it.
func (h *Host) Hostname() string { return h.meta.Load().hostname }

// Priority is the endpoint's priority level.
func (h *Host) Priority() uint32 { return h.meta.Load().priority }

// Locality is the endpoint's locality, nil when unset.
func (h *Host) Locality() *corev3.Locality { return h.meta.Load().locality }

// Available reports whether balancers may pick the host: healthy by EDS status and by
// active health checks, and not ejected by outlier detection.
func (h *Host) Available() bool {
	return !h.hcFailed.Load() && !h.od.Ejected() && !h.meta.Load().edsDown
}

// Healthy is Available without outlier ejection (Envoy's "healthy" of /clusters).
func (h *Host) Healthy() bool {
	return !h.hcFailed.Load() && !h.meta.Load().edsDown
}

// ActiveRequests is the number of requests in flight to the host.
func (h *Host) ActiveRequests() int64 {
	n := h.pools[0].ActiveRequests()
	if h.pools[1] != nil {
		n += h.pools[1].ActiveRequests()
	}
	return n
}

// ActiveConnections is the number of connections open to the host.
func (h *Host) ActiveConnections() int64 {
	n := h.pools[0].ActiveConnections()
	if h.pools[1] != nil {
		n += h.pools[1].ActiveConnections()
	}
	return n
}

// Observe reports the outcome of one request for outlier detection and the host's
// counters: the HTTP status (0 when the request failed before a response) and whether
// it was a local-origin failure (connect failure, timeout, reset).
func (h *Host) Observe(status int, localOriginFailure bool) {
	if status >= 500 || status == 0 || localOriginFailure {
		h.rqError.Add(1)
	} else {
		h.rqSuccess.Add(1)
	}
	h.od.Observe(status, localOriginFailure)
}

// drain closes the host's idle connections now and the others when their requests end.
func (h *Host) drain() {
	for _, p := range h.pools {
		if p != nil {
			p.Drain()
		}
	}
}

func (h *Host) close() {
	for _, p := range h.pools {
		if p != nil {
			p.Close()
		}
	}
}

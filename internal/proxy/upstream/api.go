// Package upstream holds the proxy's clusters: how their hosts are discovered (STATIC,
// EDS, STRICT_DNS, LOGICAL_DNS, ORIGINAL_DST), balanced (package lb), checked (package
// health), ejected (package outlier) and reached (package pool, circuit breakers, upstream
// TLS). The router and the TCP proxy ask a Cluster for a host and a connection or a round
// trip; everything else happens here.
package upstream

// This file declares the API the router, the TCP proxy, admin and the xDS glue code
// against. Keep these signatures; add what you need beside them.
//
//	type Manager struct{ ... }
//	func NewManager(opts Options) *Manager
//	type Options struct {
//		Secrets *tlsctx.Store  // SDS and static secrets for UpstreamTlsContext
//		Stats   *stats.Store
//		Log     *slog.Logger
//		Resolver *net.Resolver // nil: net.DefaultResolver (STRICT_DNS / LOGICAL_DNS)
//	}
//	// Update replaces the whole set of clusters (CDS is state of the world). It validates
//	// every cluster first and changes nothing when one is invalid (the error names it).
//	// A cluster whose proto is unchanged keeps its hosts, pools, health and outlier state.
//	func (m *Manager) Update(clusters []*clusterv3.Cluster) error
//	// UpdateEndpoints applies EDS ClusterLoadAssignments (by cluster_name, which is the
//	// cluster's eds_cluster_config.service_name or else its name). Assignments for
//	// unknown clusters are kept and applied when the cluster arrives.
//	func (m *Manager) UpdateEndpoints(cla []*endpointv3.ClusterLoadAssignment) error
//	func (m *Manager) Get(name string) *Cluster          // nil when unknown
//	func (m *Manager) EDSNames() []string                 // sorted EDS service names to subscribe to
//	func (m *Manager) SecretNames() []string              // sorted SDS names the clusters use
//	func (m *Manager) Snapshot() []ClusterStatus          // for admin /clusters
//	func (m *Manager) Close()
//
//	type Cluster struct{ ... }
//	func (c *Cluster) Name() string
//	// Pick chooses a host (priority, locality, lb policy, skipping unavailable and
//	// excluded hosts). ErrNoHealthyUpstream when there is none.
//	func (c *Cluster) Pick(ctx *lb.Context, origDst netip.AddrPort) (*Host, error)
//	// RoundTrip sends req to h through the host's pool (HTTP/1.1 keep-alive or HTTP/2
//	// multiplexed, by the cluster's protocol options; downstream protocol when
//	// use_downstream_protocol_config), under the cluster's circuit breakers. It returns
//	// ErrOverflow (wrapped) when a breaker is open, and an error wrapping
//	// ErrConnectFailure when no connection could be made. req.Context() bounds it.
//	func (c *Cluster) RoundTrip(req *http.Request, h *Host) (*http.Response, error)
//	// Dial opens a TCP (or upstream TLS) connection to h for the TCP proxy and for
//	// WebSocket/CONNECT upgrades, under the max_connections breaker.
//	func (c *Cluster) Dial(ctx context.Context, h *Host) (net.Conn, error)
//	// TryRetry takes a slot of the max_retries breaker; ok false when it is full.
//	func (c *Cluster) TryRetry() (release func(), ok bool)
//	func (c *Cluster) Stats() *ClusterStats // counters named as Envoy's cluster.<name>.*
//
//	type Host struct{ ... }  // implements lb.Host
//	func (h *Host) Addr() string
//	// Observe reports the outcome of one request for outlier detection: the HTTP status
//	// (0 when the request failed before a response) and whether it was a local-origin
//	// failure (connect failure, timeout, reset).
//	func (h *Host) Observe(status int, localOriginFailure bool)
//
//	var ErrNoHealthyUpstream, ErrOverflow, ErrConnectFailure error

// Additions beside the contract (implemented in this package):
//
//	Options.MaxIdlePerHost int                  // idle HTTP/1.1 connections kept per host; 0 = all
//	func (m *Manager) Names() []string          // sorted cluster names
//	func (c *Cluster) Warmed() <-chan struct{}  // closed once the cluster has its first hosts
//	func (c *Cluster) Hosts() []*Host           // current host set (admin, tests)
//	func (c *Cluster) Status() ClusterStatus    // one cluster of Snapshot
//	func (c *Cluster) IsOriginalDst() bool
//	func (c *Cluster) OriginalDstHeader() string // use_http_header's header name, "" when off
//	func (c *Cluster) OriginalDst(h http.Header, connDst netip.AddrPort) netip.AddrPort
//	func (h *Host) Key() string; Weight() uint32; Available() bool; ActiveRequests() int64 // lb.Host
//	func (h *Host) AddrPort() netip.AddrPort; Hostname() string; Priority() uint32
//	func (h *Host) Locality() *corev3.Locality; Healthy() bool; ActiveConnections() int64
//	type ClusterStats struct{ Pool *pool.Stats; MembershipHealthy, ...; UpstreamRqRetry, UpstreamRqTimeout ... }
//	func (s *ClusterStats) RecordStatus(code int) // upstream_rq_<code>, upstream_rq_<N>xx
//	type ClusterStatus struct{ Name, Type, EDSServiceName, LbPolicy; breaker thresholds; Hosts []HostStatus }
//	type HostStatus struct{ Address, Weight, Priority, Region/Zone/SubZone, Healthy,
//		FailedActiveHC, FailedOutlierCheck, EDSHealthStatus, RqTotal, RqSuccess, RqError,
//		CxActive, RqActive }; func (HostStatus) HealthFlags() string // Envoy's health_flags

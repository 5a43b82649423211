package upstream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
	"github.com/weft-mesh/weft/internal/proxy/upstream/health"
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
	"github.com/weft-mesh/weft/internal/proxy/upstream/outlier"
	"github.com/weft-mesh/weft/internal/proxy/upstream/pool"
)

// Extension names and type URLs the cluster config understands.
const (
	httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	tcpProtocolOptionsName  = "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"
	tlsSocketName           = "envoy.transport_sockets.tls"
	rawSocketName           = "envoy.transport_sockets.raw_buffer"
	tlsContextType          = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	rawBufferType           = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
	transportSocketMatchKey = "envoy.transport_socket_match"
	defaultOrigDstHeader    = "x-envoy-original-dst-host"
)

// Envoy defaults of cluster fields.
const (
	defaultDNSRefreshRate  = 5 * time.Second // dns_refresh_rate
	defaultCleanupInterval = 5 * time.Second // cleanup_interval (ORIGINAL_DST)
	// defaultOverprovisioning is ClusterLoadAssignment.policy.overprovisioning_factor's
	// default, in percent.
	defaultOverprovisioning = 140
)

// clusterConfig is a Cluster proto compiled once per version: everything the request
// path needs, with defaults applied.
type clusterConfig struct {
	name     string
	typ      clusterv3.Cluster_DiscoveryType
	edsName  string // eds_cluster_config.service_name, else the name (EDS only)
	lbPolicy clusterv3.Cluster_LbPolicy

	connectTimeout time.Duration
	protocol       pool.Protocol
	useDownstream  bool // use_downstream_protocol_config / protocol_selection
	idleTimeout    time.Duration
	maxReqPerConn  uint32
	maxStreams     uint32
	thresholds     pool.Thresholds

	// sockets[0] is the cluster's transport_socket; sockets[i+1] is
	// transport_socket_matches[i]. A nil tls means plaintext.
	sockets []socketConfig

	dnsRefresh      time.Duration // STRICT_DNS / LOGICAL_DNS dns_refresh_rate
	dnsFamily       clusterv3.Cluster_DnsLookupFamily
	cleanupInterval time.Duration // ORIGINAL_DST cleanup_interval
	origDstHeader   string        // "" unless original_dst_lb_config.use_http_header
	origDstPort     uint32        // original_dst_lb_config.upstream_port_override

	// endpoints from load_assignment (STATIC, STRICT_DNS, LOGICAL_DNS).
	endpoints []endpointSpec
	overprov  uint32 // load_assignment.policy.overprovisioning_factor

	lb          lb.Settings // lb_policy / load_balancing_policy, common_lb_config
	secretNames []string

	outlier      *clusterv3.OutlierDetection // nil without outlier_detection
	healthChecks []*corev3.HealthCheck
}

// matchField is one field of a transport socket match. A match holds one or two
// (Istio's: tlsMode), so a slice, 32 bytes a field, instead of a map of some 300 bytes,
// for each of a mesh's clusters.
type matchField struct{ key, value string }

type socketConfig struct {
	name    string
	match   []matchField // transport_socket_matches[i].match (string values)
	cfg     *tls.Config
	secrets []string // the SDS secrets of its UpstreamTlsContext
}

// endpointSpec is one lb_endpoint of a load assignment.
type endpointSpec struct {
	host     string // IP, or DNS name for the DNS types
	port     uint32
	weight   uint32
	priority uint32
	locality *corev3.Locality
	locKey   string
	locW     uint32 // locality load_balancing_weight
	status   corev3.HealthStatus
	hcPort   uint32 // health_check_config.port_value
	// socketMatch is the endpoint's metadata under envoy.transport_socket_match, all
	// of its metadata a cluster reads (the rest is not kept).
	socketMatch map[string]*structpb.Value
	hostname    string // endpoint.hostname; the DNS name for the DNS types
}

func (e *endpointSpec) addr() string {
	return joinHostPort(e.host, e.port)
}

func joinHostPort(host string, port uint32) string {
	if strings.IndexByte(host, ':') >= 0 {
		return "[" + host + "]:" + uitoa(port)
	}
	return host + ":" + uitoa(port)
}

func uitoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return string(b[i:])
}

// errs collects the violations of one cluster with their field paths.
type errs struct {
	cluster string
	list    []error
}

func (e *errs) add(field, format string, args ...any) {
	e.list = append(e.list, fmt.Errorf("cluster %q: %s: %s", e.cluster, field, fmt.Sprintf(format, args...)))
}

func (e *errs) wrap(field string, err error) {
	e.list = append(e.list, fmt.Errorf("cluster %q: %s: %w", e.cluster, field, err))
}

func (e *errs) err() error { return errors.Join(e.list...) }

// splitJoined returns the errors an errors.Join made, or err alone.
func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// compileCluster validates c and turns it into a clusterConfig. secrets resolves the
// upstream TLS contexts (nil: a store with no secret; SDS names resolve at handshake).
func compileCluster(c *clusterv3.Cluster, secrets *tlsctx.Store) (*clusterConfig, error) {
	e := &errs{cluster: c.GetName()}
	cfg := &clusterConfig{
		name:            c.GetName(),
		typ:             c.GetType(),
		lbPolicy:        c.GetLbPolicy(),
		connectTimeout:  pool.DefaultConnectTimeout,
		dnsRefresh:      defaultDNSRefreshRate,
		cleanupInterval: defaultCleanupInterval,
		overprov:        defaultOverprovisioning,
		dnsFamily:       c.GetDnsLookupFamily(),
	}
	if cfg.name == "" {
		e.cluster = ""
		e.add("name", "must not be empty")
	}
	if ct := c.GetClusterType(); ct != nil {
		e.add("cluster_type", "custom cluster type %q is not supported", ct.GetName())
	}
	switch cfg.typ {
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS,
		clusterv3.Cluster_EDS, clusterv3.Cluster_ORIGINAL_DST:
	default:
		e.add("type", "unsupported discovery type %v", cfg.typ)
	}
	if cfg.typ == clusterv3.Cluster_EDS {
		cfg.edsName = c.GetEdsClusterConfig().GetServiceName()
		if cfg.edsName == "" {
			cfg.edsName = cfg.name
		}
	}

	// lb_policy (or load_balancing_policy) by package lb. ORIGINAL_DST clusters pick
	// the host themselves (CLUSTER_PROVIDED).
	settings, err := lb.FromCluster(c)
	if err != nil {
		for _, one := range splitJoined(err) {
			e.list = append(e.list, fmt.Errorf("cluster %q: %w", cfg.name, one))
		}
	}
	cfg.lb = settings
	provided := settings.Policy.Policy == lb.ClusterProvided
	switch {
	case cfg.typ == clusterv3.Cluster_ORIGINAL_DST && !provided && err == nil:
		e.add("lb_policy", "ORIGINAL_DST clusters need CLUSTER_PROVIDED, not %v", cfg.lbPolicy)
	case cfg.typ != clusterv3.Cluster_ORIGINAL_DST && provided:
		e.add("lb_policy", "CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters")
	}
	// outlier_detection and health_checks are validated by their packages; the
	// cluster builds the stateful objects once the whole update is valid.
	cfg.outlier, cfg.healthChecks = c.GetOutlierDetection(), c.GetHealthChecks()
	if _, err := outlier.New(cfg.outlier, outlier.Options{}); err != nil {
		for _, one := range splitJoined(err) {
			e.list = append(e.list, fmt.Errorf("cluster %q: %w", cfg.name, one))
		}
	}
	if _, err := health.New(cfg.healthChecks, health.Options{Cluster: cfg.name}); err != nil {
		for _, one := range splitJoined(err) {
			e.list = append(e.list, fmt.Errorf("cluster %q: %w", cfg.name, one))
		}
	}
	if c.GetLbSubsetConfig() != nil && len(c.GetLbSubsetConfig().GetSubsetSelectors()) > 0 {
		e.add("lb_subset_config", "subset load balancing is not supported")
	}

	if d := c.GetConnectTimeout(); d != nil {
		if !d.IsValid() || d.AsDuration() <= 0 {
			e.add("connect_timeout", "must be greater than 0")
		} else {
			cfg.connectTimeout = d.AsDuration()
		}
	}
	if d := c.GetDnsRefreshRate(); d != nil {
		if !d.IsValid() || d.AsDuration() < time.Millisecond {
			e.add("dns_refresh_rate", "must be at least 1ms")
		} else {
			cfg.dnsRefresh = d.AsDuration()
		}
	}
	if d := c.GetCleanupInterval(); d != nil {
		if !d.IsValid() || d.AsDuration() <= 0 {
			e.add("cleanup_interval", "must be greater than 0")
		} else {
			cfg.cleanupInterval = d.AsDuration()
		}
	}
	if od := c.GetOriginalDstLbConfig(); od != nil {
		if od.GetUseHttpHeader() {
			cfg.origDstHeader = defaultOrigDstHeader
			if n := od.GetHttpHeaderName(); n != "" {
				cfg.origDstHeader = strings.ToLower(n)
			}
		}
		if p := od.GetUpstreamPortOverride(); p != nil {
			if p.GetValue() == 0 || p.GetValue() > 65535 {
				e.add("original_dst_lb_config.upstream_port_override", "must be 1..65535")
			}
			cfg.origDstPort = p.GetValue()
		}
	}

	compileBreakers(c, cfg)
	compileProtocol(c, cfg, e)
	compileSockets(c, cfg, secrets, e)
	compileLoadAssignment(c, cfg, e)
	if err := e.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// compileBreakers reads circuit_breakers.thresholds for the DEFAULT priority (Envoy
// keeps a separate set for HIGH; weft's routes are all DEFAULT). Unset fields keep
// Envoy's defaults; a value is taken literally (0 allows nothing).
func compileBreakers(c *clusterv3.Cluster, cfg *clusterConfig) {
	cfg.thresholds = pool.DefaultThresholds()
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if v := t.GetMaxConnections(); v != nil {
			cfg.thresholds.MaxConnections = v.GetValue()
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			cfg.thresholds.MaxPendingRequests = v.GetValue()
		}
		if v := t.GetMaxRequests(); v != nil {
			cfg.thresholds.MaxRequests = v.GetValue()
		}
		if v := t.GetMaxRetries(); v != nil {
			cfg.thresholds.MaxRetries = v.GetValue()
		}
	}
}

// compileProtocol picks the upstream HTTP protocol: typed_extension_protocol_options
// envoy.extensions.upstreams.http.v3.HttpProtocolOptions (explicit_http_config,
// use_downstream_protocol_config, auto_config), else the deprecated cluster fields
// (http2_protocol_options, protocol_selection, common_http_protocol_options,
// max_requests_per_connection).
func compileProtocol(c *clusterv3.Cluster, cfg *clusterConfig, e *errs) {
	cfg.protocol = pool.HTTP1
	common := c.GetCommonHttpProtocolOptions()
	var h2 *corev3.Http2ProtocolOptions
	if c.GetHttp2ProtocolOptions() != nil {
		cfg.protocol = pool.HTTP2
		h2 = c.GetHttp2ProtocolOptions()
	}
	if c.GetProtocolSelection() == clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL {
		cfg.useDownstream = true
	}
	if v := c.GetMaxRequestsPerConnection(); v != nil {
		cfg.maxReqPerConn = v.GetValue()
	}
	for name, a := range c.GetTypedExtensionProtocolOptions() {
		field := fmt.Sprintf("typed_extension_protocol_options[%q]", name)
		switch name {
		case httpProtocolOptionsName:
			var o httpv3.HttpProtocolOptions
			if err := a.UnmarshalTo(&o); err != nil {
				e.wrap(field, err)
				continue
			}
			if o.GetCommonHttpProtocolOptions() != nil {
				common = o.GetCommonHttpProtocolOptions()
			}
			switch {
			case o.GetExplicitHttpConfig() != nil:
				x := o.GetExplicitHttpConfig()
				switch {
				case x.GetHttp2ProtocolOptions() != nil:
					cfg.protocol, h2 = pool.HTTP2, x.GetHttp2ProtocolOptions()
				case x.GetHttp3ProtocolOptions() != nil:
					e.add(field+".explicit_http_config.http3_protocol_options", "HTTP/3 upstreams are not supported")
				default:
					cfg.protocol = pool.HTTP1
				}
			case o.GetUseDownstreamProtocolConfig() != nil:
				cfg.useDownstream = true
				cfg.protocol = pool.HTTP1
				h2 = o.GetUseDownstreamProtocolConfig().GetHttp2ProtocolOptions()
			case o.GetAutoConfig() != nil:
				if o.GetAutoConfig().GetHttp3ProtocolOptions() != nil {
					e.add(field+".auto_config.http3_protocol_options", "HTTP/3 upstreams are not supported")
				}
				cfg.protocol = pool.Auto
				h2 = o.GetAutoConfig().GetHttp2ProtocolOptions()
			}
		case tcpProtocolOptionsName:
			// TCP proxy options (idle_timeout of pooled TCP connections): weft's TCP
			// proxy dials per downstream connection, nothing to apply.
		default:
			e.add(field, "unknown protocol options extension")
		}
	}
	if common != nil {
		if d := common.GetIdleTimeout(); d != nil {
			// idle_timeout 0 disables it in Envoy.
			cfg.idleTimeout = d.AsDuration()
			if cfg.idleTimeout == 0 {
				cfg.idleTimeout = 100 * 365 * 24 * time.Hour
			}
		}
		if v := common.GetMaxRequestsPerConnection(); v != nil {
			cfg.maxReqPerConn = v.GetValue()
		}
	}
	if v := h2.GetMaxConcurrentStreams(); v != nil {
		cfg.maxStreams = v.GetValue()
	}
}

// compileSockets reads transport_socket and transport_socket_matches.
func compileSockets(c *clusterv3.Cluster, cfg *clusterConfig, secrets *tlsctx.Store, e *errs) {
	if secrets == nil {
		secrets = tlsctx.NewStore()
	}
	def, ok := compileSocket(c.GetTransportSocket(), "transport_socket", secrets, e)
	if !ok {
		return
	}
	cfg.sockets = append(cfg.sockets, def)
	for i, m := range c.GetTransportSocketMatches() {
		field := fmt.Sprintf("transport_socket_matches[%d]", i)
		sc, ok := compileSocket(m.GetTransportSocket(), field+".transport_socket", secrets, e)
		if !ok {
			continue
		}
		sc.name = m.GetName()
		for k, v := range m.GetMatch().GetFields() {
			sc.match = append(sc.match, matchField{k, structValueString(v)})
		}
		cfg.sockets = append(cfg.sockets, sc)
	}
	seen := map[string]bool{}
	for _, s := range cfg.sockets {
		for _, n := range s.secrets {
			if !seen[n] {
				seen[n] = true
				cfg.secretNames = append(cfg.secretNames, n)
			}
		}
	}
}

func structValueString(v *structpb.Value) string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue
	case *structpb.Value_BoolValue:
		if k.BoolValue {
			return "true"
		}
		return "false"
	case *structpb.Value_NumberValue:
		return fmt.Sprint(k.NumberValue)
	}
	return v.String()
}

func compileSocket(ts *corev3.TransportSocket, field string, secrets *tlsctx.Store, e *errs) (socketConfig, bool) {
	if ts == nil {
		return socketConfig{}, true
	}
	a := ts.GetTypedConfig()
	switch {
	case ts.GetName() == rawSocketName || (a != nil && a.GetTypeUrl() == rawBufferType):
		return socketConfig{}, true
	case ts.GetName() == tlsSocketName || (a != nil && a.GetTypeUrl() == tlsContextType):
		var utc tlsv3.UpstreamTlsContext
		if a == nil {
			e.add(field+".typed_config", "UpstreamTlsContext is required")
			return socketConfig{}, false
		}
		if err := anyTo(a, &utc); err != nil {
			e.wrap(field+".typed_config", err)
			return socketConfig{}, false
		}
		tc, err := tlsctx.Client(&utc, secrets)
		if err != nil {
			e.wrap(field+".typed_config", err)
			return socketConfig{}, false
		}
		return socketConfig{cfg: tc, secrets: tlsctx.SecretNames(utc.GetCommonTlsContext())}, true
	}
	e.add(field+".name", "unsupported transport socket %q", ts.GetName())
	return socketConfig{}, false
}

func anyTo(a *anypb.Any, m *tlsv3.UpstreamTlsContext) error {
	if a.GetTypeUrl() != tlsContextType {
		return fmt.Errorf("type %q is not UpstreamTlsContext", a.GetTypeUrl())
	}
	return a.UnmarshalTo(m)
}

// compileLoadAssignment reads load_assignment for the types that carry their hosts in
// the cluster.
func compileLoadAssignment(c *clusterv3.Cluster, cfg *clusterConfig, e *errs) {
	la := c.GetLoadAssignment()
	switch cfg.typ {
	case clusterv3.Cluster_EDS:
		return // endpoints come from EDS; an inline load_assignment is ignored as in Envoy
	case clusterv3.Cluster_ORIGINAL_DST:
		if len(la.GetEndpoints()) > 0 {
			e.add("load_assignment", "ORIGINAL_DST clusters must not list endpoints")
		}
		return
	}
	eps, bad := compileEndpoints(la, cfg.typ != clusterv3.Cluster_STATIC, "load_assignment")
	for _, err := range bad {
		e.list = append(e.list, fmt.Errorf("cluster %q: %w", cfg.name, err))
	}
	if len(bad) > 0 {
		return
	}
	if cfg.typ == clusterv3.Cluster_LOGICAL_DNS && len(eps) != 1 {
		e.add("load_assignment", "LOGICAL_DNS clusters need exactly one endpoint, got %d", len(eps))
	}
	cfg.endpoints = eps
	if v := la.GetPolicy().GetOverprovisioningFactor(); v != nil {
		cfg.overprov = v.GetValue()
	}
}

// compileEndpoints turns a ClusterLoadAssignment into endpoint specs. names allows DNS
// names as addresses (STRICT_DNS, LOGICAL_DNS); otherwise they must be IPs. Each error
// starts with its field path.
func compileEndpoints(la *endpointv3.ClusterLoadAssignment, names bool, field string) ([]endpointSpec, []error) {
	var list []error
	var out []endpointSpec
	for i, lle := range la.GetEndpoints() {
		lf := fmt.Sprintf("%s.endpoints[%d]", field, i)
		locW := uint32(0)
		if w := lle.GetLoadBalancingWeight(); w != nil {
			locW = w.GetValue()
			if locW == 0 {
				list = append(list, fmt.Errorf("%s.load_balancing_weight: must be at least 1", lf))
			}
		}
		locKey := localityKey(lle.GetLocality())
		for j, lbe := range lle.GetLbEndpoints() {
			ef := fmt.Sprintf("%s.lb_endpoints[%d]", lf, j)
			if lbe.GetEndpointName() != "" {
				list = append(list, fmt.Errorf("%s.endpoint_name: named endpoints are not supported", ef))
				continue
			}
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				list = append(list, fmt.Errorf("%s.endpoint.address: a socket_address is required", ef))
				continue
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				list = append(list, fmt.Errorf("%s.endpoint.address.socket_address.protocol: only TCP is supported", ef))
				continue
			}
			if sa.GetNamedPort() != "" || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
				list = append(list, fmt.Errorf("%s.endpoint.address.socket_address.port_value: must be 1..65535", ef))
				continue
			}
			host := sa.GetAddress()
			if ip, err := netip.ParseAddr(host); err == nil {
				host = ip.Unmap().String()
			} else if !names || host == "" {
				list = append(list, fmt.Errorf("%s.endpoint.address.socket_address.address: %q is not an IP address", ef, host))
				continue
			}
			w := uint32(1)
			if v := lbe.GetLoadBalancingWeight(); v != nil {
				if v.GetValue() == 0 {
					list = append(list, fmt.Errorf("%s.load_balancing_weight: must be at least 1", ef))
					continue
				}
				w = v.GetValue()
			}
			out = append(out, endpointSpec{
				host:        host,
				port:        sa.GetPortValue(),
				weight:      w,
				priority:    lle.GetPriority(),
				locality:    lle.GetLocality(),
				locKey:      locKey,
				locW:        locW,
				status:      lbe.GetHealthStatus(),
				hcPort:      lbe.GetEndpoint().GetHealthCheckConfig().GetPortValue(),
				socketMatch: lbe.GetMetadata().GetFilterMetadata()[transportSocketMatchKey].GetFields(),
				hostname:    lbe.GetEndpoint().GetHostname(),
			})
		}
	}
	return out, list
}

func localityKey(l *corev3.Locality) string {
	if l == nil {
		return ""
	}
	return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
}

// edsUnhealthy reports whether an EDS health_status keeps the host out of balancing
// (UNHEALTHY, DRAINING, TIMEOUT); UNKNOWN, HEALTHY and DEGRADED are picked.
func edsUnhealthy(s corev3.HealthStatus) bool {
	switch s {
	case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
		return true
	}
	return false
}

// socketFor returns the index into cfg.sockets of the transport socket for an endpoint:
// the first transport_socket_matches entry whose match fields all equal the endpoint's
// filter_metadata["envoy.transport_socket_match"], else the cluster's transport_socket.
func (cfg *clusterConfig) socketFor(fields map[string]*structpb.Value) int {
	if len(cfg.sockets) <= 1 {
		return 0
	}
	for i := 1; i < len(cfg.sockets); i++ {
		ok := true
		for _, f := range cfg.sockets[i].match {
			v, found := fields[f.key]
			if !found || structValueString(v) != f.value {
				ok = false
				break
			}
		}
		if ok {
			return i
		}
	}
	return 0
}

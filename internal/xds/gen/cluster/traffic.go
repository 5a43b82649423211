package cluster

import (
	"math"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/tcp/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/registry"
)

// Extension names of the cluster protocol options (Envoy's well-known names).
const (
	httpOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	tcpOptionsName  = "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"
)

// Limits of the Envoy (and grpc-go) load balancer configs.
const (
	defaultMinRingSize = 1024            // Istio's minimumRingSize default
	maxRingSize        = 8 * 1024 * 1024 // ring_hash_lb_config.minimum_ring_size lte
	maxMaglevTable     = 5000011         // maglev_lb_config.table_size lte
)

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// defaultBreakers is what Istio sets on every cluster: every DEFAULT-priority threshold
// at the maximum, so that only a DestinationRule's connectionPool limits traffic (Envoy's
// own defaults, 1024 connections and 3 retries, would otherwise apply silently).
func defaultBreakers() *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections:     u32(math.MaxUint32),
		MaxPendingRequests: u32(math.MaxUint32),
		MaxRequests:        u32(math.MaxUint32),
		MaxRetries:         u32(math.MaxUint32),
		TrackRemaining:     true,
	}}}
}

// applyLB sets lb_policy from loadBalancer: simple policies map one to one (LEAST_CONN
// is LEAST_REQUEST), consistentHash picks RING_HASH (ringHash.minimumRingSize, default
// 1024) or MAGLEV (maglev.tableSize). Istio's default is LEAST_REQUEST; grpc-go's
// clusters get ROUND_ROBIN, and RING_HASH for any consistent hash (it has no MAGLEV).
// localityLbSetting.distribute turns on locality-weighted balancing (the weights are in
// the ClusterLoadAssignment).
func applyLB(c *clusterv3.Cluster, lb *networking.LoadBalancerSettings, grpc bool) {
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	if grpc {
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		if mg := ch.GetMaglev(); mg != nil && !grpc {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			if n := mg.GetTableSize(); n > 0 {
				c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
					TableSize: wrapperspb.UInt64(min(n, maxMaglevTable)),
				}}
			}
		} else {
			size := ch.GetRingHash().GetMinimumRingSize()
			if size == 0 {
				size = ch.GetMinimumRingSize() // deprecated top-level field
			}
			if size == 0 {
				size = defaultMinRingSize
			}
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(min(size, maxRingSize)),
			}}
		}
	} else if !grpc {
		switch lb.GetSimple() {
		case networking.LoadBalancerSettings_ROUND_ROBIN:
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		case networking.LoadBalancerSettings_RANDOM:
			c.LbPolicy = clusterv3.Cluster_RANDOM
		}
	}
	if !grpc && len(localitySetting(lb).GetDistribute()) > 0 {
		commonLB(c).LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
		}
	}
}

// localitySetting is the loadBalancer's localityLbSetting when it is enabled (Istio:
// enabled unless enabled: false).
func localitySetting(lb *networking.LoadBalancerSettings) *networking.LocalityLoadBalancerSetting {
	ls := lb.GetLocalityLbSetting()
	if ls == nil || (ls.GetEnabled() != nil && !ls.GetEnabled().GetValue()) {
		return nil
	}
	return ls
}

func commonLB(c *clusterv3.Cluster) *clusterv3.Cluster_CommonLbConfig {
	if c.CommonLbConfig == nil {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
	}
	return c.CommonLbConfig
}

// protocolOptions is what decides a cluster's upstream HTTP protocol options.
type protocolOptions struct {
	proto registry.Protocol
	http  *networking.ConnectionPoolSettings_HTTPSettings
	tcp   *networking.ConnectionPoolSettings_TCPSettings
}

// upstream HTTP protocol the options select.
type upstreamProto int

const (
	protoNone       upstreamProto = iota // TCP, TLS, HTTPS ports: bytes, not HTTP
	protoHTTP1                           // explicit HTTP/1.1
	protoHTTP2                           // explicit HTTP/2
	protoDownstream                      // use_downstream_protocol_config
)

func (o protocolOptions) upstream() upstreamProto {
	switch {
	case o.proto == registry.Unknown || (o.proto.IsHTTP() && o.http.GetUseClientProtocol()):
		// A sniffed port carries whatever the client speaks.
		return protoDownstream
	case o.proto.IsHTTP2():
		return protoHTTP2
	case o.proto == registry.HTTP && o.http.GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE:
		return protoHTTP2
	case o.proto == registry.HTTP:
		return protoHTTP1
	}
	return protoNone
}

// setProtocol writes typed_extension_protocol_options: HttpProtocolOptions for HTTP and
// sniffed ports (explicit HTTP/1.1 or HTTP/2, or the downstream protocol, with the
// connectionPool.http idle timeout, requests per connection, HTTP/2 streams and
// keepalive, and tcp.maxConnectionDuration), and TcpProtocolOptions for
// connectionPool.tcp.idleTimeout.
func setProtocol(c *clusterv3.Cluster, o protocolOptions) {
	opts := map[string]proto.Message{}
	if up := o.upstream(); up != protoNone {
		h := &httpv3.HttpProtocolOptions{}
		h2 := &corev3.Http2ProtocolOptions{}
		if n := o.http.GetMaxConcurrentStreams(); n > 0 {
			h2.MaxConcurrentStreams = u32(uint32(n))
		}
		if ka := o.http.GetHttp2KeepAlive(); ka != nil && ka.GetInterval() != nil {
			h2.ConnectionKeepalive = &corev3.KeepaliveSettings{Interval: ka.GetInterval(), Timeout: ka.GetTimeout()}
			if h2.ConnectionKeepalive.Timeout == nil {
				// Envoy requires a timeout; Istio's documented default is 3s.
				h2.ConnectionKeepalive.Timeout = durationpb.New(3e9)
			}
		}
		switch up {
		case protoHTTP1:
			h.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
			}}
		case protoHTTP2:
			h.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
			}}
		case protoDownstream:
			h.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: h2,
			}}
		}
		common := &corev3.HttpProtocolOptions{}
		set := false
		if d := o.http.GetIdleTimeout(); validDuration(d, true) {
			common.IdleTimeout, set = d, true
		}
		if n := o.http.GetMaxRequestsPerConnection(); n > 0 {
			common.MaxRequestsPerConnection, set = u32(uint32(n)), true
		}
		if d := o.tcp.GetMaxConnectionDuration(); validDuration(d, false) && d.AsDuration() > 0 {
			common.MaxConnectionDuration, set = d, true
		}
		if set {
			h.CommonHttpProtocolOptions = common
		}
		opts[httpOptionsName] = h
	}
	if d := o.tcp.GetIdleTimeout(); validDuration(d, true) {
		opts[tcpOptionsName] = &tcpv3.TcpProtocolOptions{IdleTimeout: d}
	}
	if len(opts) == 0 {
		return
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	for k, m := range opts {
		a, err := anypb.New(m)
		if err != nil {
			panic("cluster: marshal " + k + ": " + err.Error()) // a well-formed message always marshals
		}
		c.TypedExtensionProtocolOptions[k] = a
	}
}

// validDuration reports whether d is set and valid (and, with zeroOK, may be 0, which
// Envoy reads as "disabled" for idle timeouts).
func validDuration(d *durationpb.Duration, zeroOK bool) bool {
	if d == nil || d.CheckValid() != nil || d.AsDuration() < 0 {
		return false
	}
	return zeroOK || d.AsDuration() > 0
}

// applyPool translates connectionPool: tcp.maxConnections, http.http1MaxPendingRequests,
// http.http2MaxRequests and http.maxRetries into the DEFAULT circuit breaker thresholds
// (unset ones stay at Istio's maximum), tcp.connectTimeout, tcp.tcpKeepalive into
// upstream_connection_options, and the protocol options. grpc-go reads only
// max_requests.
func applyPool(c *clusterv3.Cluster, pool *networking.ConnectionPoolSettings, port registry.Protocol, grpc bool) {
	tcp, http := pool.GetTcp(), pool.GetHttp()
	if d := tcp.GetConnectTimeout(); validDuration(d, false) {
		c.ConnectTimeout = d
	}
	if grpc {
		if n := http.GetHttp2MaxRequests(); n > 0 {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxRequests: u32(uint32(n)),
			}}}
		}
		return
	}
	b := defaultBreakers()
	t := b.Thresholds[0]
	if n := tcp.GetMaxConnections(); n > 0 {
		t.MaxConnections = u32(uint32(n))
	}
	if n := http.GetHttp1MaxPendingRequests(); n > 0 {
		t.MaxPendingRequests = u32(uint32(n))
	}
	if n := http.GetHttp2MaxRequests(); n > 0 {
		t.MaxRequests = u32(uint32(n))
	}
	if n := http.GetMaxRetries(); n > 0 {
		t.MaxRetries = u32(uint32(n))
	}
	c.CircuitBreakers = b
	if ka := tcp.GetTcpKeepalive(); ka != nil {
		k := &corev3.TcpKeepalive{}
		if ka.GetProbes() > 0 {
			k.KeepaliveProbes = u32(ka.GetProbes())
		}
		if d := ka.GetTime(); validDuration(d, false) {
			k.KeepaliveTime = u32(seconds(d))
		}
		if d := ka.GetInterval(); validDuration(d, false) {
			k.KeepaliveInterval = u32(seconds(d))
		}
		c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: k}
	}
	setProtocol(c, protocolOptions{proto: port, http: http, tcp: tcp})
}

// seconds rounds a duration up to whole seconds (TCP keepalive options are in seconds),
// at least 1.
func seconds(d *durationpb.Duration) uint32 {
	s := (d.AsDuration() + 999_999_999) / 1e9
	if s < 1 {
		return 1
	}
	if s > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(s)
}

// applyOutlier translates outlierDetection as Istio does: consecutive5xxErrors and
// consecutiveGatewayErrors set the detector and turn its enforcement on (or off for 0);
// the deprecated consecutiveErrors means gateway errors only; interval 10s,
// baseEjectionTime 30s and maxEjectionPercent 10 unless given; minHealthPercent becomes
// the healthy panic threshold (0: never panic).
func applyOutlier(c *clusterv3.Cluster, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	out := &clusterv3.OutlierDetection{
		Interval:           durationpb.New(10e9),
		BaseEjectionTime:   durationpb.New(30e9),
		MaxEjectionPercent: u32(10),
	}
	enforce := func(v uint32) *wrapperspb.UInt32Value {
		if v > 0 {
			return u32(100)
		}
		return u32(0)
	}
	if n := od.GetConsecutiveErrors(); n > 0 {
		out.ConsecutiveGatewayFailure = u32(uint32(n))
		out.EnforcingConsecutiveGatewayFailure = u32(100)
		out.EnforcingConsecutive_5Xx = u32(0)
	}
	if v := od.GetConsecutive_5XxErrors(); v != nil {
		out.Consecutive_5Xx = u32(v.GetValue())
		out.EnforcingConsecutive_5Xx = enforce(v.GetValue())
	}
	if v := od.GetConsecutiveGatewayErrors(); v != nil {
		out.ConsecutiveGatewayFailure = u32(v.GetValue())
		out.EnforcingConsecutiveGatewayFailure = enforce(v.GetValue())
	}
	if od.GetSplitExternalLocalOriginErrors() {
		out.SplitExternalLocalOriginErrors = true
		if v := od.GetConsecutiveLocalOriginFailures(); v != nil {
			out.ConsecutiveLocalOriginFailure = u32(v.GetValue())
			out.EnforcingConsecutiveLocalOriginFailure = enforce(v.GetValue())
		}
	}
	if d := od.GetInterval(); validDuration(d, false) {
		out.Interval = d
	}
	if d := od.GetBaseEjectionTime(); validDuration(d, false) {
		out.BaseEjectionTime = d
		if d.AsDuration() > 300e9 {
			// Envoy rejects max_ejection_time (default 300s) below base_ejection_time.
			out.MaxEjectionTime = d
		}
	}
	if n := od.GetMaxEjectionPercent(); n > 0 {
		out.MaxEjectionPercent = u32(uint32(min(n, 100)))
	}
	c.OutlierDetection = out
	if n := od.GetMinHealthPercent(); n >= 0 {
		commonLB(c).HealthyPanicThreshold = &typev3.Percent{Value: float64(min(n, 100))}
	}
}

// sortedKeys returns a map's keys in order (config output never follows map order).
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortClusters(cs []*clusterv3.Cluster) {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].GetName() < cs[j].GetName() })
}

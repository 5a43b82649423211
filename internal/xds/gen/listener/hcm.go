package listener

import (
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
	"github.com/weft-mesh/weft/internal/xds/gen/security"
)

// Network filter names.
const (
	HTTPConnectionManager = "envoy.filters.network.http_connection_manager"
	TCPProxy              = "envoy.filters.network.tcp_proxy"
)

// Side says which traffic an HTTP connection manager carries.
type Side int

const (
	SideOutbound Side = iota // a sidecar's outbound (incl. the HTTP proxy listener)
	SideInbound              // a sidecar's inbound: traffic to its workload
	SideGateway              // a gateway server
	SideGRPC                 // a proxyless gRPC client's API listener
)

// FilterContext is where an HTTP filter chain is being built.
type FilterContext struct {
	Snapshot *snapshot.Snapshot
	Proxy    *node.Proxy
	Side     Side
	// Port is the port served: the inbound workload port, the outbound service port,
	// the gateway server port; 0 for the HTTP proxy listener (every port) and for the
	// inbound passthrough chain (ports the workload does not declare).
	Port uint32
}

// HTTPFilter is one entry of the HTTP filter chain.
type HTTPFilter struct {
	Name string
	// Config builds the filter's typed config for one connection manager; nil leaves
	// the filter out of that one.
	Config func(FilterContext) proto.Message
}

// httpFilters is the HTTP filter chain of every connection manager, in order; the
// router is last. To add a filter, add one line. Authentication and authorization come
// first, as in Istio: the JWT filter (it verifies tokens and gives RBAC the
// request.auth.* attributes), then one RBAC filter per action (audit, DENY, ALLOW).
var httpFilters = []HTTPFilter{
	{security.JWTAuthnFilter, jwtAuthnFilter},
	{security.HTTPRBACFilter, rbacFilter(security.Audit)},
	{security.HTTPRBACFilter, rbacFilter(security.Deny)},
	{security.HTTPRBACFilter, rbacFilter(security.Allow)},
	{route.FaultFilter, func(FilterContext) proto.Message { return &faultv3.HTTPFault{} }},
	{route.CorsFilter, corsFilter},
	{route.RouterFilter, func(FilterContext) proto.Message { return &routerv3.Router{} }},
}

// corsFilter is on every connection manager but a proxyless client's: grpc-go has no
// CORS filter and rejects a listener naming one.
func corsFilter(c FilterContext) proto.Message {
	if c.Side == SideGRPC {
		return nil
	}
	return &corsv3.Cors{}
}

// enforcesPolicy: the security policies of the proxy's workload apply to what this
// connection manager (or TCP chain) serves: a sidecar's inbound, a gateway's servers.
func enforcesPolicy(c FilterContext) bool {
	return c.Snapshot != nil && c.Proxy != nil && (c.Side == SideInbound || c.Side == SideGateway)
}

// jwtAuthnFilter is on when a RequestAuthentication with rules applies to the workload.
func jwtAuthnFilter(c FilterContext) proto.Message {
	if !enforcesPolicy(c) {
		return nil
	}
	if j := security.JWTAuthn(c.Snapshot, c.Proxy); j != nil {
		return j
	}
	return nil
}

// rbacFilter is on when an AuthorizationPolicy of action a applies to the workload.
func rbacFilter(a security.Action) func(FilterContext) proto.Message {
	return func(c FilterContext) proto.Message {
		if !enforcesPolicy(c) {
			return nil
		}
		if r := security.HTTPRBAC(c.Snapshot, c.Proxy, a); r != nil {
			return r
		}
		return nil
	}
}

// TCPFilter is one network filter placed before tcp_proxy on a chain.
type TCPFilter struct {
	Name string
	// Config builds the filter's typed config for one chain; nil leaves it out.
	Config func(FilterContext) proto.Message
}

// tcpFilters are the network filters of TCP chains before tcp_proxy, in order: on the
// inbound passthrough chain of a STRICT workload, a filter that refuses the plaintext it
// carries; then the workload's network RBAC, one filter per action as for HTTP.
var tcpFilters = []TCPFilter{
	{security.NetworkRBACFilter, strictPassthrough},
	{security.NetworkRBACFilter, networkRBAC(security.Audit)},
	{security.NetworkRBACFilter, networkRBAC(security.Deny)},
	{security.NetworkRBACFilter, networkRBAC(security.Allow)},
}

func networkRBAC(a security.Action) func(FilterContext) proto.Message {
	return func(c FilterContext) proto.Message {
		if !enforcesPolicy(c) {
			return nil
		}
		if r := security.NetworkRBAC(c.Snapshot, c.Proxy, a); r != nil {
			return r
		}
		return nil
	}
}

// strictPassthrough closes plaintext connections the Redirect-mode inbound passthrough
// chain (inbound, Port 0) would hand to an undeclared port of a STRICT workload: that
// chain terminates no TLS, so under STRICT nothing it carries is mesh mTLS (Istio has no
// plaintext passthrough chain under STRICT either).
func strictPassthrough(c FilterContext) proto.Message {
	if c.Side != SideInbound || c.Port != 0 || c.Snapshot == nil || c.Proxy == nil {
		return nil
	}
	if security.PeerMode(c.Snapshot, c.Proxy, 0) != security.Strict {
		return nil
	}
	return security.NetworkDenyAll("strict-mtls-plaintext-passthrough")
}

// tcpChain is a TCP chain's filters: tcpFilters that apply, then tcp_proxy.
func tcpChain(c FilterContext, clusters []route.WeightedCluster) []*listenerv3.Filter {
	var out []*listenerv3.Filter
	for _, f := range tcpFilters {
		if cfg := f.Config(c); cfg != nil {
			out = append(out, &listenerv3.Filter{Name: f.Name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(cfg)}})
		}
	}
	return append(out, tcpProxyFilter(c.Snapshot, clusters))
}

// HTTPFilters builds the filter chain for a connection manager.
func HTTPFilters(c FilterContext) []*hcmv3.HttpFilter {
	out := make([]*hcmv3.HttpFilter, 0, len(httpFilters))
	for _, f := range httpFilters {
		if cfg := f.Config(c); cfg != nil {
			out = append(out, &hcmv3.HttpFilter{Name: f.Name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}})
		}
	}
	return out
}

// ads is the config source of everything a weft proxy fetches: the ADS stream.
func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// httpConnectionManager builds an HCM that fetches routeName over RDS.
func httpConnectionManager(c FilterContext, statPrefix, routeName string) *hcmv3.HttpConnectionManager {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ads(),
			RouteConfigName: routeName,
		}},
		HttpFilters: HTTPFilters(c),
	}
	if c.Side == SideGRPC {
		return h // grpc-go reads only the route and the filters
	}
	// A gateway is the edge: it appends the peer to X-Forwarded-For and trusts it as
	// the client address; sidecars keep what the caller's sidecar set (Istio's).
	h.UseRemoteAddress = wrapperspb.Bool(c.Side == SideGateway)
	h.NormalizePath = wrapperspb.Bool(true)
	h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
	h.AccessLog = accessLogs(c.Snapshot)
	if c.Side == SideInbound {
		// The workload sees who called it: the caller's identity (URI SAN) is appended
		// to X-Forwarded-Client-Cert when the connection was mTLS (Istio's).
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	}
	if c.Side == SideOutbound && c.Port == 0 {
		// The HTTP proxy listener receives absolute-form requests ("GET http://reviews:9080/").
		h.HttpProtocolOptions = &corev3.Http1ProtocolOptions{AllowAbsoluteUrl: wrapperspb.Bool(true)}
	}
	return h
}

func hcmFilter(h *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{Name: HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}}
}

// tcpProxyFilter sends connections to one cluster or weighted clusters.
func tcpProxyFilter(s *snapshot.Snapshot, clusters []route.WeightedCluster) *listenerv3.Filter {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: clusters[0].Name, AccessLog: accessLogs(s)}
	if len(clusters) == 1 {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: clusters[0].Name}
	} else {
		wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
		for _, c := range clusters {
			wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: c.Name, Weight: c.Weight})
		}
		tp.StatPrefix = "weighted"
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	}
	return &listenerv3.Filter{Name: TCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}}
}

// AccessLogFormat is the text format of weft's access logs: one line per request (or
// TCP connection, whose HTTP fields print "-").
const AccessLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`"%REQ(:AUTHORITY)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(X-FORWARDED-FOR)%" ` +
	`%UPSTREAM_CLUSTER% %UPSTREAM_HOST% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %ROUTE_NAME%` + "\n"

// accessLogs turns on the file access log when the mesh config names a file
// (MeshConfig.accessLogFile, e.g. "/dev/stdout").
func accessLogs(s *snapshot.Snapshot) []*accesslogv3.AccessLog {
	if s == nil || s.Mesh.AccessLogFile == "" {
		return nil
	}
	fal := &filev3.FileAccessLog{
		Path: s.Mesh.AccessLogFile,
		AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: AccessLogFormat},
			}},
		}},
	}
	return []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(fal)}}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("listener: marshal %T: %v", m, err))
	}
	return a
}

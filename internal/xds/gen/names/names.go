// Package names holds the names the generators give xDS resources. They are Istio's, so
// operators' tools, dashboards and habits (istioctl proxy-config, "outbound|9080|v1|
// reviews.default.svc.cluster.local") carry over, and every generator agrees on them.
package names

import (
	"fmt"
	"strconv"
	"strings"
)

// Clusters that are not services.
const (
	BlackHoleCluster          = "BlackHoleCluster"
	PassthroughCluster        = "PassthroughCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"
	// PrometheusCluster etc. may follow.
)

// SDS secret names, as Istio's agent serves them.
const (
	WorkloadCert = "default"
	RootCA       = "ROOTCA"
)

// Listener names of the capture listeners (Istio's).
const (
	VirtualOutbound = "virtualOutbound" // 15001
	VirtualInbound  = "virtualInbound"  // 15006
)

// Ports of the sidecar (Istio's).
const (
	OutboundCapturePort = 15001
	InboundCapturePort  = 15006
)

// Direction of a cluster.
type Direction string

const (
	Inbound  Direction = "inbound"
	Outbound Direction = "outbound"
)

// Cluster is Istio's cluster name: "outbound|9080|v1|reviews.default.svc.cluster.local",
// "inbound|9080||".
func Cluster(dir Direction, port uint32, subset, host string) string {
	return string(dir) + "|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + host
}

// ParseCluster splits a cluster name made by Cluster; ok is false for other names.
func ParseCluster(name string) (dir Direction, port uint32, subset, host string, ok bool) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 {
		return "", 0, "", "", false
	}
	p, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return "", 0, "", "", false
	}
	return Direction(parts[0]), uint32(p), parts[2], parts[3], true
}

// OutboundSNI is the SNI a sidecar sends when it originates ISTIO_MUTUAL to a service
// subset: "outbound_.9080_.v1_.reviews.default.svc.cluster.local".
func OutboundSNI(port uint32, subset, host string) string {
	return fmt.Sprintf("outbound_.%d_.%s_.%s", port, subset, host)
}

// Listener is Istio's listener name for an address and port: "0.0.0.0_9080".
func Listener(addr string, port uint32) string {
	return addr + "_" + strconv.FormatUint(uint64(port), 10)
}

// OutboundRoute is the route configuration of a sidecar's outbound HTTP port: "9080".
func OutboundRoute(port uint32) string { return strconv.FormatUint(uint64(port), 10) }

// HTTPProxyRoute is the route configuration of a sidecar's explicit HTTP proxy
// listener (local mode), which serves every HTTP service on every port.
const HTTPProxyRoute = "http_proxy"

// InboundRoute is the route configuration of an inbound HTTP port: "inbound|9080||".
func InboundRoute(port uint32) string { return Cluster(Inbound, port, "", "") }

// GatewayRoute is a gateway's route configuration for an HTTP server port: "http.8080".
func GatewayRoute(port uint32) string { return "http." + strconv.FormatUint(uint64(port), 10) }

// GRPCListener is the listener a proxyless gRPC client asks for: exactly the dial
// target "host:port".
func GRPCListener(host string, port uint32) string {
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}

package control

import (
	"testing"

	"github.com/weft-mesh/weft/internal/config"
)

// TestKindByName covers the names `weft get` accepts: the kind, its plural as kubectl
// spells it (the CRD's plural), Istio's short names, in any case.
func TestKindByName(t *testing.T) {
	tests := []struct {
		names []string
		want  config.Kind
		_     string
	}{
		{[]string{"VirtualService", "virtualservice", "virtualservices", "vs"}, config.KindVirtualService, ""},
		{[]string{"DestinationRule", "destinationrules", "dr"}, config.KindDestinationRule, ""},
		{[]string{"Gateway", "gateways", "gw"}, config.KindGateway, ""},
		{[]string{"ServiceEntry", "serviceentries", "se"}, config.KindServiceEntry, ""},
		{[]string{"WorkloadEntry", "workloadentries", "we"}, config.KindWorkloadEntry, ""},
		{[]string{"Sidecar", "sidecars"}, config.KindSidecar, ""},
		{[]string{"PeerAuthentication", "peerauthentications", "pa"}, config.KindPeerAuthentication, ""},
		{[]string{"AuthorizationPolicy", "authorizationpolicies", "ap"}, config.KindAuthorizationPolicy, ""},
		{[]string{"RequestAuthentication", "requestauthentications", "ra"}, config.KindRequestAuthentication, ""},
		{[]string{"Telemetry", "telemetries"}, config.KindTelemetry, ""},
		{[]string{"HTTPRoute", "httproutes"}, config.KindHTTPRoute, ""},
		{[]string{"GRPCRoute", "grpcroutes"}, config.KindGRPCRoute, ""},
		{[]string{"TrafficSplit", "trafficsplits"}, config.KindTrafficSplit, ""},
		// kubectl's group-qualified form names the Gateway API Gateway, which shares
		// the bare name "Gateway" with Istio's.
		{[]string{"gateway.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io"}, config.KindKubernetesGateway, ""},
		{[]string{"gateways.networking.istio.io"}, config.KindGateway, ""},
		{[]string{"httproutes.gateway.networking.k8s.io"}, config.KindHTTPRoute, ""},
	}
	for _, tc := range tests {
		for _, n := range tc.names {
			t.Run(n, func(t *testing.T) {
				got, ok := kindByName(n)
				if !ok || got != tc.want {
					t.Errorf("kindByName(%q) = %v, %v; want %v", n, got.Label(), ok, tc.want.Label())
				}
			})
		}
	}
	for _, n := range []string{"", "widgets", "s", "virtualservicess", "virtualservices.gateway.networking.k8s.io"} {
		if k, ok := kindByName(n); ok {
			t.Errorf("kindByName(%q) = %v, want unknown", n, k.Label())
		}
	}
}

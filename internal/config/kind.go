package config

import (
	extensions "istio.io/api/extensions/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	networkingbeta "istio.io/api/networking/v1beta1"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/internal/config/smi"
)

// Kind identifies a resource type independent of its API version: a VirtualService written
// as networking.istio.io/v1alpha3 and one written as v1 are the same Kind and share a key.
type Kind uint8

// The kinds weft reads, in the order listings and events use. Add new kinds at the end of a
// group; never rely on map iteration for order.
const (
	KindUnknown Kind = iota
	KindVirtualService
	KindDestinationRule
	KindGateway
	KindServiceEntry
	KindWorkloadEntry
	KindWorkloadGroup
	KindSidecar
	KindEnvoyFilter
	KindProxyConfig
	KindPeerAuthentication
	KindAuthorizationPolicy
	KindRequestAuthentication
	KindTelemetry
	KindWasmPlugin
	KindKubernetesGateway // gateway.networking.k8s.io Gateway
	KindHTTPRoute
	KindGRPCRoute
	KindTrafficSplit
	kindCount
)

// Group names.
const (
	GroupNetworking = "networking.istio.io"
	GroupSecurity   = "security.istio.io"
	GroupTelemetry  = "telemetry.istio.io"
	GroupExtensions = "extensions.istio.io"
	GroupGatewayAPI = "gateway.networking.k8s.io"
	GroupSMI        = "split.smi-spec.io"
)

type kindInfo struct {
	name     string
	group    string
	versions []string // accepted versions, preferred first
	// specRequired mirrors the CRD's `required: [spec]`.
	specRequired bool
	// newSpec returns an empty spec of the upstream type.
	newSpec func() any
}

var kindTable = [kindCount]kindInfo{
	KindUnknown: {name: "Unknown"},
	KindVirtualService: {name: "VirtualService", group: GroupNetworking, versions: istioNetVersions,
		newSpec: func() any { return &networking.VirtualService{} }},
	KindDestinationRule: {name: "DestinationRule", group: GroupNetworking, versions: istioNetVersions,
		newSpec: func() any { return &networking.DestinationRule{} }},
	KindGateway: {name: "Gateway", group: GroupNetworking, versions: istioNetVersions,
		newSpec: func() any { return &networking.Gateway{} }},
	KindServiceEntry: {name: "ServiceEntry", group: GroupNetworking, versions: istioNetVersions, specRequired: true,
		newSpec: func() any { return &networking.ServiceEntry{} }},
	KindWorkloadEntry: {name: "WorkloadEntry", group: GroupNetworking, versions: istioNetVersions, specRequired: true,
		newSpec: func() any { return &networking.WorkloadEntry{} }},
	KindWorkloadGroup: {name: "WorkloadGroup", group: GroupNetworking, versions: istioNetVersions, specRequired: true,
		newSpec: func() any { return &networking.WorkloadGroup{} }},
	KindSidecar: {name: "Sidecar", group: GroupNetworking, versions: istioNetVersions,
		newSpec: func() any { return &networking.Sidecar{} }},
	KindEnvoyFilter: {name: "EnvoyFilter", group: GroupNetworking, versions: []string{"v1alpha3"},
		newSpec: func() any { return &networking.EnvoyFilter{} }},
	KindProxyConfig: {name: "ProxyConfig", group: GroupNetworking, versions: []string{"v1beta1"},
		newSpec: func() any { return &networkingbeta.ProxyConfig{} }},
	KindPeerAuthentication: {name: "PeerAuthentication", group: GroupSecurity, versions: istioSecVersions,
		newSpec: func() any { return &security.PeerAuthentication{} }},
	KindAuthorizationPolicy: {name: "AuthorizationPolicy", group: GroupSecurity, versions: istioSecVersions,
		newSpec: func() any { return &security.AuthorizationPolicy{} }},
	KindRequestAuthentication: {name: "RequestAuthentication", group: GroupSecurity, versions: istioSecVersions,
		newSpec: func() any { return &security.RequestAuthentication{} }},
	KindTelemetry: {name: "Telemetry", group: GroupTelemetry, versions: []string{"v1", "v1alpha1"},
		newSpec: func() any { return &telemetry.Telemetry{} }},
	KindWasmPlugin: {name: "WasmPlugin", group: GroupExtensions, versions: []string{"v1alpha1"}, specRequired: true,
		newSpec: func() any { return &extensions.WasmPlugin{} }},
	KindKubernetesGateway: {name: "Gateway", group: GroupGatewayAPI, versions: gatewayAPIVersions,
		newSpec: func() any { return &gwv1.GatewaySpec{} }},
	KindHTTPRoute: {name: "HTTPRoute", group: GroupGatewayAPI, versions: gatewayAPIVersions,
		newSpec: func() any { return &gwv1.HTTPRouteSpec{} }},
	KindGRPCRoute: {name: "GRPCRoute", group: GroupGatewayAPI, versions: []string{"v1"},
		newSpec: func() any { return &gwv1.GRPCRouteSpec{} }},
	KindTrafficSplit: {name: "TrafficSplit", group: GroupSMI, versions: []string{"v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"},
		specRequired: true, newSpec: func() any { return &smi.TrafficSplitSpec{} }},
}

var (
	istioNetVersions   = []string{"v1", "v1beta1", "v1alpha3"}
	istioSecVersions   = []string{"v1", "v1beta1"}
	gatewayAPIVersions = []string{"v1", "v1beta1"}
)

// groupKind -> Kind, for lookups only (never iterated).
var kindByGroupKind = func() map[[2]string]Kind {
	m := make(map[[2]string]Kind, kindCount)
	for k := KindUnknown + 1; k < kindCount; k++ {
		m[[2]string{kindTable[k].group, kindTable[k].name}] = k
	}
	return m
}()

// Kinds returns every known kind in declaration order.
func Kinds() []Kind {
	out := make([]Kind, 0, kindCount-1)
	for k := KindUnknown + 1; k < kindCount; k++ {
		out = append(out, k)
	}
	return out
}

// String is the kind name as written in YAML ("VirtualService"). Both gateway kinds print
// "Gateway"; Label tells them apart.
func (k Kind) String() string {
	if k >= kindCount {
		return "Unknown"
	}
	return kindTable[k].name
}

// Label names the kind in messages: the bare name, qualified with its group where the name
// alone is ambiguous (the Gateway API Gateway, kubectl's "gateway.gateway.networking.k8s.io" form).
func (k Kind) Label() string {
	if k == KindKubernetesGateway {
		return "Gateway." + GroupGatewayAPI
	}
	return k.String()
}

// Group is the API group.
func (k Kind) Group() string {
	if k >= kindCount {
		return ""
	}
	return kindTable[k].group
}

// Versions lists the accepted API versions, preferred first.
func (k Kind) Versions() []string {
	if k >= kindCount {
		return nil
	}
	return kindTable[k].versions
}

// IsIstio reports whether the kind belongs to an istio.io group (its spec is a proto message).
func (k Kind) IsIstio() bool {
	switch k.Group() {
	case GroupNetworking, GroupSecurity, GroupTelemetry, GroupExtensions:
		return true
	}
	return false
}

// NewSpec returns an empty spec of the kind's upstream type: a pointer to an istio.io/api
// message, a sigs.k8s.io/gateway-api spec struct, or an smi.TrafficSplitSpec.
func (k Kind) NewSpec() any {
	if k == KindUnknown || k >= kindCount {
		return nil
	}
	return kindTable[k].newSpec()
}

// GVK is a group/version/kind triple as written in a document.
type GVK struct {
	Group, Version, Kind string
}

// APIVersion is "group/version" ("v1" for the core group).
func (g GVK) APIVersion() string {
	if g.Group == "" {
		return g.Version
	}
	return g.Group + "/" + g.Version
}

func (g GVK) String() string { return g.APIVersion() + ", Kind=" + g.Kind }

// ParseAPIVersion splits "group/version".
func ParseAPIVersion(apiVersion string) (group, version string) {
	for i := len(apiVersion) - 1; i >= 0; i-- {
		if apiVersion[i] == '/' {
			return apiVersion[:i], apiVersion[i+1:]
		}
	}
	return "", apiVersion
}

// knownGroup reports whether weft owns documents of this group: a document of a known group
// with an unknown kind or version is an error, any other document is ignored.
func knownGroup(group string) bool {
	switch group {
	case GroupNetworking, GroupSecurity, GroupTelemetry, GroupExtensions, GroupGatewayAPI, GroupSMI:
		return true
	}
	return false
}

// LookupKind maps a document's apiVersion and kind to a Kind. ok is false for documents of
// other groups or kinds; versionOK is false when the kind is known but the version is not.
func LookupKind(apiVersion, kind string) (k Kind, ok, versionOK bool) {
	group, version := ParseAPIVersion(apiVersion)
	k, ok = kindByGroupKind[[2]string{group, kind}]
	if !ok {
		return KindUnknown, false, false
	}
	for _, v := range kindTable[k].versions {
		if v == version {
			return k, true, true
		}
	}
	return k, true, false
}

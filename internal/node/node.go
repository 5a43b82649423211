// Package node describes a proxy connected to the control plane: what kind it is
// (sidecar, gateway, proxyless gRPC client), which workload it stands for, and how it
// receives traffic. It is read from the xDS Node the proxy sends (Istio's node id form
// and metadata keys, so Envoy and grpc-go clients bootstrapped for Istio work too) and is
// what the generators scope their output by.
package node

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Type is the role of a proxy.
type Type string

const (
	Sidecar Type = "sidecar"
	Router  Type = "router" // an ingress or egress gateway
	GRPC    Type = "grpc"   // a proxyless gRPC client (grpc-go's xds resolver)
)

// Interception is how a sidecar receives its workload's traffic.
type Interception string

const (
	// Explicit: no traffic capture; the application calls the sidecar's outbound
	// listener as an HTTP proxy, and the sidecar's inbound listeners bind the workload
	// address (weft's local mode). Metadata INTERCEPTION_MODE: NONE.
	Explicit Interception = "NONE"
	// Redirect: iptables REDIRECT to 15001/15006 (Kubernetes, or local mode as root).
	Redirect Interception = "REDIRECT"
)

// Proxy is one connected proxy.
type Proxy struct {
	ID   string
	Type Type
	// IP is the workload's address as the mesh knows it (the pod IP).
	IP             netip.Addr
	Workload       string // pod or workload name
	Namespace      string
	ServiceAccount string
	Labels         map[string]string
	Interception   Interception
	// AppIP is where the application listens, when it differs from IP (local mode).
	AppIP netip.Addr
	// DNSDomain is "<namespace>.svc.cluster.local", for short host names.
	DNSDomain string
	// ClusterID, the node's cluster field.
	Cluster string
	// CAAgent: the proxy obtains its workload certificate itself (CSR), so the
	// control plane sends no secrets.
	CAAgent bool
}

// Metadata keys read from the node (Istio's where one exists).
const (
	MetaLabels         = "LABELS"
	MetaNamespace      = "NAMESPACE"
	MetaServiceAccount = "SERVICE_ACCOUNT"
	MetaInterception   = "INTERCEPTION_MODE"
	MetaWorkloadName   = "WORKLOAD_NAME"
	MetaGenerator      = "GENERATOR" // "grpc" for proxyless gRPC, as Istio's
	MetaAppIP          = "WEFT_APP_IP"
	MetaInstanceIPs    = "INSTANCE_IPS"
	// MetaCAAgent "true": the proxy holds its own key and gets its certificate by CSR
	// from the CA service, so the control plane must not push SDS secrets to it.
	MetaCAAgent = "WEFT_CA_AGENT"
)

// Parse reads a proxy's identity from its xDS node. The id has Istio's form
// "TYPE~IP~NAME.NAMESPACE~DOMAIN" (TYPE sidecar or router); other ids are accepted as a
// proxyless gRPC client when metadata GENERATOR is "grpc", or as a sidecar with the
// metadata's namespace otherwise.
func Parse(n *corev3.Node) (*Proxy, error) {
	if n == nil || n.GetId() == "" {
		return nil, fmt.Errorf("node: id is required")
	}
	p := &Proxy{ID: n.GetId(), Type: Sidecar, Interception: Redirect, Cluster: n.GetCluster(), Labels: map[string]string{}}
	md := n.GetMetadata().GetFields()
	parts := strings.Split(n.GetId(), "~")
	if len(parts) == 4 {
		switch Type(parts[0]) {
		case Sidecar, Router:
			p.Type = Type(parts[0])
		default:
			return nil, fmt.Errorf("node %q: type %q: must be sidecar or router", n.GetId(), parts[0])
		}
		if parts[1] != "" {
			ip, err := netip.ParseAddr(parts[1])
			if err != nil {
				return nil, fmt.Errorf("node %q: ip: %w", n.GetId(), err)
			}
			p.IP = ip
		}
		name, ns, _ := strings.Cut(parts[2], ".")
		p.Workload, p.Namespace = name, ns
		p.DNSDomain = parts[3]
	}
	if s := str(md[MetaGenerator]); s == "grpc" {
		p.Type = GRPC
	}
	if s := str(md[MetaNamespace]); s != "" {
		p.Namespace = s
	}
	if p.Namespace == "" {
		p.Namespace = "default"
	}
	if p.DNSDomain == "" {
		p.DNSDomain = p.Namespace + ".svc.cluster.local"
	}
	if s := str(md[MetaServiceAccount]); s != "" {
		p.ServiceAccount = s
	}
	if p.ServiceAccount == "" {
		p.ServiceAccount = "default"
	}
	if s := str(md[MetaWorkloadName]); s != "" {
		p.Workload = s
	}
	if s := str(md[MetaInterception]); s != "" {
		switch Interception(s) {
		case Explicit, Redirect:
			p.Interception = Interception(s)
		default:
			return nil, fmt.Errorf("node %q: metadata %s: %q: must be NONE or REDIRECT", n.GetId(), MetaInterception, s)
		}
	}
	if l := md[MetaLabels].GetStructValue(); l != nil {
		for k, v := range l.GetFields() {
			p.Labels[k] = v.GetStringValue()
		}
	}
	p.CAAgent = str(md[MetaCAAgent]) == "true"
	if s := str(md[MetaAppIP]); s != "" {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("node %q: metadata %s: %w", n.GetId(), MetaAppIP, err)
		}
		p.AppIP = ip
	}
	if !p.AppIP.IsValid() {
		p.AppIP = p.IP
	}
	return p, nil
}

func str(v *structpb.Value) string {
	if v == nil {
		return ""
	}
	return v.GetStringValue()
}

// Metadata builds the node metadata weft's own launchers send (weft up, weft inject).
func Metadata(p *Proxy) *structpb.Struct {
	labels := map[string]any{}
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		labels[k] = p.Labels[k]
	}
	m := map[string]any{
		MetaLabels:         labels,
		MetaNamespace:      p.Namespace,
		MetaServiceAccount: p.ServiceAccount,
		MetaInterception:   string(p.Interception),
		MetaWorkloadName:   p.Workload,
	}
	if p.AppIP.IsValid() && p.AppIP != p.IP {
		m[MetaAppIP] = p.AppIP.String()
	}
	if p.Type == GRPC {
		m[MetaGenerator] = "grpc"
	}
	if p.CAAgent {
		m[MetaCAAgent] = "true"
	}
	s, _ := structpb.NewStruct(m)
	return s
}

// ID builds Istio's node id for a proxy.
func ID(t Type, ip netip.Addr, workload, namespace, domain string) string {
	return fmt.Sprintf("%s~%s~%s.%s~%s", t, ip, workload, namespace, domain)
}

// SpiffeID is the proxy's identity in a trust domain.
func (p *Proxy) SpiffeID(trustDomain string) string {
	return "spiffe://" + trustDomain + "/ns/" + p.Namespace + "/sa/" + p.ServiceAccount
}

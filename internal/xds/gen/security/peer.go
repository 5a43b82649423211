package security

import (
	security "istio.io/api/security/v1beta1"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// Mode is how an inbound port accepts connections (PeerAuthentication's mTLS mode).
type Mode = security.PeerAuthentication_MutualTLS_Mode

// The modes a port can end up in (never UNSET).
const (
	Permissive = security.PeerAuthentication_MutualTLS_PERMISSIVE
	Strict     = security.PeerAuthentication_MutualTLS_STRICT
	Disable    = security.PeerAuthentication_MutualTLS_DISABLE
)

// MeshALPN are the ALPN values a mesh client offers when it originates Istio mTLS:
// weft's and Envoy's sidecars send "istio-peer-exchange" and "istio", older Envoy
// sidecars "istio-http/*". A PERMISSIVE port takes TLS with one of them as mesh mTLS
// (Istio's), so a TLS client that is not in the mesh is never asked for a mesh
// certificate. A fresh slice each call: generated resources share nothing mutable.
func MeshALPN() []string {
	return []string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}
}

// PeerMode is the mTLS mode of port on proxy p's workload (port 0: the workload's own
// mode, for traffic to ports it does not declare), with Istio's precedence:
//
//   - the workload's PeerAuthentication (selector matching its labels, in its namespace;
//     the oldest if several) over the namespace's (no selector) over the mesh's (no
//     selector, in the root namespace); an UNSET mode (or none) inherits from the next;
//   - the workload policy's portLevelMtls for that port over all of these (UNSET there
//     inherits the workload level);
//   - PERMISSIVE when nothing sets it.
//
// Selector policies in the root namespace are ignored, as Istio ignores them.
func PeerMode(s *snapshot.Snapshot, p *node.Proxy, port uint32) Mode {
	return WorkloadPeerMode(s, p.Namespace, p.Labels, port)
}

// WorkloadPeerMode is PeerMode for a workload known by its namespace and labels (a
// registry instance, whose Port is the workload port): what a client's auto mTLS needs
// to know of an endpoint (Istio marks endpoints whose port is DISABLE as plaintext).
func WorkloadPeerMode(s *snapshot.Snapshot, namespace string, labels map[string]string, port uint32) Mode {
	var mesh, ns, wl *snapshot.Config[*security.PeerAuthentication]
	older := func(cur, c *snapshot.Config[*security.PeerAuthentication]) bool {
		return cur == nil || c.CreationIndex < cur.CreationIndex
	}
	for i := range s.PeerAuthentications {
		pa := &s.PeerAuthentications[i]
		if pa.Spec == nil {
			continue
		}
		sel := pa.Spec.GetSelector().GetMatchLabels()
		switch {
		case len(sel) == 0 && pa.Namespace == s.Mesh.RootNamespace:
			if older(mesh, pa) {
				mesh = pa
			}
		case len(sel) == 0 && pa.Namespace == namespace:
			if older(ns, pa) {
				ns = pa
			}
		case len(sel) > 0 && pa.Namespace == namespace && pa.Namespace != s.Mesh.RootNamespace && labelsMatch(sel, labels):
			if older(wl, pa) {
				wl = pa
			}
		}
	}
	mode := Permissive
	for _, pa := range []*snapshot.Config[*security.PeerAuthentication]{mesh, ns, wl} {
		if pa == nil {
			continue
		}
		if m := pa.Spec.GetMtls().GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
			mode = m
		}
	}
	if wl != nil && port != 0 {
		if pl, ok := wl.Spec.GetPortLevelMtls()[port]; ok && pl.GetMode() != security.PeerAuthentication_MutualTLS_UNSET {
			mode = pl.GetMode()
		}
	}
	return mode
}

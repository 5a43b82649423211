package snapshot

import (
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weft-mesh/weft/internal/registry"
)

// fromServiceEntries turns ServiceEntry resources (and the WorkloadEntries they select)
// into registry services and instances, as Istio's serviceentry controller does: one
// service per host, one instance per endpoint and port.
func fromServiceEntries(ses []Config[*networking.ServiceEntry], wes []Config[*networking.WorkloadEntry]) ([]*registry.Service, []*registry.Instance) {
	var svcs []*registry.Service
	var insts []*registry.Instance
	for _, se := range ses {
		spec := se.Spec
		var ports []registry.Port
		for _, p := range spec.GetPorts() {
			ports = append(ports, registry.Port{Name: p.GetName(), Number: p.GetNumber(), Protocol: registry.ParseProtocol(p.GetProtocol())})
		}
		res := registry.ClientSideLB
		switch spec.GetResolution() {
		case networking.ServiceEntry_NONE:
			res = registry.Passthrough
		case networking.ServiceEntry_DNS:
			res = registry.DNSLB
		case networking.ServiceEntry_DNS_ROUND_ROBIN:
			res = registry.DNSRoundRobinLB
		}
		external := spec.GetLocation() != networking.ServiceEntry_MESH_INTERNAL
		source := "ServiceEntry " + se.Namespace + "/" + se.Name

		// The endpoints: inline, or the WorkloadEntries the selector picks.
		type ep struct {
			addr     string
			ports    map[string]uint32
			labels   map[string]string
			sa       string
			locality string
			weight   uint32
			workload string
		}
		var eps []ep
		for _, we := range spec.GetEndpoints() {
			eps = append(eps, ep{we.GetAddress(), we.GetPorts(), we.GetLabels(), we.GetServiceAccount(), we.GetLocality(), we.GetWeight(), se.Name})
		}
		if sel := spec.GetWorkloadSelector().GetLabels(); len(sel) > 0 {
			for _, we := range wes {
				if we.Namespace != se.Namespace || !matches(sel, we.Spec.GetLabels()) {
					continue
				}
				w := we.Spec
				eps = append(eps, ep{w.GetAddress(), w.GetPorts(), w.GetLabels(), w.GetServiceAccount(), w.GetLocality(), w.GetWeight(), we.Name})
			}
		}

		for _, host := range spec.GetHosts() {
			svcs = append(svcs, &registry.Service{
				Hostname: host, Name: host, Namespace: se.Namespace, Ports: ports,
				Addresses: spec.GetAddresses(), MeshExternal: external, Resolution: res,
				ExportTo: spec.GetExportTo(), Source: source,
			})
			for _, p := range spec.GetPorts() {
				if len(eps) == 0 && (res == registry.DNSLB || res == registry.DNSRoundRobinLB) {
					// DNS with no endpoints: the proxy resolves the host itself.
					target := p.GetTargetPort()
					if target == 0 {
						target = p.GetNumber()
					}
					insts = append(insts, &registry.Instance{
						Service: host, ServicePort: p.GetNumber(), Address: host, Port: target,
						Namespace: se.Namespace, Weight: 1, Healthy: true, Workload: se.Name,
					})
					continue
				}
				for _, e := range eps {
					target := e.ports[p.GetName()]
					if target == 0 {
						target = p.GetTargetPort()
					}
					if target == 0 {
						target = p.GetNumber()
					}
					w := e.weight
					if w == 0 {
						w = 1
					}
					sa := e.sa
					insts = append(insts, &registry.Instance{
						Service: host, ServicePort: p.GetNumber(), Address: e.addr, Port: target,
						Workload: e.workload, Namespace: se.Namespace, Labels: e.labels, ServiceAccount: sa,
						Locality: e.locality, Weight: w, Healthy: true,
						// A WorkloadEntry inside the mesh is assumed to have a sidecar when it
						// carries Istio's security.istio.io/tlsMode=istio label.
						Sidecar: e.labels["security.istio.io/tlsMode"] == "istio",
					})
				}
			}
		}
	}
	return svcs, insts
}

// matches reports whether labels contain every key=value of the selector.
func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Matches is the label selector rule every Istio workloadSelector uses.
func Matches(selector, labels map[string]string) bool { return matches(selector, labels) }

package route

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/weft-mesh/weft/internal/registry"
)

// Domains are the virtual host domains of a service port as a client in namespace ns
// may write the host: the FQDN, "name.namespace" and "name.namespace.svc" (Kubernetes
// DNS search paths resolve these from any namespace), the bare "name" only from the
// service's own namespace, and the service's virtual IPs. Every form carries the port
// ("reviews:9080", what an HTTP client sends in Host for a non-default port); the
// port-less form is added only for port 80, where clients omit it. Order: most
// specific first.
func Domains(svc *registry.Service, port uint32, ns, trustDomain string) []string {
	var names []string
	host := strings.ToLower(svc.Hostname)
	names = append(names, host)
	if svc.Name != "" && svc.Namespace != "" && host == svc.Name+"."+svc.Namespace+".svc."+trustDomain {
		names = append(names, svc.Name+"."+svc.Namespace+".svc", svc.Name+"."+svc.Namespace)
		if ns == svc.Namespace {
			names = append(names, svc.Name)
		}
	}
	for _, a := range svc.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			if ip.Is6() {
				names = append(names, "["+ip.String()+"]")
			} else {
				names = append(names, ip.String())
			}
		}
	}
	p := strconv.FormatUint(uint64(port), 10)
	out := make([]string, 0, 2*len(names))
	for _, n := range names {
		out = append(out, n+":"+p)
		if port == 80 {
			out = append(out, n)
		}
	}
	return out
}

// domainSet hands out domains to virtual hosts of one route configuration: Envoy
// rejects a configuration in which two virtual hosts share a domain, so the first
// virtual host to claim one keeps it.
type domainSet map[string]bool

func (d domainSet) claim(domains []string) []string {
	out := domains[:0:0]
	for _, dom := range domains {
		if d[dom] {
			continue
		}
		d[dom] = true
		out = append(out, dom)
	}
	return out
}

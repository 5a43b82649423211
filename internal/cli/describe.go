package cli

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/local"
	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// tlsCheckCmd is istioctl's `authn tls-check` and `x describe` for the local mesh: is
// traffic from one workload to a service mutual TLS, and which policies apply to it.
func tlsCheckCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tls-check SOURCE_WORKLOAD [SERVICE]",
		Short: "Show whether traffic from a workload to each service is mTLS, and the policies that apply (as istioctl authn tls-check / x describe)",
		Long: `For each service the source workload reaches (or the one named), show how the source's
sidecar originates (ISTIO_MUTUAL, AUTO = mTLS to workloads with sidecars, DISABLE, SIMPLE,
MUTUAL), how each destination workload's sidecar accepts (STRICT, PERMISSIVE, DISABLE),
whether the two agree, and the AuthorizationPolicies that select the destination.
Read from the proxies' own admin config_dump, so it shows what the proxies hold.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := local.ReadState(stateDir(g))
			if err != nil {
				return err
			}
			src, ok := findWorkload(st, args[0])
			if !ok {
				return fmt.Errorf("tls-check: no workload %q in the local mesh", args[0])
			}
			srcDump, err := configDump(g, src.Admin)
			if err != nil {
				return err
			}
			policies := authzPolicies(g)
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST:PORT\tCLIENT\tDESTINATION WORKLOAD\tSERVER\tSTATUS\tAUTHORIZATION POLICIES")
			for _, c := range clustersOf(srcDump) {
				dir, port, subset, host, ok := names.ParseCluster(c.GetName())
				if !ok || dir != names.Outbound || subset != "" {
					continue
				}
				svc, _, _ := strings.Cut(host, ".")
				if len(args) == 2 && args[1] != svc && args[1] != host {
					continue
				}
				client := clientMode(c)
				dests := workloadsOf(st, svc)
				if len(dests) == 0 {
					fmt.Fprintf(tw, "%s:%d\t%s\t-\t-\t-\t-\n", host, port, client)
					continue
				}
				for _, d := range dests {
					server, labels, ns := "unknown", map[string]string{}, d.Namespace
					if dump, err := configDump(g, d.Admin); err == nil {
						server = serverMode(dump, d.Sidecar, port)
						if p, err := proxyOf(dump); err == nil {
							labels = p.Labels
						}
					}
					fmt.Fprintf(tw, "%s:%d\t%s\t%s\t%s\t%s\t%s\n", host, port, client, d.Name, server,
						agreement(client, server), strings.Join(policies.applying(ns, labels), ", "))
				}
			}
			return tw.Flush()
		},
	}
}

func findWorkload(st *local.State, name string) (local.WorkloadState, bool) {
	all := append([]local.WorkloadState{}, st.Workloads...)
	if st.Gateway != nil {
		all = append(all, *st.Gateway)
	}
	for _, w := range all {
		if w.Name == name || w.NodeID == name {
			return w, true
		}
	}
	return local.WorkloadState{}, false
}

func workloadsOf(st *local.State, service string) []local.WorkloadState {
	var out []local.WorkloadState
	for _, w := range st.Workloads {
		if w.Service == service {
			out = append(out, w)
		}
	}
	return out
}

func configDump(g *globals, admin string) (*adminv3.ConfigDump, error) {
	body, err := fetch(g, admin+"/config_dump")
	if err != nil {
		return nil, err
	}
	d := new(adminv3.ConfigDump)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, d); err != nil {
		return nil, fmt.Errorf("config_dump of %s: %w", admin, err)
	}
	return d, nil
}

func clustersOf(d *adminv3.ConfigDump) []*clusterv3.Cluster {
	var out []*clusterv3.Cluster
	for _, cd := range dumpOf[*adminv3.ClustersConfigDump](d) {
		for _, dc := range cd.GetDynamicActiveClusters() {
			c := new(clusterv3.Cluster)
			if dc.GetCluster().UnmarshalTo(c) == nil {
				out = append(out, c)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func proxyOf(d *adminv3.ConfigDump) (*node.Proxy, error) {
	for _, b := range dumpOf[*adminv3.BootstrapConfigDump](d) {
		return node.Parse(b.GetBootstrap().GetNode())
	}
	return nil, fmt.Errorf("no bootstrap in config_dump")
}

// clientMode names how a cluster originates TLS.
func clientMode(c *clusterv3.Cluster) string {
	if len(c.GetTransportSocketMatches()) > 0 {
		for _, m := range c.GetTransportSocketMatches() {
			if isMeshTLS(m.GetTransportSocket()) {
				return "AUTO"
			}
		}
	}
	ts := c.GetTransportSocket()
	if ts == nil || ts.GetName() != "envoy.transport_sockets.tls" {
		return "DISABLE"
	}
	if isMeshTLS(ts) {
		return "ISTIO_MUTUAL"
	}
	u := new(tlsv3.UpstreamTlsContext)
	if ts.GetTypedConfig().UnmarshalTo(u) == nil && (len(u.GetCommonTlsContext().GetTlsCertificates()) > 0 || len(u.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()) > 0) {
		return "MUTUAL"
	}
	return "SIMPLE"
}

// isMeshTLS: TLS with the workload certificate "default" from SDS, as ISTIO_MUTUAL is.
func isMeshTLS(ts *corev3.TransportSocket) bool {
	if ts.GetTypedConfig() == nil {
		return false
	}
	u := new(tlsv3.UpstreamTlsContext)
	if ts.GetTypedConfig().UnmarshalTo(u) != nil {
		return false
	}
	for _, s := range u.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
		if s.GetName() == names.WorkloadCert {
			return true
		}
	}
	return false
}

// serverMode reads how a sidecar's inbound side accepts a port: STRICT when every chain
// for it terminates TLS and requires a client certificate, PERMISSIVE when TLS and
// plaintext chains sit side by side, DISABLE when none terminates TLS.
func serverMode(d *adminv3.ConfigDump, ip string, port uint32) string {
	var tlsChains, plainChains int
	for _, ld := range dumpOf[*adminv3.ListenersConfigDump](d) {
		for _, dl := range ld.GetDynamicListeners() {
			l := new(listenerv3.Listener)
			if dl.GetActiveState().GetListener().UnmarshalTo(l) != nil {
				continue
			}
			sa := l.GetAddress().GetSocketAddress()
			inbound := l.GetName() == names.VirtualInbound || (sa.GetAddress() == ip && sa.GetPortValue() == port)
			if !inbound {
				continue
			}
			for _, fc := range l.GetFilterChains() {
				m := fc.GetFilterChainMatch()
				if l.GetName() == names.VirtualInbound && m.GetDestinationPort().GetValue() != port {
					continue
				}
				if fc.GetTransportSocket().GetName() == "envoy.transport_sockets.tls" {
					tlsChains++
				} else {
					plainChains++
				}
			}
		}
	}
	switch {
	case tlsChains > 0 && plainChains == 0:
		return "STRICT"
	case tlsChains > 0:
		return "PERMISSIVE"
	case plainChains > 0:
		return "DISABLE"
	}
	return "no inbound listener"
}

func agreement(client, server string) string {
	switch {
	case server == "STRICT" && client == "DISABLE":
		return "CONFLICT: plaintext to STRICT"
	case server == "DISABLE" && (client == "ISTIO_MUTUAL"):
		return "CONFLICT: mTLS to plaintext"
	case (client == "ISTIO_MUTUAL" || client == "AUTO") && server != "DISABLE":
		return "OK (mTLS)"
	case client == "DISABLE" || server == "DISABLE":
		return "OK (plaintext)"
	}
	return "OK"
}

// policySet is the AuthorizationPolicies held by the control plane.
type policySet []struct {
	name, namespace, action string
	selector                map[string]string
}

func authzPolicies(g *globals) policySet {
	body, err := fetch(g, g.server+"/apis/config?kind=AuthorizationPolicy")
	if err != nil {
		return nil
	}
	var out policySet
	for _, doc := range strings.Split(string(body), "\n---\n") {
		var obj struct {
			Metadata struct{ Name, Namespace string }
			Spec     struct {
				Action   string
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				}
			}
		}
		if yaml.Unmarshal([]byte(doc), &obj) != nil || obj.Metadata.Name == "" {
			continue
		}
		action := obj.Spec.Action
		if action == "" {
			action = "ALLOW"
		}
		out = append(out, struct {
			name, namespace, action string
			selector                map[string]string
		}{obj.Metadata.Name, obj.Metadata.Namespace, action, obj.Spec.Selector.MatchLabels})
	}
	return out
}

// applying lists the policies that select a workload: its namespace's (with a matching
// selector or none) and the root namespace's.
func (ps policySet) applying(ns string, labels map[string]string) []string {
	var out []string
	for _, p := range ps {
		if p.namespace != ns && p.namespace != "istio-system" {
			continue
		}
		ok := true
		for k, v := range p.selector {
			if labels[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, fmt.Sprintf("%s/%s (%s)", p.namespace, p.name, p.action))
		}
	}
	if len(out) == 0 {
		return []string{"-"}
	}
	return out
}

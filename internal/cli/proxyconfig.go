package cli

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/local"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

func proxyConfigCmd(g *globals) *cobra.Command {
	var admin, output string
	c := &cobra.Command{
		Use:   "proxy-config listeners|routes|clusters|endpoints|secret|all PROXY",
		Short: "Show what a proxy holds, from its admin config_dump (as istioctl proxy-config)",
		Long: `Show what a proxy holds, read from its admin endpoint. PROXY is a workload name or node
id of the local mesh (weft status lists them); --admin URL reads any proxy's admin.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := args[0]
			url := admin
			if url == "" {
				if len(args) < 2 {
					return errors.New("proxy-config: name a PROXY or pass --admin URL")
				}
				var err error
				if url, err = adminURL(g, args[1]); err != nil {
					return err
				}
			}
			switch what {
			case "endpoints", "endpoint", "ep":
				return showEndpoints(g, url, output)
			case "secret", "secrets", "s":
			case "listeners", "listener", "l", "routes", "route", "r", "clusters", "cluster", "c", "all":
			default:
				return fmt.Errorf("proxy-config: unknown view %q (listeners, routes, clusters, endpoints, all)", what)
			}
			body, err := fetch(g, url+"/config_dump")
			if err != nil {
				return err
			}
			if output == "json" {
				_, err = g.stdout.Write(body)
				return err
			}
			var dump adminv3.ConfigDump
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &dump); err != nil {
				return fmt.Errorf("config_dump: %w", err)
			}
			switch what[0] {
			case 's':
				return showSecrets(g, &dump)
			case 'l':
				return showListeners(g, &dump)
			case 'r':
				return showRoutes(g, &dump)
			case 'c':
				return showClusters(g, &dump)
			default:
				for _, f := range []func(*globals, *adminv3.ConfigDump) error{showClusters, showListeners, showRoutes} {
					if err := f(g, &dump); err != nil {
						return err
					}
					fmt.Fprintln(g.stdout)
				}
				return showEndpoints(g, url, output)
			}
		},
	}
	c.Flags().StringVar(&admin, "admin", "", "the proxy's admin `URL` (default: found by name in the local mesh)")
	c.Flags().StringVarP(&output, "output", "o", "short", "short or json")
	return c
}

// adminURL finds a local-mesh proxy's admin URL by workload name or node id.
func adminURL(g *globals, proxy string) (string, error) {
	st, err := local.ReadState(stateDir(g))
	if err != nil {
		return "", err
	}
	all := append([]local.WorkloadState{}, st.Workloads...)
	if st.Gateway != nil {
		all = append(all, *st.Gateway)
	}
	for _, w := range all {
		if w.Name == proxy || w.NodeID == proxy {
			return w.Admin, nil
		}
	}
	return "", fmt.Errorf("no proxy %q in the local mesh (weft status lists them)", proxy)
}

func fetch(g *globals, url string) ([]byte, error) {
	resp, err := g.client().Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, err
}

func showClusters(g *globals, d *adminv3.ConfigDump) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE FQDN\tPORT\tSUBSET\tDIRECTION\tTYPE\tDESTINATION RULE")
	for _, c := range dumpOf[*adminv3.ClustersConfigDump](d) {
		var all []*anypb.Any
		for _, s := range c.GetStaticClusters() {
			all = append(all, s.GetCluster())
		}
		for _, s := range c.GetDynamicActiveClusters() {
			all = append(all, s.GetCluster())
		}
		for _, a := range all {
			cl := new(clusterv3.Cluster)
			if a.UnmarshalTo(cl) != nil {
				continue
			}
			typ := cl.GetType().String()
			if dir, port, subset, host, ok := names.ParseCluster(cl.GetName()); ok {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", orDash(host), port, orDash(subset), dir, typ, "-")
			} else {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\t-\n", cl.GetName(), typ)
			}
		}
	}
	return tw.Flush()
}

func showListeners(g *globals, d *adminv3.ConfigDump) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tPORT\tCHAINS\tDESTINATION")
	for _, ld := range dumpOf[*adminv3.ListenersConfigDump](d) {
		var all []*anypb.Any
		for _, s := range ld.GetStaticListeners() {
			all = append(all, s.GetListener())
		}
		for _, s := range ld.GetDynamicListeners() {
			all = append(all, s.GetActiveState().GetListener())
		}
		for _, a := range all {
			l := new(listenerv3.Listener)
			if a == nil || a.UnmarshalTo(l) != nil {
				continue
			}
			sa := l.GetAddress().GetSocketAddress()
			var dests []string
			chains := l.GetFilterChains()
			if l.GetDefaultFilterChain() != nil {
				chains = append(chains, l.GetDefaultFilterChain())
			}
			for _, fc := range chains {
				for _, f := range fc.GetFilters() {
					dests = append(dests, destination(f.GetTypedConfig()))
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", l.GetName(), sa.GetAddress(), sa.GetPortValue(), len(chains), strings.Join(uniq(dests), ", "))
		}
	}
	return tw.Flush()
}

func destination(a *anypb.Any) string {
	if a == nil {
		return "-"
	}
	switch a.MessageName() {
	case "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
		h := new(hcmv3.HttpConnectionManager)
		if a.UnmarshalTo(h) == nil {
			if n := h.GetRds().GetRouteConfigName(); n != "" {
				return "Route: " + n
			}
			return "Inline Route: " + h.GetRouteConfig().GetName()
		}
	case "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":
		t := new(tcpv3.TcpProxy)
		if a.UnmarshalTo(t) == nil {
			if c := t.GetCluster(); c != "" {
				return "Cluster: " + c
			}
			return "Weighted clusters"
		}
	}
	return ""
}

func uniq(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func showRoutes(g *globals, d *adminv3.ConfigDump) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVIRTUAL HOST\tDOMAINS\tMATCH\tDESTINATION")
	for _, rd := range dumpOf[*adminv3.RoutesConfigDump](d) {
		for _, dr := range rd.GetDynamicRouteConfigs() {
			rc := new(routev3.RouteConfiguration)
			if dr.GetRouteConfig().UnmarshalTo(rc) != nil {
				continue
			}
			for _, vh := range rc.GetVirtualHosts() {
				domains := strings.Join(vh.GetDomains(), ",")
				if len(domains) > 48 {
					domains = domains[:45] + "..."
				}
				for _, r := range vh.GetRoutes() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", rc.GetName(), vh.GetName(), domains, routeMatch(r.GetMatch()), routeDest(r))
				}
			}
		}
	}
	return tw.Flush()
}

func routeMatch(m *routev3.RouteMatch) string {
	var s string
	switch {
	case m.GetPrefix() != "":
		s = m.GetPrefix() + "*"
	case m.GetPath() != "":
		s = m.GetPath()
	case m.GetSafeRegex() != nil:
		s = "~" + m.GetSafeRegex().GetRegex()
	default:
		s = "/*"
	}
	if n := len(m.GetHeaders()); n > 0 {
		s += " +" + strconv.Itoa(n) + " header(s)"
	}
	return s
}

func routeDest(r *routev3.Route) string {
	switch {
	case r.GetRoute() != nil:
		ra := r.GetRoute()
		if c := ra.GetCluster(); c != "" {
			return c
		}
		var parts []string
		for _, wc := range ra.GetWeightedClusters().GetClusters() {
			parts = append(parts, fmt.Sprintf("%s %d%%", wc.GetName(), wc.GetWeight().GetValue()))
		}
		return strings.Join(parts, ", ")
	case r.GetRedirect() != nil:
		return "redirect"
	case r.GetDirectResponse() != nil:
		return fmt.Sprintf("direct response %d", r.GetDirectResponse().GetStatus())
	}
	return "-"
}

func showEndpoints(g *globals, url, output string) error {
	body, err := fetch(g, url+"/clusters?format=json")
	if err != nil {
		return err
	}
	if output == "json" {
		_, err = g.stdout.Write(body)
		return err
	}
	var cs adminv3.Clusters
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &cs); err != nil {
		return fmt.Errorf("clusters: %w", err)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tSTATUS\tOUTLIER CHECK\tCLUSTER")
	for _, c := range cs.GetClusterStatuses() {
		for _, h := range c.GetHostStatuses() {
			sa := h.GetAddress().GetSocketAddress()
			status := "HEALTHY"
			if hs := h.GetHealthStatus(); hs.GetFailedActiveHealthCheck() || hs.GetEdsHealthStatus().String() == "UNHEALTHY" {
				status = "UNHEALTHY"
			}
			outlier := "OK"
			if h.GetHealthStatus().GetFailedOutlierCheck() {
				outlier = "FAILED"
			}
			fmt.Fprintf(tw, "%s:%d\t%s\t%s\t%s\n", sa.GetAddress(), sa.GetPortValue(), status, outlier, c.GetName())
		}
	}
	return tw.Flush()
}

// dumpOf returns the configs of one dump type.
func dumpOf[T interface{ ProtoReflect() protoreflect.Message }](d *adminv3.ConfigDump) []T {
	var out []T
	for _, a := range d.GetConfigs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		if t, ok := m.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// showSecrets lists the certificates a proxy holds: name, SPIFFE ID, serial, validity.
func showSecrets(g *globals, d *adminv3.ConfigDump) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE NAME\tTYPE\tSTATUS\tIDENTITY\tSERIAL NUMBER\tNOT AFTER\tNOT BEFORE")
	for _, sd := range dumpOf[*adminv3.SecretsConfigDump](d) {
		type named struct {
			name string
			a    *anypb.Any
		}
		var all []named
		for _, s := range sd.GetStaticSecrets() {
			all = append(all, named{s.GetName(), s.GetSecret()})
		}
		for _, s := range sd.GetDynamicActiveSecrets() {
			all = append(all, named{s.GetName(), s.GetSecret()})
		}
		for _, n := range all {
			sec := new(tlsv3.Secret)
			if n.a == nil || n.a.UnmarshalTo(sec) != nil {
				continue
			}
			var pemData []byte
			typ := "Cert Chain"
			if tc := sec.GetTlsCertificate(); tc != nil {
				pemData = dataSource(tc.GetCertificateChain())
			} else if vc := sec.GetValidationContext(); vc != nil {
				pemData = dataSource(vc.GetTrustedCa())
				typ = "CA"
			}
			certs := parsePEMCerts(pemData)
			if len(certs) == 0 {
				fmt.Fprintf(tw, "%s\t%s\tno certificate\t-\t-\t-\t-\n", n.name, typ)
				continue
			}
			c := certs[0]
			status := "VALID"
			if now := time.Now(); now.After(c.NotAfter) || now.Before(c.NotBefore) {
				status = "EXPIRED"
			}
			id := "-"
			if len(c.URIs) > 0 {
				id = c.URIs[0].String()
			} else if c.Subject.CommonName != "" {
				id = c.Subject.CommonName
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%x\t%s\t%s\n", n.name, typ, status, id, c.SerialNumber,
				c.NotAfter.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

func dataSource(ds *corev3.DataSource) []byte {
	switch {
	case ds.GetInlineBytes() != nil:
		return ds.GetInlineBytes()
	case ds.GetInlineString() != "":
		return []byte(ds.GetInlineString())
	case ds.GetFilename() != "":
		b, _ := os.ReadFile(ds.GetFilename())
		return b
	}
	return nil
}

func parsePEMCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

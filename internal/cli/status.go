package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/internal/local"
	"github.com/weft-mesh/weft/internal/xds"
)

func (g *globals) getJSON(url string, v any) error {
	resp, err := g.client().Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (g *globals) proxyStatus() ([]xds.ProxyStatus, error) {
	var st []xds.ProxyStatus
	if err := g.getJSON(g.server+"/debug/syncz", &st); err != nil {
		return nil, fmt.Errorf("control plane at %s: %w", g.server, err)
	}
	return st, nil
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the local mesh: what runs where, and whether each proxy is ready and in sync",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := local.ReadState(stateDir(g))
			if err != nil {
				return err
			}
			synced := map[string]string{}
			if ps, err := g.proxyStatus(); err == nil {
				for _, p := range ps {
					synced[p.ID] = syncSummary(p)
				}
			} else {
				fmt.Fprintf(g.stderr, "control plane: %v\n", err)
			}
			fmt.Fprintf(g.stdout, "mesh %q, up since %s (pid %d)\n", st.Mesh, st.StartedAt.Format(time.RFC3339), st.PID)
			fmt.Fprintf(g.stdout, "control plane: xDS %s, API http://%s\n", st.XDS, st.API)
			if st.GatewayURL != "" {
				fmt.Fprintf(g.stdout, "ingress gateway: %s\n", st.GatewayURL)
			}
			fmt.Fprintln(g.stdout)
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WORKLOAD\tSERVICE\tAPP\tSIDECAR\tPROXY\tXDS")
			rows := append([]local.WorkloadState{}, st.Workloads...)
			if st.Gateway != nil {
				rows = append(rows, *st.Gateway)
			}
			for _, w := range rows {
				ready := "not ready"
				if resp, err := (&http.Client{Timeout: time.Second}).Get(w.Admin + "/ready"); err == nil {
					if resp.StatusCode == 200 {
						ready = "ready"
					}
					resp.Body.Close()
				} else {
					ready = "down"
				}
				x := synced[w.NodeID]
				if x == "" {
					x = "not connected"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.Name, w.Service, orDash(w.App), w.Sidecar, ready, x)
			}
			tw.Flush()
			fmt.Fprintf(g.stdout, "\nlogs: %s\n", st.LogDir)
			return nil
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// syncSummary is SYNCED when every type the proxy was sent is ACKed, else the first
// problem.
func syncSummary(p xds.ProxyStatus) string {
	if !p.Connected {
		return "disconnected"
	}
	for _, t := range sortedKeys(p.PerType) {
		ts := p.PerType[t]
		if ts.Nacked != "" {
			return t + " NACKED"
		}
		if !ts.Synced() {
			return t + " STALE"
		}
	}
	return "SYNCED"
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func proxyStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "proxy-status [PROXY_ID]",
		Short: "Show each connected proxy's xDS sync state (sent, ACKed, NACKed per type), as istioctl proxy-status",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := g.proxyStatus()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tCDS\tLDS\tEDS\tRDS\tSDS")
			var problems []string
			for _, p := range ps {
				if len(args) == 1 && !strings.Contains(p.ID, args[0]) {
					continue
				}
				cells := []string{p.ID, string(p.Type)}
				for _, t := range []string{"CDS", "LDS", "EDS", "RDS", "SDS"} {
					ts, ok := p.PerType[t]
					switch {
					case !ok || ts.Sent == "":
						cells = append(cells, "NOT SENT")
					case ts.Nacked != "":
						cells = append(cells, "NACKED ("+ts.Nacked+")")
						problems = append(problems, fmt.Sprintf("%s %s: %s", p.ID, t, ts.Error))
					case ts.Synced():
						cells = append(cells, "SYNCED ("+ts.Acked+")")
					default:
						cells = append(cells, "STALE (sent "+ts.Sent+")")
					}
				}
				if !p.Connected {
					cells[1] += " (disconnected)"
				}
				fmt.Fprintln(tw, strings.Join(cells, "\t"))
			}
			tw.Flush()
			for _, p := range problems {
				fmt.Fprintln(g.stdout, "  NACK:", p)
			}
			return nil
		},
	}
}

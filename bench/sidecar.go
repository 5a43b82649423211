package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
)

// SidecarRSS is a real weft-proxy's memory once configured by the control plane for a
// mesh of Services services (2 endpoints each), with or without a Sidecar resource
// limiting its egress to a few of them.
type SidecarRSS struct {
	Services     int     `json:"services"`
	Scoped       bool    `json:"scoped"`
	Clusters     int     `json:"clusters"` // what the proxy holds (cluster_manager.active_clusters)
	ReadySeconds float64 `json:"ready_seconds"`
	PeakRSSMB    float64 `json:"peak_rss_mb"` // VmHWM
	RSSMB        float64 `json:"rss_mb"`      // VmRSS once settled
	// Stats is the sidecar's stats_config.stats_matcher: "" keeps every metric (weft's
	// default), "istio" the inclusion list of Istio's bootstraps (istioStatsPrefixes).
	Stats string `json:"stats,omitempty"`
	Error string `json:"error,omitempty"`
}

// statsIstio names the stats setting of Istio's bootstraps (-sidecar-stats istio).
const statsIstio = "istio"

// statsLabel is how a stats setting reads in logs and tables.
func statsLabel(mode string) string {
	if mode == statsIstio {
		return "Istio's inclusion list"
	}
	return "all"
}

// istioStatsPrefixes is the stats inclusion list of Istio's sidecar bootstraps: no
// per-cluster metrics but the xDS cluster's.
var istioStatsPrefixes = []string{"reporter=", "cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm", "component"}

func istioStatsConfig() *metricsv3.StatsConfig {
	ps := make([]*matcherv3.StringMatcher, len(istioStatsPrefixes))
	for i, pre := range istioStatsPrefixes {
		ps[i] = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: pre}}
	}
	return &metricsv3.StatsConfig{StatsMatcher: &metricsv3.StatsMatcher{
		StatsMatcher: &metricsv3.StatsMatcher_InclusionList{InclusionList: &matcherv3.ListStringMatcher{Patterns: ps}},
	}}
}

// runSidecarRSS measures one mesh size, scoped or not, with one stats setting.
func runSidecarRSS(ctx context.Context, t *tools, dir string, services int, scoped bool, statsMode string, maxRSSMB int) SidecarRSS {
	r := SidecarRSS{Services: services, Scoped: scoped, Stats: statsMode}
	if err := sidecarRSSInto(ctx, t, dir, &r, maxRSSMB); err != nil {
		r.Error = err.Error()
	}
	return r
}

func sidecarRSSInto(ctx context.Context, t *tools, dir string, r *SidecarRSS, maxRSSMB int) error {
	hosts := 0
	if r.Scoped {
		hosts = scopedHosts
	}
	sub := filepath.Join(dir, fmt.Sprintf("sidecar-%d-scoped-%v", r.Services, r.Scoped))
	if r.Stats != "" {
		sub += "-stats-" + r.Stats
	}
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	cp, err := startControl(ctx, sub, "control", meshSize{r.Services, 2}, hosts, maxRSSMB)
	if err != nil {
		return err
	}
	defer cp.stop(5 * time.Second)
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
	// The workload of svc-0's first endpoint, reached the way weft's local mode does it:
	// explicit interception, listeners on the workload's loopback address.
	ip := workloadIP(0)
	p := &node.Proxy{
		Type: node.Sidecar, IP: ip, Workload: "svc-0-0", Namespace: benchNS, ServiceAccount: "svc-0",
		Labels: map[string]string{"app": "svc-0"}, Interception: node.Explicit,
		AppIP: netip.AddrFrom4([4]byte{127, 76, 0, 1}),
	}
	b := bootstrap.FromFlags(bootstrap.Flags{
		NodeID:  node.ID(node.Sidecar, ip, p.Workload, benchNS, benchNS+".svc.cluster.local"),
		Cluster: "svc-0", XDSAddress: cp.xds, AdminAddress: admin,
	})
	b.Node.Metadata = node.Metadata(p)
	b.Node.Locality = &corev3.Locality{}
	if r.Stats == statsIstio {
		b.StatsConfig = istioStatsConfig()
	}
	if err := bootstrap.Validate(b); err != nil {
		return fmt.Errorf("bench: sidecar bootstrap: %w", err)
	}
	data, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(b)
	if err != nil {
		return fmt.Errorf("bench: sidecar bootstrap: %w", err)
	}
	file := filepath.Join(sub, "sidecar.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	start := time.Now()
	px, err := startProc("sidecar", filepath.Join(sub, "sidecar.log"), []string{"GOMAXPROCS=1"}, t.WeftProxy, "-c", file,
		"--health-address", "-", "--stats-address", "-", "--log-level", "info", "--drain-timeout", "200ms")
	if err != nil {
		return err
	}
	defer px.stop(3 * time.Second)
	over := px.guardRSS(maxRSSMB)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if px.exited() {
			if over() {
				return fmt.Errorf("bench: sidecar killed: RSS passed the %d MB guard", maxRSSMB)
			}
			return fmt.Errorf("bench: sidecar exited: %s", px.tail())
		}
		if err := cp.err(); err != nil {
			return err
		}
		if code, _ := httpGet(ctx, "http://"+admin+"/ready"); code == 200 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			// Its memory so far is still a figure; the reason is its last logged error.
			if u, err := readUsage(px.pid()); err == nil {
				r.PeakRSSMB, r.RSSMB = mb(u.HWMKiB), mb(u.RSSKiB)
			}
			return fmt.Errorf("bench: sidecar not ready after 3m: %s", lastError(px.tail()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.ReadySeconds = time.Since(start).Seconds()
	// Let the rest of the first pushes (EDS, RDS, SDS after LDS/CDS) land.
	last, stable := -1, 0
	for i := 0; i < 40 && stable < 3; i++ {
		time.Sleep(250 * time.Millisecond)
		n := clusterCount(ctx, admin)
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
	time.Sleep(2 * time.Second)
	r.Clusters = clusterCount(ctx, admin)
	u, err := readUsage(px.pid())
	if err != nil {
		return err
	}
	r.PeakRSSMB, r.RSSMB = mb(u.HWMKiB), mb(u.RSSKiB)
	saveHeapProfile(ctx, admin, filepath.Join(sub, "sidecar.heap.pprof"))
	return nil
}

// clusterCount reads the sidecar's cluster_manager.active_clusters gauge: a one-line
// stat, where the /clusters listing of a 10,000-cluster sidecar is tens of MB whose
// rendering would itself raise the peak RSS being measured.
func clusterCount(ctx context.Context, admin string) int {
	code, body := httpGet(ctx, "http://"+admin+"/stats?filter="+url.QueryEscape(`^cluster_manager\.active_clusters$`))
	if code != 200 {
		return -1
	}
	_, v, ok := strings.Cut(strings.TrimSpace(body), ": ")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// saveHeapProfile writes the sidecar's live heap (admin /heap_dump?gc=1, pprof format)
// next to its log, for `go tool pprof`: what the memory figure is made of.
func saveHeapProfile(ctx context.Context, admin, file string) {
	code, body := httpGet(ctx, "http://"+admin+"/heap_dump?gc=1")
	if code == 200 {
		_ = os.WriteFile(file, []byte(body), 0o644)
	}
}

// lastError is the last log line that carries an error, else the last line.
func lastError(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "error=") || strings.Contains(lines[i], "level=ERROR") {
			return lines[i]
		}
	}
	return lines[len(lines)-1]
}

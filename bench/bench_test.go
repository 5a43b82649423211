package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
)

// TestMain lets the test binary serve as the control-plane child process, as the
// harness's own binary does.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "control" {
		os.Exit(serveControl(os.Args[1:], os.Stdout))
	}
	os.Exit(m.Run())
}

// TestSmoke runs the harness end to end, small: two data-plane paths for two seconds
// each, one control-plane case with 10 simulated proxies and one sidecar RSS figure. It
// asserts that the harness works and that its figures are present and sane, never a
// timing.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("the smoke run starts processes and takes ~30 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := repoRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toolsDir := filepath.Join(root, "bench", ".tools")
	if _, err := ensureFortio(ctx, toolsDir); err != nil {
		t.Skipf("fortio cannot be installed here (no module proxy?), so the harness cannot run: %v", err)
	}
	out := t.TempDir()
	cases, err := parseCPCases("20x2x10", []bool{false})
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	cfg := Config{
		Quick: true, Duration: 2 * time.Second, Warmup: 300 * time.Millisecond, Pacing: "jitter", Reps: 1,
		QPS: []int{1000}, Conns: []int{4}, Paths: []string{"direct", "weft"},
		Out: out, Work: work, Tools: toolsDir,
		Sections: []string{secDataPlane, secControl, secSidecar},
		CPCases:  cases, CPChanges: 1, ChangeTimeout: 30 * time.Second, SidecarSizes: []int{10}, SidecarStats: []string{"", statsIstio}, MaxRSSMB: 2048,
		// The steal rule in force (a high limit: its reruns are TestLeastSteal's).
		MaxSteal: 50, StealRetries: 1,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	// results.json holds what Run returned.
	js, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if len(back.DataPlane) != 2 || len(back.ControlPlane) != 1 || len(back.Sidecar) != 4 {
		t.Fatalf("results.json has %d data-plane cells, %d control-plane cases, %d sidecar figures; want 2, 1, 4",
			len(back.DataPlane), len(back.ControlPlane), len(back.Sidecar))
	}

	for _, c := range res.DataPlane {
		if !c.OK {
			t.Fatalf("path %s: no successful run: %+v", c.Name, c.Runs)
		}
		if c.RPS < 100 || c.P50 <= 0 || c.P99 < c.P50 || c.P999 < c.P99 {
			t.Errorf("path %s: rps %.0f, p50 %.3f, p99 %.3f, p99.9 %.3f: not sane", c.Name, c.RPS, c.P50, c.P99, c.P999)
		}
		if c.ErrorRate > 0.01 {
			t.Errorf("path %s: error rate %.3f", c.Name, c.ErrorRate)
		}
		if c.Name == "weft" {
			if c.PeakRSSA <= 1 || c.PeakRSSB <= 1 || c.CPUPer1000A < 0 || c.CPUPer1000 <= 0 {
				t.Errorf("weft: RSS %.1f/%.1f MB, CPU %.4f s/1000: not sane", c.PeakRSSA, c.PeakRSSB, c.CPUPer1000)
			}
			r := c.Runs[0]
			// Four client connections through keep-alive sidecars: a handful of upstream
			// connections each, not one per request.
			if r.UpstreamCxA <= 0 || r.UpstreamCxA > 64 || r.UpstreamCxB <= 0 || r.UpstreamCxB > 64 {
				t.Errorf("weft: upstream connections A=%d B=%d: keep-alive not in effect", r.UpstreamCxA, r.UpstreamCxB)
			}
		}
	}

	cp := res.ControlPlane[0]
	if cp.Error != "" || cp.Connected != 10 || cp.Changes != 1 || cp.Missed != 0 {
		t.Fatalf("control plane: %+v", cp)
	}
	if cp.ACKP50Ms <= 0 || cp.ACKP99Ms < cp.ACKP50Ms || cp.BytesInitialPerProxy <= 0 || cp.BytesPerChangePerProxy <= 0 || cp.CPRSSConnectedMB <= 1 {
		t.Errorf("control plane figures not sane: %+v", cp)
	}

	for _, s := range res.Sidecar {
		if s.Error != "" || s.PeakRSSMB <= 1 || s.Clusters < 10 {
			t.Errorf("sidecar RSS: %+v", s)
		}
	}
	if res.Sidecar[2].Stats != statsIstio || res.Sidecar[0].Stats != "" {
		t.Errorf("sidecar stats settings: %q, %q", res.Sidecar[0].Stats, res.Sidecar[2].Stats)
	}
	// The istio setting reaches the sidecar's bootstrap; the default leaves it out.
	withList, err := os.ReadFile(filepath.Join(work, "sidecar-10-scoped-false-stats-istio", "sidecar.json"))
	if err != nil || !strings.Contains(string(withList), `"inclusion_list"`) || !strings.Contains(string(withList), `"cluster.xds-grpc"`) {
		t.Errorf("istio sidecar bootstrap has no inclusion list: %v", err)
	}
	if plain, err := os.ReadFile(filepath.Join(work, "sidecar-10-scoped-false", "sidecar.json")); err != nil || strings.Contains(string(plain), "stats_matcher") {
		t.Errorf("default sidecar bootstrap carries a stats matcher: %v", err)
	}

	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	if back.Meta.MaxSteal != 50 || back.Meta.StealRetries != 1 {
		t.Errorf("results.json meta: max steal %v, retries %d; want 50, 1", back.Meta.MaxSteal, back.Meta.StealRetries)
	}
	for _, want := range []string{"## Data plane, 1000 rps, 4 connections", "| weft plaintext |", "## Control plane", "## Sidecar memory",
		"passed 50.0% of CPU time was run again, up to 1 times, and the try with the least steal kept: 0 of 2 runs"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	pngData, err := os.ReadFile(filepath.Join(out, "latency.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(pngData))
	if err != nil {
		t.Fatalf("latency.png: %v", err)
	}
	if img.Bounds().Dx() < 500 || img.Bounds().Dy() < 100 {
		t.Errorf("latency.png is %v", img.Bounds())
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestWeftBootstraps checks that every weft path's generated bootstraps pass weft-proxy's
// own loader and validator, so a harness run cannot fail on its config.
func TestWeftBootstraps(t *testing.T) {
	certs, err := makeCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range allPaths {
		if p.Proxy != "weft" {
			continue
		}
		for _, client := range []bool{true, false} {
			b := weftBootstrap(p, client, 10001, 10002, certs)
			data, err := protojson.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := bootstrap.Parse(data, p.Name+".json")
			if err != nil {
				t.Fatalf("%s client=%v: %v", p.Name, client, err)
			}
			if err := bootstrap.Validate(parsed); err != nil {
				t.Errorf("%s client=%v: %v", p.Name, client, err)
			}
			cl := parsed.GetStaticResources().GetClusters()[0]
			wantTLS := p.TLS && client
			if got := cl.GetTransportSocket() != nil; got != wantTLS {
				t.Errorf("%s client=%v: upstream TLS %v, want %v", p.Name, client, got, wantTLS)
			}
			wantH2 := (client && p.H2) || (!client && p.GRPC)
			if got := len(cl.GetTypedExtensionProtocolOptions()) > 0; got != wantH2 {
				t.Errorf("%s client=%v: upstream HTTP/2 %v, want %v", p.Name, client, got, wantH2)
			}
		}
	}
}

func TestProxyConfs(t *testing.T) {
	certs := &certFiles{CA: "/c/ca.pem", ClientCert: "/c/client.pem", ClientKey: "/c/client-key.pem",
		ServerCert: "/c/server.pem", ServerKey: "/c/server-key.pem", ClientFull: "/c/cf.pem", ServerFull: "/c/sf.pem"}
	tests := []struct {
		name    string
		conf    string
		want    []string
		notWant []string
	}{
		{"nginx plain client", nginxConf(pathSpec{}, true, 1, 2, "/d", certs),
			[]string{"worker_processes 1;", "keepalive 64;", "keepalive_requests 100000;", "listen 127.0.0.1:1;", "server 127.0.0.1:2;", "proxy_pass http://next;"},
			[]string{"ssl"}},
		{"nginx tls client", nginxConf(pathSpec{TLS: true}, true, 1, 2, "/d", certs),
			[]string{"proxy_pass https://next;", "proxy_ssl_certificate /c/client.pem;", "proxy_ssl_verify on;", "proxy_ssl_name " + serverName}, nil},
		{"nginx tls server", nginxConf(pathSpec{TLS: true}, false, 1, 2, "/d", certs),
			[]string{"listen 127.0.0.1:1 ssl;", "ssl_verify_client on", "proxy_pass http://next;"}, []string{"proxy_ssl"}},
		{"haproxy plain", haproxyConf(pathSpec{}, true, 1, 2, certs),
			[]string{"nbthread 1", "http-reuse always", "bind 127.0.0.1:1\n", "server s1 127.0.0.1:2\n"}, []string{"ssl"}},
		{"haproxy tls client", haproxyConf(pathSpec{TLS: true}, true, 1, 2, certs),
			[]string{"server s1 127.0.0.1:2 ssl crt /c/cf.pem ca-file /c/ca.pem verify required verifyhost " + serverName}, nil},
		{"haproxy tls server", haproxyConf(pathSpec{TLS: true}, false, 1, 2, certs),
			[]string{"bind 127.0.0.1:1 ssl crt /c/sf.pem ca-file /c/ca.pem verify required"}, []string{"server s1 127.0.0.1:2 ssl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, w := range tt.want {
				if !strings.Contains(tt.conf, w) {
					t.Errorf("missing %q in\n%s", w, tt.conf)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(tt.conf, w) {
					t.Errorf("unexpected %q in\n%s", w, tt.conf)
				}
			}
		})
	}
}

func TestPlanDataPlane(t *testing.T) {
	cfg := Config{QPS: []int{1000, 0}, Conns: []int{16, 4, 64}, Paths: []string{"direct", "weft", "nginx", "weft-allcpu"}}
	count := map[string]int{}
	var firsts []string
	for rep := 0; rep < 2; rep++ {
		groups := planDataPlane(cfg, rep)
		firsts = append(firsts, groups[0][0].path.Name)
		for _, g := range groups {
			for _, c := range g {
				count[cellKey(c.path.Name, c.qps, c.conns)]++
			}
		}
	}
	want := map[string]int{
		"direct/1000/16": 2, "weft/1000/16": 2, "nginx/1000/16": 2, "weft-allcpu/1000/16": 2,
		"direct/1000/4": 2, "weft/1000/4": 2, "direct/1000/64": 2, "weft/1000/64": 2, // core paths only
		"direct/0/16": 2, "weft/0/16": 2, "nginx/0/16": 2, "weft-allcpu/0/16": 2, // max rps at the main count
	}
	if len(count) != len(want) {
		t.Errorf("cells %v, want %v", count, want)
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("cell %s runs %d times, want %d", k, count[k], n)
		}
	}
	if firsts[0] == firsts[1] {
		t.Errorf("both repetitions start with %s: the order should rotate", firsts[0])
	}
}

func TestParseCPCases(t *testing.T) {
	tests := []struct {
		in      string
		scoping []bool
		want    []string
		err     bool
	}{
		{"100x2x10", []bool{false, true}, []string{"100x2x10", "100x2x10-scoped"}, false},
		{"100x2x10, 1000x5x1000", []bool{false}, []string{"100x2x10", "1000x5x1000"}, false},
		{"100x2", []bool{false}, nil, true},
		{"100x0x10", []bool{false}, nil, true},
		{"axbxc", []bool{false}, nil, true},
	}
	for _, tt := range tests {
		got, err := parseCPCases(tt.in, tt.scoping)
		if (err != nil) != tt.err {
			t.Errorf("%q: err %v", tt.in, err)
			continue
		}
		var names []string
		for _, c := range got {
			names = append(names, c.String())
		}
		if strings.Join(names, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%q: %v, want %v", tt.in, names, tt.want)
		}
	}
}

func TestStats(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, tt := range []struct {
		p, want float64
	}{{50, 3}, {99, 5}, {100, 5}, {0, 1}, {20, 1}, {40, 2}} {
		if got := percentile(xs, tt.p); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v", got)
	}
	if got := median(nil); got != 0 {
		t.Errorf("median(nil) = %v", got)
	}
	steal, busy := machineShare(cpuTimes{total: 1000, idle: 400, steal: 10}, cpuTimes{total: 2000, idle: 900, steal: 60})
	if steal != 5 || busy != 45 {
		t.Errorf("machineShare = %v, %v; want 5, 45", steal, busy)
	}
}

func TestReadUsage(t *testing.T) {
	u, err := readUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.HWMKiB <= 0 || u.RSSKiB <= 0 || u.HWMKiB < u.RSSKiB || u.CPUSeconds < 0 {
		t.Errorf("own usage %+v not sane", u)
	}
	if _, err := readUsage(-1); err == nil {
		t.Error("usage of pid -1: no error")
	}
}

func TestWorkloadIP(t *testing.T) {
	seen := map[string]bool{}
	for n := 0; n < 200000; n += 997 {
		ip := workloadIP(n)
		if !ip.IsLoopback() {
			t.Fatalf("workloadIP(%d) = %v: not loopback", n, ip)
		}
		if seen[ip.String()] {
			t.Fatalf("workloadIP(%d) = %v: repeated", n, ip)
		}
		seen[ip.String()] = true
	}
}

func TestFont(t *testing.T) {
	for r, g := range font5x7 {
		for i, row := range g {
			if len(row) != 5 || strings.Trim(row, ".#") != "" {
				t.Errorf("glyph %q row %d = %q", r, i, row)
			}
		}
	}
}

// TestLeastSteal: a run is tried again while its steal passes the limit, at most the
// retries allowed, not after a failed try, not at all with no limit; the try with the
// least steal is kept and the others' steal recorded.
func TestLeastSteal(t *testing.T) {
	for _, tt := range []struct {
		name      string
		max       float64
		retries   int
		steals    []float64 // of the tries, in order; one of 100 or more fails (its steal is that less 100)
		kept      float64
		discarded []float64
	}{
		{"quiet", 5, 2, []float64{1}, 1, nil},
		{"second quiet", 5, 2, []float64{9, 2}, 2, []float64{9}},
		{"all noisy: least kept", 5, 2, []float64{9, 12, 7}, 7, []float64{9, 12}},
		{"retries bound", 5, 1, []float64{9, 8, 1}, 8, []float64{9}},
		{"no limit", 0, 2, []float64{30}, 30, nil},
		{"no retry after a failed try", 5, 3, []float64{9, 120}, 9, []float64{20}},
		{"a failed try is not kept", 5, 3, []float64{9, 101}, 9, []float64{1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			try := func() DPRun {
				s := tt.steals[n]
				n++
				if s >= 100 {
					return DPRun{StealPct: s - 100, Error: "failed"}
				}
				return DPRun{StealPct: s}
			}
			agains := 0
			got := leastSteal(context.Background(), tt.max, tt.retries, try, func(DPRun) { agains++ })
			if got.StealPct != tt.kept || fmt.Sprint(got.DiscardedSteal) != fmt.Sprint(tt.discarded) || got.Error != "" {
				t.Errorf("kept %v (discarded %v, error %q), want %v (%v)", got.StealPct, got.DiscardedSteal, got.Error, tt.kept, tt.discarded)
			}
			if wantTries := len(tt.discarded) + 1; n != wantTries || agains != n-1 {
				t.Errorf("%d tries, %d told, want %d", n, agains, wantTries)
			}
		})
	}
}

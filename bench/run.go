package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Results is everything one run measured; results.json holds it.
type Results struct {
	Meta         Meta              `json:"meta"`
	DataPlane    []*DPResult       `json:"data_plane"`
	ControlPlane []CPResult        `json:"control_plane"`
	Sidecar      []SidecarRSS      `json:"sidecar_rss"`
	Profile      *ProfileResult    `json:"profile,omitempty"`
	Skipped      map[string]string `json:"skipped,omitempty"`

	Dir string `json:"-"` // where the results were written
}

// Meta describes the run and the machine.
type Meta struct {
	Start        time.Time         `json:"start"`
	End          time.Time         `json:"end"`
	CPUs         int               `json:"cpus"`
	CPUModel     string            `json:"cpu_model"`
	Kernel       string            `json:"kernel"`
	MemTotalMB   int64             `json:"mem_total_mb"`
	GoVersion    string            `json:"go_version"`
	WeftCommit   string            `json:"weft_commit"`
	Versions     map[string]string `json:"versions"`
	Quick        bool              `json:"quick"`
	Duration     string            `json:"duration"`
	Warmup       string            `json:"warmup"`
	Pacing       string            `json:"pacing"`
	Reps         int               `json:"reps"`
	QPS          []int             `json:"qps"`
	Conns        []int             `json:"conns"`
	Paths        []string          `json:"paths"`
	PayloadBytes int               `json:"payload_bytes"`
	// Rerun lists sections re-run later into these results (-merge), with when.
	Rerun    []string `json:"rerun,omitempty"`
	StealPct float64  `json:"steal_pct"` // over the whole run
	BusyPct  float64  `json:"busy_pct"`
	// MaxSteal and StealRetries are -max-steal and -steal-retries.
	MaxSteal     float64 `json:"max_steal_pct"`
	StealRetries int     `json:"steal_retries"`
}

// Run does the sections of cfg and writes results.json, results.md and latency.png
// into cfg.Out (default bench/results). Raw files (configs, logs, fortio JSON) go to a
// work directory beside the tools.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Log == nil {
		return nil, fmt.Errorf("bench: Config.Log is required")
	}
	res := &Results{Skipped: map[string]string{}}
	res.Meta = machineMeta(cfg)
	t0 := readCPUTimes()
	needNginx, needHAProxy := false, false
	for _, n := range cfg.Paths {
		p, _ := pathByName(n)
		needNginx = needNginx || p.Proxy == "nginx"
		needHAProxy = needHAProxy || p.Proxy == "haproxy"
	}
	dp := contains(cfg.Sections, secDataPlane) || contains(cfg.Sections, secProfile)
	tl, err := setupTools(ctx, cfg.Tools, needNginx && dp, needHAProxy && dp)
	if err != nil {
		return nil, err
	}
	for k, v := range tl.skipped {
		res.Skipped[k] = v
	}
	res.Meta.Versions = toolVersions(ctx, tl)
	res.Meta.WeftCommit = gitCommit(ctx, tl.RepoRoot)
	out := cfg.Out
	if out == "" {
		out = filepath.Join(tl.RepoRoot, "bench", "results")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	res.Dir = out
	work := cfg.Work
	if work == "" {
		work = filepath.Join(tl.Dir, "..", ".work", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	cfg.Log.Info("bench", "results", out, "work", work)

	if dp {
		certs, err := makeCerts(work)
		if err != nil {
			return nil, err
		}
		echo, err := startEcho(ctx, tl, work)
		if err != nil {
			return nil, err
		}
		e := &dpEnv{cfg: cfg, tools: tl, dir: work, echo: echo, certs: certs, log: cfg.Log}
		if contains(cfg.Sections, secDataPlane) {
			res.DataPlane, err = runDataPlane(ctx, e)
			if err != nil {
				echo.proc.stop(2 * time.Second)
				return nil, err
			}
		}
		if cfg.Profile {
			p, _ := pathByName("weft-mtls")
			cfg.Log.Info("profile", "path", p.Name)
			res.Profile = runProfile(ctx, e, p, cfg.QPS[0], cfg.Conns[0], out)
		}
		echo.proc.stop(2 * time.Second)
	}
	if contains(cfg.Sections, secControl) {
		o := cpOptions{Dir: work, Changes: cfg.CPChanges, ChangeTimeout: cfg.ChangeTimeout, ConnectTimeout: 10 * time.Minute, MaxRSSMB: cfg.MaxRSSMB, Log: cfg.Log}
		for _, c := range cfg.CPCases {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			cfg.Log.Info("control-plane case", "case", c.String())
			r := runCPCase(ctx, o, c)
			cfg.Log.Info("control-plane case done", "case", c.String(), "connect_s", round(r.ConnectSeconds, 2),
				"ack_p50_ms", r.ACKP50Ms, "ack_p99_ms", r.ACKP99Ms, "cp_rss_mb", round(r.CPRSSConnectedMB, 1), "err", r.Error)
			res.ControlPlane = append(res.ControlPlane, r)
		}
	}
	if contains(cfg.Sections, secSidecar) {
		for _, n := range cfg.SidecarSizes {
			modes := cfg.SidecarStats
			if len(modes) == 0 {
				modes = []string{""}
			}
			for _, mode := range modes {
				for _, scoped := range []bool{false, true} {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					r := runSidecarRSS(ctx, tl, work, n, scoped, mode, cfg.MaxRSSMB)
					cfg.Log.Info("sidecar rss", "services", n, "scoped", scoped, "stats", statsLabel(mode), "clusters", r.Clusters, "peak_mb", round(r.PeakRSSMB, 1), "err", r.Error)
					res.Sidecar = append(res.Sidecar, r)
				}
			}
		}
	}
	res.Meta.End = time.Now()
	res.Meta.StealPct, res.Meta.BusyPct = machineShare(t0, readCPUTimes())
	if cfg.Merge {
		if err := mergePrevious(res, cfg); err != nil {
			return nil, err
		}
	}
	if err := writeResults(res, cfg); err != nil {
		return nil, err
	}
	return res, nil
}

func writeResults(res *Results, cfg Config) error {
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(res.Dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(res.Dir, "results.md"), []byte(markdown(res)), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if len(res.DataPlane) > 0 {
		png, err := latencyChart(res)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(res.Dir, "latency.png"), png, 0o644); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}

func machineMeta(cfg Config) Meta {
	m := Meta{
		Start: time.Now(), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Quick: cfg.Quick,
		Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(), Pacing: cfg.Pacing, Reps: cfg.Reps, QPS: cfg.QPS, Conns: cfg.Conns,
		MaxSteal: cfg.MaxSteal, StealRetries: cfg.StealRetries,
		Paths: cfg.Paths, PayloadBytes: payloadSize,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && k == "MemTotal" {
				m.MemTotalMB = parseKiB(v) / 1024
			}
		}
	}
	return m
}

func toolVersions(ctx context.Context, t *tools) map[string]string {
	v := map[string]string{}
	first := func(argv ...string) string {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(cctx, argv[0], argv[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	v["fortio"] = "fortio " + first(t.Fortio, "version")
	if t.Nginx != "" {
		v["nginx"] = first(t.Nginx, "-v")
	}
	if t.HAProxy != "" {
		v["haproxy"] = first(t.HAProxy, "-v")
	}
	return v
}

func gitCommit(ctx context.Context, dir string) string {
	cmd := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// mergePrevious keeps, from the results.json already in the output directory, every
// section this run did not do: one section can be re-run without the others.
func mergePrevious(res *Results, cfg Config) error {
	b, err := os.ReadFile(filepath.Join(res.Dir, "results.json"))
	if err != nil {
		return fmt.Errorf("bench: -merge: %w", err)
	}
	var old Results
	if err := json.Unmarshal(b, &old); err != nil {
		return fmt.Errorf("bench: -merge: %w", err)
	}
	ran := func(s string) bool { return contains(cfg.Sections, s) }
	note := fmt.Sprintf("%s at %s (steal %.1f%%)", strings.Join(cfg.Sections, "+"), res.Meta.Start.UTC().Format("2006-01-02 15:04 UTC"), res.Meta.StealPct)
	if !ran(secDataPlane) {
		res.DataPlane = old.DataPlane
		versions := res.Meta.Versions
		res.Meta = old.Meta
		for k, v := range versions {
			if res.Meta.Versions[k] == "" {
				res.Meta.Versions[k] = v
			}
		}
		res.Meta.Rerun = append(res.Meta.Rerun, note)
	}
	if !ran(secControl) {
		res.ControlPlane = old.ControlPlane
	}
	if !ran(secSidecar) {
		res.Sidecar = old.Sidecar
	}
	if !ran(secProfile) {
		res.Profile = old.Profile
	}
	for k, v := range old.Skipped {
		if _, ok := res.Skipped[k]; !ok {
			res.Skipped[k] = v
		}
	}
	return nil
}

// Render re-writes results.md and latency.png from dir/results.json (medians are
// recomputed from the runs), so a change to the report needs no new measurement.
func Render(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return fmt.Errorf("bench: render: %w", err)
	}
	res := new(Results)
	if err := json.Unmarshal(b, res); err != nil {
		return fmt.Errorf("bench: render: %w", err)
	}
	res.Dir = dir
	summarize(res.DataPlane)
	return writeResults(res, Config{})
}

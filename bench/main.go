// Command bench is weft's side-by-side benchmark harness (issue 5): it measures the data
// plane (fortio through two sidecars on loopback: no proxy, weft plaintext and mTLS,
// nginx, HAProxy), the control plane (simulated sidecars over real ADS against a weft
// control plane child process) and a sidecar's memory in a small and a large mesh, and
// writes JSON, a Markdown table and a PNG chart into bench/results.
//
//	go run ./bench                      # the full run (about 25 minutes)
//	go run ./bench -quick               # a smoke run (about a minute)
//	go run ./bench -duration 15s -reps 2 -paths direct,weft,nginx
//
// It installs what it needs: fortio with `go install` into bench/.tools, nginx and
// HAProxy with apt-get when missing and running as root. Every process it starts is its
// own child, on 127.0.0.1 only, and is stopped by pid.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(roleEnv) == "control" {
		os.Exit(serveControl(os.Args[1:], os.Stdout))
	}
	os.Exit(benchMain(os.Args[1:], os.Stderr))
}

// Config is one harness run. The flags of `go run ./bench` fill it; the smoke test
// builds one directly.
type Config struct {
	Quick    bool
	Duration time.Duration // each measured data-plane run
	Warmup   time.Duration // discarded load before each measured run
	Pacing   string        // fortio pacing at a fixed rate: jitter (default), uniform, none
	Reps     int
	QPS      []int // 0 = as fast as possible
	Conns    []int // the first is the main figure; the others run on CoreConnsPaths
	Paths    []string
	Out      string // results directory
	Work     string // raw files: configs, logs, fortio JSON (default bench/.work/<time>)
	Tools    string // bench/.tools
	Sections []string

	CPCases       []cpCase
	CPChanges     int
	ChangeTimeout time.Duration
	SidecarSizes  []int // mesh sizes (services) for the sidecar RSS figure
	// SidecarStats are the stats settings of the sidecar RSS figure: "" every metric,
	// statsIstio Istio's inclusion list. Empty means {""}.
	SidecarStats []string
	Profile      bool
	// Merge keeps the sections not run from the results.json already in Out.
	Merge bool
	// MaxRSSMB: a control plane or sidecar whose RSS passes it is killed and its case
	// fails (the machine is shared).
	MaxRSSMB int
	// MaxSteal: a data-plane run during which hypervisor steal passed this share of the
	// machine's CPU time (percent) is run again, up to StealRetries more times, and the
	// try with the least steal is kept; 0 keeps every first try.
	MaxSteal     float64
	StealRetries int

	Log *slog.Logger
}

// sections a run may do.
const (
	secDataPlane = "dataplane"
	secControl   = "control"
	secSidecar   = "sidecar"
	secProfile   = "profile"
)

func benchMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "smoke run: short durations, one repetition, small control-plane cases")
	duration := fs.Duration("duration", 30*time.Second, "length of each measured data-plane run")
	warmup := fs.Duration("warmup", 2*time.Second, "discarded load before each measured run")
	pacing := fs.String("pacing", "uniform", "how fortio spreads requests at a fixed rate: uniform (evenly spaced, like an open-loop constant-rate client), jitter (±10% per wait), none (synchronized bursts of -conns requests)")
	reps := fs.Int("reps", 2, "repetitions of the whole interleaved set of paths")
	qps := fs.String("qps", "1000,0", "request rates, comma-separated; 0 = maximum throughput")
	conns := fs.String("conns", "16,4,64", "connection counts; the first is the main figure")
	paths := fs.String("paths", strings.Join(defaultPaths(), ","), "data-plane paths: "+strings.Join(allPathNames(), ","))
	out := fs.String("out", "", "results directory (default bench/results)")
	toolsDir := fs.String("tools", "", "where fortio and the built proxies go (default bench/.tools)")
	sections := fs.String("sections", "dataplane,control,sidecar,profile", "what to run")
	cpCases := fs.String("cp-cases", "100x2x10,1000x5x100,1000x5x1000,100x2x2000,10000x10x10", "control-plane cases SERVICESxENDPOINTSxPROXIES")
	cpScoping := fs.String("cp-scoping", "off,on", "control-plane cases without and/or with a Sidecar scoping egress")
	cpChanges := fs.Int("cp-changes", 3, "config changes timed per control-plane case")
	render := fs.Bool("render", false, "only re-write results.md and latency.png from the results.json in -out")
	merge := fs.Bool("merge", false, "keep the sections not run from the results.json already in -out (re-run one section)")
	maxRSS := fs.Int("max-rss-mb", 4096, "kill a control plane or sidecar whose RSS passes this (its case fails)")
	maxSteal := fs.Float64("max-steal", 5, "run a data-plane run again when hypervisor steal during it passed this percentage of CPU time, keeping the try with the least steal (0: never)")
	stealRetries := fs.Int("steal-retries", 2, "how many times -max-steal may run one data-plane run again")
	sidecarSizes := fs.String("sidecar-sizes", "10,10000", "mesh sizes (services) for the sidecar RSS figure")
	sidecarStats := fs.String("sidecar-stats", "all", "the sidecar RSS figure's stats settings: all (every metric, weft's default), istio (the stats inclusion list of Istio's bootstraps), or both: all,istio")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg := Config{
		Quick: *quick, Duration: *duration, Reps: *reps, Out: *out, Tools: *toolsDir,
		CPChanges: *cpChanges, MaxRSSMB: *maxRSS, MaxSteal: *maxSteal, StealRetries: *stealRetries, ChangeTimeout: 2 * time.Minute, Warmup: *warmup, Pacing: *pacing, Merge: *merge,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	var err error
	if cfg.QPS, err = parseInts("qps", *qps, 0); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if cfg.Conns, err = parseInts("conns", *conns, 1); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if cfg.SidecarSizes, err = parseInts("sidecar-sizes", *sidecarSizes, 1); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	for _, m := range strings.Split(*sidecarStats, ",") {
		switch strings.TrimSpace(m) {
		case "all":
			cfg.SidecarStats = append(cfg.SidecarStats, "")
		case statsIstio:
			cfg.SidecarStats = append(cfg.SidecarStats, statsIstio)
		default:
			fmt.Fprintf(stderr, "bench: -sidecar-stats: %q is not all or istio\n", m)
			return 2
		}
	}

	switch cfg.Pacing {
	case "jitter", "uniform", "none":
	default:
		fmt.Fprintf(stderr, "bench: -pacing: %q: want jitter, uniform or none\n", cfg.Pacing)
		return 2
	}
	cfg.Paths = splitList(*paths)
	for _, p := range cfg.Paths {
		if _, ok := pathByName(p); !ok {
			fmt.Fprintf(stderr, "bench: -paths: unknown path %q (known: %s)\n", p, strings.Join(allPathNames(), ","))
			return 2
		}
	}
	cfg.Sections = splitList(*sections)
	var scoping []bool
	for _, s := range splitList(*cpScoping) {
		switch s {
		case "off":
			scoping = append(scoping, false)
		case "on":
			scoping = append(scoping, true)
		default:
			fmt.Fprintf(stderr, "bench: -cp-scoping: %q: want off and/or on\n", s)
			return 2
		}
	}
	if cfg.CPCases, err = parseCPCases(*cpCases, scoping); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if cfg.Quick {
		// Smoke figures: the same code, small and short, unless a flag says otherwise.
		if !set["duration"] {
			cfg.Duration = 2 * time.Second
		}
		if !set["reps"] {
			cfg.Reps = 1
		}
		if !set["qps"] {
			cfg.QPS = []int{1000}
		}
		if !set["conns"] {
			cfg.Conns = []int{16}
		}
		if !set["paths"] {
			cfg.Paths = []string{"direct", "weft", "weft-mtls"}
		}
		if !set["cp-cases"] {
			cfg.CPCases, _ = parseCPCases("20x2x10", scoping)
		}
		if !set["cp-changes"] {
			cfg.CPChanges = 1
		}
		if !set["sidecar-sizes"] {
			cfg.SidecarSizes = []int{10, 200}
		}
		if !set["warmup"] {
			cfg.Warmup = 500 * time.Millisecond
		}
		cfg.ChangeTimeout = 30 * time.Second
	}
	cfg.Profile = contains(cfg.Sections, secProfile)

	if *render {
		dir := cfg.Out
		if dir == "" {
			root, err := repoRoot(context.Background())
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
			dir = filepath.Join(root, "bench", "results")
		}
		if err := Render(dir); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stderr, "results: %s\n", res.Dir)
	return 0
}

func parseInts(name, list string, min int) ([]int, error) {
	var out []int
	for _, s := range splitList(list) {
		v, err := strconv.Atoi(s)
		if err != nil || v < min {
			return nil, fmt.Errorf("bench: -%s: %q is not a number >= %d", name, s, min)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: -%s: empty", name)
	}
	return out, nil
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

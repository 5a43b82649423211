package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profileRun points a data-plane run at the profiling build of weft-proxy.
type profileRun struct {
	bin string
	env []string
}

// ProfileResult is where weft-proxy spent its CPU and its allocations during one run.
type ProfileResult struct {
	Path    string  `json:"path"`
	QPS     int     `json:"qps"`
	Conns   int     `json:"conns"`
	Seconds float64 `json:"seconds"`
	RPS     float64 `json:"rps"`
	// Files in the results directory: `go tool pprof -top` of each sidecar's CPU and
	// allocation profiles.
	Files map[string]string `json:"files"`
	// TopCPU is the head of sidecar A's CPU top (the client-side sidecar).
	TopCPU string `json:"top_cpu_a"`
	Error  string `json:"error,omitempty"`
}

// runProfile runs path p once with the profiling build and turns the profiles into
// `go tool pprof -top` text files in out.
func runProfile(ctx context.Context, e *dpEnv, p pathSpec, qps, conns int, out string) *ProfileResult {
	r := &ProfileResult{Path: p.Name, QPS: qps, Conns: conns, Seconds: e.cfg.Duration.Seconds(), Files: map[string]string{}}
	if err := e.tools.buildProfProxy(ctx); err != nil {
		r.Error = err.Error()
		return r
	}
	pdir := filepath.Join(e.dir, "profile")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		r.Error = err.Error()
		return r
	}
	run := e.runOne(ctx, dpCell{p, qps, conns}, 0, &profileRun{bin: e.tools.ProfProxy, env: []string{"WEFT_PROFILE_DIR=" + pdir}})
	if run.Error != "" {
		r.Error = run.Error
		return r
	}
	r.RPS = run.RPS
	for _, side := range []string{"a", "b"} {
		for _, kind := range []struct{ name, file, args string }{
			{"cpu", "cpu", ""}, {"cpu-cum", "cpu", "-cum"}, {"allocs", "allocs", "-sample_index=alloc_space"},
		} {
			prof := filepath.Join(pdir, "weft-"+side+"."+kind.file+".pprof")
			args := []string{"tool", "pprof", "-top", "-nodecount=35"}
			if kind.args != "" {
				args = append(args, kind.args)
			}
			args = append(args, e.tools.ProfProxy, prof)
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			txt, err := exec.CommandContext(cctx, "go", args...).Output()
			cancel()
			if err != nil {
				r.Error = fmt.Sprintf("go tool pprof %s: %v", prof, err)
				continue
			}
			name := fmt.Sprintf("profile-%s-%s-%s.txt", p.Name, side, kind.name)
			if err := os.WriteFile(filepath.Join(out, name), txt, 0o644); err != nil {
				r.Error = err.Error()
				continue
			}
			r.Files[side+"-"+kind.name] = name
			if side == "a" && kind.name == "cpu" {
				r.TopCPU = headLines(string(txt), 22)
			}
		}
	}
	return r
}

func headLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

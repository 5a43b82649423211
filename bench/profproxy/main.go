// Command profproxy is weft-proxy with profiles: the same proxy.Main as cmd/weft-proxy,
// with a CPU profile for its whole life and an allocation profile at exit, written to
// $WEFT_PROFILE_DIR/<bootstrap file name>.{cpu,allocs}.pprof, and with
// WEFT_PROFILE_TRACE=1 an execution trace (<name>.trace, for `go tool trace`, e.g.
// -pprof=sched for the time goroutines waited to run). The benchmark harness runs it
// (never the measured runs) to show where weft-proxy spends its time under load.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strings"

	"github.com/weft-mesh/weft/internal/proxy"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	dir := os.Getenv("WEFT_PROFILE_DIR")
	if dir == "" {
		return proxy.Main(args)
	}
	name := "proxy"
	for i, a := range args {
		if (a == "-c" || a == "--config-path" || a == "-config-path") && i+1 < len(args) {
			name = strings.TrimSuffix(filepath.Base(args[i+1]), filepath.Ext(args[i+1]))
		}
	}
	cpu, err := os.Create(filepath.Join(dir, name+".cpu.pprof"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profproxy:", err)
		return 1
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		fmt.Fprintln(os.Stderr, "profproxy:", err)
		return 1
	}
	if os.Getenv("WEFT_PROFILE_TRACE") == "1" {
		if f, err := os.Create(filepath.Join(dir, name+".trace")); err == nil {
			if err := trace.Start(f); err == nil {
				defer func() { trace.Stop(); f.Close() }()
			}
		}
	}
	code := proxy.Main(args)
	pprof.StopCPUProfile()
	cpu.Close()
	if f, err := os.Create(filepath.Join(dir, name+".allocs.pprof")); err == nil {
		_ = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	return code
}

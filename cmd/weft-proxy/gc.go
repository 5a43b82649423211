package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// The sidecar's garbage-collector settings. A sidecar's resident memory is a headline
// cost, and most of weft-proxy's heap growth under load is garbage waiting for the next
// cycle: with Go's default GOGC=100 the heap may reach twice what is live. A lower
// default bounds that headroom. Measured (fortio 1000 rps, 16 connections, 1 KB each
// way, two proxies, GOMAXPROCS=1, medians of 6 runs, twice): GOGC=50 lowers peak RSS by
// 1.8-2.0 MB per proxy and costs 5-20% more CPU per request (0.006-0.029 s per 1000
// requests; the machine's noise is of that order). The cost falls with the hot path's
// allocation rate. A soft memory limit is not set by default: one near the proxy's
// steady size (11 MiB there) made the collector run continuously (4x the CPU).
const defaultGCPercent = 50

// gcUsage documents the flags gcFlags takes out of the command line; printed after the
// proxy's own flags by --help.
const gcUsage = `
Memory flags:
  -gc-percent int
    	garbage collection target percentage (GOGC): the heap may grow this much beyond
    	what is live before a collection; lower uses less memory and more CPU, -1 turns
    	the collector off (default: $GOGC if set, else 50)
  -memory-limit size
    	soft limit on the Go runtime's memory (GOMEMLIMIT), e.g. 64MiB; the collector
    	runs more often near it; 0 means none (default: $GOMEMLIMIT if set, else none)
`

// gcSettings are the values gcFlags found; set says which were given on the command line.
type gcSettings struct {
	percent              int
	limit                int64
	percentSet, limitSet bool
}

// gcFlags removes --gc-percent and --memory-limit (any of the forms the flag package
// accepts: one or two dashes, "=value" or a separate value) from args, up to a "--"
// terminator, and returns the remaining arguments for the proxy's own flag set.
func gcFlags(args []string) (rest []string, s gcSettings, err error) {
	rest = make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !strings.HasPrefix(a, "-") || (name != "gc-percent" && name != "memory-limit") {
			rest = append(rest, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, s, fmt.Errorf("flag needs an argument: -%s", name)
			}
			i++
			value = args[i]
		}
		switch name {
		case "gc-percent":
			n, perr := strconv.Atoi(value)
			if perr != nil {
				return nil, s, fmt.Errorf("invalid value %q for flag -gc-percent: want an integer", value)
			}
			if n < 0 {
				n = -1
			}
			s.percent, s.percentSet = n, true
		case "memory-limit":
			n, perr := parseSize(value)
			if perr != nil {
				return nil, s, fmt.Errorf("invalid value %q for flag -memory-limit: %w", value, perr)
			}
			s.limit, s.limitSet = n, true
		}
	}
	return rest, s, nil
}

// apply sets the collector: a flag wins, then the GOGC / GOMEMLIMIT environment variables
// (which the runtime has already applied), then weft-proxy's defaults.
func (s gcSettings) apply(getenv func(string) string) {
	switch {
	case s.percentSet:
		debug.SetGCPercent(s.percent)
	case getenv("GOGC") == "":
		debug.SetGCPercent(defaultGCPercent)
	}
	switch {
	case s.limitSet && s.limit > 0:
		debug.SetMemoryLimit(s.limit)
	case s.limitSet:
		debug.SetMemoryLimit(math.MaxInt64) // 0: no limit, as without GOMEMLIMIT
	}
}

// parseSize reads a byte count with an optional B, KiB, MiB, GiB suffix (GOMEMLIMIT's
// units; KB, MB and GB are taken as the same binary units).
func parseSize(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("want a byte count such as 64MiB")
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("too large")
	}
	return n * mult, nil
}

// wantsHelp reports whether the proxy's flag set will print its usage for args.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--h", "--help":
			return true
		}
	}
	return false
}

// run is main without os.Exit, for tests.
func run(args []string, stderr io.Writer, proxyMain func([]string) int) int {
	rest, s, err := gcFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "weft-proxy: %v\n", err)
		return 2
	}
	s.apply(os.Getenv)
	code := proxyMain(rest)
	if wantsHelp(rest) || len(rest) == 0 { // the proxy printed its usage
		fmt.Fprint(stderr, gcUsage)
	}
	return code
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// payloadSize is the request body (HTTP POST, gRPC ping payload); the echo server sends
// it back, so 1 KB goes each way.
const payloadSize = 1024

// fortioResult is the part of fortio's -json output the harness reads.
type fortioResult struct {
	cpuSeconds float64 // the fortio client's own CPU time

	ActualQPS         float64          `json:"ActualQPS"`
	ActualDuration    int64            `json:"ActualDuration"`
	RetCodes          map[string]int64 `json:"RetCodes"`
	DurationHistogram struct {
		Count       int64   `json:"Count"`
		Avg         float64 `json:"Avg"`
		Max         float64 `json:"Max"`
		Percentiles []struct {
			Percentile float64 `json:"Percentile"`
			Value      float64 `json:"Value"`
		} `json:"Percentiles"`
	} `json:"DurationHistogram"`
}

// ok is the count of successful calls (HTTP 200, gRPC SERVING).
func (r *fortioResult) ok() int64 { return r.RetCodes["200"] + r.RetCodes["SERVING"] }

func (r *fortioResult) total() int64 {
	var n int64
	for _, v := range r.RetCodes {
		n += v
	}
	return n
}

// pct is a percentile in milliseconds (0 when fortio did not report it).
func (r *fortioResult) pct(p float64) float64 {
	for _, x := range r.DurationHistogram.Percentiles {
		if x.Percentile == p {
			return x.Value * 1000
		}
	}
	return 0
}

// fortioLoad runs one fortio load against target (a URL, or host:port for gRPC) and
// returns its figures. -r 0.00001 gives 10 µs histogram buckets, fine enough on loopback.
//
// pacing is how the connections' requests are spread in time at a fixed rate: "jitter"
// (Istio's runner: ±10% random on each wait, so the connections drift apart), "uniform"
// (fortio spreads the connections' start evenly) or "none" (every connection fires at the
// same instants: bursts of -c requests).
func fortioLoad(ctx context.Context, bin, target string, grpc bool, qps, conns int, d time.Duration, pacing, jsonPath string) (*fortioResult, error) {
	args := []string{"load", "-qps", strconv.Itoa(qps), "-c", strconv.Itoa(conns), "-t", d.String(),
		"-payload-size", strconv.Itoa(payloadSize), "-r", "0.00001", "-p", "50,90,99,99.9",
		"-json", jsonPath, "-quiet", "-loglevel", "error"}
	switch pacing {
	case "jitter":
		args = append(args, "-jitter")
	case "uniform":
		args = append(args, "-uniform")
	}
	if grpc {
		args = append(args, "-grpc", "-ping")
	}
	args = append(args, target)
	// The deadline leaves room for fortio's warm-up calls and for writing its report.
	_ = os.Remove(jsonPath)
	cctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	out, runErr := cmd.CombinedOutput()
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		if runErr != nil {
			return nil, fmt.Errorf("bench: fortio: %w: %s", runErr, tailString(string(out), 1500))
		}
		return nil, fmt.Errorf("bench: fortio: %w", err)
	}
	r := new(fortioResult)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("bench: fortio %s: %w", jsonPath, err)
	}
	if ps := cmd.ProcessState; ps != nil {
		r.cpuSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return r, nil
}

func tailString(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

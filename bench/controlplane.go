package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cpCase is one control-plane case: a mesh of Services x Endpoints, Proxies simulated
// sidecars, with or without a Sidecar resource scoping their egress.
type cpCase struct {
	Services, Endpoints, Proxies int
	Scoped                       bool
}

func (c cpCase) String() string {
	s := fmt.Sprintf("%dx%dx%d", c.Services, c.Endpoints, c.Proxies)
	if c.Scoped {
		s += "-scoped"
	}
	return s
}

// parseCPCases reads "SxMxK" items ("1000x5x1000,100x2x10").
func parseCPCases(list string, scoping []bool) ([]cpCase, error) {
	var out []cpCase
	for _, item := range splitList(list) {
		f := strings.Split(item, "x")
		if len(f) != 3 {
			return nil, fmt.Errorf("bench: -cp-cases: %q: want SERVICESxENDPOINTSxPROXIES", item)
		}
		var n [3]int
		for i, s := range f {
			v, err := strconv.Atoi(s)
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("bench: -cp-cases: %q: %q is not a positive number", item, s)
			}
			n[i] = v
		}
		for _, sc := range scoping {
			out = append(out, cpCase{Services: n[0], Endpoints: n[1], Proxies: n[2], Scoped: sc})
		}
	}
	return out, nil
}

// scopedHosts is how many services a scoped proxy reaches.
const scopedHosts = 10

// CPResult is one control-plane case's figures.
type CPResult struct {
	Case      string `json:"case"`
	Services  int    `json:"services"`
	Endpoints int    `json:"endpoints_per_service"`
	Proxies   int    `json:"proxies"`
	Scoped    bool   `json:"scoped"`

	Connected int `json:"proxies_configured"`
	// ConnectSeconds: from the first dial until every proxy had its first full config
	// (two batches; the pause between them is not counted).
	ConnectSeconds float64 `json:"connect_seconds"`
	// Per change, the delay from the API call applying a VirtualService to each proxy's ACK
	// of the route configuration carrying it; the percentiles are over proxies, and the
	// figures the median over the changes.
	Changes  int     `json:"changes"`
	ACKP50Ms float64 `json:"ack_p50_ms"`
	ACKP99Ms float64 `json:"ack_p99_ms"`
	ACKMaxMs float64 `json:"ack_last_ms"`
	Missed   int     `json:"missed_acks"` // proxies that did not ACK a change before the deadline, all changes

	CPRSSIdleMB      float64 `json:"cp_rss_idle_mb"`      // mesh loaded, no proxy
	CPRSSConnectedMB float64 `json:"cp_rss_connected_mb"` // every proxy connected, after the initial push
	CPPeakRSSMB      float64 `json:"cp_peak_rss_mb"`      // VmHWM at the end of the case
	// MemPerProxyKB is the RSS slope from a tenth of the proxies to all of them (from
	// none, under 20 proxies).
	MemPerProxyKB   float64 `json:"cp_mem_per_proxy_kb"`
	CPCPUConnectS   float64 `json:"cp_cpu_connect_s"`    // to configure every proxy the first time
	CPCPUPerChangeS float64 `json:"cp_cpu_per_change_s"` // median over changes
	BenchCPUChangeS float64 `json:"sim_cpu_per_change_s"`

	BytesInitialPerProxy   float64 `json:"bytes_initial_per_proxy"`
	BytesPerChangePerProxy float64 `json:"bytes_per_change_per_proxy"`

	StealPct  float64    `json:"steal_pct"`
	Error     string     `json:"error,omitempty"`
	PerChange []cpChange `json:"per_change"`
}

type cpChange struct {
	P50Ms, P99Ms, MaxMs float64
	Missed              int
	CPCPUSeconds        float64
	Bytes               int64
}

// controlProc is a control plane child process (this binary in the "control" role).
type controlProc struct {
	*proc
	xds, api string
	// overLimit reports whether the RSS guard killed it.
	overLimit func() bool
	limitMB   int
}

// err explains why the control plane is gone, if it is.
func (c *controlProc) err() error {
	if !c.exited() {
		return nil
	}
	if c.overLimit() {
		return fmt.Errorf("bench: control plane killed: RSS passed the %d MB guard (-max-rss-mb)", c.limitMB)
	}
	return fmt.Errorf("bench: control plane exited: %s", c.tail())
}

func startControl(ctx context.Context, dir, name string, sz meshSize, sidecarHosts, limitMB int) (*controlProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	xp, err := freePort()
	if err != nil {
		return nil, err
	}
	ap, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &controlProc{xds: fmt.Sprintf("127.0.0.1:%d", xp), api: fmt.Sprintf("127.0.0.1:%d", ap)}
	c.proc, err = startProc(name, filepath.Join(dir, name+".log"), []string{roleEnv + "=control"}, self,
		"-services", strconv.Itoa(sz.Services), "-endpoints", strconv.Itoa(sz.Endpoints),
		"-xds", c.xds, "-api", c.api, "-sidecar-hosts", strconv.Itoa(sidecarHosts))
	if err != nil {
		return nil, err
	}
	c.overLimit, c.limitMB = c.guardRSS(limitMB), limitMB
	// A 10,000-service mesh takes a while to build the first time.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if err := c.err(); err != nil {
			return nil, err
		}
		if code, _ := httpGet(ctx, "http://"+c.api+"/ready"); code == 200 {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.stop(5 * time.Second)
			return nil, fmt.Errorf("bench: control plane not ready after 5m")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpGet(ctx context.Context, url string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20)) // a 10,000-cluster listing passes 8 MB
	return resp.StatusCode, string(b)
}

// applyVS changes the routes of svc-0 through the control plane's HTTP API (what `weft
// apply` calls); marker is in a route's path prefix, so a proxy can tell the change.
func (c *controlProc) applyVS(ctx context.Context, marker string) error {
	host := serviceHost(0)
	y := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench-change
  namespace: %s
spec:
  hosts: [%s]
  http:
  - match: [{uri: {prefix: "/%s"}}]
    route: [{destination: {host: %s}}]
  - route: [{destination: {host: %s}}]
`, benchNS, host, marker, host, host)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.api+"/apis/config?file=bench-change.yaml", strings.NewReader(y))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: apply VirtualService: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("bench: apply VirtualService: %d %s", resp.StatusCode, b)
	}
	return nil
}

// cpOptions bound a control-plane run.
type cpOptions struct {
	Dir            string
	Changes        int
	ChangeTimeout  time.Duration
	ConnectTimeout time.Duration
	MaxRSSMB       int // the control plane is killed beyond this
	Log            *slog.Logger
}

// runCPCase runs one case; errors are recorded in the result, so one failing case does
// not lose the others.
func runCPCase(ctx context.Context, o cpOptions, c cpCase) CPResult {
	r := CPResult{Case: c.String(), Services: c.Services, Endpoints: c.Endpoints, Proxies: c.Proxies, Scoped: c.Scoped}
	if err := cpCaseInto(ctx, o, c, &r); err != nil {
		r.Error = err.Error()
		o.Log.Warn("control-plane case failed", "case", c.String(), "err", err)
	}
	return r
}

func cpCaseInto(ctx context.Context, o cpOptions, c cpCase, r *CPResult) error {
	hosts := 0
	if c.Scoped {
		hosts = scopedHosts
	}
	cp, err := startControl(ctx, o.Dir, "control-"+c.String(), meshSize{c.Services, c.Endpoints}, hosts, o.MaxRSSMB)
	if err != nil {
		return err
	}
	defer cp.stop(5 * time.Second)
	steal0 := readCPUTimes()
	time.Sleep(time.Second)
	u0, err := readUsage(cp.pid())
	if err != nil {
		return err
	}
	r.CPRSSIdleMB = mb(u0.RSSKiB)

	// Connect: a bounded number of dials in flight, each proxy its own connection. A
	// tenth first, then the rest, so that memory per proxy is the slope between the
	// two (the first generation's heap growth is not a per-proxy cost).
	t0 := time.Now()
	proxies := make([]*simProxy, c.Proxies)
	defer func() {
		for _, p := range proxies {
			if p != nil {
				p.close()
			}
		}
	}()
	errs := make([]error, c.Proxies)
	cctx, ccancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer ccancel()
	connect := func(from, to int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i := from; i < to; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				p, err := dialSim(ctx, cp.xds, simNode(i, c.Services, c.Endpoints))
				if err != nil {
					errs[i] = err
					return
				}
				proxies[i] = p
				select {
				case <-p.ready:
				case <-p.done:
					errs[i] = fmt.Errorf("sim proxy %d: stream ended: %v", i, p.streamErr())
				case <-cctx.Done():
					errs[i] = fmt.Errorf("sim proxy %d: not configured before the connect timeout", i)
				}
			}(i)
		}
		wg.Wait()
	}
	first := c.Proxies
	if c.Proxies >= 20 {
		first = c.Proxies / 10
	}
	connect(0, first)
	firstDone := time.Since(t0)
	quiet(ctx, proxies, 2*time.Second, 2*time.Minute)
	if err := cp.err(); err != nil {
		r.Connected = countReady(proxies)
		return fmt.Errorf("while connecting the first %d proxies (%d configured): %w", first, r.Connected, err)
	}
	uMid, err := readUsage(cp.pid())
	if err != nil {
		return err
	}
	// Provisional figures, kept if the second batch fails.
	r.CPRSSConnectedMB = mb(uMid.RSSKiB)
	r.MemPerProxyKB = float64(uMid.RSSKiB-u0.RSSKiB) / float64(max(first, 1))
	r.BytesInitialPerProxy = float64(totalBytes(proxies)) / float64(max(countReady(proxies), 1))
	t1 := time.Now()
	connect(first, c.Proxies)
	for _, e := range errs {
		if e == nil {
			r.Connected++
		}
	}
	r.ConnectSeconds = firstDone.Seconds() + time.Since(t1).Seconds()
	if err := errors.Join(errs...); err != nil && r.Connected == 0 {
		return err
	}
	quiet(ctx, proxies, 2*time.Second, 2*time.Minute)
	if err := cp.err(); err != nil {
		r.Connected = countReady(proxies)
		return fmt.Errorf("while connecting %d proxies (%d configured): %w", c.Proxies, r.Connected, err)
	}
	u1, err := readUsage(cp.pid())
	if err != nil {
		return err
	}
	r.CPCPUConnectS = u1.CPUSeconds - u0.CPUSeconds
	r.CPRSSConnectedMB = mb(u1.RSSKiB)
	if first < c.Proxies {
		r.MemPerProxyKB = float64(u1.RSSKiB-uMid.RSSKiB) / float64(c.Proxies-first)
	} else {
		r.MemPerProxyKB = float64(u1.RSSKiB-u0.RSSKiB) / float64(max(r.Connected, 1))
	}
	r.BytesInitialPerProxy = float64(totalBytes(proxies)) / float64(max(r.Connected, 1))

	var p50s, p99s, maxs, cpus, simcpu []float64
	var bytesPer []float64
	for i := 0; i < o.Changes && ctx.Err() == nil; i++ {
		marker := fmt.Sprintf("bench-change-%d-%d", i, time.Now().UnixNano())
		var waits []<-chan struct{}
		var live []*simProxy
		for _, p := range proxies {
			if p != nil && p.streamErr() == nil {
				waits = append(waits, p.expect([]byte(marker)))
				live = append(live, p)
			}
		}
		b0 := totalBytes(proxies)
		cu0, _ := readUsage(cp.pid())
		su0, _ := readUsage(os.Getpid())
		start := time.Now()
		if err := cp.applyVS(ctx, marker); err != nil {
			return err
		}
		dctx, dcancel := context.WithTimeout(ctx, o.ChangeTimeout)
	wait:
		for _, w := range waits {
			select {
			case <-w:
			case <-dctx.Done():
				break wait
			case <-cp.done:
				break wait
			}
		}
		dcancel()
		quiet(ctx, proxies, 500*time.Millisecond, 30*time.Second)
		if err := cp.err(); err != nil {
			return fmt.Errorf("during change %d: %w", i, err)
		}
		cu1, _ := readUsage(cp.pid())
		su1, _ := readUsage(os.Getpid())
		var lat []float64
		missed := 0
		for _, p := range live {
			at := p.ackedAt()
			if at.IsZero() {
				missed++
				continue
			}
			lat = append(lat, float64(at.Sub(start).Microseconds())/1000)
		}
		ch := cpChange{Missed: missed, CPCPUSeconds: cu1.CPUSeconds - cu0.CPUSeconds, Bytes: totalBytes(proxies) - b0}
		if len(lat) > 0 {
			ch.P50Ms, ch.P99Ms, ch.MaxMs = percentile(lat, 50), percentile(lat, 99), percentile(lat, 100)
			p50s, p99s, maxs = append(p50s, ch.P50Ms), append(p99s, ch.P99Ms), append(maxs, ch.MaxMs)
		}
		cpus = append(cpus, ch.CPCPUSeconds)
		simcpu = append(simcpu, su1.CPUSeconds-su0.CPUSeconds)
		bytesPer = append(bytesPer, float64(ch.Bytes)/float64(max(len(live), 1)))
		r.Missed += missed
		r.PerChange = append(r.PerChange, ch)
		r.Changes++
		o.Log.Info("control-plane change", "case", c.String(), "change", i, "p50_ms", ch.P50Ms, "p99_ms", ch.P99Ms, "last_ms", ch.MaxMs, "missed", missed)
	}
	r.ACKP50Ms, r.ACKP99Ms, r.ACKMaxMs = median(p50s), median(p99s), median(maxs)
	r.CPCPUPerChangeS, r.BenchCPUChangeS = median(cpus), median(simcpu)
	r.BytesPerChangePerProxy = median(bytesPer)
	u2, err := readUsage(cp.pid())
	if err == nil {
		r.CPPeakRSSMB = mb(u2.HWMKiB)
	}
	r.StealPct, _ = machineShare(steal0, readCPUTimes())
	if r.Connected < c.Proxies {
		return fmt.Errorf("%d of %d proxies configured: %w", r.Connected, c.Proxies, errors.Join(errs...))
	}
	return nil
}

// quiet waits until no proxy has received anything for q (at most limit).
func quiet(ctx context.Context, proxies []*simProxy, q, limit time.Duration) {
	end := time.Now().Add(limit)
	last := totalResponses(proxies)
	since := time.Now()
	for time.Now().Before(end) && ctx.Err() == nil {
		time.Sleep(q / 5)
		n := totalResponses(proxies)
		if n != last {
			last, since = n, time.Now()
			continue
		}
		if time.Since(since) >= q {
			return
		}
	}
}

// countReady counts the proxies that received their first full config.
func countReady(ps []*simProxy) int {
	n := 0
	for _, p := range ps {
		if p == nil {
			continue
		}
		select {
		case <-p.ready:
			n++
		default:
		}
	}
	return n
}

func totalBytes(ps []*simProxy) int64 {
	var n int64
	for _, p := range ps {
		if p != nil {
			n += p.bytes.Load()
		}
	}
	return n
}

func totalResponses(ps []*simProxy) int64 {
	var n int64
	for _, p := range ps {
		if p != nil {
			n += p.responses.Load()
		}
	}
	return n
}

func mb(kib int64) float64 { return float64(kib) / 1024 }

// percentile of xs (nearest rank); p=100 is the maximum.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

// median of xs; 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

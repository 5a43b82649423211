package local

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/meshfile"
	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestProcessRestartsAndStops: a child that exits is started again; when the context
// ends the child (and its process group) is stopped.
func TestProcessRestartsAndStops(t *testing.T) {
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	p := &process{name: "flaky", argv: []string{"/bin/sh", "-c", "echo x >> " + starts + "; exit 3"}, log: io.Discard, lg: quiet()}
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	p.run(ctx)
	data, _ := os.ReadFile(starts)
	if n := strings.Count(string(data), "x"); n < 2 {
		t.Fatalf("started %d times in 2.5 s, want restarts (>= 2)", n)
	}
	if _, restarts, _ := p.status(); restarts < 1 {
		t.Fatalf("restarts = %d", restarts)
	}

	// A long-running child is stopped with the context, with its own children.
	pidFile := filepath.Join(dir, "pid")
	long := &process{name: "long", argv: []string{"/bin/sh", "-c", "sleep 300 & echo $! > " + pidFile + "; wait"}, log: io.Discard, lg: quiet()}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { long.run(ctx2); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(pidFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel2()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("process not stopped within 10 s")
	}
	b, _ := os.ReadFile(pidFile)
	var pid int
	for _, c := range strings.TrimSpace(string(b)) {
		pid = pid*10 + int(c-'0')
	}
	if pid > 0 {
		time.Sleep(100 * time.Millisecond)
		// A zombie (exited, not yet reaped by init) is dead for this purpose.
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil && !strings.Contains(string(stat), ") Z ") {
			t.Fatalf("grandchild %d still running after stop: %s", pid, stat)
		}
	}
}

// TestWorkloadBootstrap: each sidecar's bootstrap names the workload as the control plane
// expects (Explicit interception, its addresses, labels) and its ports sit on its own IP.
func TestWorkloadBootstrap(t *testing.T) {
	m, err := meshfile.Parse([]byte(`
mesh: t
services:
- name: reviews
  ports: [http:9080]
  workloads:
  - name: reviews-v2
    labels: {version: v2}
    serviceAccount: bookinfo-reviews
    command: [$WEFT, sample, bookinfo, reviews, --addr, "$APP_ADDR:9080"]
`), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	o := &Options{Mesh: m, StateDir: dir, ProxyBinary: "/bin/weft-proxy", Self: "/bin/weft", XDSAddress: "127.0.0.1:15010", Log: quiet(), ProxyLogLevel: "warn"}
	w := m.Workloads()[0]
	ws, procs, err := o.workload(w, filepath.Join(dir, "logs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) != 2 {
		t.Fatalf("%d processes, want app + sidecar", len(procs))
	}
	app, sidecar := procs[0], procs[1]
	if got := strings.Join(app.argv, " "); got != "/bin/weft sample bookinfo reviews --addr "+w.AppIP.String()+":9080" {
		t.Errorf("app argv %q", got)
	}
	if !containsEnv(app.env, "HTTP_PROXY=http://"+w.PodIP.String()+":15001") {
		t.Errorf("app env lacks its sidecar as HTTP_PROXY")
	}
	if !containsEnv(sidecar.argv, w.PodIP.String()+":15021") {
		t.Errorf("sidecar health port not on its own IP: %v", sidecar.argv)
	}
	b, err := bootstrap.Load(filepath.Join(dir, "proxies", "reviews-v2.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := node.Parse(b.GetNode())
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != ws.NodeID || p.Type != node.Sidecar || p.Interception != node.Explicit || p.IP != w.PodIP || p.AppIP != w.AppIP ||
		p.ServiceAccount != "bookinfo-reviews" || p.Labels["version"] != "v2" || p.Labels["app"] != "reviews" {
		t.Fatalf("parsed node %+v", p)
	}
	if p.IP == (netip.Addr{}) || !strings.HasPrefix(p.IP.String(), "127.2.") {
		t.Fatalf("pod IP %v", p.IP)
	}
}

func containsEnv(list []string, want string) bool {
	for _, s := range list {
		if s == want {
			return true
		}
	}
	return false
}

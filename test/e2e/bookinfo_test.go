//go:build e2e

// Package e2e runs whole weft processes. This file runs Istio's Bookinfo scenarios on a
// local mesh started by `weft up` (real processes, real sockets): the built weft and
// weft-proxy binaries, the Go Bookinfo, and Istio's own networking files, unchanged,
// from ../shared/istio-samples.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/testnet"
)

func repoRoot(t testing.TB) string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(f), "..", "..")
}

func istioSample(t testing.TB, name string) string {
	p := filepath.Join(repoRoot(t), "..", "shared", "istio-samples", "samples", "bookinfo", "networking", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("Istio samples not found (%v): they live in ../shared beside the repository", err)
	}
	return p
}

// buildBinaries builds weft and weft-proxy once per test binary.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func binaries(t testing.TB) string {
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "weft-e2e-bin")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/weft", "./cmd/weft-proxy")
		cmd.Dir = repoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func freePort(t testing.TB) int { return testnet.FreePort(t) }

// mesh is a running `weft up` of Bookinfo.
type mesh struct {
	t         *testing.T
	configDir string
	gateway   string // http://127.0.0.1:PORT
	api       string
	weft      string
	stateDir  string
	out       *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startBookinfo runs weft up with the bundled Bookinfo mesh file (on a free gateway port)
// and a config directory holding the given Istio sample files.
func startBookinfo(t *testing.T, samples ...string) *mesh {
	t.Helper()
	bin := binaries(t)
	tmp := t.TempDir()
	m := &mesh{t: t, configDir: filepath.Join(tmp, "config"), stateDir: filepath.Join(tmp, "state"), weft: filepath.Join(bin, "weft"), out: &lockedBuffer{}}
	if err := os.MkdirAll(m.configDir, 0o755); err != nil {
		t.Fatal(err)
	}
	meshData, err := os.ReadFile(filepath.Join(repoRoot(t), "samples", "bookinfo", "mesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gwPort := freePort(t)
	meshFile := filepath.Join(tmp, "mesh.yaml")
	data := strings.Replace(string(meshData), "port: 8080", fmt.Sprintf("port: %d", gwPort), 1)
	if err := os.WriteFile(meshFile, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	// The gateway's Gateway resource must listen on the same port.
	m.gateway = fmt.Sprintf("http://127.0.0.1:%d", gwPort)
	for _, s := range samples {
		m.copySample(s)
	}
	apiPort, xdsPort := freePort(t), freePort(t)
	m.api = fmt.Sprintf("http://127.0.0.1:%d", apiPort)

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, m.weft, "up", "-f", meshFile, "--config", m.configDir,
		"--state-dir", m.stateDir, "--xds-address", fmt.Sprintf("127.0.0.1:%d", xdsPort),
		"--api-address", fmt.Sprintf("127.0.0.1:%d", apiPort), "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = m.out, m.out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("weft up output:\n%s", m.out.String())
			logs, _ := filepath.Glob(filepath.Join(m.stateDir, "logs", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("--- %s (tail)\n%s", filepath.Base(l), b)
			}
		}
	})
	m.eventually(60*time.Second, func() error {
		if !strings.Contains(m.out.String(), "mesh ready") {
			return fmt.Errorf("mesh not ready")
		}
		return nil
	})
	return m
}

// copySample copies an Istio sample file into the config directory; the gateway file's
// port is rewritten to the test's gateway port.
func (m *mesh) copySample(name string) {
	data, err := os.ReadFile(istioSample(m.t, name))
	if err != nil {
		m.t.Fatal(err)
	}
	m.writeConfig(name, string(data))
}

func (m *mesh) writeConfig(name, content string) {
	if name == "bookinfo-gateway.yaml" && m.gateway != "" {
		port := m.gateway[strings.LastIndex(m.gateway, ":")+1:]
		content = strings.Replace(content, "number: 8080", "number: "+port, 1)
	}
	tmp := filepath.Join(m.configDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.configDir, name)); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mesh) removeConfig(name string) {
	if err := os.Remove(filepath.Join(m.configDir, name)); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mesh) eventually(d time.Duration, f func() error) {
	m.t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Fatalf("not within %v: %v", d, err)
}

// user is a browser session against the gateway.
type user struct {
	m *mesh
	c *http.Client
}

func (m *mesh) user(name string) *user {
	jar, _ := cookiejar.New(nil)
	u := &user{m: m, c: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
	if name != "" {
		resp, err := u.c.PostForm(m.gateway+"/login", url.Values{"username": {name}, "passwd": {"x"}})
		if err != nil {
			m.t.Fatal(err)
		}
		resp.Body.Close()
	}
	return u
}

// page fetches /productpage and says which reviews version answered: "v1" (no stars),
// "v2" (black), "v3" (red); the body is returned too.
func (u *user) page() (version, body string, err error) {
	resp, err := u.c.Get(u.m.gateway + "/productpage")
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body = string(b)
	if resp.StatusCode != 200 {
		return "", body, fmt.Errorf("GET /productpage: %d", resp.StatusCode)
	}
	switch {
	case strings.Contains(body, "star-full star-black"):
		return "v2", body, nil
	case strings.Contains(body, "star-full star-red"):
		return "v3", body, nil
	case strings.Contains(body, "Reviewer1"):
		return "v1", body, nil
	}
	return "none", body, nil
}

func (u *user) versions(n int) map[string]int {
	got := map[string]int{}
	for i := 0; i < n; i++ {
		v, _, err := u.page()
		if err != nil {
			v = "error"
		}
		got[v]++
	}
	return got
}

func TestBookinfoAllV1AndJasonV2(t *testing.T) {
	m := startBookinfo(t, "bookinfo-gateway.yaml", "destination-rule-all.yaml", "virtual-service-all-v1.yaml")
	anon := m.user("")
	m.eventually(30*time.Second, func() error {
		if got := anon.versions(10); got["v1"] != 10 {
			return fmt.Errorf("all-v1: %v", got)
		}
		return nil
	})

	m.copySample("virtual-service-reviews-test-v2.yaml")
	jason := m.user("jason")
	m.eventually(10*time.Second, func() error {
		if got := jason.versions(10); got["v2"] != 10 {
			return fmt.Errorf("jason: %v, want v2 only", got)
		}
		return nil
	})
	_, body, _ := jason.page()
	if !strings.Contains(body, "jason") {
		t.Errorf("the page does not greet jason")
	}
	if got := m.user("mary").versions(10); got["v1"] != 10 {
		t.Fatalf("another user: %v, want v1 only", got)
	}
}

func TestBookinfoWeightedSplit(t *testing.T) {
	m := startBookinfo(t, "bookinfo-gateway.yaml", "destination-rule-all.yaml", "virtual-service-reviews-80-20.yaml")
	anon := m.user("")
	m.eventually(30*time.Second, func() error {
		if v, _, err := anon.page(); err != nil || v == "none" {
			return fmt.Errorf("page: %v %v", v, err)
		}
		return nil
	})
	const n = 300
	got := anon.versions(n)
	share := float64(got["v1"]) / n * 100
	t.Logf("80/20 over %d pages: %v (v1 %.1f%%)", n, got, share)
	if got["v1"]+got["v2"] != n || share < 72 || share > 88 {
		t.Fatalf("80/20 split: %v (v1 %.1f%%), want v1 80±8%% and only v1/v2", got, share)
	}
}

func TestBookinfoFaults(t *testing.T) {
	m := startBookinfo(t, "bookinfo-gateway.yaml", "destination-rule-all.yaml", "virtual-service-all-v1.yaml", "virtual-service-reviews-test-v2.yaml")
	jason := m.user("jason")
	m.eventually(30*time.Second, func() error {
		if v, _, err := jason.page(); v != "v2" {
			return fmt.Errorf("jason sees %q (%v), want v2", v, err)
		}
		return nil
	})

	// ratings-test-abort: ratings answers 500 for jason.
	m.copySample("virtual-service-ratings-test-abort.yaml")
	m.eventually(10*time.Second, func() error {
		_, body, err := jason.page()
		if err != nil || !strings.Contains(body, "Ratings service is currently unavailable") {
			return fmt.Errorf("abort rule not in effect (%v)", err)
		}
		return nil
	})
	m.removeConfig("virtual-service-ratings-test-abort.yaml")

	// ratings-test-delay: a 7 s delay for jason; productpage gives up on reviews after
	// its two 3 s tries.
	m.copySample("virtual-service-ratings-test-delay.yaml")
	m.eventually(40*time.Second, func() error {
		start := time.Now()
		_, body, err := jason.page()
		if err != nil || !strings.Contains(body, "Sorry, product reviews are currently unavailable") {
			return fmt.Errorf("delay rule not in effect after %v (%v)", time.Since(start), err)
		}
		return nil
	})
}

// TestBookinfoEditsUnderLoad: a file edit takes effect within a second while a load of
// requests sees no failure, and a malformed file is rejected with its field path while
// the old rules keep serving.
func TestBookinfoEditsUnderLoad(t *testing.T) {
	m := startBookinfo(t, "bookinfo-gateway.yaml", "destination-rule-all.yaml", "virtual-service-all-v1.yaml")
	anon := m.user("")
	m.eventually(30*time.Second, func() error {
		if got := anon.versions(5); got["v1"] != 5 {
			return fmt.Errorf("all-v1: %v", got)
		}
		return nil
	})

	ctx, stop := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := m.user("")
			for ctx.Err() == nil {
				if v, _, err := u.page(); err != nil || v == "none" {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(v, err))
				} else {
					ok.Add(1)
				}
			}
		}()
	}

	// Switch all traffic to v3 by editing the file in place.
	v3, err := os.ReadFile(istioSample(t, "virtual-service-reviews-v3.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	edited := time.Now()
	m.writeConfig("virtual-service-all-v1.yaml", withoutDoc(readSample(t, "virtual-service-all-v1.yaml"), "name: reviews\n")+"---\n"+string(v3))
	probe := m.user("")
	m.eventually(5*time.Second, func() error {
		if v, _, _ := probe.page(); v != "v3" {
			return fmt.Errorf("still %s", v)
		}
		return nil
	})
	took := time.Since(edited)
	t.Logf("edit applied after %v", took)
	if took > 1500*time.Millisecond {
		t.Errorf("the edit took %v to apply, want about a second", took)
	}

	// A malformed file: rejected with its field path, and v3 keeps serving.
	m.writeConfig("broken.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-broken}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -10
`)
	m.eventually(5*time.Second, func() error {
		resp, err := http.Get(m.api + "/apis/errors")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "broken.yaml") || !strings.Contains(string(b), "spec.http[0].route[0].weight") {
			return fmt.Errorf("errors reported: %s", b)
		}
		return nil
	})
	time.Sleep(time.Second)
	stop()
	wg.Wait()
	t.Logf("load: %d pages served, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed during config changes; first: %v", failed.Load(), firstErr.Load())
	}
	if got := anon.versions(5); got["v3"] != 5 {
		t.Fatalf("after the malformed file: %v, want v3 still", got)
	}
}

func readSample(t *testing.T, name string) string {
	b, err := os.ReadFile(istioSample(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// withoutDoc drops the YAML documents containing marker.
func withoutDoc(content, marker string) string {
	var keep []string
	for _, doc := range strings.Split(content, "\n---") {
		if !strings.Contains(doc, marker) {
			keep = append(keep, doc)
		}
	}
	return strings.Join(keep, "\n---")
}

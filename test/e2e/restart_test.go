//go:build e2e && linux

package e2e

// This file restarts the control plane under a running sidecar (issue 3, "Restart"):
// `weft control` (process 1) serves a mesh file and a watched config directory;
// `weft-proxy` (process 2) is a client workload's sidecar in explicit mode (its
// outbound HTTP proxy on POD_IP:15001), bootstrapped as `weft up` does; the service's
// workload is an HTTP server in this test. The control plane is SIGKILLed: traffic
// through the sidecar keeps flowing; it is started again with the same flags: the
// sidecar reconnects, holds the same resource versions, and a config edit made after
// the restart reaches it.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
)

// Addresses of this test, apart from the 127.1.0.x / 127.2.0.x that `weft up` assigns
// (the Bookinfo tests may run at the same time).
var (
	rsAppIP   = netip.MustParseAddr("127.1.213.7") // the web service's workload
	rsPodIP   = netip.MustParseAddr("127.2.213.8") // the clients' sidecars
	rsPodIP2  = netip.MustParseAddr("127.2.213.9")
	rsCliApp  = netip.MustParseAddr("127.1.213.8") // the client applications (this test)
	rsCliApp2 = netip.MustParseAddr("127.1.213.9")
)

var (
	rsBuildOnce sync.Once
	rsBinDir    string
	rsBuildErr  error
)

// rsBinaries builds weft and weft-proxy once, with the race detector when this test
// runs with it, so the processes report their own races.
func rsBinaries(t *testing.T) string {
	rsBuildOnce.Do(func() {
		rsBinDir, rsBuildErr = os.MkdirTemp("", "weft-e2e-restart-bin")
		if rsBuildErr != nil {
			return
		}
		args := []string{"build", "-o", rsBinDir + "/"}
		if raceEnabled {
			args = append(args, "-race")
		}
		_, f, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", append(args, "./cmd/weft", "./cmd/weft-proxy")...)
		cmd.Dir = filepath.Join(filepath.Dir(f), "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			rsBuildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if rsBuildErr != nil {
		t.Fatal(rsBuildErr)
	}
	return rsBinDir
}

var rsHTTP = &http.Client{Timeout: 10 * time.Second}

func rsFreePort(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type rsBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *rsBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *rsBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// rsProcess is a started binary; its output is kept for failures and race reports.
type rsProcess struct {
	name string
	cmd  *exec.Cmd
	out  *rsBuffer
	done chan struct{}
}

func rsStart(t *testing.T, name, bin string, args ...string) *rsProcess {
	t.Helper()
	p := &rsProcess{name: name, cmd: exec.Command(bin, args...), out: &rsBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// The processes die with the test binary, even when it is killed (a timeout).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t, os.Interrupt)
		if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", p.name)
		}
		if t.Failed() {
			out := p.out.String()
			if len(out) > 8000 {
				out = "..." + out[len(out)-8000:]
			}
			t.Logf("--- %s output:\n%s", p.name, out)
		}
	})
	return p
}

// stop signals the process and waits for it (then kills it after 15 s).
func (p *rsProcess) stop(t *testing.T, sig os.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not stop within 15s of %v", p.name, sig)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func rsEventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	if err := rsWait(d, f); err != nil {
		t.Fatalf("%s: not within %v: %v", what, d, err)
	}
}

// rsWait calls f until it succeeds or d passes; it returns f's last error.
func rsWait(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func rsVirtualService(epoch string) string {
	return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: default
spec:
  hosts: [web.default.svc.cluster.local]
  http:
  - headers:
      response:
        set: {x-epoch: "` + epoch + `"}
    route:
    - destination: {host: web.default.svc.cluster.local}
`
}

func rsWriteConfig(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// syncedVersions runs `weft proxy-status --server API` and returns the proxy's
// SYNCED version per type (CDS LDS EDS RDS), or an error naming what is not synced.
func syncedVersions(weft, api, id string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, weft, "proxy-status", "--server", api, id).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("weft proxy-status: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("proxy %s not listed:\n%s", id, out)
	}
	head := regexp.MustCompile(`\s{2,}`).Split(lines[0], -1)
	for _, l := range lines[1:] {
		cells := regexp.MustCompile(`\s{2,}`).Split(l, -1)
		if cells[0] != id {
			continue
		}
		if len(cells) != len(head) {
			return nil, fmt.Errorf("cannot read %q under %q", l, lines[0])
		}
		if strings.Contains(cells[1], "disconnected") {
			return nil, fmt.Errorf("disconnected: %s", l)
		}
		got := map[string]string{}
		for i, h := range head {
			switch h {
			case "CDS", "LDS", "EDS", "RDS":
				m := regexp.MustCompile(`^SYNCED \((\S+)\)$`).FindStringSubmatch(cells[i])
				if m == nil {
					return nil, fmt.Errorf("%s %s", h, cells[i])
				}
				got[h] = m[1]
			}
		}
		return got, nil
	}
	return nil, fmt.Errorf("proxy %s not listed:\n%s", id, out)
}

// dumpVersions reads the version_info of every dynamic resource in the proxy's
// config_dump ("cluster/NAME" -> version), the proxy's own view of what it holds.
func dumpVersions(admin string) (map[string]string, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(admin + "/config_dump")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return nil, fmt.Errorf("config_dump: %s %v", resp.Status, err)
	}
	// Read loosely (protojson would need every typed config's type registered), in
	// either JSON spelling of the field names (Envoy writes proto names).
	var dump map[string]any
	if err := json.Unmarshal(body, &dump); err != nil {
		return nil, fmt.Errorf("config_dump: %w", err)
	}
	field := func(m any, name string) any {
		mm, _ := m.(map[string]any)
		if v, ok := mm[name]; ok {
			return v
		}
		parts := strings.Split(name, "_")
		for i := 1; i < len(parts); i++ {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
		return mm[strings.Join(parts, "")]
	}
	list := func(m any, name string) []any { l, _ := field(m, name).([]any); return l }
	str := func(m any, path ...string) string {
		for _, p := range path {
			m = field(m, p)
		}
		s, _ := m.(string)
		return s
	}
	out := map[string]string{}
	for _, c := range list(dump, "configs") {
		for _, x := range list(c, "dynamic_active_clusters") {
			out["cluster/"+str(x, "cluster", "name")] = str(x, "version_info")
		}
		for _, x := range list(c, "dynamic_listeners") {
			out["listener/"+str(x, "name")] = str(x, "active_state", "version_info")
		}
		for _, x := range list(c, "dynamic_route_configs") {
			out["route/"+str(x, "route_config", "name")] = str(x, "version_info")
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("config_dump holds no dynamic resources")
	}
	return out, nil
}

func TestControlPlaneRestart(t *testing.T) {
	bin := rsBinaries(t)
	weft, proxyBin := filepath.Join(bin, "weft"), filepath.Join(bin, "weft-proxy")
	tmp := t.TempDir()

	// The web service's workload: an HTTP server that names itself.
	appLn, err := net.Listen("tcp", net.JoinHostPort(rsAppIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	appPort := appLn.Addr().(*net.TCPAddr).Port
	var served atomic.Int64
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprintf(w, "web says hello to %s\n", r.URL.Path)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = app.Serve(appLn) }()
	t.Cleanup(func() { _ = app.Close() })

	meshFile := filepath.Join(tmp, "mesh.yaml")
	mesh := fmt.Sprintf(`mesh: restart
services:
- name: web
  ports: [http:%d]
  workloads:
  - name: web-v1
    labels: {version: v1}
    address: %s
    noSidecar: true
`, appPort, rsAppIP)
	if err := os.WriteFile(meshFile, []byte(mesh), 0o644); err != nil {
		t.Fatal(err)
	}
	configDir := filepath.Join(tmp, "config")
	if err := os.MkdirAll(configDir, 0o755); err != nil {
		t.Fatal(err)
	}
	rsWriteConfig(t, configDir, "web.yaml", rsVirtualService("one"))

	xdsAddr := fmt.Sprintf("127.0.0.1:%d", rsFreePort(t, "127.0.0.1"))
	apiPort := rsFreePort(t, "127.0.0.1")
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	controlArgs := []string{"control", "--config", configDir, "-f", meshFile, "--xds-address", xdsAddr,
		"--api-address", fmt.Sprintf("127.0.0.1:%d", apiPort), "--state-dir", filepath.Join(tmp, "state"), "--log-level", "warn"}
	startControl := func(name string) *rsProcess {
		p := rsStart(t, name, weft, controlArgs...)
		rsEventually(t, 30*time.Second, name+" ready", func() error {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited: %s", name, p.out.String())
			default:
			}
			resp, err := rsHTTP.Get(api + "/ready")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("/ready: %s", resp.Status)
			}
			return nil
		})
		return p
	}
	cp1 := startControl("weft control (1)")

	// Two client workloads, each with a sidecar bootstrapped as `weft up` bootstraps
	// its sidecars: one on State of the World ADS, one on Delta ADS.
	sidecars := []*rsSidecar{
		rsNewSidecar(t, proxyBin, tmp, xdsAddr, "sleep", rsPodIP, rsCliApp, false, appPort),
		rsNewSidecar(t, proxyBin, tmp, xdsAddr, "sleep-delta", rsPodIP2, rsCliApp2, true, appPort),
	}
	for _, sc := range sidecars {
		rsEventually(t, 60*time.Second, sc.name+": traffic with the first rule", sc.wantEpoch("one"))
		rsEventually(t, 30*time.Second, sc.name+": proxy-status SYNCED", func() (err error) {
			sc.before, err = syncedVersions(weft, api, sc.id)
			return err
		})
		var err error
		if sc.dumpBefore, err = dumpVersions(sc.admin); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: versions before the restart: %v", sc.name, sc.before)
	}

	// A load from here until the restarted control plane has synced the proxies: every
	// request must succeed.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var loadOK, loadFail atomic.Int64
	var firstFail atomic.Value
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 0; loadCtx.Err() == nil && i < 100000; i++ {
			sc := sidecars[i%len(sidecars)]
			if _, err := sc.call(fmt.Sprintf("/load/%d", i)); err != nil {
				loadFail.Add(1)
				firstFail.CompareAndSwap(nil, sc.name+": "+err.Error())
			} else {
				loadOK.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer func() { stopLoad(); <-loadDone }()

	// Control plane down: traffic keeps flowing on the last good config.
	if err := cp1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-cp1.done
	if _, err := rsHTTP.Get(api + "/ready"); err == nil {
		t.Fatal("the control plane still answers after SIGKILL")
	}
	for i := 0; i < 50; i++ {
		sc := sidecars[i%len(sidecars)]
		if got, err := sc.call(fmt.Sprintf("/down/%d", i)); err != nil || got != "one" {
			t.Fatalf("%s: request %d with the control plane down: x-epoch %q, %v", sc.name, i, got, err)
		}
	}

	// Restarted with the same flags: the proxies reconnect and are sent the same
	// config (content versions: the same input gives the same versions in a new
	// process).
	startControl("weft control (2)")
	for _, sc := range sidecars {
		var after map[string]string
		if err := rsWait(90*time.Second, func() (err error) {
			after, err = syncedVersions(weft, api, sc.id)
			return err
		}); err != nil {
			// Not fatal: what the proxy holds and serves is checked next.
			t.Errorf("%s: proxy-status not SYNCED within 90s of the restart: %v", sc.name, err)
		}
		for typ, v := range sc.before {
			if after != nil && after[typ] != v {
				t.Errorf("%s: %s version %s after the restart, %s before", sc.name, typ, after[typ], v)
			}
		}
		dumpAfter, err := dumpVersions(sc.admin)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range sc.dumpBefore {
			if dumpAfter[k] != v {
				t.Errorf("%s: config_dump %s: version %q after the restart, %q before", sc.name, k, dumpAfter[k], v)
			}
		}
		if len(dumpAfter) != len(sc.dumpBefore) {
			t.Errorf("%s: config_dump holds %d resources after the restart, %d before", sc.name, len(dumpAfter), len(sc.dumpBefore))
		}
	}
	stopLoad()
	<-loadDone
	t.Logf("load across the restart: %d ok, %d failed", loadOK.Load(), loadFail.Load())
	if n := loadFail.Load(); n > 0 {
		t.Errorf("%d requests failed across the restart; first: %v", n, firstFail.Load())
	}
	if loadOK.Load() < 20 {
		t.Errorf("only %d requests ran across the restart", loadOK.Load())
	}

	// A config edit after the restart reaches the proxies.
	rsWriteConfig(t, configDir, "web.yaml", rsVirtualService("two"))
	for _, sc := range sidecars {
		rsEventually(t, 30*time.Second, sc.name+": the edited rule", sc.wantEpoch("two"))
		if err := rsWait(30*time.Second, func() error {
			v, err := syncedVersions(weft, api, sc.id)
			if err == nil && v["RDS"] == sc.before["RDS"] {
				err = fmt.Errorf("RDS version still %s", v["RDS"])
			}
			return err
		}); err != nil {
			t.Errorf("%s: proxy-status not SYNCED after the edit: %v", sc.name, err)
		}
	}
	if served.Load() == 0 {
		t.Error("the web workload served nothing")
	}
}

// rsSidecar is a client workload's sidecar and the workload's HTTP client.
type rsSidecar struct {
	delta              bool
	name, id, admin    string
	call               func(path string) (epoch string, err error)
	before, dumpBefore map[string]string
}

func (sc *rsSidecar) wantEpoch(want string) func() error {
	return func() error {
		got, err := sc.call("/probe")
		if err == nil && got != want {
			err = fmt.Errorf("x-epoch %q, want %q", got, want)
		}
		return err
	}
}

// rsNewSidecar starts weft-proxy for workload name (pod IP podIP, application on
// appIP) in explicit mode, and returns it with a client that uses its outbound
// listener as an HTTP proxy, a new connection per request, so every request goes
// through accept, route and upstream connect.
func rsNewSidecar(t *testing.T, proxyBin, tmp, xdsAddr, name string, podIP, appIP netip.Addr, delta bool, appPort int) *rsSidecar {
	t.Helper()
	id := node.ID(node.Sidecar, podIP, name, "default", "default.svc.cluster.local")
	admin := fmt.Sprintf("127.0.0.1:%d", rsFreePort(t, "127.0.0.1"))
	b := bootstrap.FromFlags(bootstrap.Flags{NodeID: id, Cluster: name, XDSAddress: xdsAddr, AdminAddress: admin, Delta: delta})
	b.Node.Metadata = node.Metadata(&node.Proxy{Type: node.Sidecar, IP: podIP, Workload: name, Namespace: "default",
		ServiceAccount: name, Labels: map[string]string{"app": name}, Interception: node.Explicit, AppIP: appIP})
	b.Node.Locality = &corev3.Locality{}
	if err := bootstrap.Validate(b); err != nil {
		t.Fatal(err)
	}
	bs, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	bsFile := filepath.Join(tmp, name+".json")
	if err := os.WriteFile(bsFile, bs, 0o644); err != nil {
		t.Fatal(err)
	}
	rsStart(t, "weft-proxy "+name, proxyBin, "-c", bsFile,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", rsFreePort(t, "127.0.0.1")),
		"--stats-address", fmt.Sprintf("127.0.0.1:%d", rsFreePort(t, "127.0.0.1")),
		"--log-level", "warn", "--drain-timeout", "2s")

	proxyURL, _ := url.Parse(fmt.Sprintf("http://%s:15001", podIP))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(proxyURL), DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: appIP.AsSlice()}}).DialContext,
	}}
	target := fmt.Sprintf("http://web.default.svc.cluster.local:%d", appPort)
	return &rsSidecar{delta: delta, name: name, id: id, admin: "http://" + admin, call: func(path string) (string, error) {
		resp, err := client.Get(target + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "web says hello to "+path) {
			return "", fmt.Errorf("GET %s: %s %q", path, resp.Status, body)
		}
		return resp.Header.Get("x-epoch"), nil
	}}
}

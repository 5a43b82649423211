//go:build e2e

package e2e

// This file proves issue 4 (zero-trust security) on a whole local mesh started by
// `weft up` (real processes, real TLS over loopback, certificates issued by the control
// plane's CA by CSR): PeerAuthentication STRICT/PERMISSIVE against a plaintext client,
// the caller's SPIFFE identity as the server sees it (x-forwarded-client-cert),
// DestinationRule TLS origination to a STRICT workload, AuthorizationPolicy on Bookinfo,
// RequestAuthentication with keys and tokens made here, and failing closed.
//
// The mesh is Bookinfo with two changes: "details" is served by an echo program (this
// test binary, re-executed with SEC_E2E_ROLE=echo) that answers productpage as Bookinfo's
// details does and records the headers it receives, and a "sleep" workload with its own
// service account is a client whose sidecar the test sends requests through (its
// outbound HTTP proxy on POD_IP:15001), as the application beside it would.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// secRoleEnv makes this test binary run as a mesh workload instead of the tests.
const secRoleEnv = "SEC_E2E_ROLE"

func init() {
	if os.Getenv(secRoleEnv) == "echo" {
		secEcho(os.Getenv("SEC_E2E_ADDR"))
		os.Exit(0)
	}
}

// secEcho is the echo workload: GET /details/{id} answers as Bookinfo's details (so the
// product page renders), GET /_seen lists the x-forwarded-client-cert values received
// so far, anything else answers its own request (method, path, headers) as JSON.
func secEcho(addr string) {
	var mu sync.Mutex
	var seen []string
	record := func(r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < 10000 {
			seen = append(seen, r.Header.Get("X-Forwarded-Client-Cert"))
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /details/{id}", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		id, _ := strconv.Atoi(r.PathValue("id"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%d,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"weft-e2e-echo","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`, id)
	})
	mux.HandleFunc("GET /_seen", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(seen)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(secEchoed{Method: r.Method, Path: r.URL.Path, Headers: r.Header})
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

// secEchoed is the echo workload's answer.
type secEchoed struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Headers http.Header `json:"headers"`
}

// secMeshFile is Bookinfo with the echo as details and a sleep client. %[1]d is the
// gateway port, %[2]q the echo program.
const secMeshFile = `mesh: security
namespace: default
gateway:
  port: %[1]d
services:
- name: productpage
  ports: [http:9080]
  workloads:
  - name: productpage-v1
    labels: {version: v1}
    serviceAccount: bookinfo-productpage
    command: [$WEFT, sample, bookinfo, productpage, --addr, "$APP_ADDR:9080"]
- name: details
  ports: [http:9080]
  workloads:
  - name: details-v1
    labels: {version: v1}
    serviceAccount: bookinfo-details
    command: [%[2]q]
    env: {SEC_E2E_ROLE: echo, SEC_E2E_ADDR: "$APP_ADDR:9080"}
- name: reviews
  ports: [http:9080]
  workloads:
  - name: reviews-v1
    labels: {version: v1}
    serviceAccount: bookinfo-reviews
    command: [$WEFT, sample, bookinfo, reviews, --version, v1, --addr, "$APP_ADDR:9080"]
  - name: reviews-v2
    labels: {version: v2}
    serviceAccount: bookinfo-reviews
    command: [$WEFT, sample, bookinfo, reviews, --version, v2, --addr, "$APP_ADDR:9080"]
- name: ratings
  ports: [http:9080]
  workloads:
  - name: ratings-v1
    labels: {version: v1}
    serviceAccount: bookinfo-ratings
    command: [$WEFT, sample, bookinfo, ratings, --addr, "$APP_ADDR:9080"]
- name: sleep
  ports: [http:9080]
  workloads:
  - name: sleep
    serviceAccount: sleep
    command: [%[2]q]
    env: {SEC_E2E_ROLE: echo, SEC_E2E_ADDR: "$APP_ADDR:9080"}
`

// secGateway routes the gateway to productpage (Istio's bookinfo-gateway.yaml).
const secGateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}, {uri: {prefix: /static}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
`

// Identities of the mesh's workloads (SPIFFE IDs as Istio's principals write them).
const (
	secProductpageID = "cluster.local/ns/default/sa/bookinfo-productpage"
	secSleepID       = "cluster.local/ns/default/sa/sleep"
)

var (
	secBuildOnce sync.Once
	secBinDir    string
	secBuildErr  error
)

// secBinaries builds weft and weft-proxy once, with the race detector when this test
// runs with it, so the mesh's processes report their own races.
func secBinaries(t *testing.T) string {
	secBuildOnce.Do(func() {
		secBinDir, secBuildErr = os.MkdirTemp("", "weft-e2e-security-bin")
		if secBuildErr != nil {
			return
		}
		args := []string{"build", "-o", secBinDir + "/"}
		if raceEnabled {
			args = append(args, "-race")
		}
		_, f, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", append(args, "./cmd/weft", "./cmd/weft-proxy")...)
		cmd.Dir = filepath.Join(filepath.Dir(f), "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			secBuildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if secBuildErr != nil {
		t.Fatal(secBuildErr)
	}
	return secBinDir
}

type secBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *secBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *secBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// secMesh is a running `weft up` of secMeshFile.
type secMesh struct {
	t                   *testing.T
	weft                string
	configDir, stateDir string
	api, gateway        string // http://127.0.0.1:PORT
	out                 *secBuffer
	// workloads by name: application and sidecar (mesh) addresses from state.json.
	workloads map[string]struct{ App, Sidecar string }
}

// secStart runs the mesh with the gateway config and configs (file name -> YAML) in its
// config directory, and waits until the product page renders details and reviews.
func secStart(t *testing.T, configs map[string]string, upArgs ...string) *secMesh {
	t.Helper()
	bin := secBinaries(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	m := &secMesh{t: t, weft: filepath.Join(bin, "weft"), configDir: filepath.Join(tmp, "config"),
		stateDir: filepath.Join(tmp, "state"), out: &secBuffer{}}
	if err := os.MkdirAll(m.configDir, 0o755); err != nil {
		t.Fatal(err)
	}
	gwPort := secFreePort(t)
	m.gateway = fmt.Sprintf("http://127.0.0.1:%d", gwPort)
	meshFile := filepath.Join(tmp, "mesh.yaml")
	if err := os.WriteFile(meshFile, []byte(fmt.Sprintf(secMeshFile, gwPort, self)), 0o644); err != nil {
		t.Fatal(err)
	}
	m.write("gateway.yaml", fmt.Sprintf(secGateway, gwPort))
	for name, c := range configs {
		m.write(name, c)
	}
	apiPort, xdsPort := secFreePort(t), secFreePort(t)
	m.api = fmt.Sprintf("http://127.0.0.1:%d", apiPort)

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, m.weft, "up", "-f", meshFile, "--config", m.configDir,
		"--state-dir", m.stateDir, "--xds-address", fmt.Sprintf("127.0.0.1:%d", xdsPort),
		"--api-address", fmt.Sprintf("127.0.0.1:%d", apiPort), "--log-level", "warn")
	cmd.Args = append(cmd.Args, upArgs...)
	cmd.Stdout, cmd.Stderr = m.out, m.out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		logs, _ := filepath.Glob(filepath.Join(m.stateDir, "logs", "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if strings.Contains(string(b), "WARNING: DATA RACE") {
				t.Errorf("%s reports a data race", filepath.Base(l))
			}
			if t.Failed() {
				// The applications log every request: keep their warnings and errors.
				var keep []string
				for _, line := range strings.Split(string(b), "\n") {
					if strings.HasSuffix(l, ".proxy.log") || strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
						keep = append(keep, line)
					}
				}
				if len(keep) > 15 {
					keep = keep[len(keep)-15:]
				}
				t.Logf("--- %s (tail)\n%s", filepath.Base(l), strings.Join(keep, "\n"))
			}
		}
		if strings.Contains(m.out.String(), "WARNING: DATA RACE") {
			t.Errorf("weft up reports a data race")
		}
		if t.Failed() {
			t.Logf("weft up output:\n%s", m.out.String())
		}
	})
	m.eventually(90*time.Second, "mesh ready", func() error {
		if !strings.Contains(m.out.String(), "mesh ready") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	data, err := os.ReadFile(filepath.Join(m.stateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Workloads []struct{ Name, App, Sidecar string }
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	m.workloads = map[string]struct{ App, Sidecar string }{}
	for _, w := range st.Workloads {
		m.workloads[w.Name] = struct{ App, Sidecar string }{w.App, w.Sidecar}
	}
	for _, w := range []string{"productpage-v1", "details-v1", "reviews-v1", "sleep"} {
		if m.workloads[w].Sidecar == "" {
			t.Fatalf("state.json has no sidecar address for %s: %s", w, data)
		}
	}
	return m
}

func secFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// write puts a config file in place atomically (the directory is watched).
func (m *secMesh) write(name, content string) {
	m.t.Helper()
	tmp := filepath.Join(m.configDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.configDir, name)); err != nil {
		m.t.Fatal(err)
	}
}

func (m *secMesh) remove(name string) {
	m.t.Helper()
	if err := os.Remove(filepath.Join(m.configDir, name)); err != nil {
		m.t.Fatal(err)
	}
}

// eventually polls f (bounded in time) until it returns nil.
func (m *secMesh) eventually(d time.Duration, what string, f func() error) {
	m.t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// secResult is one HTTP exchange: err is a transport error (refused, reset, EOF).
type secResult struct {
	code int
	body string
	err  error
}

func (r secResult) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	b := r.body
	if len(b) > 300 {
		b = b[:300] + "..."
	}
	return fmt.Sprintf("%d %q", r.code, b)
}

// secClient sends requests without keep-alive (each one sees the newest listener
// config), through proxy when it is not "".
func secClient(proxy string) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	if proxy != "" {
		u, _ := url.Parse(proxy)
		tr.Proxy = http.ProxyURL(u)
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func secDo(c *http.Client, method, target string, hdr ...string) secResult {
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		return secResult{err: err}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return secResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return secResult{code: resp.StatusCode, body: string(b), err: err}
}

// from sends a request as workload w's application does: through its sidecar's
// outbound HTTP proxy (so the call carries w's identity over mTLS).
//
// A 503 for a pooled connection the server side closed (reset reason: connection
// termination) is retried once: a policy change on the destination can fail a request
// that way (the known bug TestSecurityAuthorizationChangeUnderLoad shows), and the
// checks that use this are about what the policy decides.
func (m *secMesh) from(w, method, target string, hdr ...string) secResult {
	r := m.fromOnce(w, method, target, hdr...)
	if r.err == nil && r.code == http.StatusServiceUnavailable && strings.Contains(r.body, "reset reason: connection termination") {
		m.t.Logf("%s %s from %s: 503 on a reset pooled connection, retried once", method, target, w)
		r = m.fromOnce(w, method, target, hdr...)
	}
	return r
}

// fromOnce is from without the retry.
func (m *secMesh) fromOnce(w, method, target string, hdr ...string) secResult {
	return secDo(secClient("http://"+m.workloads[w].Sidecar+":15001"), method, target, hdr...)
}

// direct sends a plaintext request straight to workload w's sidecar inbound port, as a
// client outside the mesh would.
func (m *secMesh) direct(w, path string, hdr ...string) secResult {
	return secDo(secClient(""), http.MethodGet, "http://"+m.workloads[w].Sidecar+":9080"+path, hdr...)
}

// page fetches the product page through the gateway and says what it shows.
func (m *secMesh) page() (details, reviews bool, r secResult) {
	r = secDo(secClient(""), http.MethodGet, m.gateway+"/productpage")
	if r.err != nil || r.code != 200 {
		return false, false, r
	}
	details = strings.Contains(r.body, "weft-e2e-echo")
	reviews = strings.Contains(r.body, "Reviewer1") && !strings.Contains(r.body, "reviews are currently unavailable")
	return details, reviews, r
}

// pageOK: the page renders details (from the echo) and reviews.
func (m *secMesh) pageOK() error {
	d, rv, r := m.page()
	if !d || !rv {
		return fmt.Errorf("product page: details %v, reviews %v: %v", d, rv, r)
	}
	return nil
}

// seenXFCC lists the x-forwarded-client-cert values the echo behind details received
// (asked of the application directly, not through the mesh).
func (m *secMesh) seenXFCC() ([]string, error) {
	r := secDo(secClient(""), http.MethodGet, "http://"+m.workloads["details-v1"].App+":9080/_seen")
	if r.err != nil || r.code != 200 {
		return nil, fmt.Errorf("echo /_seen: %v", r)
	}
	var seen []string
	err := json.Unmarshal([]byte(r.body), &seen)
	return seen, err
}

// echoed decodes the echo's answer; it fails the test unless the request got through.
func (m *secMesh) echoed(r secResult) secEchoed {
	m.t.Helper()
	var e secEchoed
	if r.err != nil || r.code != 200 {
		m.t.Fatalf("echo request: %v", r)
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		m.t.Fatalf("echo answer %q: %v", r.body, err)
	}
	return e
}

// weftCLI runs the weft CLI against this mesh.
func (m *secMesh) weftCLI(args ...string) string {
	m.t.Helper()
	cmd := exec.Command(m.weft, append([]string{"--state-dir", m.stateDir, "--server", m.api}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		m.t.Fatalf("weft %v: %v\n%s", args, err, out)
	}
	return string(out)
}

const secStrictMesh = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: %s}
`

func secDestinationRule(host, mode string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s-tls, namespace: default}
spec:
  host: %[1]s
  trafficPolicy: {tls: {mode: %[2]s}}
`, host, mode)
}

// TestSecurityMutualTLS: PERMISSIVE (the default) takes plaintext and mTLS on one port;
// STRICT mesh-wide refuses a plaintext client (and a TLS client without a mesh
// certificate) while the mesh keeps working over mTLS; the server side sees the
// caller's SPIFFE identity in x-forwarded-client-cert and a plaintext client cannot
// forge it; DestinationRule ISTIO_MUTUAL to a STRICT workload works, DISABLE fails;
// back to PERMISSIVE, plaintext is accepted again.
func TestSecurityMutualTLS(t *testing.T) {
	m := secStart(t, nil)
	m.eventually(30*time.Second, "page with details and reviews", m.pageOK)

	// PERMISSIVE (no PeerAuthentication): a plaintext client reaches the workload, and
	// an x-forwarded-client-cert it sends is not passed on as if it were a peer's.
	r := m.direct("details-v1", "/plain", "X-Forwarded-Client-Cert", "URI=spiffe://"+secProductpageID)
	if got := m.echoed(r).Headers.Get("X-Forwarded-Client-Cert"); got != "" {
		t.Fatalf("PERMISSIVE: a plaintext client's forged x-forwarded-client-cert reached the app: %q", got)
	}
	// Mesh traffic is mTLS (auto mTLS): the app sees the caller's identity.
	if got := m.echoed(m.from("sleep", "GET", "http://details:9080/from-sleep")).Headers.Get("X-Forwarded-Client-Cert"); !strings.Contains(got, "URI=spiffe://"+secSleepID) {
		t.Fatalf("PERMISSIVE: sleep -> details: x-forwarded-client-cert %q, want the caller's SPIFFE ID %s", got, secSleepID)
	}
	// An application cannot pass another identity off through its own sidecar: the
	// x-forwarded-client-cert it sends is dropped there, the server sidecar sets the peer's.
	if got := m.echoed(m.from("sleep", "GET", "http://details:9080/forge", "X-Forwarded-Client-Cert", "URI=spiffe://"+secProductpageID)).Headers.Get("X-Forwarded-Client-Cert"); got != "URI=spiffe://"+secSleepID {
		t.Fatalf("sleep sending a forged x-forwarded-client-cert: details saw %q, want only %s", got, "URI=spiffe://"+secSleepID)
	}
	// productpage's own call to details (made by rendering the page) arrives with
	// productpage's identity.
	m.eventually(10*time.Second, "productpage's identity at details", func() error {
		seen, err := m.seenXFCC()
		if err != nil {
			return err
		}
		for _, s := range seen {
			if strings.Contains(s, "URI=spiffe://"+secProductpageID) {
				return nil
			}
		}
		return fmt.Errorf("x-forwarded-client-cert seen by details: %q", seen)
	})

	// STRICT mesh-wide.
	m.write("peer.yaml", fmt.Sprintf(secStrictMesh, "STRICT"))
	for _, w := range []string{"details-v1", "reviews-v1", "productpage-v1"} {
		m.eventually(10*time.Second, "STRICT refuses plaintext to "+w, func() error {
			if r := m.direct(w, "/health"); r.err == nil {
				return fmt.Errorf("plaintext request answered: %v", r)
			}
			return nil
		})
	}
	// A TLS client without a mesh certificate is refused too.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", m.workloads["details-v1"].Sidecar+":9080",
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"istio", "http/1.1"}})
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /no-cert HTTP/1.1\r\nHost: details\r\n\r\n")
		buf := make([]byte, 64)
		n, rerr := conn.Read(buf)
		conn.Close()
		if rerr == nil {
			t.Fatalf("STRICT: a TLS client without a certificate got an answer: %q", buf[:n])
		}
	}
	m.eventually(10*time.Second, "page under STRICT", m.pageOK)
	for i := 0; i < 5; i++ {
		if err := m.pageOK(); err != nil {
			t.Fatalf("under STRICT, page %d: %v", i, err)
		}
	}
	if got := m.echoed(m.from("sleep", "GET", "http://details:9080/strict")).Headers.Get("X-Forwarded-Client-Cert"); !strings.Contains(got, "URI=spiffe://"+secSleepID) {
		t.Fatalf("STRICT: sleep -> details: x-forwarded-client-cert %q, want %s", got, secSleepID)
	}
	// A workload's own PeerAuthentication overrides the mesh's (Istio's precedence):
	// details takes plaintext again, reviews stays STRICT.
	m.write("details-peer.yaml", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: details, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  mtls: {mode: PERMISSIVE}
`)
	m.eventually(10*time.Second, "workload PERMISSIVE over mesh STRICT", func() error {
		if r := m.direct("details-v1", "/workload-permissive"); r.err != nil || r.code != 200 {
			return fmt.Errorf("plaintext to details-v1: %v", r)
		}
		return nil
	})
	if r := m.direct("reviews-v1", "/reviews/0"); r.err == nil {
		t.Fatalf("plaintext to reviews-v1 with only details PERMISSIVE: %v, want refused", r)
	}
	// Port level over workload level: STRICT for the workload, DISABLE on 9080.
	m.write("details-peer.yaml", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: details, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  mtls: {mode: STRICT}
  portLevelMtls: {9080: {mode: DISABLE}}
`)
	m.eventually(10*time.Second, "port-level DISABLE", func() error {
		if r := m.direct("details-v1", "/port-disable"); r.err != nil || r.code != 200 {
			return fmt.Errorf("plaintext to details-v1:9080: %v", r)
		}
		// The client side sees DISABLE at the server and sends plaintext (auto mTLS).
		if got := m.echoed(m.from("sleep", "GET", "http://details:9080/port-disable")).Headers.Get("X-Forwarded-Client-Cert"); got != "" {
			return fmt.Errorf("sleep -> details with DISABLE on 9080 still mTLS: %q", got)
		}
		return m.pageOK()
	})
	m.remove("details-peer.yaml")
	m.eventually(10*time.Second, "details STRICT again", func() error {
		if r := m.direct("details-v1", "/health"); r.err == nil {
			return fmt.Errorf("plaintext request answered: %v", r)
		}
		return nil
	})

	out := m.weftCLI("tls-check", "productpage-v1")
	for _, svc := range []string{"details", "reviews"} {
		line := secLine(out, svc+".default.svc.cluster.local:9080")
		if !strings.Contains(line, "STRICT") || !strings.Contains(line, "OK (mTLS)") {
			t.Fatalf("weft tls-check productpage-v1: %s: %q, want STRICT and OK (mTLS)\n%s", svc, line, out)
		}
	}

	// DestinationRule ISTIO_MUTUAL to the STRICT workload: works.
	m.write("dr.yaml", secDestinationRule("reviews", "ISTIO_MUTUAL"))
	m.eventually(10*time.Second, "ISTIO_MUTUAL to STRICT reviews", func() error {
		if line := secLine(m.weftCLI("tls-check", "sleep", "reviews"), "reviews-v1"); !strings.Contains(line, "ISTIO_MUTUAL") {
			return fmt.Errorf("tls-check: %q", line)
		}
		if r := m.from("sleep", "GET", "http://reviews:9080/reviews/0"); r.err != nil || r.code != 200 || !strings.Contains(r.body, "Reviewer1") {
			return fmt.Errorf("sleep -> reviews: %v", r)
		}
		return m.pageOK()
	})
	// DISABLE (plaintext origination) to it: refused by the server side.
	m.write("dr.yaml", secDestinationRule("reviews", "DISABLE"))
	m.eventually(10*time.Second, "DISABLE to STRICT reviews fails", func() error {
		r := m.fromOnce("sleep", "GET", "http://reviews:9080/reviews/0")
		if r.err == nil && r.code != http.StatusServiceUnavailable {
			return fmt.Errorf("sleep -> reviews with tls DISABLE: %v, want 503", r)
		}
		if _, rv, pr := m.page(); rv || !strings.Contains(pr.body, "reviews are currently unavailable") {
			return fmt.Errorf("page still shows reviews with tls DISABLE: %v", pr)
		}
		return nil
	})
	m.remove("dr.yaml")
	m.eventually(10*time.Second, "auto mTLS again", func() error {
		if r := m.fromOnce("sleep", "GET", "http://reviews:9080/reviews/0"); r.err != nil || r.code != 200 {
			return fmt.Errorf("sleep -> reviews: %v", r)
		}
		return nil
	})

	// PERMISSIVE again: plaintext is accepted on the same port, mTLS still works.
	m.write("peer.yaml", fmt.Sprintf(secStrictMesh, "PERMISSIVE"))
	m.eventually(10*time.Second, "PERMISSIVE accepts plaintext", func() error {
		if r := m.direct("reviews-v1", "/reviews/0"); r.err != nil || r.code != 200 {
			return fmt.Errorf("plaintext to reviews-v1: %v", r)
		}
		return nil
	})
	if r := m.direct("details-v1", "/plain-again"); r.err != nil || r.code != 200 {
		t.Fatalf("PERMISSIVE: plaintext to details-v1: %v", r)
	}
	if got := m.echoed(m.from("sleep", "GET", "http://details:9080/permissive")).Headers.Get("X-Forwarded-Client-Cert"); !strings.Contains(got, "URI=spiffe://"+secSleepID) {
		t.Fatalf("PERMISSIVE: sleep -> details over mTLS: x-forwarded-client-cert %q", got)
	}
	if err := m.pageOK(); err != nil {
		t.Fatal(err)
	}
}

// secLine is the first line of out containing s.
func secLine(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

const secReviewsViewer = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: ["GET"]}}]
`

// TestSecurityBookinfoAuthorization: with STRICT mesh-wide and an AuthorizationPolicy
// that lets only productpage's identity GET reviews, the page still renders reviews;
// another workload's call (sleep's own service account, ratings') and productpage's
// own POST get 403 "RBAC: access denied"; without the policy sleep gets through.
func TestSecurityBookinfoAuthorization(t *testing.T) {
	m := secStart(t, map[string]string{"peer.yaml": fmt.Sprintf(secStrictMesh, "STRICT"), "authz.yaml": secReviewsViewer})
	m.eventually(30*time.Second, "page with reviews under the policy", m.pageOK)
	for i := 0; i < 6; i++ { // reviews v1 and v2 take turns
		if err := m.pageOK(); err != nil {
			t.Fatalf("page %d under the policy: %v", i, err)
		}
	}
	if r := m.from("productpage-v1", "GET", "http://reviews:9080/reviews/0"); r.err != nil || r.code != 200 {
		t.Fatalf("productpage GET reviews: %v, want 200", r)
	}
	for _, c := range []struct{ from, method string }{{"sleep", "GET"}, {"ratings-v1", "GET"}, {"productpage-v1", "POST"}} {
		r := m.from(c.from, c.method, "http://reviews:9080/reviews/0")
		if r.err != nil || r.code != http.StatusForbidden || !strings.Contains(r.body, "RBAC: access denied") {
			t.Fatalf("%s %s reviews: %v, want 403 RBAC: access denied", c.from, c.method, r)
		}
	}
	if r := m.direct("reviews-v1", "/reviews/0"); r.err == nil {
		t.Fatalf("plaintext to reviews under STRICT: %v, want refused", r)
	}
	if line := secLine(m.weftCLI("tls-check", "sleep", "reviews"), "reviews-v1"); !strings.Contains(line, "default/reviews-viewer") {
		t.Fatalf("weft tls-check sleep reviews: %q does not name the policy", line)
	}

	// A path rule holds against the spellings an application reads as the same path.
	m.write("deny-admin.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
`)
	m.eventually(10*time.Second, "DENY /admin in force", func() error {
		if r := m.from("sleep", "GET", "http://details:9080/admin"); r.code != http.StatusForbidden {
			return fmt.Errorf("GET /admin: %v", r)
		}
		return nil
	})
	for _, p := range []string{"/admin/", "/admin/x", "//admin", "/x/../admin", "/./admin", "/%61dmin", "/admin?x=1", "/x/..%2Fadmin", "/admin/./"} {
		if r := m.from("sleep", "GET", "http://details:9080"+p); r.code != http.StatusForbidden {
			t.Errorf("DENY paths /admin: GET %s: %v, want 403", p, r)
		}
	}
	if r := m.from("sleep", "GET", "http://details:9080/administrator"); r.code != 200 {
		t.Errorf("GET /administrator (not /admin): %v, want 200", r)
	}
	m.remove("deny-admin.yaml")

	// PERMISSIVE with the policy still in force: a plaintext client has no principal, so
	// it is denied rather than refused, and a forged x-forwarded-client-cert gives it none.
	m.write("peer.yaml", fmt.Sprintf(secStrictMesh, "PERMISSIVE"))
	m.eventually(10*time.Second, "plaintext to reviews denied under PERMISSIVE", func() error {
		r := m.direct("reviews-v1", "/reviews/0", "X-Forwarded-Client-Cert", "URI=spiffe://"+secProductpageID)
		if r.err != nil || r.code != http.StatusForbidden || !strings.Contains(r.body, "RBAC: access denied") {
			return fmt.Errorf("plaintext with a forged XFCC: %v, want 403", r)
		}
		return nil
	})
	// eventually: the policy change just before resets pooled connections (known bug,
	// see TestSecurityAuthorizationChangeUnderLoad).
	m.eventually(10*time.Second, "page under PERMISSIVE with the policy", m.pageOK)

	m.remove("authz.yaml")
	m.eventually(10*time.Second, "sleep allowed without the policy", func() error {
		if r := m.from("sleep", "GET", "http://reviews:9080/reviews/0"); r.err != nil || r.code != 200 {
			return fmt.Errorf("sleep GET reviews: %v", r)
		}
		return nil
	})
}

// secJWT makes tokens for the tests: an RSA key whose public half is the JWKS, and a
// second key that is not in it.
type secJWT struct {
	t          *testing.T
	key, other *rsa.PrivateKey
	jwks       string
}

const (
	secIssuer   = "https://issuer.weft.test"
	secAudience = "weft-e2e"
	secKid      = "weft-e2e-key"
)

func newSecJWT(t *testing.T) *secJWT {
	j := &secJWT{t: t}
	var err error
	if j.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if j.other, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &j.key.PublicKey, KeyID: secKid, Algorithm: "RS256", Use: "sig"}}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	j.jwks = string(b)
	return j
}

// token signs claims with key (RS256, kid secKid).
func (j *secJWT) token(key *rsa.PrivateKey, c jwt.Claims) string {
	j.t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: secKid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		j.t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		j.t.Fatal(err)
	}
	return s
}

// claims are valid claims for the rule (issuer, audience, a minute ago to an hour on).
func secClaims(mod func(*jwt.Claims)) jwt.Claims {
	now := time.Now()
	c := jwt.Claims{Issuer: secIssuer, Subject: "alice", Audience: jwt.Audience{secAudience},
		IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry: jwt.NewNumericDate(now.Add(time.Hour))}
	if mod != nil {
		mod(&c)
	}
	return c
}

// unsigned builds a token by hand: header and claims as given, signature sig.
func secUnsigned(header, claims map[string]any, sig []byte) (string, string) {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return in, in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func secRequestAuthn(jwksField string) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: details-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  jwtRules:
  - issuer: %q
    audiences: [%q]
    %s
    outputPayloadToHeader: x-jwt-payload
`, secIssuer, secAudience, jwksField)
}

const secRequireJWT = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-require-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["*"]}}]
`

// TestSecurityJWT: RequestAuthentication on details with an inline JWKS made here. A
// valid token passes (the app sees its payload, not the token); an expired, not yet
// valid, wrong-issuer, bad-signature, unknown-key, "none", HS256-with-the-public-key or
// malformed token is 401, a wrong audience 403 (as Envoy answers); no token passes
// without a policy and is 403 under one requiring requestPrincipals ["*"].
func TestSecurityJWT(t *testing.T) {
	j := newSecJWT(t)
	jwksJSON, _ := json.Marshal(j.jwks)
	m := secStart(t, map[string]string{"jwt.yaml": secRequestAuthn("jwks: " + string(jwksJSON))})
	call := func(token string) secResult {
		if token == "" {
			return m.from("sleep", "GET", "http://details:9080/jwt")
		}
		return m.from("sleep", "GET", "http://details:9080/jwt", "Authorization", "Bearer "+token)
	}
	valid := j.token(j.key, secClaims(nil))
	m.eventually(30*time.Second, "a bad token rejected (the rule is in force)", func() error {
		if r := call(j.token(j.other, secClaims(nil))); r.code != http.StatusUnauthorized {
			return fmt.Errorf("bad signature: %v", r)
		}
		return nil
	})

	e := m.echoed(call(valid))
	if e.Headers.Get("Authorization") != "" {
		t.Errorf("the token was forwarded to the app (forwardOriginalToken is false): %q", e.Headers.Get("Authorization"))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(e.Headers.Get("X-Jwt-Payload"), "="))
	if err != nil || !strings.Contains(string(payload), `"sub":"alice"`) {
		t.Errorf("x-jwt-payload %q (%v), want the verified claims", e.Headers.Get("X-Jwt-Payload"), err)
	}

	pubDER, err := x509.MarshalPKIXPublicKey(&j.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": secIssuer, "sub": "alice", "aud": secAudience, "exp": time.Now().Add(time.Hour).Unix()}
	_, none := secUnsigned(map[string]any{"alg": "none", "typ": "JWT"}, claims, nil)
	hsInput, _ := secUnsigned(map[string]any{"alg": "HS256", "typ": "JWT", "kid": secKid}, claims, nil)
	for _, secret := range [][]byte{pubDER, []byte(j.jwks)} {
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(hsInput))
		hs := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
		if r := call(hs); r.code != http.StatusUnauthorized {
			t.Errorf("HS256 signed with the public key: %v, want 401", r)
		}
	}
	cases := []struct {
		name  string
		token string
		code  int
	}{
		{"expired", j.token(j.key, secClaims(func(c *jwt.Claims) {
			c.Expiry = jwt.NewNumericDate(time.Now().Add(-10 * time.Minute))
			c.IssuedAt, c.NotBefore = jwt.NewNumericDate(time.Now().Add(-time.Hour)), jwt.NewNumericDate(time.Now().Add(-time.Hour))
		})), 401},
		{"not yet valid", j.token(j.key, secClaims(func(c *jwt.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(30 * time.Minute)) })), 401},
		{"wrong issuer", j.token(j.key, secClaims(func(c *jwt.Claims) { c.Issuer = "https://evil.weft.test" })), 401},
		{"bad signature", j.token(j.other, secClaims(nil)), 401},
		{"alg none", none, 401},
		{"malformed", "not-a-jwt", 401},
		{"malformed base64", "eyJhbGciOiJSUzI1NiJ9.%%%.abc", 401},
		{"tampered payload", func() string {
			p := strings.Split(valid, ".")
			c, _ := json.Marshal(map[string]any{"iss": secIssuer, "sub": "admin", "aud": secAudience, "exp": time.Now().Add(time.Hour).Unix()})
			return p[0] + "." + base64.RawURLEncoding.EncodeToString(c) + "." + p[2]
		}(), 401},
		{"wrong audience", j.token(j.key, secClaims(func(c *jwt.Claims) { c.Audience = jwt.Audience{"someone-else"} })), 403},
		{"valid", valid, 200},
		{"no token", "", 200},
	}
	for _, c := range cases {
		if r := call(c.token); r.err != nil || r.code != c.code {
			t.Errorf("%s: %v, want %d", c.name, r, c.code)
		}
	}

	// A policy requiring a request principal: no token is now 403; a valid one passes;
	// an invalid one is still 401.
	m.write("authz.yaml", secRequireJWT)
	m.eventually(10*time.Second, "no token denied by requestPrincipals", func() error {
		if r := call(""); r.code != http.StatusForbidden || !strings.Contains(r.body, "RBAC: access denied") {
			return fmt.Errorf("no token: %v, want 403", r)
		}
		return nil
	})
	if r := call(valid); r.code != 200 {
		t.Fatalf("valid token under requestPrincipals: %v", r)
	}
	for _, c := range cases[:5] {
		if r := call(c.token); r.code != http.StatusUnauthorized {
			t.Errorf("%s under requestPrincipals: %v, want 401", c.name, r)
		}
	}
	// The token may also come in the access_token query parameter (Envoy's default
	// locations); an invalid one there is rejected the same way.
	if r := m.from("sleep", "GET", "http://details:9080/jwt?access_token="+valid); r.code != 200 {
		t.Errorf("valid token in access_token: %v, want 200", r)
	}
	if r := m.from("sleep", "GET", "http://details:9080/jwt?access_token="+j.token(j.other, secClaims(nil))); r.code != http.StatusUnauthorized {
		t.Errorf("bad token in access_token: %v, want 401", r)
	}
	// Every token a request carries must verify (Envoy's rule since envoyproxy/envoy#12089):
	// a valid one in one place must not carry an invalid one in another to the app.
	forged := j.token(j.other, secClaims(func(c *jwt.Claims) { c.Subject = "admin" }))
	if r := m.from("sleep", "GET", "http://details:9080/jwt?access_token="+valid, "Authorization", "Bearer "+forged); r.code != http.StatusUnauthorized {
		t.Errorf("valid token in access_token, forged one in Authorization: %v, want 401", r)
	}
	if r := m.from("sleep", "GET", "http://details:9080/jwt?access_token="+forged, "Authorization", "Bearer "+valid); r.code != http.StatusUnauthorized {
		t.Errorf("forged token in access_token, valid one in Authorization: %v, want 401", r)
	}
	// The same for a second value at one location (an app may read the last one).
	if r := m.from("sleep", "GET", "http://details:9080/jwt", "Authorization", "Bearer "+valid, "Authorization", "Bearer "+forged); r.code != http.StatusUnauthorized {
		t.Errorf("two Authorization headers, the second forged: %v, want 401", r)
	}
	if r := m.from("sleep", "GET", "http://details:9080/jwt?access_token="+valid+"&access_token="+forged); r.code != http.StatusUnauthorized {
		t.Errorf("two access_token parameters, the second forged: %v, want 401", r)
	}
	if r := m.from("sleep", "GET", "http://details:9080/jwt?access_token="+valid, "Authorization", "Basic dXNlcjpwYXNz"); r.code != 200 {
		t.Errorf("Basic credentials beside a valid token: %v, want 200 (not a bearer token)", r)
	}

	// A named principal and a claim condition: only alice of group "admins".
	m.write("authz.yaml", fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-require-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["%s/alice"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["admins"]}]
`, secIssuer))
	tokenWith := func(sub string, groups ...string) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: j.key, KeyID: secKid}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := jwt.Signed(signer).Claims(secClaims(func(c *jwt.Claims) { c.Subject = sub })).Claims(map[string]any{"groups": groups}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	m.eventually(10*time.Second, "alice of admins only", func() error {
		if r := call(tokenWith("alice", "users")); r.code != http.StatusForbidden {
			return fmt.Errorf("alice of users: %v, want 403", r)
		}
		return nil
	})
	for _, c := range []struct {
		token string
		code  int
	}{{tokenWith("alice", "users", "admins"), 200}, {tokenWith("bob", "admins"), 403}, {valid, 403}, {"", 403}} {
		if r := call(c.token); r.code != c.code {
			t.Errorf("named principal and claim: %v, want %d", r, c.code)
		}
	}
}

// TestSecurityFailClosed: a DENY rule the proxy cannot be given (a `when` key valid in
// Istio's syntax that weft cannot translate) denies every request of the workload it
// selects, and only that workload; a policy Istio would reject is refused with its field
// path; an unreachable JWKS never lets a token through (401), while requests without a
// token follow the policy (200 without one, 403 with requestPrincipals required).
func TestSecurityFailClosed(t *testing.T) {
	m := secStart(t, nil)
	m.eventually(30*time.Second, "page", m.pageOK)

	m.write("deny.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: odd-deny, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules:
  - when: [{key: "request.headers[x-a][x-b]", values: ["yes"]}]
`)
	m.eventually(10*time.Second, "untranslatable DENY denies all", func() error {
		if r := m.from("sleep", "GET", "http://details:9080/anything"); r.code != http.StatusForbidden || !strings.Contains(r.body, "RBAC: access denied") {
			return fmt.Errorf("sleep -> details without the header: %v, want 403", r)
		}
		return nil
	})
	if r := m.direct("details-v1", "/plain"); r.code != http.StatusForbidden {
		t.Fatalf("plaintext -> details under the untranslatable DENY: %v, want 403", r)
	}
	if d, rv, r := m.page(); d || !rv || !strings.Contains(r.body, "details are currently unavailable") {
		t.Fatalf("page: details %v, reviews %v, want details denied and reviews shown: %v", d, rv, r)
	}
	if r := m.from("sleep", "GET", "http://reviews:9080/reviews/0"); r.code != 200 {
		t.Fatalf("another workload is affected: sleep -> reviews %v", r)
	}
	m.remove("deny.yaml")
	m.eventually(10*time.Second, "details back", func() error {
		if r := m.from("sleep", "GET", "http://details:9080/anything"); r.code != 200 {
			return fmt.Errorf("sleep -> details: %v", r)
		}
		return nil
	})

	// CUSTOM delegates to an external authorizer weft does not have: what its rules
	// match is denied, the rest passes.
	m.write("custom.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: CUSTOM
  provider: {name: my-ext-authz}
  rules:
  - to: [{operation: {paths: ["/custom/*"]}}]
`)
	m.eventually(10*time.Second, "CUSTOM without an authorizer denies its matches", func() error {
		if r := m.from("sleep", "GET", "http://details:9080/custom/x"); r.code != http.StatusForbidden {
			return fmt.Errorf("GET /custom/x: %v, want 403", r)
		}
		return nil
	})
	if r := m.from("sleep", "GET", "http://details:9080/other"); r.code != 200 {
		t.Fatalf("GET /other under the CUSTOM policy: %v, want 200", r)
	}
	m.remove("custom.yaml")

	// A key Istio does not know is rejected where it is read, with its field path.
	m.write("bogus.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bogus-deny, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules:
  - when: [{key: request.bogus, values: ["x"]}]
`)
	m.eventually(10*time.Second, "bogus key reported", func() error {
		r := secDo(secClient(""), "GET", m.api+"/apis/errors")
		if !strings.Contains(r.body, "bogus.yaml") || !strings.Contains(r.body, "spec.rules[0].when[0]") {
			return fmt.Errorf("/apis/errors: %v", r)
		}
		return nil
	})
	m.remove("bogus.yaml")

	// The JWKS served over HTTP here: the proxy fetches it and a valid token passes, so
	// the 401s below are the JWKS being unreachable, not remote keys never working.
	j := newSecJWT(t)
	jwksLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	jwksSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, j.jwks)
	})}
	go func() { _ = jwksSrv.Serve(jwksLn) }()
	t.Cleanup(func() { _ = jwksSrv.Close() })
	call := func(token string) secResult {
		if token == "" {
			return m.from("sleep", "GET", "http://details:9080/jwt")
		}
		return m.from("sleep", "GET", "http://details:9080/jwt", "Authorization", "Bearer "+token)
	}
	valid := j.token(j.key, secClaims(nil))
	m.write("jwt.yaml", secRequestAuthn(fmt.Sprintf("jwksUri: http://%s/jwks.json", jwksLn.Addr())))
	m.eventually(15*time.Second, "token verified with the fetched JWKS", func() error {
		if r := call(valid); r.code != 200 {
			return fmt.Errorf("token: %v, want 200", r)
		}
		if r := call(j.token(j.other, secClaims(nil))); r.code != http.StatusUnauthorized {
			return fmt.Errorf("bad signature: %v, want 401", r)
		}
		return nil
	})

	// A JWKS that cannot be fetched: a closed port on loopback.
	closed := secFreePort(t)
	m.write("jwt.yaml", secRequestAuthn(fmt.Sprintf("jwksUri: http://127.0.0.1:%d/jwks.json", closed)))
	m.eventually(15*time.Second, "token rejected with the JWKS unreachable", func() error {
		if r := call(valid); r.code != http.StatusUnauthorized {
			return fmt.Errorf("token: %v, want 401", r)
		}
		return nil
	})
	for i := 0; i < 3; i++ { // after the failed fetch, and after failed_refetch_duration
		if r := call(valid); r.code != http.StatusUnauthorized {
			t.Fatalf("token, try %d: %v, want 401", i, r)
		}
		time.Sleep(700 * time.Millisecond)
	}
	if r := call(""); r.code != 200 {
		t.Fatalf("no token, no policy: %v, want 200", r)
	}
	m.write("authz.yaml", secRequireJWT)
	m.eventually(10*time.Second, "no token denied by requestPrincipals", func() error {
		if r := call(""); r.code != http.StatusForbidden {
			return fmt.Errorf("no token: %v, want 403", r)
		}
		return nil
	})
	if r := call(valid); r.code != http.StatusUnauthorized {
		t.Fatalf("token under requestPrincipals with the JWKS unreachable: %v, want 401", r)
	}
}

// presentedSerial is the serial of the certificate workload w's sidecar presents on its
// inbound port to a TLS client offering Istio's ALPN (read from the handshake; the
// client has no mesh certificate, so the connection is refused right after).
func (m *secMesh) presentedSerial(w string) (string, error) {
	var serial string
	cfg := &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{"istio", "istio-peer-exchange"}, ServerName: "outbound_.9080_._." + w,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fmt.Errorf("no certificate")
			}
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			serial = c.SerialNumber.Text(16)
			return nil
		},
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", m.workloads[w].Sidecar+":9080", cfg)
	if conn != nil {
		conn.Close()
	}
	if serial == "" {
		return "", fmt.Errorf("%s: no certificate presented: %v", w, err)
	}
	return serial, nil
}

// TestSecurityCertificateRotation: with 1-minute workload certificates (renewed by each
// sidecar's CA agent at about half their life, by CSR), a steady load of product pages
// through the gateway (every hop mTLS) and of sleep -> reviews calls sees zero failures
// while every sidecar moves to a new certificate; `weft proxy-config secret` shows the
// serial the sidecar presents.
func TestSecurityCertificateRotation(t *testing.T) {
	m := secStart(t, nil, "--workload-cert-ttl", "1m")
	m.eventually(30*time.Second, "page", m.pageOK)
	sidecars := []string{"productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "ratings-v1", "sleep"}
	first := map[string]string{}
	for _, w := range sidecars {
		s, err := m.presentedSerial(w)
		if err != nil {
			t.Fatal(err)
		}
		first[w] = s
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var mu sync.Mutex
	var okN, failN int
	var firstErr []string
	var wg sync.WaitGroup
	load := func(f func() error) {
		defer wg.Done()
		for ctx.Err() == nil {
			err := f()
			mu.Lock()
			if err != nil {
				failN++
				if len(firstErr) < 5 {
					firstErr = append(firstErr, time.Now().Format("15:04:05.000 ")+err.Error())
				}
			} else {
				okN++
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}
	for i := 0; i < 3; i++ {
		wg.Add(2)
		go load(m.pageOK)
		go load(func() error {
			if r := m.from("sleep", "GET", "http://reviews:9080/reviews/0"); r.err != nil || r.code != 200 {
				return fmt.Errorf("sleep -> reviews: %v", r)
			}
			return nil
		})
	}

	// Every sidecar renews within its minute (at ~30 s, +-5%).
	renewed := map[string]string{}
	deadline := time.Now().Add(50 * time.Second)
	for len(renewed) < len(sidecars) && time.Now().Before(deadline) {
		for _, w := range sidecars {
			if renewed[w] != "" {
				continue
			}
			if s, err := m.presentedSerial(w); err == nil && s != first[w] {
				renewed[w] = s
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // traffic across the last renewal
	stop()
	wg.Wait()
	t.Logf("load: %d ok, %d failed; renewed: %v (were %v)", okN, failN, renewed, first)
	if failN > 0 {
		t.Fatalf("%d of %d requests failed across certificate renewals; first: %q", failN, okN+failN, firstErr)
	}
	if okN < 50 {
		t.Fatalf("only %d requests ran", okN)
	}
	for _, w := range sidecars {
		if renewed[w] == "" {
			t.Fatalf("%s still presents serial %s after 50 s of a 1-minute certificate", w, first[w])
		}
	}
	out := m.weftCLI("proxy-config", "secret", "productpage-v1")
	line := secLine(out, "default")
	if !strings.Contains(line, "spiffe://"+secProductpageID) || !strings.Contains(strings.ToLower(line), renewed["productpage-v1"]) {
		t.Fatalf("weft proxy-config secret productpage-v1: %q, want the SPIFFE ID and serial %s\n%s", line, renewed["productpage-v1"], out)
	}
}

// secPagesUnderLoad runs 4 clients loading product pages until change returns, then
// reports how many pages rendered (details and reviews) and the first failures.
func (m *secMesh) secPagesUnderLoad(change func()) (ok, failed int, first []string) {
	ctx, stop := context.WithCancel(context.Background())
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := m.pageOK()
				mu.Lock()
				if err != nil {
					failed++
					if len(first) < 3 {
						msg := err.Error()
						if len(msg) > 120 {
							msg = msg[:120]
						}
						first = append(first, time.Now().Format("15:04:05.000 ")+msg)
					}
				} else {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	change()
	time.Sleep(time.Second)
	stop()
	wg.Wait()
	return ok, failed, first
}

// TestSecurityPeerModeChangeUnderLoad: switching the mesh between STRICT and PERMISSIVE
// while pages load drops no request (the mTLS chains in use are not torn down).
func TestSecurityPeerModeChangeUnderLoad(t *testing.T) {
	m := secStart(t, map[string]string{"peer.yaml": fmt.Sprintf(secStrictMesh, "STRICT")})
	m.eventually(30*time.Second, "page", m.pageOK)
	ok, failed, first := m.secPagesUnderLoad(func() {
		for i := 0; i < 6; i++ {
			time.Sleep(1500 * time.Millisecond)
			m.write("peer.yaml", fmt.Sprintf(secStrictMesh, []string{"PERMISSIVE", "STRICT"}[i%2]))
		}
	})
	t.Logf("6 mode changes under load: %d pages, %d failed", ok+failed, failed)
	if failed > 0 || ok < 50 {
		t.Fatalf("%d of %d pages failed across STRICT/PERMISSIVE changes; first: %q", failed, ok+failed, first)
	}
}

// TestSecurityAuthorizationChangeUnderLoad: adding and removing an AuthorizationPolicy
// that does not concern the traffic (a DENY on details' /admin) while pages load must
// drop no request ("an update never drops traffic").
//
// The change replaces details' inbound HTTP connection manager; the old one drains its
// HTTP/1.1 connections gracefully (httpconn/h1.go: the next response carries
// "Connection: close", idle connections close after a 1 s grace), so productpage's
// sidecar never sends on a connection the server has just closed. Before that drain
// (http.Server.Shutdown closed idle keep-alive connections at once) about 1 % of pages
// failed here with 503 UC.
func TestSecurityAuthorizationChangeUnderLoad(t *testing.T) {
	m := secStart(t, map[string]string{"peer.yaml": fmt.Sprintf(secStrictMesh, "STRICT")})
	m.eventually(30*time.Second, "page", m.pageOK)
	ok, failed, first := m.secPagesUnderLoad(func() {
		for i := 0; i < 4; i++ {
			time.Sleep(time.Second)
			m.write("deny-admin.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
`)
			time.Sleep(time.Second)
			m.remove("deny-admin.yaml")
		}
	})
	t.Logf("8 policy changes under load: %d pages, %d failed", ok+failed, failed)
	if failed > 0 || ok < 50 {
		t.Fatalf("%d of %d pages failed across AuthorizationPolicy changes on details; first: %q", failed, ok+failed, first)
	}
}

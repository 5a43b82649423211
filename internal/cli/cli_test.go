package cli

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/config"
	"github.com/weft-mesh/weft/internal/control"
)

// weft runs the command in process and returns its exit code and output.
func weft(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// bookinfoNetworking is Istio's Bookinfo networking directory beside the repository.
func bookinfoNetworking(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "istio-samples", "samples", "bookinfo", "networking")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("Istio samples not found (%v): they live in ../shared beside the repository", err)
	}
	return dir
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateIstioBookinfo(t *testing.T) {
	dir := bookinfoNetworking(t)
	code, out, errOut := weft(t, "validate", "-f", dir)
	if code != 0 {
		t.Fatalf("weft validate -f %s: exit %d\nstdout:\n%s\nstderr:\n%s", dir, code, out, errOut)
	}
	if strings.Contains(out, "Error:") || !strings.Contains(out, "validation succeed") {
		t.Errorf("output:\n%s", out)
	}
	// Every file of the directory is read, each named in the report.
	entries, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, e := range entries {
		if !strings.Contains(out, e+":") {
			t.Errorf("report does not name %s", e)
		}
	}
	// One file works as well as a directory.
	one := filepath.Join(dir, "virtual-service-reviews-80-20.yaml")
	if code, out, _ := weft(t, "validate", "-f", one); code != 0 || !strings.Contains(out, "1 resource valid") {
		t.Errorf("weft validate -f %s: exit %d\n%s", one, code, out)
	}
}

const badRules = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        regex: "a(b"
    route:
    - destination: {host: reviews, subset: v1}
      weight: -5
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 0.1ms
`

func TestValidateErrors(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", badRules)
	good := writeFile(t, dir, "good.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: default}
spec:
  hosts: [details]
  http:
  - route:
    - destination: {host: details}
`)
	tests := []struct {
		name  string
		args  []string
		code  int
		lines []string // each must appear in stdout
	}{
		{"bad file", []string{"validate", "-f", bad}, 1, []string{
			bad + ":1: VirtualService default/reviews: spec.http[0].match[0].uri.regex:",
			bad + ":1: VirtualService default/reviews: spec.http[0].route[0].weight:",
			bad + ":16: DestinationRule default/ratings: spec.trafficPolicy.connectionPool.tcp.connectTimeout:",
			"validation failed: 3 errors in 1 of 1 file",
		}},
		{"directory with one bad file", []string{"validate", "-f", dir}, 1, []string{
			good + ": 1 resource valid",
			"spec.http[0].route[0].weight",
			"validation failed: 3 errors in 1 of 2 files",
		}},
		{"good file", []string{"validate", "-f", good}, 0, []string{"validation succeed: 1 file, 1 resource"}},
		{"two -f", []string{"validate", "-f", good, "-f", bad}, 1, []string{good + ": 1 resource valid", "validation failed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := weft(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			for _, l := range tc.lines {
				if !strings.Contains(out, l) {
					t.Errorf("stdout lacks %q:\n%s", l, out)
				}
			}
		})
	}

	// Usage errors exit non-zero with a message.
	if code, _, errOut := weft(t, "validate"); code == 0 || !strings.Contains(errOut, "-f") {
		t.Errorf("validate without -f: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := weft(t, "validate", "-f", filepath.Join(dir, "missing.yaml")); code == 0 || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("validate of a missing file: exit %d, stderr %q", code, errOut)
	}
}

func TestHelpListsCommands(t *testing.T) {
	code, out, errOut := weft(t, "--help")
	if code != 0 {
		t.Fatalf("weft --help: exit %d: %s", code, errOut)
	}
	for _, c := range []string{"control", "up", "demo", "validate", "apply", "delete", "get", "status", "proxy-status", "proxy-config", "version"} {
		if !strings.Contains(out, "\n  "+c+" ") {
			t.Errorf("weft --help does not list %q:\n%s", c, out)
		}
	}
	if code, _, errOut := weft(t, "no-such-command"); code == 0 || !strings.Contains(errOut, "no-such-command") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
}

// startControl runs a control plane in process on loopback ports.
func startControl(t *testing.T) *control.Server {
	t.Helper()
	s, err := control.New(control.Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0",
		Debounce: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("control plane did not stop within 10s")
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("control plane stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("control plane not ready within 20s")
	}
	return s
}

func TestApplyGetDelete(t *testing.T) {
	s := startControl(t)
	server := "--server=http://" + s.APIAddr()
	dir := t.TempDir()
	vs := writeFile(t, dir, "vs.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 70
    - destination: {host: reviews, subset: v2}
      weight: 30
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`)

	code, out, errOut := weft(t, server, "apply", "-f", vs)
	if code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{"VirtualService default/reviews applied", "DestinationRule default/reviews applied"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	if _, ok := s.Store().Get(config.KindVirtualService, "default", "reviews"); !ok {
		t.Errorf("the store does not hold the applied VirtualService")
	}

	// get: by kind name, plural and short name; one resource by name.
	for _, kind := range []string{"virtualservices", "VirtualService", "vs"} {
		code, out, errOut := weft(t, server, "get", kind)
		if code != 0 || !strings.Contains(out, "kind: VirtualService") || !strings.Contains(out, "name: reviews") || !strings.Contains(out, "weight: 70") {
			t.Errorf("get %s: exit %d\n%s%s", kind, code, out, errOut)
		}
	}
	if code, out, _ := weft(t, server, "get", "dr", "reviews"); code != 0 || !strings.Contains(out, "kind: DestinationRule") || !strings.Contains(out, "name: v2") {
		t.Errorf("get dr reviews: exit %d\n%s", code, out)
	}
	if code, _, errOut := weft(t, server, "get", "vs", "nope"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("get vs nope: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := weft(t, server, "get", "widgets"); code != 1 || !strings.Contains(errOut, "unknown kind") {
		t.Errorf("get widgets: exit %d, stderr %q", code, errOut)
	}
	if code, out, _ := weft(t, server, "get", "vs", "-n", "other"); code != 0 || strings.Contains(out, "reviews") {
		t.Errorf("get vs -n other: exit %d\n%s", code, out)
	}

	// A file with an error is rejected whole: its error names the field, and what was
	// applied before stays.
	bad := writeFile(t, dir, "bad.yaml", badRules)
	code, out, errOut = weft(t, server, "apply", "-f", bad)
	if code != 1 || !strings.Contains(errOut, "spec.http[0].route[0].weight") || !strings.Contains(errOut, "VirtualService default/reviews") {
		t.Errorf("apply of a bad file: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if _, out, _ := weft(t, server, "get", "vs", "reviews"); !strings.Contains(out, "weight: 70") {
		t.Errorf("after a rejected apply the VirtualService changed:\n%s", out)
	}
	if _, ok := s.Store().Get(config.KindDestinationRule, "default", "ratings"); ok {
		t.Errorf("a resource of the rejected file reached the store")
	}

	// What get prints applies again unchanged (as kubectl get -o yaml | kubectl apply).
	_, got, _ := weft(t, server, "get", "vs", "reviews")
	again := writeFile(t, dir, "again.yaml", got)
	if code, out, errOut := weft(t, server, "apply", "-f", again); code != 0 || !strings.Contains(out, "VirtualService default/reviews applied") {
		t.Errorf("apply of get's output: exit %d\n%s%s\ninput:\n%s", code, out, errOut, got)
	}

	// delete removes what apply added (from every file that applied it).
	code, out, errOut = weft(t, server, "delete", "-f", vs)
	if code != 0 || !strings.Contains(out, "VirtualService default/reviews deleted") || !strings.Contains(out, "DestinationRule default/reviews deleted") {
		t.Errorf("delete: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, _ := weft(t, server, "get", "vs", "reviews"); code != 1 {
		t.Errorf("get vs reviews after delete: exit %d, want 1", code)
	}
	if code, out, _ := weft(t, server, "get", "vs"); code != 0 || strings.TrimSpace(out) != "" {
		t.Errorf("get vs after delete: exit %d\n%q", code, out)
	}

	// No control plane: a clear error, non-zero exit.
	code, _, errOut = weft(t, "--server=http://127.0.0.1:1", "get", "vs")
	if code == 0 || !strings.Contains(errOut, "control plane at http://127.0.0.1:1") {
		t.Errorf("get without a control plane: exit %d, stderr %q", code, errOut)
	}

	// proxy-status against the same server: no proxy connected, the header only.
	code, out, errOut = weft(t, server, "proxy-status")
	if code != 0 || !strings.HasPrefix(out, "NAME") || strings.Count(out, "\n") != 1 {
		t.Errorf("proxy-status: exit %d\n%s%s", code, out, errOut)
	}
}

// TestApplyIstioBookinfo applies Istio's whole Bookinfo networking directory to a
// control plane, reads it back and deletes it.
func TestApplyIstioBookinfo(t *testing.T) {
	dir := bookinfoNetworking(t)
	s := startControl(t)
	server := "--server=http://" + s.APIAddr()
	code, out, errOut := weft(t, server, "apply", "-f", dir)
	if code != 0 {
		t.Fatalf("apply -f %s: exit %d\n%s%s", dir, code, out, errOut)
	}
	for _, want := range []string{"Gateway default/bookinfo-gateway applied", "DestinationRule default/reviews applied", "VirtualService default/reviews applied"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = weft(t, server, "get", "dr")
	for _, name := range []string{"productpage", "reviews", "ratings", "details"} {
		if code != 0 || !strings.Contains(out, "name: "+name+"\n") {
			t.Errorf("get dr: exit %d, lacks %s:\n%s", code, name, out)
		}
	}
	// Several files of the directory define the same resources (reviews in eleven):
	// the first file's delete removes it, the later ones report it gone.
	if code, out, errOut := weft(t, server, "delete", "-f", dir); code != 0 || !strings.Contains(out, "VirtualService default/reviews deleted") {
		t.Errorf("delete -f %s: exit %d\n%s%s", dir, code, out, errOut)
	}
	for _, kind := range []string{"vs", "dr", "gw", "se"} {
		if code, out, _ := weft(t, server, "get", kind); code != 0 || strings.TrimSpace(out) != "" {
			t.Errorf("get %s after delete: exit %d\n%s", kind, code, out)
		}
	}
}

// TestValidateStdin reads a file from standard input with -f -.
func TestValidateStdin(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old; r.Close() }()
	go func() { _, _ = io.WriteString(w, badRules); w.Close() }()
	code, out, errOut := weft(t, "validate", "-f", "-")
	if code != 1 || !strings.Contains(out, "VirtualService default/reviews: spec.http[0].route[0].weight") {
		t.Errorf("validate -f - of a bad file: exit %d\n%s%s", code, out, errOut)
	}
}

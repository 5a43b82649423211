package h2

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// h2specPath finds the h2spec conformance tool: $H2SPEC, else on PATH, else in
// $GOPATH/bin (where .ci/run installs it).
func h2specPath() string {
	if p := os.Getenv("H2SPEC"); p != "" {
		return p
	}
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	p := filepath.Join(gopath, "bin", "h2spec")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// TestH2Spec runs the h2spec conformance suite (RFC 7540/9113 and HPACK) against the
// codec, serving a handler that reads the request body and answers with a body.
func TestH2Spec(t *testing.T) {
	bin := h2specPath()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("h2spec is not installed (hack/test.sh installs it)")
		}
		t.Skip("h2spec is not installed (hack/test.sh installs it)")
	}
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello from the h2 codec")
	}), Config{IdleTimeout: time.Minute})
	host, port, _ := net.SplitHostPort(s.addr)
	// -o: each case's timeout in seconds (default 2), roomy for a loaded machine.
	out, err := exec.Command(bin, "-h", host, "-p", port, "-o", "10").CombinedOutput()
	t.Logf("%s", out)
	m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("h2spec: no summary (err %v)", err)
	}
	if string(m[4]) != "0" {
		t.Errorf("h2spec: %s tests failed", m[4])
	}
}

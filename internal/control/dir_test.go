package control

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeAtomic(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func echoRoute(subset string, weight int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - route:
    - destination: {host: echo, subset: %s}
      weight: %d
`, subset, weight)
}

func apiErrors(t *testing.T, s *Server) map[string][]string {
	t.Helper()
	resp, err := http.Get("http://" + s.APIAddr() + "/apis/errors")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string][]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConfigDirFollowedByProxylessClient drives the watched config directory under a
// connected proxyless gRPC client: a rule in the directory at start is served; an
// edit is followed; a file with an error is rejected whole (listed by /apis/errors
// with its resource and field path) while the client keeps the last good rule; fixing
// it applies it; removing it returns to the default route.
func TestConfigDirFollowedByProxylessClient(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, dir, "echo.yaml", echoRoute("v1", 100))
	s := startControl(t, echoSource(t), func(o *Options) { o.ConfigDir = dir })
	_, call := echoClient(t, s)
	only := func(v string) func(string) bool { return func(got string) bool { return got == v } }

	inARow(t, call, "the rule in the directory at start (v1)", false, 30, only("v1"))

	start := time.Now()
	writeAtomic(t, dir, "echo.yaml", echoRoute("v2", 100))
	inARow(t, call, "the edited rule (v2)", false, 1, only("v2"))
	t.Logf("an edit reached the client in %v", time.Since(start))
	inARow(t, call, "the edited rule (v2)", false, 30, only("v2"))

	// A bad weight: the file is rejected whole, the v2 rule keeps serving.
	writeAtomic(t, dir, "echo.yaml", echoRoute("v3", -5))
	path := filepath.Join(dir, "echo.yaml")
	deadline := time.Now().Add(30 * time.Second)
	for {
		errs := apiErrors(t, s)
		var file []string
		for f, e := range errs {
			if filepath.Base(f) == "echo.yaml" {
				file = e
			}
		}
		joined := strings.Join(file, "\n")
		if strings.Contains(joined, "VirtualService default/echo") && strings.Contains(joined, "spec.http[0].route[0].weight") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/apis/errors never named %s's VirtualService and field: %v", path, errs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 50; i++ {
		if v, err := call(false); err != nil || v != "v2" {
			t.Fatalf("call %d after the rejected edit: backend %q, %v; want the last good rule (v2)", i, v, err)
		}
	}

	// Fixed: applied, and the error is gone.
	writeAtomic(t, dir, "echo.yaml", echoRoute("v3", 100))
	inARow(t, call, "the fixed rule (v3)", false, 30, only("v3"))
	if errs := apiErrors(t, s); len(errs) != 0 {
		t.Errorf("/apis/errors after the fix: %v", errs)
	}

	// Removed: the default route reaches every backend again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// While grpc-go switches to a cluster no route referenced before, a call can fail
	// with UNAVAILABLE "unknown cluster selected for RPC": its ClientConn installs the
	// new config selector before the cluster manager has a picker for the new cluster
	// (clientconn.go updateResolverStateAndUnlock). So errors are tolerated until the
	// default route shows, and not after.
	deadline = time.Now().Add(30 * time.Second)
	seen := map[string]bool{}
	var lastErr error
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after removing the rule only %v answered (last error %v)", seen, lastErr)
		}
		v, err := call(false)
		if err != nil {
			lastErr = err
			time.Sleep(10 * time.Millisecond)
			continue
		}
		seen[v] = true
	}
	for i := 0; i < 30; i++ {
		if _, err := call(false); err != nil {
			t.Fatalf("call %d on the default route: %v", i, err)
		}
	}
}

package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidatePaths(t *testing.T) {
	dir := t.TempDir()
	mustWrite := func(rel, content string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := mustWrite("a/good.yaml", mixedFile)
	mustWrite("a/.hidden/x.yaml", "not: [valid")
	mustWrite("a/readme.md", "not config")
	bad := mustWrite("b/bad.yml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -1
`)

	rep, err := ValidatePaths([]string{filepath.Join(dir, "a")})
	if err != nil || !rep.OK() || len(rep.Files) != 1 || rep.Files[0].File != good {
		t.Fatalf("dir a: err=%v ok=%v files=%d", err, rep.OK(), len(rep.Files))
	}
	var out bytes.Buffer
	if err := rep.Format(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{good + ": 2 resources valid; 1 document ignored (Service reviews)", "validation succeed: 1 file, 2 resources"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	mustWrite("c/dup.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec: {host: reviews}\n")
	rep, err = ValidatePaths([]string{dir, filepath.Join(dir, "missing.yaml")})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing path not reported: %v", err)
	}
	if rep.OK() || len(rep.Files) != 3 {
		t.Fatalf("ok=%v files=%d", rep.OK(), len(rep.Files))
	}
	// Two files define DestinationRule default/reviews: a cross-file warning.
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0].Error(), good+": DestinationRule default/reviews: also defined in "+filepath.Join(dir, "c/dup.yaml")) {
		t.Errorf("cross-file warning = %v", rep.Warnings)
	}
	out.Reset()
	_ = rep.Format(&out)
	for _, want := range []string{
		"Error: " + bad + ":1: VirtualService bookinfo/reviews: spec.http[0].route[0].weight: Invalid value: -1: must be >= 0",
		"validation failed: 1 error in 1 of 3 files",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	files, resources, ignored, errs, _ := rep.Counts()
	if files != 3 || resources != 3 || ignored != 1 || errs != 1 {
		t.Errorf("counts = %d %d %d %d", files, resources, ignored, errs)
	}
}

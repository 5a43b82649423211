package meshfile

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/registry"
)

func repoRoot(t *testing.T) string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(f), "..", "..")
}

func TestBookinfoMesh(t *testing.T) {
	m, err := Load(filepath.Join(repoRoot(t), "samples", "bookinfo", "mesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ws := m.Workloads()
	if len(ws) != 6 {
		t.Fatalf("%d workloads, want 6", len(ws))
	}
	seen := map[string]bool{}
	for _, w := range ws {
		for _, ip := range []string{w.AppIP.String(), w.PodIP.String()} {
			if seen[ip] {
				t.Fatalf("address %s assigned twice", ip)
			}
			seen[ip] = true
		}
		if w.Labels["app"] != w.Service.Name {
			t.Errorf("%s: app label %q", w.Name, w.Labels["app"])
		}
	}
	src := m.Source()
	var reviews []*registry.Instance
	for _, in := range src.Instances() {
		if in.Service == "reviews.default.svc.cluster.local" {
			reviews = append(reviews, in)
		}
	}
	if len(reviews) != 3 {
		t.Fatalf("reviews has %d instances, want 3", len(reviews))
	}
	for _, in := range reviews {
		if in.Port != 9080 || !strings.HasPrefix(in.Address, "127.2.") || in.ServiceAccount != "bookinfo-reviews" || !in.Sidecar {
			t.Errorf("instance %+v", in)
		}
	}
	if m.Gateway == nil || m.Gateway.Port != 8080 || m.Gateway.Labels["istio"] != "ingressgateway" {
		t.Errorf("gateway %+v", m.Gateway)
	}
}

func TestErrorsNameFileAndField(t *testing.T) {
	_, err := Parse([]byte(`
mesh: x
services:
- name: Bad_Name
  ports: [http:99999]
  workloads:
  - name: w
- name: ok
  ports: [http:80]
  workloads:
  - command: [app]
`), "mesh.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"mesh.yaml: services[0].name:",
		"mesh.yaml: services[0].ports[0]:",
		"mesh.yaml: services[0].workloads[0]: command or address is required",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := Parse([]byte("mesh: x\nservices: []\nbogus: 1\n"), "f.yaml"); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown field not reported: %v", err)
	}
}

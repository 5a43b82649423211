package snapshot

import (
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/weft-mesh/weft/internal/registry"
)

func TestServiceEntriesBecomeServices(t *testing.T) {
	s := Build(Input{
		Mesh: DefaultMeshConfig(),
		ServiceEntries: []Config[*networking.ServiceEntry]{{
			Meta: Meta{Name: "ext", Namespace: "default"},
			Spec: &networking.ServiceEntry{
				Hosts:      []string{"api.example.com"},
				Ports:      []*networking.ServicePort{{Number: 443, Name: "https", Protocol: "TLS"}},
				Resolution: networking.ServiceEntry_DNS,
				Location:   networking.ServiceEntry_MESH_EXTERNAL,
			},
		}, {
			Meta: Meta{Name: "vm", Namespace: "default"},
			Spec: &networking.ServiceEntry{
				Hosts:            []string{"db.internal"},
				Ports:            []*networking.ServicePort{{Number: 5432, Name: "tcp", Protocol: "TCP", TargetPort: 15432}},
				Resolution:       networking.ServiceEntry_STATIC,
				Location:         networking.ServiceEntry_MESH_INTERNAL,
				WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "db"}},
			},
		}},
		WorkloadEntries: []Config[*networking.WorkloadEntry]{
			{Meta: Meta{Name: "db-1", Namespace: "default"}, Spec: &networking.WorkloadEntry{Address: "10.0.0.5", Labels: map[string]string{"app": "db"}}},
			{Meta: Meta{Name: "db-other-ns", Namespace: "other"}, Spec: &networking.WorkloadEntry{Address: "10.0.0.6", Labels: map[string]string{"app": "db"}}},
			{Meta: Meta{Name: "web", Namespace: "default"}, Spec: &networking.WorkloadEntry{Address: "10.0.0.7", Labels: map[string]string{"app": "web"}}},
		},
	})
	ext := s.Service("api.example.com", "default")
	if ext == nil || !ext.MeshExternal || ext.Resolution != registry.DNSLB {
		t.Fatalf("api.example.com: %+v", ext)
	}
	if in := s.Instances("api.example.com", 443); len(in) != 1 || in[0].Address != "api.example.com" || in[0].Port != 443 {
		t.Fatalf("DNS entry without endpoints resolves its host: %+v", in)
	}
	db := s.Instances("db.internal", 5432)
	if len(db) != 1 || db[0].Address != "10.0.0.5" || db[0].Port != 15432 {
		t.Fatalf("db.internal instances %+v, want only the selected WorkloadEntry of its namespace on the target port", db)
	}
}

func TestResolveHost(t *testing.T) {
	s := Build(Input{Mesh: DefaultMeshConfig(), Services: []*registry.Service{{Hostname: "reviews.default.svc.cluster.local", Namespace: "default"}}})
	for _, c := range []struct{ in, ns, want string }{
		{"reviews", "default", "reviews.default.svc.cluster.local"},
		{"reviews", "prod", "reviews.prod.svc.cluster.local"},
		{"reviews.default", "prod", "reviews.default.svc.cluster.local"},
		{"reviews.default.svc.cluster.local", "prod", "reviews.default.svc.cluster.local"},
		{"*.example.com", "default", "*.example.com"},
		{"*", "default", "*"},
	} {
		if got := s.ResolveHost(c.in, c.ns); got != c.want {
			t.Errorf("ResolveHost(%q, %q) = %q, want %q", c.in, c.ns, got, c.want)
		}
	}
}

func TestVisible(t *testing.T) {
	for _, c := range []struct {
		exportTo  []string
		owner, ns string
		want      bool
	}{
		{nil, "a", "b", true},
		{[]string{"."}, "a", "a", true},
		{[]string{"."}, "a", "b", false},
		{[]string{"*"}, "a", "b", true},
		{[]string{"b"}, "a", "b", true},
		{[]string{"c"}, "a", "b", false},
	} {
		if got := Visible(c.exportTo, c.owner, c.ns); got != c.want {
			t.Errorf("Visible(%v, %s, %s) = %v", c.exportTo, c.owner, c.ns, got)
		}
	}
}

// TestUnchanged: snapshots built from the same objects are unchanged in every part; a
// replaced VirtualService changes only that part; a replaced instance or a new
// AuthorizationPolicy changes theirs.
func TestUnchanged(t *testing.T) {
	svc := &registry.Service{Hostname: "a.ns.svc.cluster.local", Name: "a", Namespace: "ns",
		Ports: []registry.Port{{Name: "http", Number: 80, Protocol: registry.HTTP}}}
	inst := &registry.Instance{Service: svc.Hostname, ServicePort: 80, Address: "127.0.0.1", Port: 80, Namespace: "ns"}
	vs := Config[*networking.VirtualService]{Meta: Meta{Name: "a", Namespace: "ns"}, Spec: &networking.VirtualService{Hosts: []string{"a"}}}
	in := Input{Mesh: DefaultMeshConfig(), Services: []*registry.Service{svc}, Instances: []*registry.Instance{inst},
		VirtualServices: []Config[*networking.VirtualService]{vs}}
	base := Build(in)
	all := PartRegistry | PartVirtualServices | PartDestinationRules | PartGateways | PartSidecars |
		PartPeerAuthentications | PartAuthorizationPolicies | PartRequestAuthentications
	if !Build(in).Unchanged(base, all) {
		t.Errorf("same inputs: changed")
	}
	vs2 := vs
	vs2.Spec = &networking.VirtualService{Hosts: []string{"a"}}
	inVS := in
	inVS.VirtualServices = []Config[*networking.VirtualService]{vs2}
	if s := Build(inVS); !s.Unchanged(base, all&^PartVirtualServices) || s.Unchanged(base, PartVirtualServices) {
		t.Errorf("replaced VirtualService: wrong parts changed")
	}
	inst2 := *inst
	inInst := in
	inInst.Instances = []*registry.Instance{&inst2}
	if s := Build(inInst); s.Unchanged(base, PartRegistry) || !s.Unchanged(base, all&^PartRegistry) {
		t.Errorf("replaced instance: wrong parts changed")
	}
	inAP := in
	inAP.AuthorizationPolicies = []Config[*security.AuthorizationPolicy]{{Meta: Meta{Name: "p", Namespace: "ns"}, Spec: &security.AuthorizationPolicy{}}}
	if s := Build(inAP); s.Unchanged(base, PartAuthorizationPolicies) || !s.Unchanged(base, all&^PartAuthorizationPolicies) {
		t.Errorf("new AuthorizationPolicy: wrong parts changed")
	}
	if base.Unchanged(nil, PartRegistry) {
		t.Errorf("nil: unchanged")
	}
}

package config

import (
	"testing"
)

// FuzzParseFile: no input may panic the parser, and what it accepts it must describe
// consistently (every resource valid, errors only with a file name).
func FuzzParseFile(f *testing.F) {
	f.Add([]byte(mixedFile))
	f.Add([]byte(`{"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"}, "spec": {"servers": [{"port": {"number": 80, "name": "h", "protocol": "HTTP"}, "hosts": ["*"]}]}}`))
	f.Add([]byte("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h}\nspec: {rules: [{matches: [{path: {type: Exact, value: /x}}]}]}\n"))
	f.Add([]byte("---\n---\n- a\n"))
	f.Add([]byte("apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: t}\nspec: {service: s, backends: [{service: a, weight: 1Ki}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := ParseFile("fuzz.yaml", data)
		for _, r := range fr.Resources {
			if r.Spec == nil || r.Name == "" || r.Namespace == "" {
				t.Fatalf("incomplete resource %+v", r)
			}
		}
		for _, e := range fr.Errors {
			if e.File != "fuzz.yaml" || e.Msg == "" {
				t.Fatalf("bad error %+v", e)
			}
		}
	})
}

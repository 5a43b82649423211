package validation

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	networking "istio.io/api/networking/v1alpha3"

	// Register the descriptors the rule tables name.
	_ "istio.io/api/extensions/v1alpha1"
	_ "istio.io/api/security/v1beta1"
	_ "istio.io/api/telemetry/v1alpha1"
)

// TestSchemaTablesNameRealFields guards the rule tables against typos: a misspelt field
// name would silently disable its rule.
func TestSchemaTablesNameRealFields(t *testing.T) {
	check := func(name protoreflect.FullName) {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if _, ok := d.(protoreflect.FieldDescriptor); !ok {
			t.Errorf("%s is not a field", name)
		}
	}
	for name := range schemaRules {
		check(name)
	}
	for name := range durationNoMinimum {
		check(name)
	}
}

func TestSchemaWalk(t *testing.T) {
	md := (&networking.VirtualService{}).ProtoReflect().Descriptor()
	for _, c := range []struct {
		doc  string
		want []string
	}{
		{`{"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": 10}]}]}`, nil},
		{`{"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": 1.5}]}]}`,
			[]string{`spec.http[0].route[0].weight: Invalid value: "number": spec.http[0].route[0].weight in body must be of type integer`}},
		{`{"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": 3000000000}]}]}`,
			[]string{"spec.http[0].route[0].weight: Invalid value: 3000000000: spec.http[0].route[0].weight in body should be less than or equal to 2147483647"}},
		{`{"hosts": ["a"], "http": [{"route": [{"destination": {}}]}]}`, []string{"spec.http[0].route[0].destination.host: Required value"}},
		{`{"hosts": [null]}`, []string{`spec.hosts[0]: Invalid value: "null": spec.hosts[0] in body must be of type string: "null"`}},
		{`{"tcp": [{"match": [{"port": -1}]}]}`, []string{"spec.tcp[0].match[0].port: Invalid value: -1: spec.tcp[0].match[0].port in body should be greater than or equal to 0"}},
		{`{"http": [{"mirror_percent": 5}]}`, nil}, // proto names are accepted, as jsonpb does
		{`{"http": [{"headers": {"request": {"set": {"a": 1}}}}]}`, []string{`spec.http[0].headers.request.set[a]: Invalid value: "number"`}},
	} {
		var v any
		dec := json.NewDecoder(strings.NewReader(c.doc))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		r := Schema(md, v, "spec")
		got := r.String()
		if c.want == nil && got != "" {
			t.Errorf("%s: unexpected: %s", c.doc, got)
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: want %q, got:\n%s", c.doc, w, got)
			}
		}
	}
}

// Package securitytest is test support for the security generators and their users
// (the listener generator's tests): it reads Istio's security resources
// (PeerAuthentication, AuthorizationPolicy, RequestAuthentication) from YAML, as a config
// store would hand them to the snapshot. Only tests import it.
package securitytest

import (
	"bytes"
	"encoding/json"
	"fmt"

	security "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/snapshot"
)

// Configs are security resources read from YAML.
type Configs struct {
	PeerAuthentications    []snapshot.Config[*security.PeerAuthentication]
	AuthorizationPolicies  []snapshot.Config[*security.AuthorizationPolicy]
	RequestAuthentications []snapshot.Config[*security.RequestAuthentication]
}

// AddTo appends the resources to a snapshot input.
func (c Configs) AddTo(in *snapshot.Input) {
	in.PeerAuthentications = append(in.PeerAuthentications, c.PeerAuthentications...)
	in.AuthorizationPolicies = append(in.AuthorizationPolicies, c.AuthorizationPolicies...)
	in.RequestAuthentications = append(in.RequestAuthentications, c.RequestAuthentications...)
}

// creation hands out CreationIndex values in parse order, as a store would; it starts
// high so that resources from other loaders in the same test sort before.
var creation uint64 = 1 << 20

// Parse reads YAML documents of security resources; a resource without a namespace goes
// to "default". Other kinds are an error.
func Parse(source string, data []byte) (Configs, error) {
	var out Configs
	for i, doc := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return out, fmt.Errorf("securitytest: %s: document %d: %w", source, i, err)
		}
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name        string            `json:"name"`
				Namespace   string            `json:"namespace"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(js, &obj); err != nil {
			return out, fmt.Errorf("securitytest: %s: document %d: %w", source, i, err)
		}
		if obj.Kind == "" {
			continue
		}
		creation++
		meta := snapshot.Meta{Name: obj.Metadata.Name, Namespace: obj.Metadata.Namespace, Annotations: obj.Metadata.Annotations,
			CreationIndex: creation, Source: fmt.Sprintf("%s: %s %s", source, obj.Kind, obj.Metadata.Name)}
		if meta.Namespace == "" {
			meta.Namespace = "default"
		}
		spec := obj.Spec
		if len(spec) == 0 || string(spec) == "null" {
			spec = []byte("{}")
		}
		var perr error
		switch obj.Kind {
		case "PeerAuthentication":
			m := &security.PeerAuthentication{}
			perr = m.UnmarshalJSON(spec)
			out.PeerAuthentications = append(out.PeerAuthentications, snapshot.Config[*security.PeerAuthentication]{Meta: meta, Spec: m})
		case "AuthorizationPolicy":
			m := &security.AuthorizationPolicy{}
			perr = m.UnmarshalJSON(spec)
			out.AuthorizationPolicies = append(out.AuthorizationPolicies, snapshot.Config[*security.AuthorizationPolicy]{Meta: meta, Spec: m})
		case "RequestAuthentication":
			m := &security.RequestAuthentication{}
			perr = m.UnmarshalJSON(spec)
			out.RequestAuthentications = append(out.RequestAuthentications, snapshot.Config[*security.RequestAuthentication]{Meta: meta, Spec: m})
		default:
			return out, fmt.Errorf("securitytest: %s: document %d: kind %q not supported", source, i, obj.Kind)
		}
		if perr != nil {
			return out, fmt.Errorf("securitytest: %s: %s %s: spec: %w", source, obj.Kind, meta.Name, perr)
		}
	}
	return out, nil
}

// MustParse is Parse for literal YAML in tests.
func MustParse(yamlText string) Configs {
	c, err := Parse("inline", []byte(yamlText))
	if err != nil {
		panic(err)
	}
	return c
}

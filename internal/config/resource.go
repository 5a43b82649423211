// Package config holds weft's configuration model: the Istio, Gateway API and SMI kinds it
// reads, parsing of multi-document YAML/JSON into the upstream Go types, validation
// (internal/config/validation) with file/resource/field errors, and the Store with change
// events that sources (a watched directory, the API, Kubernetes later) feed and the
// snapshot builder consumes.
//
//	files/API/kube ──► Parse + Validate ──► Store.Apply(source, set) ──► events ──► snapshot
package config

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
)

// DefaultNamespace is used when a document has no metadata.namespace.
const DefaultNamespace = "default"

// Source says where a resource came from.
type Source struct {
	// File is the path (or another source name, such as "api").
	File string
	// Doc is the 0-based index of the document in the file (empty documents not counted).
	Doc int
	// Line is the 1-based line where the document starts (0 when unknown).
	Line int
}

func (s Source) String() string {
	if s.Line > 0 {
		return fmt.Sprintf("%s:%d", s.File, s.Line)
	}
	return s.File
}

// Resource is one configuration object. It is immutable once applied to a Store: readers
// share it without locks, so nobody may modify it (or its Spec) afterwards.
type Resource struct {
	Kind Kind
	// APIVersion as written in the document ("networking.istio.io/v1alpha3").
	APIVersion  string
	Name        string
	Namespace   string
	Labels      map[string]string
	Annotations map[string]string
	// Spec is the upstream type for Kind (see Kind.NewSpec): *v1alpha3.VirtualService,
	// *gwv1.HTTPRouteSpec, *smi.TrafficSplitSpec, ...
	Spec   any
	Source Source
	// ResourceVersion is the store version at which this object last changed; Generation
	// counts spec changes of the object, starting at 1. Both are set by the Store.
	ResourceVersion int64
	Generation      int64
}

// Key identifies a resource in a store.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

func (k Key) String() string { return k.Kind.Label() + " " + k.Namespace + "/" + k.Name }

// Compare orders keys by kind (declaration order), namespace, then name.
func (k Key) Compare(o Key) int {
	if c := cmp.Compare(k.Kind, o.Kind); c != 0 {
		return c
	}
	if c := strings.Compare(k.Namespace, o.Namespace); c != 0 {
		return c
	}
	return strings.Compare(k.Name, o.Name)
}

// Key returns the resource's key.
func (r *Resource) Key() Key { return Key{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name} }

// String is the label used in messages: "VirtualService default/reviews".
func (r *Resource) String() string { return r.Key().String() }

// GVK returns the group/version/kind as written.
func (r *Resource) GVK() GVK {
	g, v := ParseAPIVersion(r.APIVersion)
	return GVK{Group: g, Version: v, Kind: r.Kind.String()}
}

// SameContent reports whether two resources carry the same configuration (spec, labels,
// annotations), ignoring where they came from and store bookkeeping. The store uses it so
// that rewriting a file without changing it produces no event.
func (r *Resource) SameContent(o *Resource) bool {
	if r.Kind != o.Kind || r.Name != o.Name || r.Namespace != o.Namespace || r.APIVersion != o.APIVersion ||
		!equalMaps(r.Labels, o.Labels) || !equalMaps(r.Annotations, o.Annotations) {
		return false
	}
	return specEqual(r.Spec, o.Spec)
}

func canonicalJSON(v any) ([]byte, error) { return json.Marshal(v) }

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func specEqual(a, b any) bool {
	if pa, ok := a.(proto.Message); ok {
		pb, ok := b.(proto.Message)
		return ok && proto.Equal(pa, pb)
	}
	// Gateway API and SMI specs are plain structs: compare their canonical JSON.
	ja, errA := canonicalJSON(a)
	jb, errB := canonicalJSON(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

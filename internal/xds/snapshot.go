package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// baseTypes are always in a snapshot, empty if the generator returned none: a proxy's
// wildcard CDS/LDS request must be answered (Envoy's initialization waits for it), and
// an answered empty type is how a proxy learns that all its resources of it are gone.
var baseTypes = []string{
	resource.ClusterType,
	resource.EndpointType,
	resource.ListenerType,
	resource.RouteType,
	resource.SecretType,
}

// shortNames are the status/metric names of the xDS types (Istio's type label values
// are the lower-case forms).
var shortNames = map[string]string{
	resource.ClusterType:         "CDS",
	resource.EndpointType:        "EDS",
	resource.ListenerType:        "LDS",
	resource.RouteType:           "RDS",
	resource.SecretType:          "SDS",
	resource.ScopedRouteType:     "SRDS",
	resource.VirtualHostType:     "VHDS",
	resource.RuntimeType:         "RTDS",
	resource.ExtensionConfigType: "ECDS",
	resource.RateLimitConfigType: "RLS",
}

// ShortName is the status name of an xDS type URL (CDS, LDS, ...), or the URL itself
// for a type without one.
func ShortName(typeURL string) string {
	if n, ok := shortNames[typeURL]; ok {
		return n
	}
	return typeURL
}

// Version is the content version of one type's resources: the first 8 bytes (hex) of
// a SHA-256 over every resource's name and deterministic proto encoding, in name
// order. Equal resources give equal versions in every process, so a push that does not
// change a type sends nothing for it and control plane replicas agree.
func Version(items []types.Resource) (string, error) {
	sorted := sortedByName(items)
	h := sha256.New()
	var n [8]byte
	mo := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	for i, r := range sorted {
		name := cache.GetResourceName(r)
		b, err := mo.MarshalAppend(buf[:0], r)
		if err != nil {
			return "", fmt.Errorf("resource[%d] %q: marshal: %w", i, name, err)
		}
		buf = b
		// Length prefixes keep (name, bytes) boundaries unambiguous.
		binary.BigEndian.PutUint64(n[:], uint64(len(name)))
		h.Write(n[:])
		h.Write([]byte(name))
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

func sortedByName(items []types.Resource) []types.Resource {
	if slices.IsSortedFunc(items, cmpName) {
		return items
	}
	out := slices.Clone(items)
	slices.SortStableFunc(out, cmpName)
	return out
}

func cmpName(a, b types.Resource) int {
	return strings.Compare(cache.GetResourceName(a), cache.GetResourceName(b))
}

// buildSnapshot checks a generator's output and makes the cache snapshot, with one
// version per type.
func buildSnapshot(res Resources) (*cache.Snapshot, map[string]string, error) {
	snap := &cache.Snapshot{}
	versions := make(map[string]string, len(baseTypes)+len(res))
	typeURLs := slices.Sorted(maps.Keys(res))
	for _, t := range baseTypes {
		if _, ok := res[t]; !ok {
			typeURLs = append(typeURLs, t)
		}
	}
	for _, typeURL := range typeURLs {
		items := res[typeURL]
		rt := cache.GetResponseType(typeURL)
		if rt == types.UnknownType {
			return nil, nil, fmt.Errorf("type %q: not an xDS resource type", typeURL)
		}
		want := strings.TrimPrefix(typeURL, resource.APITypePrefix)
		seen := make(map[string]bool, len(items))
		for i, r := range items {
			if r == nil {
				return nil, nil, fmt.Errorf("%s resource[%d]: nil", ShortName(typeURL), i)
			}
			if got := string(r.ProtoReflect().Descriptor().FullName()); got != want {
				return nil, nil, fmt.Errorf("%s resource[%d]: is a %s, want %s", ShortName(typeURL), i, got, want)
			}
			name := cache.GetResourceName(r)
			if name == "" {
				return nil, nil, fmt.Errorf("%s resource[%d]: name is empty", ShortName(typeURL), i)
			}
			if seen[name] {
				return nil, nil, fmt.Errorf("%s resource %q: name is not unique", ShortName(typeURL), name)
			}
			seen[name] = true
		}
		v, err := Version(items)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %w", ShortName(typeURL), err)
		}
		versions[typeURL] = v
		snap.Resources[rt] = cache.NewResources(v, items)
	}
	return snap, versions, nil
}

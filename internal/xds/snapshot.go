package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
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
// a SHA-256 over every resource's digest (the SHA-256 of its name and deterministic
// proto encoding), in name order. Equal resources give equal versions in every process,
// so a push that does not change a type sends nothing for it and control plane
// replicas agree.
func Version(items []types.Resource) (string, error) {
	v, _, err := version(items, nil)
	return v, err
}

// version is Version with each resource's encoding taken from memo when it has it; it
// also returns the encoded resources, sorted by name.
func version(items []types.Resource, memo *encodingMemo) (string, []*encoded, error) {
	out, err := memo.encodeAll(items)
	if err != nil {
		return "", nil, err
	}
	if !slices.IsSortedFunc(out, cmpEncoded) {
		slices.SortStableFunc(out, cmpEncoded)
	}
	// Each digest covers its resource's name and bytes; in name order, the digests
	// identify the set.
	h := sha256.New()
	for _, e := range out {
		h.Write(e.digest[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), out, nil
}

func cmpEncoded(a, b *encoded) int { return strings.Compare(a.name, b.name) }

// encoded is a resource as the snapshot cache holds it: its deterministic encoding,
// carried as the unknown fields of an empty message, so that go-control-plane's
// marshal of it for every response to every proxy is a copy of the bytes instead of a
// walk over the proto (the response's Any takes its type URL from the request, not from
// the message). GetName gives the cache the resource's name.
type encoded struct {
	*emptypb.Empty
	name   string
	digest [sha256.Size]byte // of the name and the encoding
	// any is the resource as a response carries it, shared by every response (the
	// bytes are the Empty's unknown fields, not a copy).
	any *anypb.Any
	// wire is the resource as an element of a response's resources field: field
	// header, the Any's type URL, then the encoding (any's value is wire's tail). The
	// resources encoded together are laid out one after the other in one block, and
	// wire's capacity runs on to the block's end, so that a response can send a run of
	// neighbours as one buffer (see typeResources.wire).
	wire []byte
}

// GetName implements go-control-plane's types.ResourceWithName.
func (e *encoded) GetName() string { return e.name }

// encodeBlockMax bounds a block of encodings laid out together: a block lives as
// long as any of its resources does, so one resource that outlives its neighbours
// keeps at most this much of them.
const encodeBlockMax = 256 << 10

// encodeBatch encodes items into one block per encodeBlockMax (a resource larger than
// that has a block of its own), in items' order. On error, it returns the index of
// the resource that failed.
func encodeBatch(items []types.Resource) ([]*encoded, int, error) {
	out := make([]*encoded, len(items))
	var scratch, block []byte
	for i, r := range items {
		var err error
		scratch, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(scratch[:0], r)
		if err != nil {
			return nil, i, err
		}
		typeURL := resource.APITypePrefix + string(r.ProtoReflect().Descriptor().FullName())
		n := wireSize(typeURL, len(scratch))
		if cap(block)-len(block) < n {
			block = make([]byte, 0, max(n, min(encodeBlockMax, blockWant(items[i:], n))))
		}
		start := len(block)
		block = appendWire(block, typeURL, scratch)
		out[i] = newEncoded(cache.GetResourceName(r), typeURL, block[start:len(block):cap(block)], n-len(scratch))
	}
	return out, 0, nil
}

// blockWant is a guess of the room the rest of a batch needs: its first resource's
// size times its length, so a batch of alike resources fills blocks without waste.
func blockWant(rest []types.Resource, first int) int {
	return first * len(rest) * 5 / 4
}

// newEncoded makes the encoding of resource name from its wire form, whose value
// starts at valueAt.
func newEncoded(name, typeURL string, wire []byte, valueAt int) *encoded {
	value := wire[valueAt:len(wire):len(wire)]
	h := sha256.New()
	var n [8]byte
	// Length prefixes keep (name, bytes) boundaries unambiguous.
	binary.BigEndian.PutUint64(n[:], uint64(len(name)))
	h.Write(n[:])
	h.Write([]byte(name))
	h.Write(value)
	e := &encoded{Empty: &emptypb.Empty{}, name: name, any: &anypb.Any{TypeUrl: typeURL, Value: value}, wire: wire}
	h.Sum(e.digest[:0])
	e.Empty.ProtoReflect().SetUnknown(protoreflect.RawFields(value))
	return e
}

// encodingMemo remembers resource encodings by resource identity. Generators hand the
// same resource (pointer) to many proxies (a class of sidecars shares its outbound
// clusters, endpoints and routes), and resources are never changed once returned, so
// one marshal and hash serves every proxy, every response and every later push that
// reuses it, and the bytes are held once. It also shares a type's whole resource map
// among proxies whose version of the type is equal. Entries live for two generations:
// rotate (at each push) drops what the previous push did not use again, so the memo
// holds about the live configuration, not every resource ever generated.
type encodingMemo struct {
	mu       sync.Mutex
	cur, old map[types.Resource]*encoded
	// each type's resources by type and version, same generations.
	curRes, oldRes map[resKey]*typeResources
}

type resKey struct {
	typeURL, version string
}

// encodingMemoMax bounds a generation (many connects between pushes).
const encodingMemoMax = 1 << 20

func newEncodingMemo() *encodingMemo {
	return &encodingMemo{cur: map[types.Resource]*encoded{}, curRes: map[resKey]*typeResources{}}
}

// rotate starts a new generation.
func (m *encodingMemo) rotate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rotateLocked()
}

func (m *encodingMemo) rotateLocked() {
	m.old, m.cur = m.cur, make(map[types.Resource]*encoded, len(m.cur))
	m.oldRes, m.curRes = m.curRes, make(map[resKey]*typeResources, len(m.curRes))
}

// encode returns r's encoding (see encodeAll).
func (m *encodingMemo) encode(r types.Resource) (*encoded, error) {
	out, err := m.encodeAll([]types.Resource{r})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// encodeAll returns the encodings of items, in items' order: from the memo when it
// has them (one lock for the whole list), else encoded and remembered. A nil memo
// encodes every time.
func (m *encodingMemo) encodeAll(items []types.Resource) ([]*encoded, error) {
	out := make([]*encoded, len(items))
	missing := 0
	if m != nil {
		m.mu.Lock()
		for i, r := range items {
			e := m.cur[r]
			if e == nil {
				if e = m.old[r]; e != nil {
					m.cur[r] = e
				}
			}
			if e == nil {
				missing++
			}
			out[i] = e
		}
		m.mu.Unlock()
	} else {
		missing = len(items)
	}
	if missing == 0 {
		return out, nil
	}
	// The missing ones are encoded together, in items' order (a list's order is its
	// responses' order: neighbours encoded together go out as one buffer).
	idx := make([]int, 0, missing)
	todo := make([]types.Resource, 0, missing)
	for i, r := range items {
		if out[i] == nil {
			idx, todo = append(idx, i), append(todo, r)
		}
	}
	enc, bad, err := encodeBatch(todo)
	if err != nil {
		i := idx[bad]
		return nil, fmt.Errorf("resource[%d] %q: marshal: %w", i, cache.GetResourceName(items[i]), err)
	}
	for j, i := range idx {
		out[i] = enc[j]
	}
	if m != nil {
		m.mu.Lock()
		if len(m.cur)+missing > encodingMemoMax {
			m.rotateLocked()
		}
		for i, r := range items {
			if _, ok := m.cur[r]; !ok {
				m.cur[r] = out[i]
			}
		}
		m.mu.Unlock()
	}
	return out, nil
}

// keep marks t as used by this generation, so that rotation keeps it for proxies that
// build the same type and version afresh. (t's resources' encodings are not touched:
// one the memo drops is encoded again if a proxy builds it afresh.)
func (m *encodingMemo) keep(t *typeResources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := resKey{t.typeURL, t.version}
	if _, ok := m.curRes[k]; !ok {
		m.curRes[k] = t
	}
}

// typeResources returns the resources of one type and version as the SotW cache
// serves them: the one already made for another proxy when there is one, else one made
// of items (sorted by name).
func (m *encodingMemo) typeResources(typeURL string, v string, items []*encoded) *typeResources {
	k := resKey{typeURL, v}
	if m != nil {
		m.mu.Lock()
		r, ok := m.curRes[k]
		if !ok {
			if r, ok = m.oldRes[k]; ok {
				m.curRes[k] = r
			}
		}
		m.mu.Unlock()
		if ok {
			return r
		}
	}
	r := newTypeResources(typeURL, v, items)
	if m != nil {
		m.mu.Lock()
		m.curRes[k] = r
		m.mu.Unlock()
	}
	return r
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

// buildSnapshot checks a generator's output and makes the proxy's snapshot, with one
// version per type.
func buildSnapshot(res Resources) (*proxySnapshot, map[string]string, error) {
	return buildSnapshotMemo(res, nil)
}

// buildSnapshotFrom is buildSnapshotMemo for a proxy whose last configuration was prev,
// made into prevSnap: a type whose resources are the same objects as before (the
// generators reuse what did not change: a VirtualService change leaves clusters,
// endpoints and listeners as they were) keeps its checked, encoded and hashed form at
// the cost of a pointer comparison per resource.
func buildSnapshotFrom(res Resources, memo *encodingMemo, prev Resources, prevSnap *proxySnapshot) (*proxySnapshot, map[string]string, error) {
	if prevSnap == nil {
		return buildSnapshotMemo(res, memo)
	}
	same := map[string]*typeResources{}
	rest := Resources{}
	for typeURL, items := range res {
		if t := prevSnap.types[typeURL]; t != nil && slices.Equal(items, prev[typeURL]) {
			same[typeURL] = t
			continue
		}
		rest[typeURL] = items
	}
	for _, t := range baseTypes { // absent before and now: the same empty type
		if _, ok := res[t]; !ok {
			if _, had := prev[t]; !had && prevSnap.types[t] != nil {
				same[t] = prevSnap.types[t]
			}
		}
	}
	snap, versions, err := buildSnapshotMemo(rest, memo)
	if err != nil {
		return nil, nil, err
	}
	for typeURL, t := range same {
		snap.types[typeURL] = t
		versions[typeURL] = t.version
		if memo != nil {
			memo.keep(t)
		}
	}
	return snap, versions, nil
}

// buildSnapshotMemo is buildSnapshot with resource encodings (and whole types) from
// memo. The snapshot holds the encodings (see encoded), not the resources.
func buildSnapshotMemo(res Resources, memo *encodingMemo) (*proxySnapshot, map[string]string, error) {
	snap := &proxySnapshot{types: make(map[string]*typeResources, len(baseTypes)+len(res))}
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
		want := protoreflect.FullName(strings.TrimPrefix(typeURL, resource.APITypePrefix))
		for i, r := range items {
			if r == nil {
				return nil, nil, fmt.Errorf("%s resource[%d]: nil", ShortName(typeURL), i)
			}
			if got := r.ProtoReflect().Descriptor().FullName(); got != want {
				return nil, nil, fmt.Errorf("%s resource[%d]: is a %s, want %s", ShortName(typeURL), i, got, want)
			}
		}
		v, enc, err := version(items, memo)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %w", ShortName(typeURL), err)
		}
		// enc is sorted by name: an empty name comes first, duplicates side by side.
		if len(enc) > 0 && enc[0].name == "" {
			i := slices.IndexFunc(items, func(r types.Resource) bool { return cache.GetResourceName(r) == "" })
			return nil, nil, fmt.Errorf("%s resource[%d]: name is empty", ShortName(typeURL), i)
		}
		for i := 1; i < len(enc); i++ {
			if enc[i].name == enc[i-1].name {
				return nil, nil, fmt.Errorf("%s resource %q: name is not unique", ShortName(typeURL), enc[i].name)
			}
		}
		versions[typeURL] = v
		snap.types[typeURL] = memo.typeResources(typeURL, v, enc)
	}
	return snap, versions, nil
}

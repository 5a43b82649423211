package xds

import (
	"runtime"
	"sync"
	"unsafe"
	"weak"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers protoCodecName
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

const protoCodecName = "proto"

// DiscoveryResponse field numbers (envoy/service/discovery/v3/discovery.proto).
const (
	drVersionInfo = 1
	drResources   = 2
	drTypeURL     = 4
	drNonce       = 5
)

// responseCodec is the xDS port's gRPC codec: protobuf, except that a SotW response
// whose resource list is a shared one (a typeResources' Anys, see respond) is written
// as a sequence of buffers pointing at the resources' shared encodings, instead of
// being marshalled into a new buffer: a push of a 430 KB route configuration to a
// thousand proxies copies nothing until gRPC frames it, and holds no per-proxy copy
// while slow proxies read.
type responseCodec struct{ encoding.CodecV2 }

func newResponseCodec() responseCodec {
	return responseCodec{encoding.GetCodecV2(protoCodecName)}
}

func (c responseCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*discovery.DiscoveryResponse); ok {
		if t := sharedList(r.GetResources()); t != nil && onlyWireFields(r) {
			return t.wire(r), nil
		}
	}
	return c.CodecV2.Marshal(v)
}

// onlyWireFields reports whether r sets no field but those wire writes.
func onlyWireFields(r *discovery.DiscoveryResponse) bool {
	ok := len(r.ProtoReflect().GetUnknown()) == 0
	r.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		switch fd.Number() {
		case drVersionInfo, drResources, drTypeURL, drNonce:
			return true
		}
		ok = false
		return false
	})
	return ok
}

// lists maps a shared resource list (its first element's address) to its
// typeResources, weakly: an entry goes when its typeResources does.
var lists sync.Map // **anypb.Any -> weak.Pointer[typeResources]

// register makes t's list known to the codec.
func (t *typeResources) register() {
	if len(t.anys) == 0 {
		return
	}
	key := unsafe.SliceData(t.anys)
	lists.Store(key, weak.Make(t))
	// The key keeps t's list alive (not t), so its address is not reused while the
	// entry exists; the entry goes with t.
	runtime.AddCleanup(t, func(k **anypb.Any) { lists.Delete(k) }, key)
}

// sharedList returns the typeResources whose list anys is, nil if it is none.
func sharedList(anys []*anypb.Any) *typeResources {
	if len(anys) == 0 {
		return nil
	}
	v, ok := lists.Load(unsafe.SliceData(anys))
	if !ok {
		return nil
	}
	t := v.(weak.Pointer[typeResources]).Value()
	if t == nil || len(t.anys) != len(anys) || unsafe.SliceData(t.anys) != unsafe.SliceData(anys) {
		return nil
	}
	return t
}

// wire is r (whose resources are t's) in protobuf wire form: its small fields in
// buffers of their own, the resources as buffers pointing at their shared encodings,
// one per run of neighbours that were encoded together (see encoded.wire): a response
// of a thousand clusters of one class is a few buffers, not a thousand.
func (t *typeResources) wire(r *discovery.DiscoveryResponse) mem.BufferSlice {
	out := make(mem.BufferSlice, 0, 8)
	if v := r.GetVersionInfo(); v != "" {
		out = append(out, mem.SliceBuffer(protowire.AppendString(protowire.AppendTag(nil, drVersionInfo, protowire.BytesType), v)))
	}
	var run []byte
	for _, e := range t.items {
		if follows(run, e.wire) {
			run = run[:len(run)+len(e.wire)]
			continue
		}
		if len(run) > 0 {
			out = append(out, mem.SliceBuffer(run))
		}
		run = e.wire
	}
	if len(run) > 0 {
		out = append(out, mem.SliceBuffer(run))
	}
	var tail []byte
	if v := r.GetTypeUrl(); v != "" {
		tail = protowire.AppendString(protowire.AppendTag(tail, drTypeURL, protowire.BytesType), v)
	}
	if v := r.GetNonce(); v != "" {
		tail = protowire.AppendString(protowire.AppendTag(tail, drNonce, protowire.BytesType), v)
	}
	if len(tail) > 0 {
		out = append(out, mem.SliceBuffer(tail))
	}
	return out
}

// follows reports whether next starts where run ends, within run's capacity: the two
// are neighbours in one block, and run[:len(run)+len(next)] covers both.
func follows(run, next []byte) bool {
	return len(run) > 0 && cap(run)-len(run) >= len(next) &&
		unsafe.Add(unsafe.Pointer(unsafe.SliceData(run)), len(run)) == unsafe.Pointer(unsafe.SliceData(next))
}

// wireSize is the size of a resource's wire form (see encoded.wire) whose Any has
// typeURL and an encoding of n bytes.
func wireSize(typeURL string, n int) int {
	anyLen := anyFieldsSize(typeURL, n)
	return protowire.SizeTag(drResources) + protowire.SizeVarint(uint64(anyLen)) + anyLen
}

func anyFieldsSize(typeURL string, n int) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(typeURL)) + protowire.SizeTag(2) + protowire.SizeBytes(n)
}

// appendWire appends a resource's wire form (see encoded.wire) to b.
func appendWire(b []byte, typeURL string, value []byte) []byte {
	b = protowire.AppendTag(b, drResources, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyFieldsSize(typeURL, len(value))))
	b = protowire.AppendString(protowire.AppendTag(b, 1, protowire.BytesType), typeURL)
	b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.BytesType), uint64(len(value)))
	return append(b, value...)
}

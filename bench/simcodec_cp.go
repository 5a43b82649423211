package main

import (
	"fmt"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers "proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// simCodec is the simulated proxies' gRPC codec. The simulated proxies share the
// machine with the control plane they measure, so what they spend per response is
// taken from the control plane: a thousand of them decoding every resource of every
// response (a copy and an allocation per resource) cost more CPU per change than the
// control plane itself. simCodec decodes a DiscoveryResponse's version, type URL and
// nonce, and gives each resource as an Any whose value is the resource's wire bytes
// in the received buffer (type URL and value fields, not decoded): enough to ACK, to
// count bytes (proto.Size is unchanged) and to look for a change's marker. Requests
// and other messages use the protobuf codec.
type simCodec struct{ encoding.CodecV2 }

func newSimCodec() simCodec { return simCodec{encoding.GetCodecV2("proto")} }

func (c simCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*discovery.DiscoveryResponse)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	b := data.Materialize()
	r.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bench: sim codec: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("bench: sim codec: %w", protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fmt.Errorf("bench: sim codec: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case 1:
			r.VersionInfo = string(v)
		case 2:
			// The Any's own fields, raw, as the value (see wireSize).
			r.Resources = append(r.Resources, &anypb.Any{Value: v})
		case 4:
			r.TypeUrl = string(v)
		case 5:
			r.Nonce = string(v)
		}
	}
	return nil
}

// wireSize is the size of the response as it came over the wire, for a response
// simCodec decoded: each resource's Any holds the original Any's encoding as its value,
// which proto.Size counts with one field header more.
func wireSize(r *discovery.DiscoveryResponse) int {
	n := proto.Size(r)
	for _, a := range r.GetResources() {
		n -= protowire.SizeTag(2) + protowire.SizeVarint(uint64(len(a.GetValue())))
	}
	return n
}

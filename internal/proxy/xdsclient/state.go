package xdsclient

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	// The resource types the client must name without the Handler's help.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// resourceWrapperType is the type URL of envoy.service.discovery.v3.Resource, which a
// SotW server may use to wrap resources (e.g. to carry a TTL).
const resourceWrapperType = "type.googleapis.com/envoy.service.discovery.v3.Resource"

// typeState is everything the client knows about one resource type. It is owned by the
// Run goroutine; Status sees copies made by snapshot.
type typeState struct {
	url      string
	wildcard bool
	names    map[string]struct{} // subscribed names of a named type

	// The last accepted state. res is never modified in place once handed to Apply.
	res     map[string]*anypb.Any
	vers    map[string]string // Delta: per-resource versions, for initial_resource_versions
	version string            // version of the last ACK

	// Per stream.
	nonce   string // last response nonce on this stream
	started bool   // first request of this type sent on this stream

	// A NACK not yet sent (pacing repeated NACKs of one version, see nack).
	pendingErr  error
	pendingDue  time.Time
	nackVersion string
	nackStreak  int

	lastNACK    string
	acks, nacks uint64
	lastUpdate  time.Time
}

func (st *typeState) snapshot() TypeStatus {
	s := TypeStatus{
		Wildcard:        st.wildcard,
		Version:         st.version,
		Nonce:           st.nonce,
		LastNACK:        st.lastNACK,
		LastNACKVersion: st.nackVersion,
		ACKs:            st.acks,
		NACKs:           st.nacks,
		LastUpdate:      st.lastUpdate,
		Resources:       slices.Sorted(maps.Keys(st.res)),
	}
	if !st.wildcard {
		s.Names = st.sortedNames()
	}
	if st.lastNACK == "" {
		s.LastNACKVersion = ""
	}
	return s
}

func (st *typeState) sortedNames() []string {
	return slices.Sorted(maps.Keys(st.names))
}

// subscribed reports whether a resource of this type is wanted.
func (st *typeState) subscribed(name string) bool {
	if st.wildcard {
		return true
	}
	_, ok := st.names[name]
	return ok
}

// accept records an ACKed update.
func (st *typeState) accept(version string, res map[string]*anypb.Any, vers map[string]string) {
	st.res, st.vers, st.version = res, vers, version
	st.acks++
	st.lastUpdate = time.Now()
	st.lastNACK, st.nackVersion, st.nackStreak = "", "", 0
}

// sameResources reports whether two states hold the same names with byte-identical
// resources, so a server's resend (common after a reconnect) need not be re-applied.
func sameResources(a, b map[string]*anypb.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x.GetTypeUrl() != y.GetTypeUrl() || !bytes.Equal(x.GetValue(), y.GetValue()) {
			return false
		}
	}
	return true
}

// decodeSotW names the resources of a SotW response, unwrapping
// envoy.service.discovery.v3.Resource where the server used it.
func decodeSotW(typeURL string, in []*anypb.Any) (map[string]*anypb.Any, error) {
	out := make(map[string]*anypb.Any, len(in))
	for i, a := range in {
		name := ""
		if a.GetTypeUrl() == resourceWrapperType {
			var r discoveryv3.Resource
			if err := a.UnmarshalTo(&r); err != nil {
				return nil, fmt.Errorf("resources[%d]: %w", i, err)
			}
			if r.GetResource() == nil {
				return nil, fmt.Errorf("resources[%d] %q: wrapped resource has no body", i, r.GetName())
			}
			name, a = r.GetName(), r.GetResource()
		}
		if a.GetTypeUrl() != typeURL {
			return nil, fmt.Errorf("resources[%d]: type %s in a %s response", i, a.GetTypeUrl(), typeURL)
		}
		if name == "" {
			n, err := resourceName(a)
			if err != nil {
				return nil, fmt.Errorf("resources[%d]: %w", i, err)
			}
			name = n
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("resources[%d]: duplicate resource %q", i, name)
		}
		out[name] = a
	}
	return out, nil
}

// nameFields caches, per type URL, the field number of the resource's name
// ("name", or "cluster_name" for ClusterLoadAssignment).
var nameFields sync.Map // string -> protowire.Number

// resourceName reads a resource's name straight from its wire bytes, so the client does
// not unmarshal every resource a second time (the Handler does that once).
func resourceName(a *anypb.Any) (string, error) {
	num, err := nameField(a.GetTypeUrl())
	if err != nil {
		return "", err
	}
	b := a.GetValue()
	name := ""
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return "", fmt.Errorf("%s: malformed resource: %w", a.GetTypeUrl(), protowire.ParseError(l))
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return "", fmt.Errorf("%s: malformed resource: %w", a.GetTypeUrl(), protowire.ParseError(l))
			}
			name = string(v) // last occurrence wins, as in proto3 decoding
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return "", fmt.Errorf("%s: malformed resource: %w", a.GetTypeUrl(), protowire.ParseError(l))
		}
		b = b[l:]
	}
	if name == "" {
		return "", fmt.Errorf("%s: resource has no name", a.GetTypeUrl())
	}
	return name, nil
}

func nameField(typeURL string) (protowire.Number, error) {
	if v, ok := nameFields.Load(typeURL); ok {
		return v.(protowire.Number), nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL)
	if err != nil {
		return 0, fmt.Errorf("resource type %s is not known to this proxy: %w", typeURL, err)
	}
	fields := mt.Descriptor().Fields()
	for _, fn := range []protoreflect.Name{"name", "cluster_name"} {
		if fd := fields.ByName(fn); fd != nil && fd.Kind() == protoreflect.StringKind && fd.Cardinality() != protoreflect.Repeated {
			num := protowire.Number(fd.Number())
			nameFields.Store(typeURL, num)
			return num, nil
		}
	}
	return 0, errors.New("resource type " + typeURL + " has no name field")
}

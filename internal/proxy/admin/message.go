package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Message is a message of Envoy's admin API (envoy.admin.v3: ConfigDump and the dumps
// in it, Clusters, ServerInfo) as the admin endpoints write it in protojson, assembled
// here instead of with the generated Go types. Linking envoy/admin/v3 (and the
// config/tap/v3 it imports) cost weft-proxy about 1 MB of resident memory (package
// init, descriptors, code pages) for replies an operator reads now and then; the
// resources inside (Listener, Cluster, Any, Timestamp, ...) are linked anyway and are
// written by protojson. Readers parse the output with the real types (istioctl, weft
// proxy-config, this package's tests), which checks every field name.
type Message struct {
	// Type is the message's full name ("envoy.admin.v3.ListenersConfigDump"), the
	// "@type" it gets when written inside an Any.
	Type   string
	Fields []Field
}

// Field is one field of a Message, listed in field-number order as protojson writes
// them. Name is the proto name (snake_case), which /config_dump?resource= matches; the
// JSON name is derived from it as protoc derives json_name.
//
// Value is a string, bool, uint32, uint64, Enum, proto.Message (a linked type), *Message
// or []*Message (a repeated message field: list it even when empty, so that
// ?resource= finds it as Envoy does). Zero values are omitted, as protojson omits them.
type Field struct {
	Name  string
	Value any
}

// Enum is an enum field's value; Number 0 is the default and is omitted.
type Enum struct {
	Number int32
	Name   string
}

// TypeURLPrefix is the prefix of an Any's type URL.
const TypeURLPrefix = "type.googleapis.com/"

// ConfigDump is Envoy's envoy.admin.v3.ConfigDump: each config is written as an Any.
type ConfigDump struct {
	Configs []*Message
}

// JSON is the dump as /config_dump writes it, indented.
func (d *ConfigDump) JSON() ([]byte, error) {
	return (&Message{Type: "envoy.admin.v3.ConfigDump", Fields: []Field{{"configs", anyList(d.Configs)}}}).JSON()
}

// anyList marks the elements of a repeated google.protobuf.Any field.
type anyList []*Message

// JSON is the message written as protojson would, indented by two spaces.
func (m *Message) JSON() ([]byte, error) {
	b, err := m.appendJSON(nil, false)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, fmt.Errorf("admin: %s: %w", m.Type, err)
	}
	return out.Bytes(), nil
}

func (m *Message) appendJSON(b []byte, asAny bool) ([]byte, error) {
	b = append(b, '{')
	n := 0
	key := func(name string) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendString(b, name)
		b = append(b, ':')
	}
	if asAny {
		key("@type")
		b = appendString(b, TypeURLPrefix+m.Type)
	}
	var err error
	for _, f := range m.Fields {
		switch v := f.Value.(type) {
		case string:
			if v != "" {
				key(jsonName(f.Name))
				b = appendString(b, v)
			}
		case bool:
			if v {
				key(jsonName(f.Name))
				b = append(b, "true"...)
			}
		case uint32:
			if v != 0 {
				key(jsonName(f.Name))
				b = strconv.AppendUint(b, uint64(v), 10)
			}
		case uint64: // protojson writes 64-bit integers as strings
			if v != 0 {
				key(jsonName(f.Name))
				b = append(b, '"')
				b = strconv.AppendUint(b, v, 10)
				b = append(b, '"')
			}
		case Enum:
			if v.Number != 0 {
				key(jsonName(f.Name))
				b = appendString(b, v.Name)
			}
		case *Message:
			if v != nil {
				key(jsonName(f.Name))
				if b, err = v.appendJSON(b, false); err != nil {
					return nil, err
				}
			}
		case []*Message:
			if len(v) > 0 {
				key(jsonName(f.Name))
				if b, err = appendList(b, v, false); err != nil {
					return nil, err
				}
			}
		case anyList:
			if len(v) > 0 {
				key(jsonName(f.Name))
				if b, err = appendList(b, v, true); err != nil {
					return nil, err
				}
			}
		case proto.Message:
			if v == nil || !v.ProtoReflect().IsValid() {
				continue
			}
			pb, perr := protojson.Marshal(v)
			if perr != nil {
				return nil, fmt.Errorf("admin: %s.%s: %w", m.Type, f.Name, perr)
			}
			key(jsonName(f.Name))
			var c bytes.Buffer
			if err := json.Compact(&c, pb); err != nil {
				return nil, fmt.Errorf("admin: %s.%s: %w", m.Type, f.Name, err)
			}
			b = append(b, c.Bytes()...)
		case nil:
		default:
			return nil, fmt.Errorf("admin: %s.%s: unsupported value %T", m.Type, f.Name, v)
		}
	}
	return append(b, '}'), nil
}

func appendList(b []byte, l []*Message, asAny bool) ([]byte, error) {
	b = append(b, '[')
	for i, e := range l {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = e.appendJSON(b, asAny); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// jsonName is protoc's json_name for a field: underscores dropped, the letter after
// each one upper-cased.
func jsonName(name string) string {
	if !strings.Contains(name, "_") {
		return name
	}
	var sb strings.Builder
	up := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_':
			up = true
		case up && 'a' <= c && c <= 'z':
			sb.WriteByte(c - 'a' + 'A')
			up = false
		default:
			sb.WriteByte(c)
			up = false
		}
	}
	return sb.String()
}

// pickResource returns, as Envoy's ?resource= does, the elements of the repeated message
// field named resource in each config of the dump, each as its own Any; false when no
// config has such a field.
func pickResource(d *ConfigDump, resource string) (*ConfigDump, bool) {
	out := &ConfigDump{}
	found := false
	for _, c := range d.Configs {
		for _, f := range c.Fields {
			if l, ok := f.Value.([]*Message); ok && f.Name == resource {
				found = true
				out.Configs = append(out.Configs, l...)
			}
		}
	}
	return out, found
}

package accesslog

import (
	"encoding/json"
	"fmt"
	"sort"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// jsonFormat is a compiled json_format: one JSON object per line, keys sorted so a line's
// shape is stable (Envoy keeps proto map order, which is arbitrary anyway).
type jsonFormat struct {
	fields    []jsonField
	typed     bool // numbers stay numbers and missing values are null (typed_json_format, log_format.json_format)
	omitEmpty bool
}

type jsonField struct {
	key    []byte // `"key":`
	lit    []byte // a literal value, pre-rendered
	tmpl   template
	nested *jsonFormat
}

func compileJSON(s *structpb.Struct, typed, omitEmpty bool) (*jsonFormat, error) {
	j := &jsonFormat{typed: typed, omitEmpty: omitEmpty}
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := s.GetFields()[k]
		f := jsonField{key: append(appendJSONString(nil, []byte(k)), ':')}
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			t, err := parseTemplate(x.StringValue)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			f.tmpl = t
		case *structpb.Value_StructValue:
			n, err := compileJSON(x.StructValue, typed, omitEmpty)
			if err != nil {
				return nil, fmt.Errorf("%s.%w", k, err)
			}
			f.nested = n
		case *structpb.Value_NumberValue, *structpb.Value_BoolValue, *structpb.Value_NullValue:
			b, err := json.Marshal(v.AsInterface())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			f.lit = b
		default:
			return nil, fmt.Errorf("%s: only strings, numbers, booleans and nested objects are supported", k)
		}
		j.fields = append(j.fields, f)
	}
	return j, nil
}

// appendJSON writes the object; scratch is a buffer the caller lends for values that
// must be escaped.
func (j *jsonFormat) appendJSON(b []byte, c *ctx, scratch *[]byte) []byte {
	b = append(b, '{')
	first := true
	for i := range j.fields {
		f := &j.fields[i]
		mark := len(b)
		if !first {
			b = append(b, ',')
		}
		b = append(b, f.key...)
		switch {
		case f.lit != nil:
			b = append(b, f.lit...)
		case f.nested != nil:
			b = f.nested.appendJSON(b, c, scratch)
		default:
			var keep bool
			b, keep = j.appendValue(b, f.tmpl, c, scratch)
			if !keep {
				b = b[:mark]
				continue
			}
		}
		first = false
	}
	return append(b, '}')
}

// appendValue renders one templated value; keep is false when omit_empty_values drops it.
func (j *jsonFormat) appendValue(b []byte, t template, c *ctx, scratch *[]byte) ([]byte, bool) {
	s := (*scratch)[:0]
	defer func() { *scratch = s[:0] }()
	if len(t) == 1 && t[0].op != nil {
		var vt valType
		s, vt = t[0].op.eval(s, c)
		switch {
		case vt == vMissing && j.omitEmpty:
			return b, false
		case vt == vMissing && j.typed:
			return append(b, "null"...), true
		case vt == vMissing:
			return append(b, `"-"`...), true
		case vt == vNumber && j.typed:
			return append(b, s...), true
		}
		return appendJSONString(b, s), true
	}
	s = t.appendText(s, c, j.omitEmpty)
	if len(s) == 0 && j.omitEmpty {
		return b, false
	}
	return appendJSONString(b, s), true
}

const hex = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b, s []byte) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

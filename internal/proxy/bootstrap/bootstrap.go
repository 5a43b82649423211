// Package bootstrap reads weft-proxy's startup configuration: an Envoy v3 bootstrap file
// (YAML or JSON, the same files Envoy takes with -c) or, for the common case, a bootstrap
// built from command-line flags. It validates what the proxy relies on and resolves the
// ADS server the xdsclient dials. It sits at the very start of the proxy: bootstrap ->
// static resources + xdsclient.Config.
package bootstrap

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// Load reads and parses a bootstrap file. The format comes from the extension (.json,
// .yaml, .yml) or, failing that, from the content. Errors name the file and the field.
func Load(path string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return Parse(data, path)
}

// Parse parses a bootstrap in YAML or JSON; name (usually the file path) chooses the
// format by extension and prefixes errors. Unknown fields are errors (protojson with
// DiscardUnknown false), reported with their path, e.g.
// `bootstrap "b.yaml": static_resources.clusters[0].conect_timeout: unknown field "conect_timeout"`.
func Parse(data []byte, name string) (*bootstrapv3.Bootstrap, error) {
	js, err := toJSON(data, name)
	if err != nil {
		return nil, fmt.Errorf("bootstrap %q: %w", name, err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("bootstrap %q: %s", name, describeJSONError(js, err))
	}
	return b, nil
}

// toJSON returns data as compact JSON, converting YAML. Compact JSON is one line, so a
// protojson error position maps to one byte offset (see describeJSONError).
func toJSON(data []byte, name string) ([]byte, error) {
	isJSON := false
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json":
		isJSON = true
	case ".yaml", ".yml":
	default:
		t := bytes.TrimLeft(data, " \t\r\n\ufeff")
		isJSON = len(t) > 0 && t[0] == '{'
	}
	if !isJSON {
		js, err := yaml.YAMLToJSON(data)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			return []byte("{}"), nil // an empty file is an empty bootstrap
		}
		return js, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		// Compact does not report where; a decode of the same bytes does.
		var raw json.RawMessage
		err = cmp.Or(json.Unmarshal(data, &raw), err)
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := lineCol(data, int(se.Offset))
			return nil, fmt.Errorf("line %d column %d: %w", line, col, err)
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

func lineCol(data []byte, off int) (line, col int) {
	off = min(max(off, 0), len(data))
	b := data[:off]
	line = bytes.Count(b, []byte("\n")) + 1
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return line, utf8.RuneCount(b) + 1
}

// protojsonPos matches the position protojson puts in its errors.
var protojsonPos = regexp.MustCompile(`\(line (\d+):(\d+)\):\s*`)

// describeJSONError rewrites a protojson error as "<json path>: <message>", finding the
// path from the position protojson reports in js (compact, so always line 1).
func describeJSONError(js []byte, err error) string {
	msg := err.Error()
	m := protojsonPos.FindStringSubmatchIndex(msg)
	if m == nil {
		return strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(msg, "proto:"), "\u00a0"))
	}
	line, _ := strconv.Atoi(msg[m[2]:m[3]])
	col, _ := strconv.Atoi(msg[m[4]:m[5]])
	rest := msg[m[1]:]
	if line != 1 {
		return fmt.Sprintf("line %d column %d: %s", line, col, rest)
	}
	// protojson counts columns in runes.
	off := 0
	for i := 1; i < col && off < len(js); i++ {
		_, n := utf8.DecodeRune(js[off:])
		off += n
	}
	path := jsonPathAt(js, off)
	if path == "" {
		return rest
	}
	return path + ": " + rest
}

// jsonPathAt returns the path (a.b[2].c) of the key or value that starts at byte off of a
// valid compact JSON document, or "" if none starts there.
func jsonPathAt(js []byte, off int) string {
	p := pathFinder{b: js, off: off}
	p.value("")
	return p.found
}

type pathFinder struct {
	b     []byte
	i     int
	off   int
	found string
	done  bool
}

func (p *pathFinder) value(path string) {
	if p.done || p.i >= len(p.b) {
		p.done = true
		return
	}
	if p.i == p.off {
		p.found, p.done = path, true
		return
	}
	switch p.b[p.i] {
	case '{':
		p.i++
		for !p.done && p.i < len(p.b) && p.b[p.i] != '}' {
			at := p.i
			key := p.str()
			kp := key
			if path != "" {
				kp = path + "." + key
			}
			if at == p.off {
				p.found, p.done = kp, true
				return
			}
			p.i++ // ':'
			p.value(kp)
			if p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
			}
		}
		p.i++
	case '[':
		p.i++
		for n := 0; !p.done && p.i < len(p.b) && p.b[p.i] != ']'; n++ {
			p.value(path + "[" + strconv.Itoa(n) + "]")
			if p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
			}
		}
		p.i++
	case '"':
		p.str()
	default:
		for p.i < len(p.b) && !bytes.ContainsRune([]byte(",}]"), rune(p.b[p.i])) {
			p.i++
		}
	}
}

// str consumes a JSON string at p.i and returns its value.
func (p *pathFinder) str() string {
	start := p.i
	p.i++
	for p.i < len(p.b) && p.b[p.i] != '"' {
		if p.b[p.i] == '\\' {
			p.i++
		}
		p.i++
	}
	p.i++
	var s string
	if p.i > len(p.b) || json.Unmarshal(p.b[start:p.i], &s) != nil {
		p.done = true
	}
	return s
}

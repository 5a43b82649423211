package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/golang/protobuf/jsonpb" //nolint:staticcheck // the decoder Istio's own types use: accepts "5m" durations
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/config/validation"
)

// Error is one problem in a file, located by document, resource and field. Its text is
// "file: Kind namespace/name: field.path: message".
type Error struct {
	File string
	Doc  int
	Line int
	// Resource is "VirtualService default/reviews"; empty when the document could not be
	// identified.
	Resource string
	// Field is the path inside the resource ("spec.http[0].route[1].weight"), if any.
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	b.WriteString(": ")
	if e.Resource != "" {
		b.WriteString(e.Resource)
	} else {
		fmt.Fprintf(&b, "document %d", e.Doc)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Ignored describes a document of a kind weft does not read (a Deployment next to the
// VirtualServices in a Bookinfo file).
type Ignored struct {
	Doc        int
	Line       int
	APIVersion string
	Kind       string
	Name       string
	Reason     string
}

// FileResult is the outcome of parsing and validating one file.
type FileResult struct {
	File string
	// Resources are the valid resources in document order. A source must apply them only
	// when Errors is empty: a file is accepted or rejected whole.
	Resources []*Resource
	Errors    []*Error
	Warnings  []*Error
	Ignored   []Ignored
	// Docs counts the non-empty documents.
	Docs int
}

// OK reports whether the file has no errors.
func (f *FileResult) OK() bool { return len(f.Errors) == 0 }

// Err joins the file's errors (nil when OK).
func (f *FileResult) Err() error {
	if f.OK() {
		return nil
	}
	errs := make([]error, len(f.Errors))
	for i, e := range f.Errors {
		errs[i] = e
	}
	return errors.Join(errs...)
}

type rawDoc struct {
	line int
	body []byte // YAML or JSON
}

// ParseFile parses every document of a YAML or JSON file, decodes the kinds weft reads into
// their upstream types, and validates them. It never stops at the first problem.
func ParseFile(file string, data []byte) *FileResult {
	fr := &FileResult{File: file}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var docs []rawDoc
	if isJSON(file, data) {
		var err error
		docs, err = splitJSON(data)
		if err != nil {
			fr.Errors = append(fr.Errors, &Error{File: file, Doc: len(docs), Msg: err.Error()})
		}
	} else {
		docs = splitYAML(data)
	}
	seen := map[Key]int{}
	for _, d := range docs {
		js, err := yaml.YAMLToJSONStrict(d.body)
		if err != nil {
			fr.Errors = append(fr.Errors, &Error{File: file, Doc: fr.Docs, Line: d.line, Msg: "invalid YAML: " + err.Error()})
			fr.Docs++
			continue
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
			continue // empty document (comments only)
		}
		idx := fr.Docs
		fr.Docs++
		r := fr.doc(idx, d.line, js)
		if r == nil {
			continue
		}
		if prev, dup := seen[r.Key()]; dup {
			// kubectl applies documents in order, so the later definition wins.
			fr.Warnings = append(fr.Warnings, &Error{File: file, Doc: idx, Line: d.line, Resource: r.String(), Field: "metadata.name",
				Msg: fmt.Sprintf("%q is also defined by document %d; this later definition wins", r.Name, prev)})
			fr.Resources = slices.DeleteFunc(fr.Resources, func(o *Resource) bool { return o.Key() == r.Key() })
		}
		seen[r.Key()] = idx
		fr.Resources = append(fr.Resources, r)
	}
	return fr
}

func isJSON(file string, data []byte) bool {
	if strings.EqualFold(filepath.Ext(file), ".json") {
		return true
	}
	t := bytes.TrimSpace(data)
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

// splitYAML cuts a stream at "---" lines, remembering where each document's content starts.
func splitYAML(data []byte) []rawDoc {
	var docs []rawDoc
	var cur bytes.Buffer
	start, lineNo := 0, 0
	flush := func() {
		docs = append(docs, rawDoc{line: start, body: bytes.Clone(cur.Bytes())})
		cur.Reset()
		start = 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		if isDocSeparator(line) {
			flush()
			continue
		}
		if line == "..." {
			continue
		}
		if start == 0 {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				start = lineNo
			}
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func isDocSeparator(line string) bool {
	if !strings.HasPrefix(line, "---") {
		return false
	}
	rest := line[3:]
	return rest == "" || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '#'
}

// splitJSON reads a stream of JSON values; a top-level array contributes each element.
func splitJSON(data []byte) ([]rawDoc, error) {
	var docs []rawDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		off := dec.InputOffset()
		var v json.RawMessage
		if err := dec.Decode(&v); err == io.EOF {
			return docs, nil
		} else if err != nil {
			return docs, fmt.Errorf("invalid JSON: %w", err)
		}
		line := lineAt(data, off)
		if t := bytes.TrimSpace(v); len(t) > 0 && t[0] == '[' {
			var items []json.RawMessage
			if err := json.Unmarshal(t, &items); err != nil {
				return docs, fmt.Errorf("invalid JSON: %w", err)
			}
			for _, it := range items {
				docs = append(docs, rawDoc{line: line, body: it})
			}
			continue
		}
		docs = append(docs, rawDoc{line: line, body: v})
	}
}

// lineAt is the 1-based line of the first non-space byte at or after off.
func lineAt(data []byte, off int64) int {
	i := int(off)
	for i < len(data) && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t') {
		i++
	}
	return bytes.Count(data[:min(i, len(data))], []byte("\n")) + 1
}

var envelopeFields = map[string]bool{"apiVersion": true, "kind": true, "metadata": true, "spec": true, "status": true}

// doc decodes and validates one document; it returns the resource when it is valid.
func (fr *FileResult) doc(idx, line int, js []byte) *Resource {
	fail := func(res, field, format string, a ...any) {
		fr.Errors = append(fr.Errors, &Error{File: fr.File, Doc: idx, Line: line, Resource: res, Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		fail("", "", "a document must be an object with apiVersion and kind: %v", err)
		return nil
	}
	apiVersion, _ := obj["apiVersion"].(string)
	kindName, _ := obj["kind"].(string)
	if apiVersion == "" || kindName == "" {
		fail("", "", "apiVersion and kind are required")
		return nil
	}
	meta := map[string]any{}
	if m, ok := obj["metadata"].(map[string]any); ok {
		meta = m
	}
	name, _ := meta["name"].(string)
	kind, known, versionOK := LookupKind(apiVersion, kindName)
	group, version := ParseAPIVersion(apiVersion)
	if kindName == "List" && group == "" {
		fail("", "", "kind List is not supported: write its items as separate documents")
		return nil
	}
	if !known {
		ig := Ignored{Doc: idx, Line: line, APIVersion: apiVersion, Kind: kindName, Name: name}
		if knownGroup(group) {
			ig.Reason = fmt.Sprintf("kind %s of %s is not supported by weft", kindName, group)
			fr.Warnings = append(fr.Warnings, &Error{File: fr.File, Doc: idx, Line: line, Resource: kindName + " " + name, Msg: ig.Reason + "; the document is ignored"})
		} else {
			ig.Reason = "not a mesh configuration kind"
		}
		fr.Ignored = append(fr.Ignored, ig)
		return nil
	}
	r := &Resource{Kind: kind, APIVersion: apiVersion, Name: name, Source: Source{File: fr.File, Doc: idx, Line: line}}
	if ns, _ := meta["namespace"].(string); ns != "" {
		r.Namespace = ns
	} else {
		r.Namespace = DefaultNamespace
	}
	label := r.String()
	if !versionOK {
		fail(label, "apiVersion", "Unsupported value: %q: supported versions of %s: %s", version, kind.Label(), strings.Join(kind.Versions(), ", "))
		return nil
	}
	bad := false
	for _, k := range sortedKeys(obj) {
		if !envelopeFields[k] {
			fail(label, k, "unknown field %q", k)
			bad = true
		}
	}

	// metadata: the Kubernetes ObjectMeta, strictly (a misspelt "lables" is an error).
	if raw, ok := obj["metadata"]; ok {
		mb, _ := json.Marshal(raw)
		var om metav1.ObjectMeta
		strict, err := kjson.UnmarshalStrict(mb, &om)
		if err != nil {
			fail(label, "metadata", "%v", err)
			bad = true
		}
		for _, se := range strict {
			fail(label, "metadata", "%v", se)
			bad = true
		}
		r.Labels, r.Annotations = om.Labels, om.Annotations
	}

	var res validation.Result
	rawSpec, hasSpec := obj["spec"]
	switch {
	case !hasSpec && kindTable[kind].specRequired:
		res.Errorf("spec", "Required value")
	case hasSpec && rawSpec == nil:
		res.Errorf("spec", `Invalid value: "null": spec in body must be of type object: "null"`)
	case hasSpec:
		if _, isObj := rawSpec.(map[string]any); !isObj {
			res.Errorf("spec", "Invalid value: %q: spec in body must be of type object", fmt.Sprintf("%T", rawSpec))
		}
	}
	if !res.OK() {
		fr.addResult(idx, line, label, &res)
		return nil
	}
	if !hasSpec {
		rawSpec = map[string]any{}
	}
	spec, decodeRes := decodeSpec(kind, rawSpec)
	if spec == nil {
		fr.addResult(idx, line, label, &decodeRes)
		return nil
	}
	res = validation.Validate(validation.Meta{
		Name: r.Name, Namespace: r.Namespace, Labels: r.Labels, Annotations: r.Annotations, APIVersion: apiVersion,
	}, spec)
	if !decodeRes.OK() {
		// The structural finding at a path is the one to show; drop semantic findings for
		// the same field.
		res = mergeStructural(decodeRes, res)
	} else {
		r.Spec = spec
	}
	if m, ok := obj["metadata"].(map[string]any); ok {
		if _, has := m["name"]; !has && m["generateName"] != nil {
			res.Errorf("metadata.generateName", "generateName is not supported outside Kubernetes; set metadata.name")
		}
	}
	fr.addResult(idx, line, label, &res)
	if bad || !res.OK() {
		return nil
	}
	return r
}

func mergeStructural(structural, semantic validation.Result) validation.Result {
	out := structural
	for _, e := range semantic.Errors {
		covered := false
		for _, s := range structural.Errors {
			covered = covered || s.Path == e.Path
		}
		if !covered {
			out.Errors = append(out.Errors, e)
		}
	}
	out.Warnings = append(out.Warnings, semantic.Warnings...)
	return out
}

func (fr *FileResult) addResult(idx, line int, label string, res *validation.Result) {
	res.Dedupe()
	for _, e := range res.Errors {
		fr.Errors = append(fr.Errors, &Error{File: fr.File, Doc: idx, Line: line, Resource: label, Field: string(e.Path), Msg: e.Msg})
	}
	for _, w := range res.Warnings {
		fr.Warnings = append(fr.Warnings, &Error{File: fr.File, Doc: idx, Line: line, Resource: label, Field: string(w.Path), Msg: w.Msg})
	}
}

// decodeSpec turns the raw spec into the kind's upstream type, strictly.
func decodeSpec(kind Kind, raw any) (any, validation.Result) {
	var res validation.Result
	spec := kind.NewSpec()
	sb, err := json.Marshal(raw)
	if err != nil {
		res.Errorf("spec", "%v", err)
		return nil, res
	}
	if msg, ok := spec.(proto.Message); ok {
		res = validation.Schema(msg.ProtoReflect().Descriptor(), raw, "spec")
		// jsonpb, strict: the schema walk above already reported what it would reject,
		// with field paths; this is the final authority. When the walk found errors, a
		// lenient decode still lets the semantic rules run, so the user sees every
		// problem of the resource in one pass.
		u := jsonpb.Unmarshaler{AllowUnknownFields: !res.OK()}
		if err := u.Unmarshal(bytes.NewReader(sb), protoadapt.MessageV1Of(msg)); err != nil {
			if res.OK() {
				res.Errorf("spec", "%v", err)
			}
			return nil, res
		}
		return spec, res
	}
	strict, err := kjson.UnmarshalStrict(sb, spec)
	if err != nil {
		res.Errorf("spec", "%v", trimJSONPrefix(err))
		return nil, res
	}
	for _, se := range strict {
		var fe kjson.FieldError
		if errors.As(se, &fe) {
			res.Errorf(validation.Path("spec").Field(fe.FieldPath()), "%s", strings.SplitN(se.Error(), " \"", 2)[0])
			continue
		}
		res.Errorf("spec", "%v", se)
	}
	return spec, res
}

func trimJSONPrefix(err error) string { return strings.TrimPrefix(err.Error(), "json: ") }

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ValidateResource validates a resource built outside ParseFile (the API or a Kubernetes
// source), with the same rules.
func ValidateResource(r *Resource) validation.Result {
	if r == nil || r.Spec == nil {
		var res validation.Result
		res.Errorf("spec", "Required value")
		return res
	}
	res := validation.Validate(validation.Meta{
		Name: r.Name, Namespace: r.Namespace, Labels: r.Labels, Annotations: r.Annotations, APIVersion: r.APIVersion,
	}, r.Spec)
	res.Dedupe()
	return res
}

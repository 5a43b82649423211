// Package validation checks Istio, Gateway API and SMI resources the way Istio does
// (its pkg/config/validation semantics plus the cheap parts of its CRD schemas), and reports
// every violation with a Kubernetes-style field path so a user fixes a file in one pass.
//
// It sits between parsing (internal/config) and the config store: a resource whose
// Result has errors never reaches the store. The package does not import internal/config;
// callers pass the decoded spec and a Meta.
package validation

import (
	"fmt"
	"strconv"
	"strings"
)

// Path is a field path in Kubernetes style: spec.http[0].route[1].weight.
type Path string

// Field returns the path of a named child field.
func (p Path) Field(name string) Path {
	if p == "" {
		return Path(name)
	}
	return p + "." + Path(name)
}

// Index returns the path of a list element.
func (p Path) Index(i int) Path { return p + "[" + Path(strconv.Itoa(i)) + "]" }

// Key returns the path of a map entry.
func (p Path) Key(k string) Path { return p + "[" + Path(k) + "]" }

// FieldError is one violation: the field it concerns and what is wrong with it.
type FieldError struct {
	Path Path
	Msg  string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return string(e.Path) + ": " + e.Msg
}

// Result collects every error and warning of one resource.
type Result struct {
	Errors   []FieldError
	Warnings []FieldError
}

// OK reports whether there are no errors (warnings do not count).
func (r *Result) OK() bool { return len(r.Errors) == 0 }

// Errorf records an error at path.
func (r *Result) Errorf(p Path, format string, a ...any) {
	r.Errors = append(r.Errors, FieldError{Path: p, Msg: fmt.Sprintf(format, a...)})
}

// Warnf records a warning at path.
func (r *Result) Warnf(p Path, format string, a ...any) {
	r.Warnings = append(r.Warnings, FieldError{Path: p, Msg: fmt.Sprintf(format, a...)})
}

// err records err (when not nil) at path.
func (r *Result) err(p Path, err error) {
	if err != nil {
		r.Errors = append(r.Errors, FieldError{Path: p, Msg: err.Error()})
	}
}

// Merge appends another result's findings.
func (r *Result) Merge(o Result) {
	r.Errors = append(r.Errors, o.Errors...)
	r.Warnings = append(r.Warnings, o.Warnings...)
}

// String joins all errors, one per line (for tests and logs).
func (r *Result) String() string {
	var b strings.Builder
	for i, e := range r.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Kubernetes apiserver wording for schema-level findings, reproduced so users of kubectl
// recognise them (k8s.io/apimachinery field.Error formats).

func required(r *Result, p Path) { r.Errorf(p, "Required value") }

func invalidf(r *Result, p Path, value any, format string, a ...any) {
	r.Errorf(p, "Invalid value: %s: %s", quoteValue(value), fmt.Sprintf(format, a...))
}

func quoteValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case nil:
		return `"null"`
	default:
		return fmt.Sprint(x)
	}
}

// minLen1 is the CRD schema's minLength: 1 on a string.
func minLen1(r *Result, p Path, v string) {
	if v == "" {
		invalidf(r, p, v, "%s in body should be at least 1 chars long", p)
	}
}

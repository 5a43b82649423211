package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Report is the result of validating files offline (weft validate).
type Report struct {
	Files []*FileResult
	// Warnings that span files (the same resource defined in two files).
	Warnings []*Error
}

// OK reports whether no file has errors.
func (r *Report) OK() bool {
	for _, f := range r.Files {
		if !f.OK() {
			return false
		}
	}
	return true
}

// Counts returns totals: files, resources, ignored documents, errors, warnings.
func (r *Report) Counts() (files, resources, ignored, errs, warnings int) {
	warnings = len(r.Warnings)
	for _, f := range r.Files {
		resources += len(f.Resources)
		ignored += len(f.Ignored)
		errs += len(f.Errors)
		warnings += len(f.Warnings)
	}
	return len(r.Files), resources, ignored, errs, warnings
}

// Resources returns the valid resources of all files, in file and document order.
func (r *Report) Resources() []*Resource {
	var out []*Resource
	for _, f := range r.Files {
		out = append(out, f.Resources...)
	}
	return out
}

// StdinName is the path that makes ValidatePaths read standard input.
const StdinName = "-"

// ValidatePaths parses and validates files and directories (recursively: *.yaml, *.yml,
// *.json, hidden entries skipped). A path given explicitly is read whatever its extension.
// The error reports paths that could not be read; the report still covers the others.
func ValidatePaths(paths []string) (Report, error) {
	var rep Report
	var ioErrs []error
	for _, p := range paths {
		if p == StdinName {
			data, err := io.ReadAll(os.Stdin)
			if err != nil {
				ioErrs = append(ioErrs, fmt.Errorf("config: reading stdin: %w", err))
				continue
			}
			rep.Files = append(rep.Files, ParseFile("<stdin>", data))
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			ioErrs = append(ioErrs, fmt.Errorf("config: %w", err))
			continue
		}
		var files []string
		if st.IsDir() {
			files, err = configFiles(p)
			if err != nil {
				ioErrs = append(ioErrs, fmt.Errorf("config: %w", err))
			}
		} else {
			files = []string{p}
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				ioErrs = append(ioErrs, fmt.Errorf("config: %w", err))
				continue
			}
			rep.Files = append(rep.Files, ParseFile(f, data))
		}
	}
	rep.crossFileDuplicates()
	return rep, errors.Join(ioErrs...)
}

// configFiles lists the config files under dir in lexical order.
func configFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			out = append(out, p)
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}

// crossFileDuplicates warns once per resource defined in more than one file.
func (r *Report) crossFileDuplicates() {
	defs := map[Key][]*Resource{}
	var order []Key
	for _, f := range r.Files {
		for _, res := range f.Resources {
			if _, seen := defs[res.Key()]; !seen {
				order = append(order, res.Key())
			}
			defs[res.Key()] = append(defs[res.Key()], res)
		}
	}
	for _, k := range order {
		rs := defs[k]
		if len(rs) < 2 {
			continue
		}
		others := make([]string, 0, len(rs)-1)
		for _, o := range rs[1:] {
			others = append(others, o.Source.String())
		}
		first := rs[0]
		r.Warnings = append(r.Warnings, &Error{File: first.Source.File, Doc: first.Source.Doc, Line: first.Source.Line, Resource: first.String(),
			Msg: fmt.Sprintf("also defined in %s; whichever is applied last wins", strings.Join(others, ", "))})
	}
}

// Format prints the report the way istioctl validate does: one line per problem, then a
// summary ("validation succeed" / "validation failed").
func (r *Report) Format(w io.Writer) error {
	var b strings.Builder
	for _, f := range r.Files {
		for _, e := range f.Errors {
			fmt.Fprintf(&b, "Error: %s\n", located(e))
		}
		for _, e := range f.Warnings {
			fmt.Fprintf(&b, "Warning: %s\n", located(e))
		}
		if f.OK() {
			fmt.Fprintf(&b, "%s: %d %s valid", f.File, len(f.Resources), plural(len(f.Resources), "resource", "resources"))
			if len(f.Ignored) > 0 {
				parts := make([]string, len(f.Ignored))
				for i, ig := range f.Ignored {
					parts[i] = fmt.Sprintf("%s %s", ig.Kind, ig.Name)
				}
				fmt.Fprintf(&b, "; %d %s ignored (%s)", len(f.Ignored), plural(len(f.Ignored), "document", "documents"), strings.Join(parts, ", "))
			}
			b.WriteByte('\n')
		}
	}
	for _, e := range r.Warnings {
		fmt.Fprintf(&b, "Warning: %s\n", located(e))
	}
	files, resources, _, errs, warnings := r.Counts()
	if r.OK() {
		fmt.Fprintf(&b, "validation succeed: %d %s, %d %s", files, plural(files, "file", "files"), resources, plural(resources, "resource", "resources"))
	} else {
		bad := 0
		for _, f := range r.Files {
			if !f.OK() {
				bad++
			}
		}
		fmt.Fprintf(&b, "validation failed: %d %s in %d of %d %s", errs, plural(errs, "error", "errors"), bad, files, plural(files, "file", "files"))
	}
	if warnings > 0 {
		fmt.Fprintf(&b, ", %d %s", warnings, plural(warnings, "warning", "warnings"))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// located is the error with the document's line: "file:12: Kind ns/name: field: msg".
func located(e *Error) string {
	if e.Line == 0 {
		return e.Error()
	}
	s := e.Error()
	return fmt.Sprintf("%s:%d%s", e.File, e.Line, strings.TrimPrefix(s, e.File))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

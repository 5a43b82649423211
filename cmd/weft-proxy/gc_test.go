package main

import (
	"bytes"
	"math"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
)

func TestGCFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		rest    []string
		want    gcSettings
		wantErr string
	}{
		{name: "none", args: []string{"-c", "b.yaml", "--log-level", "warn"}, rest: []string{"-c", "b.yaml", "--log-level", "warn"}},
		{name: "separate values", args: []string{"-c", "b.yaml", "--gc-percent", "30", "-memory-limit", "64MiB"}, rest: []string{"-c", "b.yaml"},
			want: gcSettings{percent: 30, percentSet: true, limit: 64 << 20, limitSet: true}},
		{name: "equals form", args: []string{"--gc-percent=200", "--memory-limit=1048576", "-c", "x"}, rest: []string{"-c", "x"},
			want: gcSettings{percent: 200, percentSet: true, limit: 1 << 20, limitSet: true}},
		{name: "off", args: []string{"-gc-percent=-5", "-memory-limit=0"}, rest: []string{},
			want: gcSettings{percent: -1, percentSet: true, limit: 0, limitSet: true}},
		{name: "after terminator untouched", args: []string{"-c", "x", "--", "--gc-percent", "1"}, rest: []string{"-c", "x", "--", "--gc-percent", "1"}},
		{name: "other flag with similar prefix kept", args: []string{"--gc-percentage=3"}, rest: []string{"--gc-percentage=3"}},
		{name: "bad percent", args: []string{"--gc-percent", "half"}, wantErr: "-gc-percent"},
		{name: "bad size", args: []string{"--memory-limit=lots"}, wantErr: "-memory-limit"},
		{name: "negative size", args: []string{"--memory-limit=-1MiB"}, wantErr: "-memory-limit"},
		{name: "missing value", args: []string{"-c", "x", "--memory-limit"}, wantErr: "needs an argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, s, err := gcFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(rest, tt.rest) {
				t.Errorf("rest = %q, want %q", rest, tt.rest)
			}
			if s != tt.want {
				t.Errorf("settings = %+v, want %+v", s, tt.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "10B": 10, "2KiB": 2048, "3MiB": 3 << 20, "1GiB": 1 << 30, "4MB": 4 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.5MiB", "-3", "9999999999GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded, want an error", in)
		}
	}
}

// TestGCApply checks the precedence: flag, then the environment (left as the runtime
// applied it), then weft-proxy's default.
func TestGCApply(t *testing.T) {
	oldPercent := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(oldPercent); debug.SetMemoryLimit(oldLimit) })
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	gcSettings{}.apply(env(nil))
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("no flag, no GOGC: percent %d, want the default %d", got, defaultGCPercent)
	}
	gcSettings{}.apply(env(map[string]string{"GOGC": "100"}))
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: percent %d, want the runtime's value 100 kept", got)
	}
	gcSettings{percent: 20, percentSet: true, limit: 32 << 20, limitSet: true}.apply(env(map[string]string{"GOGC": "100"}))
	if got := debug.SetGCPercent(100); got != 20 {
		t.Errorf("flag and GOGC: percent %d, want the flag's 20", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 32<<20 {
		t.Errorf("memory limit %d, want %d", got, 32<<20)
	}
	gcSettings{limitSet: true}.apply(env(nil))
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("--memory-limit=0: limit %d, want none", got)
	}
}

// TestRunPassesRestAndDocumentsFlags runs main's logic with a stand-in proxy: the GC
// flags never reach the proxy's flag set, and --help lists them.
func TestRunPassesRestAndDocumentsFlags(t *testing.T) {
	oldPercent := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(oldPercent) })
	var got []string
	var stderr bytes.Buffer
	code := run([]string{"-c", "b.json", "--gc-percent=70"}, &stderr, func(a []string) int { got = a; return 3 })
	if code != 3 || !reflect.DeepEqual(got, []string{"-c", "b.json"}) {
		t.Fatalf("run = %d with proxy args %q, want 3 and [-c b.json]", code, got)
	}
	if p := debug.SetGCPercent(100); p != 70 {
		t.Errorf("percent %d after --gc-percent=70", p)
	}
	if stderr.Len() != 0 {
		t.Errorf("unexpected output %q", stderr.String())
	}
	code = run([]string{"--help"}, &stderr, func([]string) int { return 0 })
	if code != 0 || !strings.Contains(stderr.String(), "-gc-percent") || !strings.Contains(stderr.String(), "-memory-limit") {
		t.Errorf("--help: code %d, output %q; want the memory flags listed", code, stderr.String())
	}
	stderr.Reset()
	if code = run([]string{"--gc-percent=x"}, &stderr, func([]string) int { t.Error("proxy ran despite a bad flag"); return 0 }); code != 2 {
		t.Errorf("bad flag: code %d, want 2", code)
	}
}

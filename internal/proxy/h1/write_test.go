package h1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestWriteNeutralisesInjection: CR and LF in a value become spaces, a name that is not
// a token is not written, so nothing a filter or a config sets can start a field or a
// message of its own.
func TestWriteNeutralisesInjection(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://h/p", nil)
	req.Header = http.Header{
		"X-Value":             {"a\r\nX-Injected: 1"},
		"X-Lf":                {"a\nX-Injected-Lf: 1"},
		"X-Bad\r\nX-Injected": {"2"},
		"X Space":             {"3"},
		"X-Colon:":            {"4"},
		"":                    {"5"},
		"X-Ok":                {"6"},
	}
	req.Host = "h\r\nX-Injected-Host: 1"
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	WriteRequestHead(bw, req, false)
	cw := ChunkWriter{W: bw}
	_ = bw.Flush()
	if strings.Contains(buf.String(), "\r\nX-Injected-Host") {
		t.Fatalf("Host injected a field: %q", buf.String())
	}
	// Read back with the Host line made valid (weft refuses a Host with spaces).
	raw := strings.Replace(buf.String(), "Host: h  X-Injected-Host: 1\r\n", "Host: h\r\n", 1)
	got, _, err := readReq(t, raw, 0)
	if err != nil {
		t.Fatalf("reading back %q: %v", buf.String(), err)
	}
	for k := range got.Header {
		if strings.HasPrefix(k, "X-Injected") {
			t.Fatalf("injected field %q in %q", k, buf.String())
		}
	}
	if got.Header.Get("X-Ok") != "6" || got.Header.Get("X-Value") != "a  X-Injected: 1" {
		t.Fatalf("fields %v", got.Header)
	}
	// Trailers too.
	buf.Reset()
	_, _ = cw.Write([]byte("ab"))
	_ = cw.Close(http.Header{"X-T": {"1\r\n\r\nGET /smuggled HTTP/1.1"}, "X-Bad\r\n": {"1"}})
	_ = bw.Flush()
	b, _ := chunkedBody(buf.String(), 4096)
	b.Trailer = http.Header{}
	if body, err := io.ReadAll(b); err != nil || string(body) != "ab" {
		t.Fatalf("chunked %q: %q %v", buf.String(), body, err)
	}
	if len(b.Trailer) != 1 || b.Trailer.Get("X-T") == "" {
		t.Fatalf("trailer %v from %q", b.Trailer, buf.String())
	}
}

// TestWriteRequestFraming: the head's framing follows net/http's reading of a Request:
// ContentLength > 0 is a length; -1, or 0 with a body, is unknown and goes chunked; no
// body writes Content-Length: 0 for the methods that carry one.
func TestWriteRequestFraming(t *testing.T) {
	for _, c := range []struct {
		method  string
		length  int64
		hasBody bool
		want    string
		chunked bool
	}{
		{"POST", 5, true, "Content-Length: 5\r\n", false},
		{"POST", -1, true, "Transfer-Encoding: chunked\r\n", true},
		{"POST", 0, true, "Transfer-Encoding: chunked\r\n", true},
		{"POST", 0, false, "Content-Length: 0\r\n", false},
	} {
		req, _ := http.NewRequest(c.method, "http://h/p", nil)
		req.ContentLength = c.length
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		chunked := WriteRequestHead(bw, req, c.hasBody)
		_ = bw.Flush()
		if chunked != c.chunked || !strings.Contains(buf.String(), c.want) {
			t.Errorf("%s length %d body %v: chunked %v, head %q; want %q", c.method, c.length, c.hasBody, chunked, buf.String(), c.want)
		}
	}
}

// TestWriteFieldsReports: the framing and connection fields are left to the caller and
// handed back, with whether a Date is among those written; a request's Connection
// (an upgrade's) is written from what WriteFields handed back.
func TestWriteFieldsReports(t *testing.T) {
	h := http.Header{
		"Content-Length": {"3"}, "Connection": {"Upgrade"}, "Date": {"d"}, "Host": {"h"},
		"Transfer-Encoding": {"chunked"}, "Trailer": {"X-T"}, "Trailer:X-T": {"v"}, "X-A": {"a"},
	}
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	seen := WriteFields(bw, h)
	_ = bw.Flush()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\r\n"), "\r\n")
	slices.Sort(lines)
	if want := []string{"Date: d", "X-A: a"}; !slices.Equal(lines, want) {
		t.Errorf("written %q, want %q", lines, want)
	}
	if !slices.Equal(seen.ContentLength, []string{"3"}) || !slices.Equal(seen.Connection, []string{"Upgrade"}) || !seen.Date {
		t.Errorf("handed back %+v", seen)
	}
	if seen := WriteFields(bufio.NewWriter(io.Discard), http.Header{"X-A": {"a"}}); seen.Date || seen.ContentLength != nil || seen.Connection != nil {
		t.Errorf("nothing to hand back: %+v", seen)
	}

	req, _ := http.NewRequest("GET", "http://h/ws", nil)
	req.Header = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}
	buf.Reset()
	bw.Reset(&buf)
	WriteRequestHead(bw, req, false)
	_ = bw.Flush()
	if !strings.Contains(buf.String(), "\r\nConnection: Upgrade\r\n") {
		t.Errorf("upgrade request head without its Connection: %q", buf.String())
	}
}

// TestWriteFieldLongerThanBuffer: a field that does not fit in the writer's free space
// goes out whole all the same, after fields that did.
func TestWriteFieldLongerThanBuffer(t *testing.T) {
	long := strings.Repeat("v", 10000)
	var buf bytes.Buffer
	bw := bufio.NewWriterSize(&buf, 4096)
	writeField(bw, "X-Short", "s")
	writeField(bw, "X-Long", long)
	writeField(bw, "X-After", "a\r\nb")
	_ = bw.Flush()
	if want := "X-Short: s\r\nX-Long: " + long + "\r\nX-After: a  b\r\n"; buf.String() != want {
		t.Errorf("written %d bytes, want %d: %.60q...", buf.Len(), len(want), buf.String())
	}
}

// TestWriteFieldsAcrossTheBuffer: a head whose fields fill the write buffer several
// times over, long values among them, in buffers of several sizes: every field is
// written once, whole, with CR and LF neutralised and invalid names left out.
func TestWriteFieldsAcrossTheBuffer(t *testing.T) {
	h := http.Header{"Bad Name": {"x"}, "User-Agent": {""}}
	want := map[string]bool{}
	for i := range 40 {
		k := fmt.Sprintf("X-Field-%02d", i)
		v := strings.Repeat(string(rune('a'+i%26)), 1+i*37%300)
		if i%9 == 0 {
			v = strings.Repeat("L", 5000) // longer than the buffer
		}
		if i%7 == 0 {
			h[k] = []string{v, "second\r\nline"}
			want[k+": second  line"] = true
		} else {
			h[k] = []string{v}
		}
		want[k+": "+v] = true
	}
	for _, size := range []int{64, 512, 4096} {
		var buf bytes.Buffer
		bw := bufio.NewWriterSize(&buf, size)
		WriteFields(bw, h)
		_ = bw.Flush()
		got := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\r\n"), "\r\n") {
			if got[line] {
				t.Fatalf("buffer %d: %.40q written twice", size, line)
			}
			got[line] = true
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("buffer %d: %d fields written, want %d", size, len(got), len(want))
		}
	}
}

// TestCommonKeyNames: the codec's interned keys, and any part of one, are known for
// valid names by where their bytes are; equal strings elsewhere, and invalid names,
// are read.
func TestCommonKeyNames(t *testing.T) {
	for name, k := range commonKeys {
		if !isCommonKey(k) || !isCommonKey(k[1:]) || !validName(k) {
			t.Errorf("%q: isCommonKey %v (%q: %v), validName %v", name, isCommonKey(k), k[1:], isCommonKey(k[1:]), validName(k))
		}
		if c := strings.Clone(k); isCommonKey(c) || !validName(c) {
			t.Errorf("a copy of %q: isCommonKey %v, validName %v", k, isCommonKey(c), validName(c))
		}
		if CanonicalKey(strings.ToLower(name)) != k || !isCommonKey(CanonicalKey(strings.ToLower(name))) {
			t.Errorf("CanonicalKey(%q) is not the interned key", strings.ToLower(name))
		}
	}
	if isCommonKey("") || isCommonKey(commonNames[:0]) || isCommonKey(commonNames[len(commonNames):]) {
		t.Error("an empty name is a common key")
	}
	for _, bad := range []string{"", "Bad Name", "X-A:", "X-\x00", "Ä"} {
		if validName(bad) {
			t.Errorf("validName(%q) = true", bad)
		}
	}
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	WriteFields(bw, http.Header{CanonicalKey("x-request-id"): {"1"}, "X-Request-Id\r\nX-Evil": {"2"}, "X-Fine": {"3"}})
	bw.Flush()
	got := strings.Split(strings.TrimSuffix(buf.String(), "\r\n"), "\r\n")
	sort.Strings(got)
	if want := []string{"X-Fine: 3", "X-Request-Id: 1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("written %q, want %q", got, want)
	}
}

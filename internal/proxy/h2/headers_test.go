package h2

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// blockReader is a wire that reads the frames written into in.
func blockReader(in *bytes.Buffer, limit int) *wire {
	w := &wire{}
	w.init(&bytes.Buffer{}, in, limit)
	return w
}

// encode is the HPACK encoding of fields (name, value pairs).
func encode(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

// repeatField is a response head with n fields of a value of size bytes.
func repeatField(n, size int) []string {
	f := []string{":status", "200"}
	for i := range n {
		f = append(f, string(rune('a'+i)), strings.Repeat("v", size))
	}
	return f
}

func TestHeaderBlock(t *testing.T) {
	request := []string{":method", "GET", ":scheme", "http", ":path", "/a", ":authority", "x", "user-agent", "t", "accept", "*/*"}
	cases := []struct {
		name   string
		fields []string
		split  int // bytes of the block in the HEADERS frame, the rest in CONTINUATIONs of this size; 0: whole
		limit  int
		want   string // "" ok, "stream", "conn:CODE", "truncated"
	}{
		{name: "request", fields: request},
		{name: "continuations", fields: request, split: 3},
		{name: "response", fields: []string{":status", "200", "content-type", "text/plain"}},
		{name: "uppercase name", fields: []string{":status", "200", "Content-Type", "x"}, want: "stream"},
		{name: "name not a token", fields: []string{":status", "200", "a b", "x"}, want: "stream"},
		{name: "value with newline", fields: []string{":status", "200", "a", "x\ny"}, want: "stream"},
		{name: "pseudo after regular", fields: []string{"a", "b", ":status", "200"}, want: "stream"},
		{name: "unknown pseudo", fields: []string{":colour", "red"}, want: "stream"},
		{name: "pseudo twice", fields: []string{":status", "200", ":status", "204"}, want: "stream"},
		{name: "request and response", fields: []string{":method", "GET", ":status", "200"}, want: "stream"},
		// Fields of 73 bytes each by RFC 9113's count: the fourth passes 250.
		{name: "over the limit", fields: repeatField(5, 40), limit: 250, want: "truncated"},
		// A block more than twice the size budgets (trailer's and the rest's) is not read.
		{name: "far over the limit", fields: repeatField(6, 90), limit: 100, want: "conn:PROTOCOL_ERROR"},
		{name: "value longer than the limit", fields: []string{":status", "200", "a", strings.Repeat("v", 200)}, limit: 150, want: "conn:COMPRESSION_ERROR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var in bytes.Buffer
			fr := http2.NewFramer(&in, nil)
			block := encode(tc.fields...)
			first, rest := block, []byte(nil)
			if tc.split > 0 {
				first, rest = block[:tc.split], block[tc.split:]
			}
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: len(rest) == 0})
			for len(rest) > 0 {
				n := min(tc.split, len(rest))
				_ = fr.WriteContinuation(1, n == len(rest), rest[:n])
				rest = rest[n:]
			}
			_ = fr.WritePing(false, [8]byte{1}) // what follows the block is read on
			limit := tc.limit
			if limit == 0 {
				limit = 1 << 10
			}
			w := blockReader(&in, limit)
			f, err := w.readFrame()
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case tc.want == "stream":
				if !errors.As(err, &se) || se.Code != http2.ErrCodeProtocol || se.StreamID != 1 {
					t.Fatalf("got %v, want a stream error PROTOCOL_ERROR", err)
				}
			case strings.HasPrefix(tc.want, "conn:"):
				if !errors.As(err, &ce) || http2.ErrCode(ce).String() != tc.want[5:] {
					t.Fatalf("got %v, want connection error %s", err, tc.want[5:])
				}
				return
			case err != nil:
				t.Fatal(err)
			default:
				b, ok := f.(*headerBlock)
				if !ok {
					t.Fatalf("got %T", f)
				}
				if b.Truncated != (tc.want == "truncated") || !b.StreamEnded() || b.StreamID != 1 {
					t.Fatalf("truncated %v ended %v stream %d", b.Truncated, b.StreamEnded(), b.StreamID)
				}
				if tc.want == "" {
					var got []string
					for _, hf := range b.Fields {
						got = append(got, hf.Name, hf.Value)
					}
					if strings.Join(got, "|") != strings.Join(tc.fields, "|") {
						t.Fatalf("fields %q, want %q", got, tc.fields)
					}
					pf, wantPF := len(b.PseudoFields()), 0
					for i := 0; i < len(tc.fields); i += 2 {
						if strings.HasPrefix(tc.fields[i], ":") {
							wantPF++
						}
					}
					if b.PseudoValue(tc.fields[0][1:]) != tc.fields[1] || len(b.RegularFields())+pf != len(b.Fields) || pf != wantPF {
						t.Fatalf("pseudo %d regular %d", pf, len(b.RegularFields()))
					}
				}
			}
			// The stream's error leaves the connection readable.
			if f, err := w.readFrame(); err != nil {
				t.Fatalf("next frame: %v", err)
			} else if _, ok := f.(*http2.PingFrame); !ok {
				t.Fatalf("next frame %T, want PING", f)
			}
		})
	}
}

// TestHeaderBlockAllocs: a block of fields in HPACK's static table, read again and
// again, allocates nothing: its field list and the decoder's callback are the
// connection's. (x/net's Framer, given a decoder, made ten for this block.)
func TestHeaderBlockAllocs(t *testing.T) {
	block := encode(":method", "GET", ":scheme", "http", ":path", "/", "accept-encoding", "gzip, deflate")
	var frames bytes.Buffer
	fr := http2.NewFramer(&frames, nil)
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true, EndHeaders: true})
	one := frames.Bytes()
	var in bytes.Buffer
	w := blockReader(&in, 1<<10)
	read := func() {
		in.Reset()
		in.Write(one)
		f, err := w.readFrame()
		if err != nil || len(f.(*headerBlock).Fields) != 4 || len(f.(*headerBlock).PseudoFields()) != 3 {
			t.Fatalf("%v %v", f, err)
		}
	}
	read()
	if n := testing.AllocsPerRun(100, read); n > 1 {
		// One is the Framer's HeadersFrame.
		t.Fatalf("%.1f allocations per block, want at most 1", n)
	}
}

// TestFieldHeader: values share one array, and neither a repeated name nor an append
// by a later user writes into a neighbour's value.
func TestFieldHeader(t *testing.T) {
	h := fieldHeader([]hpack.HeaderField{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}, {Name: "a", Value: "3"}, {Name: "x-c", Value: "4"}})
	h["B"] = append(h["B"], "5")
	h["A"] = append(h["A"], "6")
	want := map[string]string{"A": "1,3,6", "B": "2,5", "X-C": "4"}
	if len(h) != len(want) {
		t.Fatalf("%v", h)
	}
	for k, v := range want {
		if got := strings.Join(h[k], ","); got != v {
			t.Fatalf("%s: %q, want %q (%v)", k, got, v, h)
		}
	}
	fields := []hpack.HeaderField{{Name: "content-type", Value: "text/plain"}, {Name: "date", Value: "x"}, {Name: "server", Value: "y"}, {Name: "content-length", Value: "1"}}
	if n := testing.AllocsPerRun(100, func() { fieldHeader(fields) }); n > 3 {
		t.Fatalf("%.0f allocations for 4 fields, want 3 (the map's two, one for the values)", n)
	}
}

// TestValidFieldName: a name is valid when every byte is a token character and none is
// upper case, byte by byte as httpguts decides tokens, for every byte at every place
// of names of 1 to 3 bytes; the empty name is not.
func TestValidFieldName(t *testing.T) {
	rule := func(name []byte) bool {
		for _, c := range name {
			if !httpguts.IsTokenRune(rune(c)) || ('A' <= c && c <= 'Z') {
				return false
			}
		}
		return len(name) > 0
	}
	for n := 0; n <= 3; n++ {
		name := bytes.Repeat([]byte{'a'}, n)
		for i := 0; i < n; i++ {
			for c := 0; c < 256; c++ {
				name[i] = byte(c)
				if got, want := validFieldName(string(name)), rule(name); got != want {
					t.Fatalf("validFieldName(%q) = %v, want %v", name, got, want)
				}
			}
			name[i] = 'x'
		}
		if got := validFieldName(string(name)); got != rule(name) {
			t.Fatalf("validFieldName(%q) = %v", name, got)
		}
	}
}

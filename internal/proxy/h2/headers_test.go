package h2

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weft-mesh/weft/internal/proxy/h1"
)

// blockReader is a wire that reads the frames written into in.
func blockReader(in *bytes.Buffer, limit int) *wire {
	w := &wire{}
	w.init(&bytes.Buffer{}, bufio.NewReader(in), limit)
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
		pad    uint8  // padding of the HEADERS frame
		prio   bool   // with priority fields
		want   string // "" ok, "stream", "conn:CODE", "truncated"
	}{
		{name: "request", fields: request},
		{name: "continuations", fields: request, split: 3},
		{name: "padded", fields: request, pad: 7},
		{name: "priority", fields: request, prio: true},
		{name: "padded, priority, continuations", fields: request, pad: 255, prio: true, split: 5},
		// Larger than the read buffer (4 KB here): read into a slice of its own.
		{name: "large", fields: repeatField(10, 500), limit: 8 << 10},
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
			hp := http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: len(rest) == 0, PadLength: tc.pad}
			if tc.prio {
				hp.Priority = http2.PriorityParam{StreamDep: 3, Exclusive: true, Weight: 200}
			}
			_ = fr.WriteHeaders(hp)
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
				if wantPrio := (http2.PriorityParam{StreamDep: 3, Exclusive: true, Weight: 200}); tc.prio && (!b.HasPriority() || b.Priority != wantPrio) {
					t.Fatalf("priority %v %+v, want %+v", b.HasPriority(), b.Priority, wantPrio)
				} else if !tc.prio && (b.HasPriority() || b.Priority != (http2.PriorityParam{})) {
					t.Fatalf("priority %v %+v, want none", b.HasPriority(), b.Priority)
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
	if n := testing.AllocsPerRun(100, read); n > 0 {
		t.Fatalf("%.1f allocations per block, want none", n)
	}
}

// TestReadFrameMalformed: the frames readFrame parses itself (HEADERS, PING,
// WINDOW_UPDATE) fail as RFC 9113 says when malformed, and a stream's error leaves the
// connection readable; PING and WINDOW_UPDATE frames read whole allocate nothing.
func TestReadFrameMalformed(t *testing.T) {
	block := encode(":status", "200")
	cases := []struct {
		name  string
		typ   http2.FrameType
		flags http2.Flags
		id    uint32
		p     []byte
		want  string // "stream:CODE", "conn:CODE", "ok:FIELDS"
	}{
		{"headers on stream 0", http2.FrameHeaders, http2.FlagHeadersEndHeaders, 0, block, "conn:PROTOCOL_ERROR"},
		{"padding as long as the payload", http2.FrameHeaders, http2.FlagHeadersEndHeaders | http2.FlagHeadersPadded, 1, append([]byte{byte(len(block) + 1)}, block...), "conn:PROTOCOL_ERROR"},
		{"padding as long as the fragment", http2.FrameHeaders, http2.FlagHeadersEndHeaders | http2.FlagHeadersPadded, 1, append([]byte{byte(len(block))}, block...), "ok:0"}, // an empty fragment
		{"no room for the pad length", http2.FrameHeaders, http2.FlagHeadersEndHeaders | http2.FlagHeadersPadded, 1, nil, "conn:FRAME_SIZE_ERROR"},
		{"priority cut short", http2.FrameHeaders, http2.FlagHeadersEndHeaders | http2.FlagHeadersPriority, 1, []byte{0, 0, 0}, "conn:FRAME_SIZE_ERROR"},
		{"ping of 7 bytes", http2.FramePing, 0, 0, make([]byte, 7), "conn:FRAME_SIZE_ERROR"},
		{"ping on a stream", http2.FramePing, 0, 1, make([]byte, 8), "conn:PROTOCOL_ERROR"},
		{"window update of 3 bytes", http2.FrameWindowUpdate, 0, 1, make([]byte, 3), "conn:FRAME_SIZE_ERROR"},
		{"window update of 0 on the connection", http2.FrameWindowUpdate, 0, 0, make([]byte, 4), "conn:PROTOCOL_ERROR"},
		{"window update of 0 on a stream", http2.FrameWindowUpdate, 0, 3, []byte{0x80, 0, 0, 0}, "stream:PROTOCOL_ERROR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var in bytes.Buffer
			fr := http2.NewFramer(&in, nil)
			_ = fr.WriteRawFrame(tc.typ, tc.flags, tc.id, tc.p)
			_ = fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
			w := blockReader(&in, 1<<10)
			f, err := w.readFrame()
			var se http2.StreamError
			var ce http2.ConnectionError
			switch kind, code, _ := strings.Cut(tc.want, ":"); kind {
			case "ok":
				if b, ok := f.(*headerBlock); err != nil || !ok || fmt.Sprint(len(b.Fields)) != code {
					t.Fatalf("got %v %v, want a block of %s fields", f, err, code)
				}
			case "conn":
				if !errors.As(err, &ce) || http2.ErrCode(ce).String() != code {
					t.Fatalf("got %v, want connection error %s", err, code)
				}
			case "stream":
				if !errors.As(err, &se) || se.Code.String() != code || se.StreamID != tc.id {
					t.Fatalf("got %v, want stream error %s on stream %d", err, code, tc.id)
				}
				f, err := w.readFrame()
				if p, ok := f.(*http2.PingFrame); err != nil || !ok || p.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} || p.IsAck() {
					t.Fatalf("next frame: %v %v", f, err)
				}
			}
		})
	}

	var frames bytes.Buffer
	fr := http2.NewFramer(&frames, nil)
	_ = fr.WritePing(true, [8]byte{9})
	_ = fr.WriteWindowUpdate(5, 1<<20)
	two := frames.Bytes()
	var in bytes.Buffer
	w := blockReader(&in, 1<<10)
	read := func() {
		in.Reset()
		in.Write(two)
		f, err := w.readFrame()
		if p, ok := f.(*http2.PingFrame); err != nil || !ok || !p.IsAck() || p.Data != [8]byte{9} {
			t.Fatalf("%v %v", f, err)
		}
		f, err = w.readFrame()
		if u, ok := f.(*http2.WindowUpdateFrame); err != nil || !ok || u.StreamID != 5 || u.Increment != 1<<20 {
			t.Fatalf("%v %v", f, err)
		}
	}
	read()
	if n := testing.AllocsPerRun(100, read); n > 0 {
		t.Fatalf("%.1f allocations per PING and WINDOW_UPDATE, want none", n)
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

// FuzzReadFrame: on any bytes, readFrame ends in an error or returns frames, never
// panics, and every field of a header block it returns passed the checks: a valid
// value, a valid name or a known pseudo-header first, and within the size limit (the
// decoder's tables skip the checks of entries that passed them once).
func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	fr := http2.NewFramer(&seed, nil)
	enc := newEncoder()
	var blk []byte
	for _, kv := range [][2]string{{":method", "GET"}, {":path", "/"}, {":scheme", "http"}, {":authority", "a"}, {"x-a", "b"}} {
		blk = enc.appendField(blk, kv[0], kv[1])
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndHeaders: true, PadLength: 3})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: []byte{0x82, 0x84, 0x86, 0xbe}, EndHeaders: true})
	_ = fr.WritePing(false, [8]byte{1})
	_ = fr.WriteWindowUpdate(1, 10)
	f.Add(seed.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 200
		w := blockReader(bytes.NewBuffer(in), limit)
		for range 64 {
			fr, err := w.readFrame()
			var se http2.StreamError
			if errors.As(err, &se) {
				continue
			}
			if err != nil {
				return
			}
			b, ok := fr.(*headerBlock)
			if !ok {
				continue
			}
			size := uint32(0)
			for i, hf := range b.Fields {
				if !h1.ValidValue(hf.Value) {
					t.Fatalf("field %d %q: invalid value %q", i, hf.Name, hf.Value)
				}
				pseudo := strings.HasPrefix(hf.Name, ":")
				if pseudo != (i < b.nPseudo) || (!pseudo && !validFieldName(hf.Name)) {
					t.Fatalf("field %d: name %q (pseudo fields %d)", i, hf.Name, b.nPseudo)
				}
				if hf.Name != "trailer" {
					size += entrySize(hf.Name, hf.Value)
				}
			}
			if size > limit {
				t.Fatalf("fields of %d bytes past the limit of %d", size, limit)
			}
		}
	})
}

package h2

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// decodeBlock decodes one header block with x/net's decoder, which keeps its dynamic
// table between blocks as a peer's does.
func decodeBlock(t testing.TB, dec *hpack.Decoder, block []byte) []hpack.HeaderField {
	t.Helper()
	fields, err := dec.DecodeFull(block)
	if err != nil {
		t.Fatalf("x/net's decoder refused the block % x: %v", block, err)
	}
	return fields
}

// Every entry of the static table is sent as its one-byte index, and x/net's decoder
// reads that index back as the same field: the table's order is RFC 7541's.
func TestEncoderStaticTable(t *testing.T) {
	for i, ent := range staticTable {
		e := newEncoder()
		block := e.appendField(nil, ent.name, ent.value)
		if len(block) != 1 || block[0] != 0x80|byte(i+1) {
			t.Errorf("%s: %q: encoded % x, want the index %d", ent.name, ent.value, block, i+1)
			continue
		}
		got := decodeBlock(t, hpack.NewDecoder(4096, nil), block)
		if len(got) != 1 || got[0].Name != ent.name || got[0].Value != ent.value {
			t.Errorf("index %d decodes as %v, want %s: %q", i+1, got, ent.name, ent.value)
		}
	}
}

// A field sent again is one byte, the index of the entry its first sending added,
// but for those the encoder must not add: a request id is unique (sent without
// indexing), credentials and short cookies are never indexed, so no intermediary may
// index them either.
func TestEncoderIndexing(t *testing.T) {
	e := newEncoder()
	dec := hpack.NewDecoder(4096, nil)
	fields := []hpack.HeaderField{
		{Name: ":path", Value: "/fgrpc.PingServer/Ping"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "x-custom", Value: "a"},
		{Name: "x-request-id", Value: "6f1d0c9e-5d7a-4b8e-9a41-0c4c8a0f2b11"},
		{Name: "authorization", Value: "Bearer secret"},
		{Name: "cookie", Value: "s=1"},
		{Name: "cookie", Value: "session=0123456789abcdef0123"},
	}
	wantFirst := []byte{0x40, 0x40, 0x40, 0x00, 0x10, 0x10, 0x40} // the representation's flags
	wantMask := []byte{0xc0, 0xc0, 0xc0, 0xf0, 0xf0, 0xf0, 0xc0}
	for round := range 2 {
		for i, f := range fields {
			block := e.appendField(nil, f.Name, f.Value)
			got := decodeBlock(t, dec, block)
			if len(got) != 1 || got[0].Name != f.Name || got[0].Value != f.Value {
				t.Fatalf("round %d: %v decodes as %v", round, f, got)
			}
			if sensitive := f.Name == "authorization" || f.Name == "cookie" && len(f.Value) < 20; got[0].Sensitive != sensitive {
				t.Errorf("round %d: %s: %q: sensitive %v, want %v", round, f.Name, f.Value, got[0].Sensitive, sensitive)
			}
			indexed := block[0]&0x80 != 0
			if wantIndexed := round == 1 && wantFirst[i] == 0x40; indexed != wantIndexed || indexed && len(block) != 1 {
				t.Errorf("round %d: %s: %q: encoded % x, indexed %v, want %v", round, f.Name, f.Value, block, indexed, wantIndexed)
			}
			if !indexed && block[0]&wantMask[i] != wantFirst[i] {
				t.Errorf("round %d: %s: encoded % x, want the flags %#x", round, f.Name, block, wantFirst[i])
			}
		}
	}
}

// A peer's smaller SETTINGS_HEADER_TABLE_SIZE evicts at once and is announced at the
// start of the next block, the smallest size first when it grew again in between.
func TestEncoderTableSize(t *testing.T) {
	e := newEncoder()
	dec := hpack.NewDecoder(4096, nil)
	decodeBlock(t, dec, e.appendField(nil, "x-a", "1"))
	e.setMaxSize(0)
	if _, ok := e.lookup(1); ok || e.live != 0 || e.size != 0 {
		t.Fatalf("after a resize to 0: entry 0 still found, or %d entries of %d bytes left", e.live, e.size)
	}
	e.setMaxSize(100)
	dec.SetAllowedMaxDynamicTableSize(100)
	block := e.appendField(nil, "x-a", "1")
	if want := []byte{0x20, 0x3f, 0x45}; !strings.HasPrefix(string(block), string(want)) {
		t.Fatalf("block after the resize: % x, want it to start % x (sizes 0, 100)", block, want)
	}
	if got := decodeBlock(t, dec, block); len(got) != 1 || got[0].Value != "1" {
		t.Fatalf("decoded %v", got)
	}
	// A field larger than the table is sent without indexing: adding it would only
	// empty the table.
	big := strings.Repeat("v", 200)
	block = e.appendField(nil, "x-big", big)
	if block[0]&0xf0 != 0 {
		t.Errorf("a field larger than the table: encoded with the flags %#x, want without indexing", block[0])
	}
	decodeBlock(t, dec, block)
	if block = e.appendField(nil, "x-a", "1"); len(block) != 1 {
		t.Errorf("x-a after the large field: % x, want its index", block)
	}
	decodeBlock(t, dec, block)
	// Back to more than the default: the table stays at the default.
	e.setMaxSize(1 << 20)
	dec.SetAllowedMaxDynamicTableSize(1 << 20)
	block = e.appendField(nil, "x-b", "2")
	if want := []byte{0x3f, 0xe1, 0x1f}; !strings.HasPrefix(string(block), string(want)) {
		t.Errorf("block after the peer allowed 1 MiB: % x, want it to start % x (size 4096)", block, want)
	}
	decodeBlock(t, dec, block)
}

// Blocks of random fields, with evictions, repeats, index collisions and table
// resizes, decode with x/net's decoder to what was encoded, over one connection's
// life. The fuzzer goes further: go test -fuzz FuzzEncoder ./internal/proxy/h2/
func TestEncoderRoundTrip(t *testing.T) {
	for seed := range uint64(20) {
		encodeRoundTrip(t, rand.New(rand.NewPCG(seed, 1)), 200)
	}
}

func FuzzEncoder(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42} {
		f.Add(s, s*7)
	}
	f.Fuzz(func(t *testing.T, a, b uint64) {
		encodeRoundTrip(t, rand.New(rand.NewPCG(a, b)), 50)
	})
}

func encodeRoundTrip(t testing.TB, r *rand.Rand, blocks int) {
	t.Helper()
	names := []string{":method", ":path", ":status", ":authority", "content-type", "date",
		"x-request-id", "authorization", "cookie", "grpc-status", "x-a", "x-b", "x-c", "x-d",
		"x-long-name-" + strings.Repeat("n", 300)}
	values := []string{"", "GET", "POST", "/", "200", "404", "gzip, deflate", "application/grpc",
		"0", "1", "2", "3", "ümlaut", strings.Repeat("v", 60), strings.Repeat("w", 5000)}
	e := newEncoder()
	dec := hpack.NewDecoder(4096, nil)
	var block []byte
	for n := range blocks {
		if r.IntN(20) == 0 {
			size := []uint32{0, 1, 64, 100, 4096, 8192}[r.IntN(6)]
			e.setMaxSize(size)
			dec.SetAllowedMaxDynamicTableSize(size)
		}
		want := make([]hpack.HeaderField, 1+r.IntN(12))
		block = block[:0]
		for i := range want {
			name, value := names[r.IntN(len(names))], values[r.IntN(len(values))]
			if r.IntN(4) == 0 {
				value = fmt.Sprintf("v%d", r.IntN(40)) // many distinct pairs: slot collisions
			}
			want[i] = hpack.HeaderField{Name: name, Value: value}
			block = e.appendField(block, name, value)
		}
		got := decodeBlock(t, dec, block)
		if len(got) != len(want) {
			t.Fatalf("block %d: %d fields decoded, %d encoded", n, len(got), len(want))
		}
		for i := range want {
			if got[i].Name != want[i].Name || got[i].Value != want[i].Value {
				t.Fatalf("block %d field %d: decoded %s: %.40q, encoded %s: %.40q", n, i, got[i].Name, got[i].Value, want[i].Name, want[i].Value)
			}
		}
		if e.size > e.max || e.live > ringSize {
			t.Fatalf("block %d: table of %d bytes in %d entries, maximum %d", n, e.size, e.live, e.max)
		}
	}
}

// BenchmarkEncoder encodes a gRPC request head and its response head and trailers, as
// a sidecar does on one connection; the XNet variant is x/net's encoder on the same.
func BenchmarkEncoder(b *testing.B) {
	fields := benchFields()
	e := newEncoder()
	var buf []byte
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf = buf[:0]
		for _, f := range fields {
			if f.Name == "x-request-id" {
				f.Value = requestIDs[i%len(requestIDs)]
			}
			buf = e.appendField(buf, f.Name, f.Value)
		}
	}
}

func BenchmarkEncoderXNet(b *testing.B) {
	fields := benchFields()
	var w sliceBuf
	e := hpack.NewEncoder(&w)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.b = w.b[:0]
		for _, f := range fields {
			if f.Name == "x-request-id" {
				f.Value = requestIDs[i%len(requestIDs)]
			}
			_ = e.WriteField(f)
		}
	}
}

type sliceBuf struct{ b []byte }

func (w *sliceBuf) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

var requestIDs = []string{"2d5f0e6a-8c1b-4f7d-9e3a-5b6c7d8e9f01", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "0f1e2d3c-4b5a-4968-8776-655443322110"}

func benchFields() []hpack.HeaderField {
	return []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "echo.bench.svc.cluster.local:8079"},
		{Name: ":path", Value: "/fgrpc.PingServer/Ping"}, {Name: "content-type", Value: "application/grpc"},
		{Name: "user-agent", Value: "grpc-go/1.72.0"}, {Name: "te", Value: "trailers"},
		{Name: "x-forwarded-proto", Value: "http"}, {Name: "x-request-id"},
		{Name: "x-envoy-expected-rq-timeout-ms", Value: "15000"},
		{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"},
		{Name: "x-envoy-upstream-service-time", Value: "1"}, {Name: "server", Value: "envoy"},
		{Name: "grpc-status", Value: "0"}, {Name: "grpc-message", Value: ""},
	}
}

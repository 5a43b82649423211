package h2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// pairDecoders are weft's decoder and x/net's, fed the same blocks.
type pairDecoders struct {
	ours        decoder
	ourFields   []string
	xnet        *hpack.Decoder
	xnetFields  []string
	ourErr, xEr error
}

func newPairDecoders(maxString int) *pairDecoders {
	p := &pairDecoders{ours: newDecoder()}
	p.ours.maxString = maxString
	p.ours.emit = func(name, value string, checked bool) bool {
		p.ourFields = append(p.ourFields, name+": "+value)
		return true
	}
	p.xnet = hpack.NewDecoder(maxTableSize, func(f hpack.HeaderField) {
		p.xnetFields = append(p.xnetFields, f.Name+": "+f.Value)
	})
	p.xnet.SetMaxStringLength(maxString)
	return p
}

// block decodes one header block given as fragments with both, and reports whether
// both succeeded, the fields emitted by each, and the errors.
func (p *pairDecoders) block(frags [][]byte) (ok bool) {
	p.ourFields, p.xnetFields, p.ourErr, p.xEr = p.ourFields[:0], p.xnetFields[:0], nil, nil
	for _, f := range frags {
		if p.ourErr == nil {
			p.ourErr = p.ours.write(f)
		}
		if p.xEr == nil {
			_, p.xEr = p.xnet.Write(f)
		}
	}
	if p.ourErr == nil {
		p.ourErr = p.ours.close()
	}
	if p.xEr == nil {
		p.xEr = p.xnet.Close()
	}
	return p.ourErr == nil && p.xEr == nil
}

// split cuts b into up to n fragments at random places.
func split(r *rand.Rand, b []byte, n int) [][]byte {
	var frags [][]byte
	for i := 1; i < n && len(b) > 1; i++ {
		k := r.IntN(len(b))
		frags = append(frags, b[:k])
		b = b[k:]
	}
	return append(frags, b)
}

// TestDecoderXNet: weft's decoder reads what x/net's encoder and weft's write, with
// table size updates, Huffman and plain strings, every representation, and blocks cut
// into fragments anywhere, exactly as x/net's decoder does.
func TestDecoderXNet(t *testing.T) {
	names := []string{":method", ":path", ":status", "content-type", "grpc-status", "x-b3-traceid", "user-agent", "cookie", "authorization", "x-custom"}
	values := []string{"", "GET", "/", "200", "application/grpc", "0", "gzip, deflate"}
	for life := range 30 {
		r := rand.New(rand.NewPCG(uint64(life), 7))
		var wire bytes.Buffer
		xenc := hpack.NewEncoder(&wire)
		wenc := newEncoder()
		pair := newPairDecoders(1 << 10)
		for round := range 200 {
			wire.Reset()
			var block []byte
			var want []string
			useWeft := life%2 == 1
			if r.IntN(20) == 0 {
				size := uint32(r.IntN(maxTableSize + 1))
				if useWeft {
					wenc.setMaxSize(size)
				} else {
					xenc.SetMaxDynamicTableSizeLimit(size)
					xenc.SetMaxDynamicTableSize(size)
				}
			}
			for range 1 + r.IntN(12) {
				name := names[r.IntN(len(names))]
				value := values[r.IntN(len(values))]
				if r.IntN(3) == 0 {
					value = fmt.Sprintf("v%x", r.Uint64()>>r.IntN(64))
				}
				want = append(want, name+": "+value)
				if useWeft {
					block = wenc.appendField(block, name, value)
				} else {
					xenc.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: r.IntN(8) == 0})
				}
			}
			if !useWeft {
				block = bytes.Clone(wire.Bytes())
			}
			if !pair.block(split(r, block, 1+r.IntN(4))) {
				t.Fatalf("life %d round %d: ours %v, x/net %v", life, round, pair.ourErr, pair.xEr)
			}
			if got, x := strings.Join(pair.ourFields, "\n"), strings.Join(pair.xnetFields, "\n"); got != x || got != strings.Join(want, "\n") {
				t.Fatalf("life %d round %d:\nours  %q\nx/net %q\nsent  %q", life, round, pair.ourFields, pair.xnetFields, want)
			}
		}
	}
}

// FuzzDecoder: on any input, cut into blocks and fragments, weft's decoder fails where
// x/net's does and emits the same fields before, and their tables hold the same
// entries after. The one difference allowed: several table size updates at a block's
// start, which RFC 7541 §4.2 permits and x/net refuses once the table is not empty.
func FuzzDecoder(f *testing.F) {
	var seed []byte
	enc := newEncoder()
	for _, kv := range [][2]string{{":method", "POST"}, {":path", "/a.B/C"}, {"content-type", "application/grpc"}, {"te", "trailers"}, {"x-request-id", "abc"}} {
		seed = enc.appendField(seed, kv[0], kv[1])
	}
	f.Add(seed, uint8(0x21))
	f.Add([]byte{0x3f, 0xe1, 0x1f, 0x82, 0x40, 0x01, 'a', 0x81, 'b', 0xbe}, uint8(3))
	f.Add([]byte{0x20, 0x3f, 0xe1, 0x1f, 0x82}, uint8(0x12))
	f.Add([]byte{0x3f, 0xe2, 0x1f, 0x3f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, cuts uint8) {
		r := rand.New(rand.NewPCG(uint64(cuts), uint64(len(in))))
		pair := newPairDecoders(64)
		blocks := split(r, in, 1+int(cuts&3))
		for i, b := range blocks {
			ok := pair.block(split(r, b, 1+int(cuts>>2&3)))
			if (pair.ourErr == nil) != (pair.xEr == nil) {
				if pair.ourErr == nil && strings.Contains(pair.xEr.Error(), "size update MUST occur") && leadingUpdates(b) > 1 {
					return
				}
				t.Fatalf("block %d %x: ours %v, x/net %v", i, b, pair.ourErr, pair.xEr)
			}
			// Before an error, x/net has emitted at most what weft has (it decodes a
			// field whole before its checks); what both emitted must agree.
			n := min(len(pair.ourFields), len(pair.xnetFields))
			if !ok {
				if strings.Join(pair.ourFields[:n], "\n") != strings.Join(pair.xnetFields[:n], "\n") {
					t.Fatalf("block %d: ours %q, x/net %q", i, pair.ourFields, pair.xnetFields)
				}
				return
			}
			if strings.Join(pair.ourFields, "\n") != strings.Join(pair.xnetFields, "\n") {
				t.Fatalf("block %d %x:\nours  %q\nx/net %q", i, b, pair.ourFields, pair.xnetFields)
			}
		}
		// The dynamic tables: every index of it, newest first, then one past.
		var probe []byte
		for i := range ringSize + 1 {
			probe = appendInt(probe, 0x80, 7, uint64(len(staticTable)+1+i))
			if !pair.block([][]byte{probe}) && (pair.ourErr == nil) != (pair.xEr == nil) {
				t.Fatalf("dynamic index %d: ours %v, x/net %v", i+1, pair.ourErr, pair.xEr)
			}
			if strings.Join(pair.ourFields, "\n") != strings.Join(pair.xnetFields, "\n") {
				t.Fatalf("dynamic index %d: ours %q, x/net %q", i+1, pair.ourFields, pair.xnetFields)
			}
			if pair.ourErr != nil {
				break
			}
		}
	})
}

// TestDecoderEdges: integers at their length limit, table size updates at the limit,
// and malformed blocks fail or pass as x/net's decoder has them, whole or cut anywhere.
func TestDecoderEdges(t *testing.T) {
	cont := func(n int) []byte { return bytes.Repeat([]byte{0x80}, n) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	cases := []struct {
		name  string
		block []byte
		ok    bool
	}{
		{"size update to the limit", []byte{0x3f, 0xe1, 0x1f}, true},
		{"size update past the limit", []byte{0x3f, 0xe2, 0x1f}, false},
		{"integer with eight empty continuation bytes", cat([]byte{0x3f}, cont(8), []byte{0x00}), true},
		{"integer with nine", cat([]byte{0x3f}, cont(9), []byte{0x00}), false},
		{"index 0", []byte{0x80}, false},
		{"index past the tables", []byte{0xbe}, false},
		{"literal name index past the tables", []byte{0x7f, 0x00, 0x01, 'a'}, false},
		{"block ends inside a string", []byte{0x40, 0x01, 'a', 0x05, 'b', 'c'}, false},
		{"block ends inside an integer", []byte{0x3f}, false},
		{"Huffman padding not ones", []byte{0x40, 0x81, 0x00, 0x01, 'a'}, false},
		{"Huffman EOS", []byte{0x40, 0x84, 0xff, 0xff, 0xff, 0xff, 0x01, 'a'}, false},
		{"string at the length limit", cat([]byte{0x40, 0x01, 'a', 0x40}, bytes.Repeat([]byte{'v'}, 64)), true},
		{"string past it", cat([]byte{0x40, 0x01, 'a', 0x41}, bytes.Repeat([]byte{'v'}, 65)), false},
		{"size update after a field, table empty", []byte{0x82, 0x20}, true},
		{"size update after a field, table not empty", []byte{0x40, 0x01, 'a', 0x01, 'b', 0x82, 0x20}, false},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		for cut := range 4 {
			pair := newPairDecoders(64)
			ok := pair.block(split(r, tc.block, 1+cut))
			if ok != tc.ok || (pair.ourErr == nil) != (pair.xEr == nil) {
				t.Errorf("%s (%d fragments): ours %v, x/net %v; want ok %v", tc.name, 1+cut, pair.ourErr, pair.xEr, tc.ok)
			}
		}
	}
}

// leadingUpdates counts the table size updates a block starts with.
func leadingUpdates(b []byte) int {
	n := 0
	for len(b) > 0 && b[0]&0xe0 == 0x20 {
		_, k, err := readInt(b, 5)
		if err != nil {
			break
		}
		n++
		b = b[k:]
	}
	return n
}

// TestDecoderChecked: a field sent by index skips the checks only when its entry
// passed them: an invalid entry fails every time it is referenced, and an entry added
// while the block's fields were being discarded is checked when first emitted.
func TestDecoderChecked(t *testing.T) {
	var in bytes.Buffer
	fr := http2.NewFramer(&in, nil)
	headers := func(block []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})
	}
	literal := func(name, value string) []byte { // with incremental indexing
		b := appendInt(nil, 0x40, 6, 0)
		b = appendInt(b, 0, 7, uint64(len(name)))
		b = append(b, name...)
		b = appendInt(b, 0, 7, uint64(len(value)))
		return append(b, value...)
	}
	status := []byte{0x88} // :status 200
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	headers(cat(status, literal("a", "x\ny")))                                        // invalid value: a is 62
	headers(cat(status, []byte{0xbe}))                                                // a again: still invalid
	headers(cat(status, literal("B", "1"), literal("c", "ok"), literal("d", "x\ny"))) // invalid name; c, d added unemitted
	headers(cat(status, []byte{0xbf}))                                                // c (63): valid, now checked
	headers(cat(status, []byte{0xbe}))                                                // d (62): checked now, invalid
	headers(cat(status, []byte{0xc0}))                                                // B (64): invalid
	headers(cat(status, []byte{0xbf}))                                                // c, checked
	w := blockReader(&in, 1<<10)
	want := []string{"stream", "stream", "stream", "c: ok", "stream", "stream", "c: ok"}
	for i, wt := range want {
		f, err := w.readFrame()
		var se http2.StreamError
		switch {
		case wt == "stream":
			if !errors.As(err, &se) {
				t.Fatalf("block %d: %v, want a stream error", i, err)
			}
		case err != nil:
			t.Fatalf("block %d: %v", i, err)
		default:
			b := f.(*headerBlock)
			if got := b.Fields[1].Name + ": " + b.Fields[1].Value; got != wt || len(b.Fields) != 2 {
				t.Fatalf("block %d: %v, want %s", i, b.Fields, wt)
			}
		}
	}
	d := &w.hb.dec
	for i, want := range []struct {
		name    string
		checked bool
	}{{"d", false}, {"c", true}, {"B", false}, {"a", false}} {
		if e := d.entry(d.added - 1 - uint64(i)); e.name != want.name || e.checked != want.checked {
			t.Errorf("dynamic index %d: %+v, want %s checked %v", i+1, *e, want.name, want.checked)
		}
	}
}

// BenchmarkDecoder decodes a gRPC call's three blocks (request head, response head,
// trailers) as a connection does once its tables hold them: weft's decoder against
// x/net's.
func BenchmarkDecoder(b *testing.B) {
	heads := [][]string{
		{":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall", ":authority", "svc:8080", "content-type", "application/grpc", "user-agent", "grpc-go/1.85.0", "te", "trailers", "grpc-timeout", "1S"},
		{":status", "200", "content-type", "application/grpc", "grpc-encoding", "identity"},
		{"grpc-status", "0", "grpc-message", ""},
	}
	enc := newEncoder()
	var blocks [][]byte // twice: the second time, the tables hold every field
	for range 2 {
		for _, fields := range heads {
			var blk []byte
			for i := 0; i < len(fields); i += 2 {
				blk = enc.appendField(blk, fields[i], fields[i+1])
			}
			blocks = append(blocks, blk)
		}
	}
	b.Run("weft", func(b *testing.B) {
		d := newDecoder()
		n := 0
		d.emit = func(name, value string, checked bool) bool { n++; return true }
		for _, blk := range blocks[:3] {
			_ = d.write(blk)
			_ = d.close()
		}
		b.ReportAllocs()
		for b.Loop() {
			for _, blk := range blocks[3:] {
				_ = d.write(blk)
				_ = d.close()
			}
		}
	})
	b.Run("xnet", func(b *testing.B) {
		n := 0
		d := hpack.NewDecoder(maxTableSize, func(hpack.HeaderField) { n++ })
		for _, blk := range blocks[:3] {
			_, _ = d.Write(blk)
			_ = d.Close()
		}
		b.ReportAllocs()
		for b.Loop() {
			for _, blk := range blocks[3:] {
				_, _ = d.Write(blk)
				_ = d.Close()
			}
		}
	})
}

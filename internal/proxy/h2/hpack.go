package h2

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/net/http2/hpack"
)

// encoder is the HPACK encoder (RFC 7541) of one connection's writing side, used under
// the connection's write lock. x/net's encoder finds a field in its tables with four
// map lookups keyed by strings and string pairs, 21k of the 145k instructions of a gRPC
// call through a sidecar; here the name and the value are each hashed once, and the
// tables are looked up by those hashes in arrays. It costs 8 KB per connection, fixed.
//
// The dynamic table's index is a cache: a hash has two slots, an entry goes into the
// one holding the older entry, and an entry is used only once its name and value
// compare equal, so a collision or an evicted entry costs compression, never
// correctness. Nor can chosen names and values cost time: a lookup reads two slots
// whatever they hold, so the hash needs no secret seed.
type encoder struct {
	ring    [ringSize]tableEntry // the dynamic table by id % ringSize; the oldest has id added-live
	live    uint64               // entries in the table
	added   uint64               // entries ever added; the newest has id added-1
	size    uint32               // the table's size by RFC 7541's measure
	max     uint32               // the table's maximum size, at most maxTableSize
	pending bool                 // a size update is due at the next block's start
	lowest  uint32               // the smallest maximum since the last update, noShrink if none

	pairs slots // by hash of name and value
	names slots // by hash of name
}

type tableEntry struct{ name, value string }

const (
	// maxTableSize caps the dynamic table whatever the peer allows: it is the
	// protocol's default, and it bounds the ring, every entry being at least 32 bytes.
	maxTableSize = 4096
	ringSize     = maxTableSize / 32
	indexSlots   = 256
	noShrink     = ^uint32(0)
)

func newEncoder() encoder { return encoder{max: maxTableSize, lowest: noShrink} }

// setMaxSize follows the peer's SETTINGS_HEADER_TABLE_SIZE: the table shrinks to it
// at once (evicting), grows back to at most maxTableSize, and the next block begins
// with the update (RFC 7541 §4.2, §6.3).
func (e *encoder) setMaxSize(v uint32) {
	v = min(v, maxTableSize)
	if v == e.max {
		return
	}
	e.max = v
	e.lowest = min(e.lowest, v)
	e.pending = true
	e.evict(0)
}

// appendField appends the representation of one field to dst.
func (e *encoder) appendField(dst []byte, name, value string) []byte {
	if e.pending {
		// The smallest size first, so the decoder evicts what the smaller table did.
		if e.lowest < e.max {
			dst = appendInt(dst, 0x20, 5, uint64(e.lowest))
		}
		dst = appendInt(dst, 0x20, 5, uint64(e.max))
		e.pending, e.lowest = false, noShrink
	}
	hn := strHash(name)
	st := staticLookup(name, hn)
	nameIndex := uint64(0)
	if st != nil {
		for _, v := range st.values {
			if v.value == value {
				return appendInt(dst, 0x80, 7, uint64(v.index))
			}
		}
		nameIndex = uint64(st.index)
	}
	policy := indexPolicy(name, value)
	var hp uint64
	if policy == incremental { // only such fields are ever added
		hp = hn ^ strHash(value)*0x9e3779b97f4a7c15
		for _, slot := range e.pairs.of(hp) {
			if id, ok := e.lookup(slot); ok {
				if ent := e.at(id); ent.name == name && ent.value == value {
					return appendInt(dst, 0x80, 7, e.index(id))
				}
			}
		}
	}
	if nameIndex == 0 {
		for _, slot := range e.names.of(hn) {
			if id, ok := e.lookup(slot); ok && e.at(id).name == name {
				nameIndex = e.index(id)
				break
			}
		}
	}
	size := entrySize(name, value)
	if policy == incremental && size > e.max {
		policy = withoutIndexing // adding it would only empty the table
	}
	switch policy {
	case incremental:
		dst = appendInt(dst, 0x40, 6, nameIndex)
	case withoutIndexing:
		dst = appendInt(dst, 0x00, 4, nameIndex)
	default:
		dst = appendInt(dst, 0x10, 4, nameIndex)
	}
	if nameIndex == 0 {
		dst = appendString(dst, name)
	}
	dst = appendString(dst, value)
	if policy == incremental {
		e.evict(size)
		id := e.added
		e.ring[id%ringSize] = tableEntry{name, value}
		e.added++
		e.live++
		e.size += size
		e.pairs.put(hp, id)
		e.names.put(hn, id)
	}
	return dst
}

// slots index the dynamic table: entry id + 1 by hash, 0 when empty.
type slots [indexSlots]uint64

// of is what the two slots of hash h hold.
func (t *slots) of(h uint64) [2]uint64 {
	return [2]uint64{t[h%indexSlots], t[h>>32%indexSlots]}
}

// put records entry id in the slot of h holding the older entry (or none): an id
// evicted or older is smaller.
func (t *slots) put(h, id uint64) {
	i, j := h%indexSlots, h>>32%indexSlots
	if t[j] < t[i] {
		i = j
	}
	t[i] = id + 1
}

// strHash mixes s eight bytes at a time by multiply and shift, its last eight (or
// fewer) bytes in one go; the slots use its low and high halves.
func strHash(s string) uint64 {
	const m = 0x9e3779b97f4a7c15
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	n := len(b)
	h := uint64(n) * m
	var last uint64
	switch {
	case n >= 8:
		for p := b; len(p) > 8; p = p[8:] {
			h = (h ^ binary.LittleEndian.Uint64(p)) * m
			h ^= h >> 29
		}
		last = binary.LittleEndian.Uint64(b[n-8:]) // may overlap the last chunk
	case n >= 4:
		last = uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint32(b[n-4:]))<<32
	case n > 0:
		last = uint64(b[0]) | uint64(b[n/2])<<8 | uint64(b[n-1])<<16
	}
	h = (h ^ last) * m
	return h ^ h>>32
}

// lookup turns an index slot into the id of an entry still in the table.
func (e *encoder) lookup(slot uint64) (uint64, bool) {
	if slot == 0 {
		return 0, false
	}
	id := slot - 1
	return id, id >= e.added-e.live
}

func (e *encoder) at(id uint64) *tableEntry { return &e.ring[id%ringSize] }

// index is the HPACK index of a live entry: the newest is 62, after the static table.
func (e *encoder) index(id uint64) uint64 { return uint64(len(staticTable)) + e.added - id }

// evict drops the oldest entries until room more bytes fit under the maximum.
func (e *encoder) evict(room uint32) {
	for e.live > 0 && e.size+room > e.max {
		old := e.at(e.added - e.live)
		e.size -= entrySize(old.name, old.value)
		*old = tableEntry{} // release the strings
		e.live--
	}
}

func entrySize(name, value string) uint32 { return uint32(len(name) + len(value) + 32) }

type indexing uint8

const (
	incremental indexing = iota
	withoutIndexing
	neverIndex
)

// indexPolicy is how a field is represented when the tables do not hold it. Credentials
// are never indexed, here or by any intermediary after us (RFC 7541 §7.1.3), nor are
// short cookies, which a compression oracle could guess; a request id is unique, so
// indexing it would only evict entries that repeat.
func indexPolicy(name, value string) indexing {
	switch name {
	case "authorization", "proxy-authorization":
		return neverIndex
	case "cookie":
		if len(value) < 20 {
			return neverIndex
		}
	case "x-request-id":
		return withoutIndexing
	}
	return incremental
}

// appendInt appends an HPACK integer with an n-bit prefix (RFC 7541 §5.1); first holds
// the representation's flag bits.
func appendInt(dst []byte, first byte, n uint, v uint64) []byte {
	limit := uint64(1)<<n - 1
	if v < limit {
		return append(dst, first|byte(v))
	}
	dst = append(dst, first|byte(limit))
	v -= limit
	for v >= 128 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// appendString appends a string literal (RFC 7541 §5.2), Huffman-coded when shorter.
func appendString(dst []byte, s string) []byte {
	if n := hpack.HuffmanEncodeLength(s); n < uint64(len(s)) {
		dst = appendInt(dst, 0x80, 7, n)
		return hpack.AppendHuffmanString(dst, s)
	}
	dst = appendInt(dst, 0, 7, uint64(len(s)))
	return append(dst, s...)
}

// staticTable is RFC 7541 Appendix A; index i+1 is staticTable[i].
var staticTable = [...]tableEntry{
	{":authority", ""}, {":method", "GET"}, {":method", "POST"}, {":path", "/"},
	{":path", "/index.html"}, {":scheme", "http"}, {":scheme", "https"},
	{":status", "200"}, {":status", "204"}, {":status", "206"}, {":status", "304"},
	{":status", "400"}, {":status", "404"}, {":status", "500"}, {"accept-charset", ""},
	{"accept-encoding", "gzip, deflate"}, {"accept-language", ""}, {"accept-ranges", ""},
	{"accept", ""}, {"access-control-allow-origin", ""}, {"age", ""}, {"allow", ""},
	{"authorization", ""}, {"cache-control", ""}, {"content-disposition", ""},
	{"content-encoding", ""}, {"content-language", ""}, {"content-length", ""},
	{"content-location", ""}, {"content-range", ""}, {"content-type", ""}, {"cookie", ""},
	{"date", ""}, {"etag", ""}, {"expect", ""}, {"expires", ""}, {"from", ""}, {"host", ""},
	{"if-match", ""}, {"if-modified-since", ""}, {"if-none-match", ""}, {"if-range", ""},
	{"if-unmodified-since", ""}, {"last-modified", ""}, {"link", ""}, {"location", ""},
	{"max-forwards", ""}, {"proxy-authenticate", ""}, {"proxy-authorization", ""},
	{"range", ""}, {"referer", ""}, {"refresh", ""}, {"retry-after", ""}, {"server", ""},
	{"set-cookie", ""}, {"strict-transport-security", ""}, {"transfer-encoding", ""},
	{"user-agent", ""}, {"vary", ""}, {"via", ""}, {"www-authenticate", ""},
}

// staticName is one name of the static table: its first index, and the indexes of its
// entries by value (an entry of empty value matches a field of empty value).
type staticName struct {
	name   string
	index  uint8
	values []staticValue
}

type staticValue struct {
	value string
	index uint8
}

// staticIndex finds the static table's names by the hash of the name: open addressing,
// linear probing, built once; an empty slot ends a probe.
var staticIndex = func() (t [indexSlots]*staticName) {
	byName := map[string]*staticName{}
	for i, ent := range staticTable {
		sn := byName[ent.name]
		if sn == nil {
			sn = &staticName{name: ent.name, index: uint8(i + 1)}
			byName[ent.name] = sn
			for h := strHash(ent.name); ; h++ {
				if t[h%indexSlots] == nil {
					t[h%indexSlots] = sn
					break
				}
			}
		}
		sn.values = append(sn.values, staticValue{ent.value, uint8(i + 1)})
	}
	return t
}()

func staticLookup(name string, h uint64) *staticName {
	for ; ; h++ {
		sn := staticIndex[h%indexSlots]
		if sn == nil || sn.name == name {
			return sn
		}
	}
}

package h2

import (
	"errors"

	"golang.org/x/net/http2/hpack"
)

// decoder is the HPACK decoder (RFC 7541) of one connection's reading side, used by
// its reading goroutine. It replaces x/net's Decoder, which cost about 3.1k of the 66k
// instructions of a gRPC call through a sidecar, and the callback that built a field
// for each, and it remembers which entries of its tables passed the header block's
// field checks: a field sent by index, nearly every field of a connection's later
// requests, is not checked again (the static table's are valid by construction). In
// all a gRPC call costs 3.2k fewer instructions. The tests hold it to x/net's Decoder:
// the same fields and the same failures on any input (FuzzDecoder), one difference
// allowed (several size updates at a block's start, which RFC 7541 §4.2 permits and
// x/net refuses once its table is not empty). Huffman decoding is x/net's.
type decoder struct {
	ring  []decEntry // the dynamic table by id % len(ring), a power of two
	live  uint64     // entries in the table
	added uint64     // entries ever added; the newest has id added-1
	size  uint32     // the table's size by RFC 7541's measure
	max   uint32     // the table's maximum size, as the last size update set it

	maxString int    // the longest string literal accepted, 0 for no limit
	saved     []byte // an incomplete representation at the end of a fragment
	fielded   bool   // the block has had a field: no size update may follow
	discard   bool   // decode (the table must follow) but emit nothing

	// emit takes a decoded field; checked says the name and value are known to be
	// valid. It reports whether they are (entries added this way are not checked again).
	emit func(name, value string, checked bool) bool
}

// decEntry is a field of the tables; checked: it passed emit's checks once.
type decEntry struct {
	name, value string
	checked     bool
}

var (
	errNeedMore     = errors.New("hpack: need more data") // internal: the field continues in the next fragment
	errIndex        = errors.New("hpack: index out of range")
	errStringLength = errors.New("hpack: string literal too long")
	errVarint       = errors.New("hpack: integer overflow")
	errSizeUpdate   = errors.New("hpack: table size update larger than allowed")
	errLateUpdate   = errors.New("hpack: table size update after a field")
	errTruncated    = errors.New("hpack: header block ends inside a field")
)

// staticEntries is the static table as decoder entries, all checked.
var staticEntries = func() (t [len(staticTable)]decEntry) {
	for i, e := range staticTable {
		t[i] = decEntry{e.name, e.value, true}
	}
	return t
}()

// newDecoder is a decoder whose table may reach maxTableSize: this side's SETTINGS
// leave SETTINGS_HEADER_TABLE_SIZE at that default, so no size update may pass it.
func newDecoder() decoder { return decoder{max: maxTableSize} }

// write decodes a fragment of a header block; a representation cut at its end is kept
// for the next fragment.
func (d *decoder) write(p []byte) error {
	if len(p) == 0 {
		return nil // nothing new: what waits would be parsed again for nothing
	}
	if len(d.saved) > 0 {
		d.saved = append(d.saved, p...)
		p = d.saved
	}
	for len(p) > 0 {
		n, err := d.field(p)
		if err == errNeedMore {
			// Lengths were checked as they were read; this bounds what waits anyway.
			if d.maxString > 0 && len(p) > 2*d.maxString+16 {
				return errStringLength
			}
			d.saved = append(d.saved[:0], p...) // p may be the end of saved: copy moves
			return nil
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	d.saved = d.saved[:0]
	return nil
}

// close ends a header block.
func (d *decoder) close() error {
	d.fielded = false
	truncated := len(d.saved) > 0
	d.saved = d.saved[:0]
	if cap(d.saved) > 16<<10 {
		d.saved = nil // a large block's buffer is not kept
	}
	if truncated {
		return errTruncated
	}
	return nil
}

// field decodes the representation at the start of p (RFC 7541 §6) and returns its
// length; errNeedMore if p ends inside it, and nothing has been applied then.
func (d *decoder) field(p []byte) (int, error) {
	switch b := p[0]; {
	case b&0x80 != 0: // indexed field
		i, n, err := readInt(p, 7)
		if err != nil {
			return 0, err
		}
		e, err := d.at(i)
		if err != nil {
			return 0, err
		}
		d.fielded = true
		if !d.discard && d.emit(e.name, e.value, e.checked) && !e.checked {
			e.checked = true // never a static entry: those are shared, and checked
		}
		return n, nil
	case b&0xc0 == 0x40: // literal with incremental indexing
		return d.literal(p, 6, true)
	case b&0xe0 == 0x20: // dynamic table size update
		// At the block's start (as x/net: or while the table is empty).
		if d.fielded && d.size > 0 {
			return 0, errLateUpdate
		}
		v, n, err := readInt(p, 5)
		if err != nil {
			return 0, err
		}
		if v > maxTableSize {
			return 0, errSizeUpdate
		}
		d.max = uint32(v)
		d.evict(0)
		return n, nil
	default: // literal without indexing (0000) or never indexed (0001)
		return d.literal(p, 4, false)
	}
}

// literal decodes a literal field representation whose name index has an n-bit prefix.
func (d *decoder) literal(p []byte, n int, indexed bool) (int, error) {
	i, k, err := readInt(p, n)
	if err != nil {
		return 0, err
	}
	q := p[k:]
	var name string
	var rawName []byte
	var huffName bool
	if i > 0 {
		e, err := d.at(i)
		if err != nil {
			return 0, err
		}
		name = e.name
	} else if rawName, huffName, q, err = d.readString(q); err != nil {
		return 0, err
	}
	rawValue, huffValue, q, err := d.readString(q)
	if err != nil {
		return 0, err
	}
	// The representation is whole: from here it is applied.
	var value string
	if !d.discard || indexed { // a discarded field not indexed is not even decoded
		if i == 0 {
			if name, err = d.decodeString(rawName, huffName); err != nil {
				return 0, err
			}
		}
		if value, err = d.decodeString(rawValue, huffValue); err != nil {
			return 0, err
		}
	}
	var e *decEntry
	if indexed {
		e = d.add(name, value)
	}
	d.fielded = true
	if !d.discard && d.emit(name, value, false) && e != nil {
		e.checked = true
	}
	return len(p) - len(q), nil
}

// readString reads a string literal's header and bytes (RFC 7541 §5.2).
func (d *decoder) readString(p []byte) (b []byte, huff bool, rest []byte, err error) {
	if len(p) == 0 {
		return nil, false, p, errNeedMore
	}
	huff = p[0]&0x80 != 0
	n, k, err := readInt(p, 7)
	if err != nil {
		return nil, false, p, err
	}
	if d.maxString > 0 && n > uint64(d.maxString) {
		return nil, false, p, errStringLength
	}
	p = p[k:]
	if uint64(len(p)) < n {
		return nil, false, p, errNeedMore
	}
	return p[:n], huff, p[n:], nil
}

func (d *decoder) decodeString(b []byte, huff bool) (string, error) {
	if !huff {
		return string(b), nil
	}
	s, err := hpack.HuffmanDecodeToString(b)
	if err != nil {
		return "", err
	}
	if d.maxString > 0 && len(s) > d.maxString {
		return "", errStringLength
	}
	return s, nil
}

// readInt reads an integer with an n-bit prefix (RFC 7541 §5.1) and returns its
// length. As x/net's, it takes up to nine continuation bytes.
func readInt(p []byte, n int) (uint64, int, error) {
	if len(p) == 0 {
		return 0, 0, errNeedMore
	}
	limit := uint64(1)<<n - 1
	v := uint64(p[0]) & limit
	if v < limit {
		return v, 1, nil
	}
	for k, shift := 1, 0; k < len(p); k++ {
		b := p[k]
		v += uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, k + 1, nil
		}
		if shift += 7; shift >= 63 {
			return 0, 0, errVarint
		}
	}
	return 0, 0, errNeedMore
}

// at is the entry of HPACK index i: the static table's, then the dynamic table's from
// the newest.
func (d *decoder) at(i uint64) (*decEntry, error) {
	switch {
	case i == 0:
		return nil, errIndex
	case i <= uint64(len(staticEntries)):
		return &staticEntries[i-1], nil
	}
	i -= uint64(len(staticEntries))
	if i > d.live {
		return nil, errIndex
	}
	return d.entry(d.added - i), nil
}

func (d *decoder) entry(id uint64) *decEntry { return &d.ring[id&uint64(len(d.ring)-1)] }

// add inserts a field at the head of the dynamic table (RFC 7541 §4.4) and returns
// its entry; a field larger than the whole table empties it (nil).
func (d *decoder) add(name, value string) *decEntry {
	size := entrySize(name, value)
	if size > d.max {
		d.evict(d.max + 1)
		return nil
	}
	d.evict(size)
	if d.live == uint64(len(d.ring)) {
		d.grow()
	}
	e := d.entry(d.added)
	*e = decEntry{name: name, value: value}
	d.added++
	d.live++
	d.size += size
	return e
}

// grow doubles the ring (it starts small: most connections use a few entries). Every
// entry is at least 32 bytes, so the ring never passes maxTableSize/32 entries.
func (d *decoder) grow() {
	old := d.ring
	d.ring = make([]decEntry, max(16, 2*len(old)))
	for id := d.added - d.live; id < d.added; id++ {
		*d.entry(id) = old[id&uint64(len(old)-1)]
	}
}

// evict drops the oldest entries until room more bytes fit under the maximum.
func (d *decoder) evict(room uint32) {
	for d.live > 0 && d.size+room > d.max {
		old := d.entry(d.added - d.live)
		d.size -= entrySize(old.name, old.value)
		*old = decEntry{} // release the strings
		d.live--
	}
}

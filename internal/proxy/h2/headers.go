package h2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weft-mesh/weft/internal/proxy/h1"
)

// headerBlock is a HEADERS frame with its CONTINUATION frames, decoded. It is what
// x/net's Framer makes when given a decoder (MetaHeadersFrame), with the same checks,
// but the connection keeps one: its field list and the decoder's callback are reused
// from block to block, where the Framer made a frame, two closures and a growing
// field list for every block (about 1.5 KB and ten allocations per proxied HTTP/2
// request, both hops counted). A block is valid until the next frame is read.
type headerBlock struct {
	http2.FrameHeader                     // the HEADERS frame's
	Priority          http2.PriorityParam // set if HasPriority
	Fields            []hpack.HeaderField
	Truncated         bool // the list passed the size limit; what followed was dropped

	dec        decoder
	limit      uint32 // SETTINGS_MAX_HEADER_LIST_SIZE, as this end advertised it
	remain     uint32 // of the limit, for fields other than trailer
	trailerRem uint32 // of the limit, for the trailer field's announced names
	sawRegular bool
	nPseudo    int   // the pseudo-header fields at the start of Fields
	invalid    error // the first malformed field
}

func (b *headerBlock) init(limit uint32) {
	b.limit = limit
	b.dec = newDecoder()
	b.dec.maxString = int(limit)
	b.dec.emit = b.emit
}

// emit takes a decoded field (the decoder's callback) and reports whether it is valid;
// checked: it is known to be (an entry of the tables that was).
func (b *headerBlock) emit(name, value string, checked bool) bool {
	if !checked && !h1.ValidValue(value) {
		b.invalid = fmt.Errorf("invalid value of header field %q", name) // not the value: it may be secret
	} else if strings.HasPrefix(name, ":") {
		if b.sawRegular {
			b.invalid = errors.New("pseudo-header field after a regular one")
		}
	} else {
		b.sawRegular = true
		if !checked && !validFieldName(name) {
			b.invalid = fmt.Errorf("invalid header field name %q", name)
		}
	}
	if b.invalid != nil {
		b.dec.discard = true
		return false
	}
	// The trailer field counts against a budget of its own, as the fields it
	// announces will: each name as the size of a field of its own.
	rem, size := &b.remain, entrySize(name, value) // RFC 9113 6.5.2 measures as HPACK
	if name == "trailer" {
		names := uint32(strings.Count(value, ",") + 1)
		rem, size = &b.trailerRem, uint32(len(value))-names+1+names*entrySize("", "")
	}
	if size > *rem {
		b.dec.discard = true
		b.Truncated = true
		b.remain, b.trailerRem = 0, 0
		return true
	}
	*rem -= size
	b.Fields = append(b.Fields, hpack.HeaderField{Name: name, Value: value})
	if !b.sawRegular {
		b.nPseudo++
	}
	return true
}

func (b *headerBlock) StreamEnded() bool { return b.Flags.Has(http2.FlagHeadersEndStream) }
func (b *headerBlock) HasPriority() bool { return b.Flags.Has(http2.FlagHeadersPriority) }

// validFieldName: a token in lower case (RFC 9113 8.2.1).
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !lowerToken[name[i]] {
			return false
		}
	}
	return true
}

// lowerToken marks the bytes of a lower-case token: 256 entries, so a byte indexes it
// without a bound check.
var lowerToken = func() (t [256]bool) {
	for c := range t {
		t[c] = httpguts.IsTokenRune(rune(c)) && !('A' <= c && c <= 'Z')
	}
	return t
}()

// readFrame reads the next frame; a HEADERS frame comes back as the connection's
// headerBlock, its CONTINUATION frames read and decoded, PING and WINDOW_UPDATE frames
// as the connection's own too (x/net's Framer allocates a frame for each of these: a
// gRPC call's three HEADERS, a PING and two WINDOW_UPDATEs were about 150 B). The
// Framer reads the frame header (size limit, CONTINUATION order) and the other frames.
// The errors are the Framer's: a malformed field or pseudo-header fails the stream, a
// block past twice the size limit or an HPACK error the connection.
func (w *wire) readFrame() (http2.Frame, error) {
	fh, err := w.fr.ReadFrameHeader()
	if err != nil {
		return nil, err
	}
	switch fh.Type {
	case http2.FrameHeaders:
		return w.readHeaders(fh)
	case http2.FramePing:
		if fh.Length != 8 {
			return nil, http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		if fh.StreamID != 0 {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		p, err := w.br.Peek(8)
		if err != nil {
			return nil, err
		}
		w.pingF = http2.PingFrame{FrameHeader: fh, Data: [8]byte(p)}
		w.br.Discard(8)
		return &w.pingF, nil
	case http2.FrameWindowUpdate:
		if fh.Length != 4 {
			return nil, http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		p, err := w.br.Peek(4)
		if err != nil {
			return nil, err
		}
		inc := binary.BigEndian.Uint32(p) & 0x7fffffff // the high bit is reserved
		w.br.Discard(4)
		if inc == 0 { // RFC 9113 6.9
			if fh.StreamID == 0 {
				return nil, http2.ConnectionError(http2.ErrCodeProtocol)
			}
			return nil, http2.StreamError{StreamID: fh.StreamID, Code: http2.ErrCodeProtocol}
		}
		w.wupdF = http2.WindowUpdateFrame{FrameHeader: fh, Increment: inc}
		return &w.wupdF, nil
	}
	return w.fr.ReadFrameForHeader(fh)
}

// readHeaders reads and decodes a HEADERS frame (RFC 9113 6.2) and its CONTINUATION
// frames into w.hb.
func (w *wire) readHeaders(fh http2.FrameHeader) (http2.Frame, error) {
	if fh.StreamID == 0 {
		return nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	// The payload is read in place when the read buffer holds it (decoding copies
	// what it keeps), else into a slice of its own.
	n := int(fh.Length)
	var p []byte
	var err error
	inPlace := n <= w.br.Size()
	if inPlace {
		p, err = w.br.Peek(n)
	} else {
		p = make([]byte, n)
		_, err = io.ReadFull(w.br, p)
	}
	if err != nil {
		return nil, err
	}
	b := &w.hb
	b.FrameHeader, b.Priority, b.Fields, b.Truncated = fh, http2.PriorityParam{}, b.Fields[:0], false
	b.remain, b.trailerRem, b.sawRegular, b.nPseudo, b.invalid = b.limit, b.limit, false, 0, nil
	b.dec.discard = false
	frag, err := b.fragment(p)
	if err == nil {
		err = b.decode(frag)
	}
	if inPlace {
		w.br.Discard(n)
	}
	if err != nil {
		return nil, err
	}
	for end := fh.Flags.Has(http2.FlagHeadersEndHeaders); !end; {
		next, err := w.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := next.(*http2.ContinuationFrame) // the Framer checks the order
		if err := b.decode(cf.HeaderBlockFragment()); err != nil {
			return nil, err
		}
		end = cf.HeadersEnded()
	}
	if err := b.dec.close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: fh.StreamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	if err := b.checkPseudo(); err != nil {
		return nil, http2.StreamError{StreamID: fh.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return b, nil
}

// fragment is the header block fragment of HEADERS payload p: without the padding
// and the priority fields.
func (b *headerBlock) fragment(p []byte) ([]byte, error) {
	pad := 0
	if b.Flags.Has(http2.FlagHeadersPadded) {
		if len(p) < 1 {
			return nil, http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		pad, p = int(p[0]), p[1:]
	}
	if b.HasPriority() {
		if len(p) < 5 {
			return nil, http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		v := binary.BigEndian.Uint32(p)
		b.Priority = http2.PriorityParam{StreamDep: v & 0x7fffffff, Exclusive: v&(1<<31) != 0, Weight: p[4]}
		p = p[5:]
	}
	if pad > len(p) { // the padding as long as the rest or longer (RFC 9113 6.2)
		return nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return p[:len(p)-pad], nil
}

// decode decodes a fragment of the block.
func (b *headerBlock) decode(p []byte) error {
	// Far past the limit, or more after a malformed field (whose size was not
	// counted): not worth decoding.
	if int64(len(p)) > 2*int64(b.remain+b.trailerRem) || b.invalid != nil {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if err := b.dec.write(p); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	return nil
}

// checkPseudo: known pseudo-header fields, each once, of a request or of a response.
func (b *headerBlock) checkPseudo() error {
	var request, response bool
	pf := b.PseudoFields()
	for i, f := range pf {
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("unknown pseudo-header field %q", f.Name)
		}
		for _, g := range pf[:i] {
			if g.Name == f.Name {
				return fmt.Errorf("pseudo-header field %q twice", f.Name)
			}
		}
	}
	if request && response {
		return errors.New("request and response pseudo-header fields together")
	}
	return nil
}

// PseudoValue is the value of pseudo-header field ":"+name, "" when absent.
func (b *headerBlock) PseudoValue(name string) string {
	for _, f := range b.PseudoFields() {
		if f.Name[1:] == name {
			return f.Value
		}
	}
	return ""
}

// PseudoFields are the block's pseudo-header fields (they come first, as emit made
// sure).
func (b *headerBlock) PseudoFields() []hpack.HeaderField { return b.Fields[:b.nPseudo] }

// RegularFields are the fields after the pseudo-header ones.
func (b *headerBlock) RegularFields() []hpack.HeaderField {
	return b.Fields[len(b.PseudoFields()):]
}

// values hands out the value slices of a head's fields from one array: a slice of
// its own for every field was an allocation per field. Each slice is capped at its
// one value, so appending a repeated field's value copies it out.
type values []string

func newValues(n int) values { return make(values, 0, n) }

func (vs *values) add(h http.Header, k, v string) {
	if old, ok := h[k]; ok || len(*vs) == cap(*vs) {
		h[k] = append(old, v)
		return
	}
	*vs = append(*vs, v)
	n := len(*vs)
	h[k] = (*vs)[n-1 : n : n]
}

// fieldHeader is the header of fields, names in canonical form.
func fieldHeader(fields []hpack.HeaderField) http.Header {
	h := h1.NewHeader(len(fields))
	vals := newValues(len(fields))
	for _, f := range fields {
		vals.add(h, h1.CanonicalKey(f.Name), f.Value)
	}
	return h
}

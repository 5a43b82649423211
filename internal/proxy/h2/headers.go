package h2

import (
	"errors"
	"fmt"
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
	*http2.HeadersFrame
	Fields    []hpack.HeaderField
	Truncated bool // the list passed the size limit; what followed was dropped

	dec        *hpack.Decoder
	limit      uint32 // SETTINGS_MAX_HEADER_LIST_SIZE, as this end advertised it
	remain     uint32 // of the limit, for fields other than trailer
	trailerRem uint32 // of the limit, for the trailer field's announced names
	sawRegular bool
	nPseudo    int   // the pseudo-header fields at the start of Fields
	invalid    error // the first malformed field
}

func (b *headerBlock) init(limit uint32) {
	b.limit = limit
	b.dec = hpack.NewDecoder(4096, b.emit)
}

// emit takes a decoded field (the decoder's callback).
func (b *headerBlock) emit(f hpack.HeaderField) {
	if !h1.ValidValue(f.Value) {
		b.invalid = fmt.Errorf("invalid value of header field %q", f.Name) // not the value: it may be secret
	} else if strings.HasPrefix(f.Name, ":") {
		if b.sawRegular {
			b.invalid = errors.New("pseudo-header field after a regular one")
		}
	} else {
		b.sawRegular = true
		if !validFieldName(f.Name) {
			b.invalid = fmt.Errorf("invalid header field name %q", f.Name)
		}
	}
	if b.invalid != nil {
		b.dec.SetEmitEnabled(false)
		return
	}
	// The trailer field counts against a budget of its own, as the fields it
	// announces will: each name as the size of a field of its own.
	rem, size := &b.remain, f.Size()
	if f.Name == "trailer" {
		names := uint32(strings.Count(f.Value, ",") + 1)
		rem, size = &b.trailerRem, uint32(len(f.Value))-names+1+names*hpack.HeaderField{}.Size()
	}
	if size > *rem {
		b.dec.SetEmitEnabled(false)
		b.Truncated = true
		b.remain, b.trailerRem = 0, 0
		return
	}
	*rem -= size
	b.Fields = append(b.Fields, f)
	if !b.sawRegular {
		b.nPseudo++
	}
}

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
// headerBlock, its CONTINUATION frames read and decoded. The errors are the Framer's:
// a malformed field or pseudo-header fails the stream, a block past twice the size
// limit or an HPACK error the connection.
func (w *wire) readFrame() (http2.Frame, error) {
	f, err := w.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	hf, ok := f.(*http2.HeadersFrame)
	if !ok {
		return f, nil
	}
	b := &w.hb
	b.HeadersFrame, b.Fields, b.Truncated = hf, b.Fields[:0], false
	b.remain, b.trailerRem, b.sawRegular, b.nPseudo, b.invalid = b.limit, b.limit, false, 0, nil
	b.dec.SetEmitEnabled(true)
	b.dec.SetMaxStringLength(int(b.limit))
	var frag interface {
		HeaderBlockFragment() []byte
		HeadersEnded() bool
	} = hf
	for {
		p := frag.HeaderBlockFragment()
		// Far past the limit, or more after a malformed field (whose size was not
		// counted): not worth decoding.
		if int64(len(p)) > 2*int64(b.remain+b.trailerRem) || b.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := b.dec.Write(p); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if frag.HeadersEnded() {
			break
		}
		next, err := w.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		frag = next.(*http2.ContinuationFrame) // the Framer checks the order
	}
	if err := b.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	if err := b.checkPseudo(); err != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return b, nil
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

// Package h1 is the proxy's HTTP/1.1 codec: the parsing and writing of request and
// response heads and bodies on the hot path, for the connection manager's HTTP/1.1
// server (internal/proxy/httpconn) and the upstream HTTP/1.1 pool
// (internal/proxy/upstream/pool). It exists because net/http, correct as it is, spends
// on every request what a proxy cannot afford: a background read per request on the
// server side, separate writes for a request's head and body on the client side, a
// goroutine per request body, and some 20 allocations to parse a head. The codec keeps
// net/http's types (http.Request, http.Response, http.Header) so the filters and the
// router see exactly what they saw before, and keeps its rules on what a message may
// contain (RFC 9112): header names are tokens, values carry no control characters,
// Content-Length is one number, Transfer-Encoding is chunked or nothing, and a message
// with both is refused, as Envoy refuses it by default.
package h1

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"unsafe"
)

// Errors a malformed message yields; the server answers them with 400 (or 431 for
// ErrHeaderTooLarge).
var (
	ErrHeaderTooLarge = errors.New("h1: header section too large")
	ErrMalformed      = errors.New("h1: malformed header")
	ErrLineTooLong    = errors.New("h1: line too long")
)

// field is one parsed header line before the map is built.
type field struct {
	key        string
	start, end int // value bytes in the value buffer, unless from >= 0
	nameEnd    int // where the name as sent ends in the name buffer
	// from >= 0: the previous head's field at from had this name and value; this one
	// takes its string and map value (the peer sent it again: same client, same
	// server).
	from int
	// Once the map is built: the value, and the one-element slice the map holds
	// for it (nil when the field is kept out of the map or joins an earlier one).
	// Neither is ever written again, so a later head can share them.
	str string
	val []string
}

// headerReader parses header sections. It is reused by one connection for all its
// messages, so its buffers grow once.
type headerReader struct {
	fields []field
	vals   []byte
	names  []byte // the names as sent, one after the other
	// The previous head's fields and names. A connection's peer sends the same names
	// head after head, most in the same order: a name sent as before is that field's
	// key, without being canonicalised or looked up again (nor, when uncommon,
	// allocated again).
	prev      []field
	prevNames []byte
	// hosts are the values of a request head's Host fields, which readHeader keeps
	// out of the map when asked to (the request carries its Host in Request.Host).
	hosts []string
	// own holds the values of the fields the codec itself reads (ownConnection...)
	// as the last head's map holds them while that map is unchanged, nil for those
	// it did not carry: the codec reads them without a map lookup, which costs as
	// much for an absent key as for a present one.
	own [ownFields][]string
}

const (
	ownConnection = iota
	ownTransferEncoding
	ownContentLength
	ownFields
)

// readHeader reads header lines up to the empty line that ends the section into a new
// http.Header (or one given back with RecycleHeader). max bounds the section's bytes; *n
// is decremented by what was read. Keys are canonical (net/http's form) and interned for
// the common ones. A head costs at most three allocations: the map (none when
// recycled), the value slices and one string for the values; a field the previous head
// also carried, with the same value (a connection's peer sends much the same head each
// time), takes that head's value and slice, so a head that repeats the previous one,
// in any order, allocates nothing.
func (hr *headerReader) readHeader(br *bufio.Reader, n *int, takeHost bool) (http.Header, error) {
	hr.hosts = hr.hosts[:0]
	hr.fields = hr.fields[:0]
	hr.vals = hr.vals[:0]
	hr.names = hr.names[:0]
	hr.own = [ownFields][]string{}
	var kbuf [64]byte
	// The lines are taken from the bytes already buffered, peeked once, while they
	// hold whole lines (a head usually comes in one read): one search per line
	// instead of a ReadSlice each. off counts the bytes taken; they are discarded
	// before the reader is read again, and at the end.
	var buf []byte
	if k := br.Buffered(); k > 0 {
		buf, _ = br.Peek(k)
	}
	off := 0
	var err error
	for {
		var line []byte
		if i := bytes.IndexByte(buf[off:], '\n'); i >= 0 {
			line = dropEOL(buf[off : off+i+1])
			off += i + 1
			if *n -= i + 1; *n < 0 {
				err = ErrHeaderTooLarge
				break
			}
		} else {
			br.Discard(off)
			buf, off = nil, 0
			if line, err = readLine(br, n); err != nil {
				break
			}
		}
		if len(line) == 0 {
			break
		}
		// obs-fold (a leading space or tab): RFC 9112 section 5.2 lets a server
		// reject it; folding is a known smuggling vector.
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			err = ErrMalformed
			break
		}
		name := line[:colon]
		// Not ok also for "Name :" (whitespace before the colon), which RFC 9112
		// section 5.1 says a server must reject.
		key, from, ok := hr.key(name, kbuf[:0], len(hr.fields))
		// A value sent as in the previous head, in the usual "Name: value" form, was
		// trimmed and checked there (from >= 0 only for a valid name).
		raw := line[colon+1:]
		same := from >= 0 && len(raw) > 1 && raw[0] == ' ' && hr.prev[from].str == string(raw[1:])
		var v []byte
		if !same {
			v = trimOWS(raw)
			if !ok || !validValue(v) {
				err = ErrMalformed
				break
			}
			same = from >= 0 && hr.prev[from].str == string(v)
		}
		hr.names = append(hr.names, name...)
		if same {
			hr.fields = append(hr.fields, field{key: key, nameEnd: len(hr.names), from: from})
			continue
		}
		start := len(hr.vals)
		hr.vals = append(hr.vals, v...)
		hr.fields = append(hr.fields, field{key: key, start: start, end: len(hr.vals), nameEnd: len(hr.names), from: -1})
	}
	br.Discard(off)
	if err != nil {
		return nil, err
	}
	// This head is the next one's previous; the one before stays readable below.
	hr.prev, hr.fields = hr.fields, hr.prev
	hr.prevNames, hr.names = hr.names, hr.prevNames
	fields, before := hr.prev, hr.fields
	h := newHeader(len(fields))
	if len(fields) == 0 {
		return h, nil
	}
	// The values not sent before share one string, and the map's one-element slices
	// one array, made when the first is needed: a head whose fields all repeat the
	// previous head's allocates neither.
	all := string(hr.vals)
	var slots []string
	for i := range fields {
		f := &fields[i]
		if f.from >= 0 {
			f.str, f.val = before[f.from].str, before[f.from].val
		} else {
			f.str, f.val = all[f.start:f.end], nil
		}
		own := -1
		switch f.key {
		case "Connection":
			own = ownConnection
		case "Transfer-Encoding":
			own = ownTransferEncoding
		case "Content-Length":
			own = ownContentLength
		case "Host":
			if takeHost {
				hr.hosts = append(hr.hosts, f.str)
				f.val = nil
				continue
			}
		}
		if repeated(h, fields[:i], f.key) {
			vs := append(h[f.key], f.str)
			h[f.key] = vs
			if own >= 0 {
				hr.own[own] = vs
			}
			f.val = nil
			continue
		}
		if f.val == nil {
			if len(slots) == 0 {
				slots = make([]string, len(fields)-i)
			}
			slots[0] = f.str
			f.val, slots = slots[:1:1], slots[1:]
		}
		h[f.key] = f.val
		if own >= 0 {
			hr.own[own] = f.val
		}
	}
	return h, nil
}

// repeated reports whether key is one of the earlier fields' keys, h holding those.
// A head's fields are few and their keys mostly of different lengths (and one name's
// keys the same string): comparing them is cheaper than a map lookup, which hashes.
func repeated(h http.Header, earlier []field, key string) bool {
	if len(earlier) > 16 {
		_, ok := h[key]
		return ok
	}
	for i := range earlier {
		if earlier[i].key == key {
			return true
		}
	}
	return false
}

// recycleMax bounds the maps RecycleHeader keeps: a cleared map keeps its slots, and a
// rare head with many fields should not pin them for the heads that follow.
const recycleMax = 16

// headerPool holds the emptied maps given back with RecycleHeader. A proxy parses two
// heads per request (the request's and the response's), and each head's map with its
// slots is the largest allocation of the exchange (about 400 bytes for up to 8 fields);
// the server recycles both once the exchange is over.
var headerPool sync.Pool

func newHeader(n int) http.Header {
	if n <= recycleMax {
		if h, _ := headerPool.Get().(http.Header); h != nil {
			return h
		}
	}
	return make(http.Header, n)
}

// NewHeader is an empty header map for about n fields, one given back with
// RecycleHeader when there is one: for the other codecs' heads (HTTP/2's).
func NewHeader(n int) http.Header { return newHeader(n) }

// RecycleHeaders gives back the header maps of an exchange that is over: the request's
// and the response's, which may be the same map (it then goes back once). The caller
// must hold the only references left to both, as for RecycleHeader.
func RecycleHeaders(req, resp http.Header) {
	if req == nil || len(req) > recycleMax {
		req = nil
	} else {
		// Emptied first: if resp is the same map, it is empty now, and it is decided
		// before the map is in the pool, where another exchange may take and fill it.
		clear(req)
	}
	if len(resp) > 0 {
		RecycleHeader(resp)
	}
	if req != nil {
		headerPool.Put(req)
	}
}

// RecycleHeader gives h back, emptied, for a later head to reuse. The caller must hold
// the only reference left to h: nothing may read or write it afterwards (the values it
// held, strings, stay valid).
func RecycleHeader(h http.Header) {
	if h == nil || len(h) > recycleMax {
		return
	}
	clear(h)
	headerPool.Put(h)
}

// FirstValue is h.Get(key) for a key already in canonical form (the proxy's constant
// names): a map lookup, without the canonicalisation Get runs on every call (2 % of the
// proxy's CPU at maximum throughput, most of it on such keys).
func FirstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// readLine returns one line without its CRLF (a bare LF is accepted, as net/http and
// Envoy accept it in a head). The slice is valid until the next read from br.
func readLine(br *bufio.Reader, n *int) ([]byte, error) {
	line, err := readRawLine(br, n)
	if err != nil {
		return nil, err
	}
	return dropEOL(line), nil
}

// dropEOL returns a line without its LF and the CR before it, if any.
func dropEOL(line []byte) []byte {
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line
}

// readRawLine returns one line with its LF.
func readRawLine(br *bufio.Reader, n *int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// A line longer than the read buffer (a large cookie or token): gather
		// it, within the section's limit.
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			if len(long) > *n {
				return nil, ErrHeaderTooLarge
			}
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil {
		return nil, err
	}
	*n -= len(line)
	if *n < 0 {
		return nil, ErrHeaderTooLarge
	}
	return line, nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// validValue reports whether a field value has no control characters but HTAB. Eight
// bytes at a time first: a word with no byte below 0x20 and none 0x7f is valid as it
// is (bytes from 0x80 up, obs-text, are allowed); one that may hold one is checked
// byte by byte, which tells a tab apart.
func validValue(v []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(v) >= 8 {
		x := binary.LittleEndian.Uint64(v)
		del := x ^ (0x7f * ones)
		if ((x-0x20*ones)&^x|(del-ones)&^del)&highs != 0 {
			break
		}
		v = v[8:]
	}
	for _, b := range v {
		if (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

// ValidValue reports whether v may be a field value (RFC 9110 5.5): validValue for
// the other codecs' values (HTTP/2's), as x/net's httpguts.ValidHeaderFieldValue
// decides, eight bytes at a time.
func ValidValue(v string) bool { return validValue(unsafe.Slice(unsafe.StringData(v), len(v))) }

// key is canonicalKey for the i-th name of a head: the previous head's key when it had
// the name (see prev), in the same place or another, and then from is that field's
// index in prev; else from is -1.
func (hr *headerReader) key(name, buf []byte, i int) (key string, from int, ok bool) {
	if i < len(hr.prev) {
		start := 0
		if i > 0 {
			start = hr.prev[i-1].nameEnd
		}
		if string(name) == string(hr.prevNames[start:hr.prev[i].nameEnd]) {
			return hr.prev[i].key, i, true // sent as before: valid, and the same key
		}
	}
	// Elsewhere in the previous head: a peer that writes a header map (Go's
	// net/http, weft's own codec) sends the same names in another order each time.
	start := 0
	for j := range hr.prev {
		end := hr.prev[j].nameEnd
		if end-start == len(name) && string(name) == string(hr.prevNames[start:end]) {
			return hr.prev[j].key, j, true
		}
		start = end
	}
	buf, ok = canonicalBytes(name, buf)
	if !ok {
		return "", -1, false
	}
	if i < len(hr.prev) && hr.prev[i].key == string(buf) {
		return hr.prev[i].key, i, true // another case of the same name
	}
	return internKey(buf), -1, true
}

// canonicalKey returns the canonical form of a header name (as
// textproto.CanonicalMIMEHeaderKey writes it) and whether the name is a valid token.
// Common names come from a table without allocating.
func canonicalKey[T string | []byte](name T, buf []byte) (string, bool) {
	buf, ok := canonicalBytes(name, buf)
	if !ok {
		return "", false
	}
	return internKey(buf), true
}

// canonicalBytes appends the canonical form of name to buf; false when name is not a
// token.
func canonicalBytes[T string | []byte](name T, buf []byte) ([]byte, bool) {
	upper := true
	for i := 0; i < len(name); i++ {
		b := name[i]
		if !isToken(b) {
			return nil, false
		}
		if upper && 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		} else if !upper && 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		buf = append(buf, b)
		upper = b == '-'
	}
	return buf, true
}

// internKey is the string of a canonical name, from the common names' table when it
// is one of them.
func internKey(buf []byte) string {
	if k, ok := commonKeys[string(buf)]; ok { // no allocation: map lookup by []byte
		return k
	}
	return string(buf)
}

// isToken reports whether b may appear in a header name (RFC 9110 tchar).
func isToken(b byte) bool { return tokenTable[b] } // 256 entries: no bound check, no range test

var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// commonNames holds the common names one after another; commonKeys' strings are
// slices of it, so that where a key's bytes are tells it is one of them (isCommonKey).
var commonNames string

// commonKeys interns the header names a mesh sees on most requests.
var commonKeys = func() map[string]string {
	names := []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Access-Control-Allow-Origin", "Age", "Allow", "Authorization", "Cache-Control",
		"Connection", "Content-Disposition", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Range", "Content-Type", "Cookie", "Date", "Etag",
		"Expect", "Expires", "Forwarded", "From", "Host", "If-Match", "If-Modified-Since",
		"If-None-Match", "If-Range", "If-Unmodified-Since", "Keep-Alive", "Last-Modified",
		"Link", "Location", "Origin", "Pragma", "Proxy-Authorization", "Proxy-Connection",
		"Range", "Referer", "Retry-After", "Server", "Set-Cookie", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade", "User-Agent", "Vary", "Via", "Www-Authenticate",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Client-Cert",
		"X-Request-Id", "X-Real-Ip", "Traceparent", "Tracestate", "Baggage",
		"X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Flags", "B3",
		"X-Ot-Span-Context", "X-Cloud-Trace-Context", "Grpc-Timeout", "Grpc-Status",
		"Grpc-Message", "Grpc-Encoding", "Grpc-Accept-Encoding",
		"X-Envoy-Upstream-Service-Time", "X-Envoy-Expected-Rq-Timeout-Ms",
		"X-Envoy-Attempt-Count", "X-Envoy-Decorator-Operation", "X-Envoy-Peer-Metadata",
		"X-Envoy-Peer-Metadata-Id", "X-Envoy-Original-Path", "X-Envoy-Internal",
		"X-Envoy-Retry-On", "X-Envoy-Max-Retries", "X-Envoy-Upstream-Rq-Timeout-Ms",
		"X-Envoy-Original-Dst-Host", "X-Http-Method-Override", "Strict-Transport-Security",
		"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Accept",
		"Sec-Websocket-Protocol", "Sec-Websocket-Extensions", "Idempotency-Key",
		"Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
		"Access-Control-Allow-Methods", "Access-Control-Expose-Headers",
		"Access-Control-Max-Age", "Access-Control-Request-Headers",
		"Access-Control-Request-Method", "Content-Location", "Content-Security-Policy",
		"Max-Forwards", "Proxy-Authenticate", "X-Content-Type-Options",
		"Grpc-Status-Details-Bin",
	}
	commonNames = strings.Join(names, "")
	lowerNames = strings.ToLower(commonNames)
	m := make(map[string]string, len(names))
	off := 0
	for _, k := range names {
		if c := textproto.CanonicalMIMEHeaderKey(k); c != k || !validName(k) {
			panic("h1: common key not canonical, or not a token: " + k)
		}
		m[k] = commonNames[off : off+len(k)]
		off += len(k)
	}
	return m
}()

// isCommonKey reports whether k is one of commonKeys' strings (or a part of one), and
// so a valid name, by where its bytes are, without reading them.
func isCommonKey(k string) bool {
	_, ok := commonOffset(k)
	return ok
}

// commonOffset is where k's bytes are in commonNames, when they are there.
func commonOffset(k string) (uintptr, bool) {
	off := uintptr(unsafe.Pointer(unsafe.StringData(k))) - uintptr(unsafe.Pointer(unsafe.StringData(commonNames)))
	return off, len(k) > 0 && off < uintptr(len(commonNames))
}

// lowerNames is commonNames in lower case: a common key's lower-case form is the
// same slice of it.
var lowerNames string

// fromLower: the common keys by their lower-case form (as HTTP/2 carries them).
var fromLower = func() map[string]string {
	m := make(map[string]string, len(commonKeys))
	for _, k := range commonKeys {
		m[lowerKey(k)] = k
	}
	return m
}()

// lowerKey is the lower-case form of an interned common key, or "".
func lowerKey(k string) string {
	if off, ok := commonOffset(k); ok {
		return lowerNames[off : off+uintptr(len(k))]
	}
	return ""
}

// CanonicalKey is the map key of header name name (textproto's canonical form), the
// common names without allocating: for codecs whose names arrive in another case
// (HTTP/2's are lower case). name must be a valid token; one that is not is returned
// as textproto would.
func CanonicalKey(name string) string {
	if k, ok := fromLower[name]; ok {
		return k
	}
	var buf [64]byte
	if k, ok := canonicalKey(name, buf[:0]); ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// LowerKey is a header map key as HTTP/2 writes it (lower case), the common names
// without allocating.
func LowerKey(k string) string {
	if l := lowerKey(k); l != "" {
		return l
	}
	if ck, ok := commonKeys[k]; ok { // equal to a common key, not that key's bytes
		return lowerKey(ck)
	}
	for i := 0; i < len(k); i++ {
		if 'A' <= k[i] && k[i] <= 'Z' {
			return strings.ToLower(k)
		}
	}
	return k
}

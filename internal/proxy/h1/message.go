package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// ProtocolError is a request the server must refuse with Status.
type ProtocolError struct {
	Status int
	Reason string
}

func (e *ProtocolError) Error() string { return "h1: " + e.Reason }

func badRequest(reason string) error {
	return &ProtocolError{Status: http.StatusBadRequest, Reason: reason}
}

// Reader parses the messages of one connection; it is not safe for concurrent use.
type Reader struct {
	hr headerReader
	// MaxHeaderBytes bounds a head (request or status line and header fields).
	MaxHeaderBytes int
	// Context, when set, is the context of the requests ReadRequest returns; else
	// theirs is context.Background. Setting it here spares the copy of the request
	// that WithContext makes.
	Context context.Context
	// Buf, when set, is where ReadRequest puts the next request and its URL, instead
	// of new ones. A connection that serves one request at a time sets it once the
	// previous request is over and nothing holds it any more.
	Buf *RequestBuf
	// tmpl is a request that carries Context: http.Request's context can only be set
	// by a copy, so a request in Buf starts as a copy of it.
	tmpl *http.Request
}

// RequestBuf is the storage of one request and its body, for a connection that reuses
// it from one request to the next (Reader.Buf). A body may be held by another goroutine
// after its exchange (an upstream transport still writing it): the connection must set
// Buf again only once nothing holds the last request's body either, or a late read of
// it would read the next request's body.
type RequestBuf struct {
	req  http.Request
	url  url.URL
	body Body
}

// newRequest is the request ReadRequest fills, in r.Buf or new (the one allocation of
// the request), starting as a copy of tmpl.
func (r *Reader) newRequest() *http.Request {
	ctx := r.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if r.tmpl == nil || r.tmpl.Context() != ctx {
		var zero http.Request
		r.tmpl = zero.WithContext(ctx)
	}
	var req *http.Request
	if r.Buf != nil {
		req = &r.Buf.req
	} else {
		req = new(http.Request)
	}
	*req = *r.tmpl
	return req
}

// ReadRequest reads a request head and sets up its body. The request's context is
// r.Context.
func (r *Reader) ReadRequest(br *bufio.Reader) (*http.Request, *Body, error) {
	n := r.MaxHeaderBytes
	if n <= 0 {
		n = 60 << 10
	}
	// RFC 9112 section 2.2: empty lines before a request line are ignored.
	var line []byte
	var err error
	for i := 0; ; i++ {
		if line, err = readLine(br, &n); err != nil {
			return nil, nil, headErr(err)
		}
		if len(line) > 0 {
			break
		}
		if i == 4 {
			return nil, nil, badRequest("empty request line")
		}
	}
	sp1 := indexByte(line, ' ')
	if sp1 <= 0 {
		return nil, nil, badRequest("malformed request line")
	}
	rest := line[sp1+1:]
	sp2 := indexByte(rest, ' ')
	if sp2 <= 0 {
		return nil, nil, badRequest("malformed request line")
	}
	method, target, version := line[:sp1], rest[:sp2], rest[sp2+1:]
	for _, c := range method {
		if !isToken(c) {
			return nil, nil, badRequest("malformed method")
		}
	}
	req := r.newRequest()
	req.Method = internMethod(method)
	switch string(version) {
	case "HTTP/1.1":
		req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.1", 1, 1
	case "HTTP/1.0":
		req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		if len(version) > 5 && string(version[:5]) == "HTTP/" {
			return nil, nil, &ProtocolError{Status: http.StatusHTTPVersionNotSupported, Reason: "unsupported version"}
		}
		return nil, nil, badRequest("malformed request line")
	}
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return nil, nil, badRequest("malformed request target")
		}
	}
	req.RequestURI = string(target)
	var u *url.URL
	if r.Buf != nil {
		u = &r.Buf.url
	}
	if err := parseTarget(req, u); err != nil {
		return nil, nil, err
	}

	h, err := r.hr.readHeader(br, &n, true)
	if err != nil {
		return nil, nil, headErr(err)
	}
	req.Header = h

	// Host: exactly one for HTTP/1.1 (RFC 9112 section 3.2); an absolute-form target
	// overrides it. readHeader kept it out of the map.
	hosts := r.hr.hosts
	if len(hosts) > 1 {
		return nil, nil, badRequest("more than one Host")
	}
	if req.ProtoMinor == 1 && len(hosts) == 0 && req.URL.Host == "" {
		return nil, nil, badRequest("missing Host")
	}
	if len(hosts) == 1 && !validHost(hosts[0]) {
		// net/http's server refuses it too (httpguts.ValidHostHeader): a Host
		// with spaces, '/', '@' or quotes is not an authority, and would be routed
		// and forwarded as one.
		return nil, nil, badRequest("malformed Host")
	}
	if req.URL.Host != "" {
		req.Host = req.URL.Host
	} else if len(hosts) == 1 {
		req.Host = hosts[0]
	}
	req.Close = shouldClose(req.ProtoMinor, r.hr.own[ownConnection])

	if req.ProtoMinor == 0 && r.hr.own[ownTransferEncoding] != nil {
		// RFC 9112 section 6.1: the framing of an HTTP/1.0 message with
		// Transfer-Encoding is faulty. net/http ignores the field on HTTP/1.0 and
		// would read the chunks as the next request; weft refuses it.
		return nil, nil, badRequest("transfer-encoding on HTTP/1.0")
	}
	var into *Body
	if r.Buf != nil {
		into = &r.Buf.body
		*into = Body{}
	}
	body, err := r.framing(br, h, false, req.Method, into)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case body == nil:
		req.Body = http.NoBody
	case body.chunked:
		req.ContentLength = -1
		req.TransferEncoding = chunkedTE
		// The trailer fields arrive at the body's end (net/http fills
		// Request.Trailer the same way, for the keys the Trailer field declared).
		req.Trailer = http.Header{}
		body.Trailer = req.Trailer
		req.Body = body
	default:
		req.ContentLength = body.remaining
		req.Body = body
	}
	return req, body, nil
}

var chunkedTE = []string{"chunked"}

func headErr(err error) error {
	switch {
	case errors.Is(err, ErrHeaderTooLarge):
		return &ProtocolError{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "header section too large"}
	case errors.Is(err, ErrLineTooLong):
		return &ProtocolError{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "line too long"}
	case errors.Is(err, ErrMalformed):
		return badRequest("malformed header field")
	}
	return err
}

// ParseOriginForm parses an origin-form request target (an absolute path and an
// optional query: HTTP/2's :path) as url.ParseRequestURI does, into into (nil: a new
// URL) when the path needs no unescaping, the usual case.
func ParseOriginForm(t string, into *url.URL) (*url.URL, error) {
	if u := parseSafePath(t, into); u != nil {
		return u, nil
	}
	return url.ParseRequestURI(t)
}

// parseSafePath is url.ParseRequestURI's result for an origin-form target whose path
// url.URL.EscapedPath gives back byte for byte, in into (nil: a new URL); nil for any
// other target. Any other byte in the path ('(' '!' '[' '%' ...) makes
// url.ParseRequestURI keep the path as sent in RawPath, or the router would forward it
// re-escaped.
func parseSafePath(t string, into *url.URL) *url.URL {
	if len(t) == 0 || t[0] != '/' {
		return nil
	}
	end := len(t)
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c == '?' {
			end = i
			for _, c := range []byte(t[i:]) {
				if c == '#' || c < ' ' || c == 0x7f {
					return nil // a fragment, or a control byte url.ParseRequestURI refuses
				}
			}
			break
		}
		if c >= 128 || !pathSafe[c] {
			return nil
		}
	}
	u := into
	if u == nil {
		u = new(url.URL)
	}
	*u = url.URL{Path: t[:end]}
	if end < len(t) {
		u.RawQuery = t[end+1:]
		if u.RawQuery == "" {
			u.ForceQuery = true
		}
	}
	return u
}

// parseTarget fills req.URL from the request target: origin-form without
// percent-escapes takes a path of its own without url.ParseRequestURI, the rest goes
// through it (absolute-form from clients using the proxy as HTTP_PROXY, authority-form
// for CONNECT, escaped paths). The fast path fills into, when not nil.
func parseTarget(req *http.Request, into *url.URL) error {
	t := req.RequestURI
	if req.Method == http.MethodConnect && !strings.HasPrefix(t, "/") {
		// authority-form: the Host rules apply to it (it becomes the Host).
		if t == "" || !validHost(t) {
			return badRequest("malformed authority-form target")
		}
		req.URL = &url.URL{Host: t}
		return nil
	}
	if u := parseSafePath(t, into); u != nil {
		req.URL = u
		return nil
	}
	u, err := url.ParseRequestURI(t)
	if err != nil {
		return badRequest("malformed request target")
	}
	switch {
	case t[0] == '/':
	case t == "*":
		// asterisk-form is for OPTIONS only (RFC 9112 section 3.2.4).
		if req.Method != http.MethodOptions {
			return badRequest("asterisk-form target without OPTIONS")
		}
	default:
		// absolute-form: an http or https URI with an authority (RFC 9112 section
		// 3.2.2). net/http takes any URI ("a:0", "mailto:x"), which cannot be
		// routed nor forwarded as a request target.
		if u.Host == "" || !validHost(u.Host) || u.Opaque != "" || !(strings.EqualFold(u.Scheme, "http") || strings.EqualFold(u.Scheme, "https")) {
			return badRequest("malformed absolute-form target")
		}
	}
	req.URL = u
	return nil
}

// validHost reports whether h holds only bytes an authority (reg-name, IP literal,
// port, percent-escape) may hold, the set net/http's server accepts.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 128 || !hostByte[c] {
			return false
		}
	}
	return true
}

var hostByte = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

// pathSafe marks the bytes url.URL.EscapedPath writes as they are (unreserved and the
// sub-delimiters it leaves alone in a path).
var pathSafe = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()

func internMethod(m []byte) string {
	switch string(m) {
	case "GET":
		return http.MethodGet
	case "POST":
		return http.MethodPost
	case "PUT":
		return http.MethodPut
	case "DELETE":
		return http.MethodDelete
	case "HEAD":
		return http.MethodHead
	case "OPTIONS":
		return http.MethodOptions
	case "PATCH":
		return http.MethodPatch
	case "CONNECT":
		return http.MethodConnect
	case "TRACE":
		return http.MethodTrace
	}
	return string(m)
}

// shouldClose applies RFC 9112 section 9.3: HTTP/1.1 persists unless Connection has
// "close"; HTTP/1.0 closes unless it has "keep-alive".
func shouldClose(minor int, conn []string) bool {
	if minor == 0 {
		return !hasToken(conn, "keep-alive")
	}
	return hasToken(conn, "close")
}

// hasToken reports whether a comma-separated header holds token (case-insensitive).
func hasToken(vals []string, token string) bool {
	for _, v := range vals {
		for len(v) > 0 {
			var t string
			if i := strings.IndexByte(v, ','); i >= 0 {
				t, v = v[:i], v[i+1:]
			} else {
				t, v = v, ""
			}
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// ResponseBuf is the storage of one response and its body, for a caller that reuses
// it once nothing holds the response any more (ReadResponseInto).
type ResponseBuf struct {
	resp http.Response
	body Body
}

// framing decides a message's body (RFC 9112 section 6) and sets it up, in into (a zero
// Body) when not nil. nil means no body.
func (r *Reader) framing(br *bufio.Reader, h http.Header, response bool, method string, into *Body) (*Body, error) {
	mk := func() *Body {
		if into == nil {
			into = new(Body)
		}
		into.br, into.hr = br, &r.hr
		return into
	}
	te := r.hr.own[ownTransferEncoding]
	cl := r.hr.own[ownContentLength]
	hasTE, hasCL := te != nil, cl != nil
	if hasTE {
		if len(te) != 1 || !strings.EqualFold(strings.TrimSpace(te[0]), "chunked") {
			if response {
				return nil, errors.New("h1: unsupported transfer-encoding in response")
			}
			return nil, &ProtocolError{Status: http.StatusNotImplemented, Reason: "unsupported transfer-encoding"}
		}
		if hasCL {
			// Both: a smuggling attempt or a broken peer (RFC 9112 section 6.3).
			if !response {
				return nil, badRequest("both transfer-encoding and content-length")
			}
			delete(h, "Content-Length")
		}
		delete(h, "Transfer-Encoding")
		b := mk()
		b.chunked = true
		return b, nil
	}
	if hasCL {
		n, err := parseContentLength(cl)
		if err != nil {
			if response {
				return nil, fmt.Errorf("h1: response: %w", err)
			}
			return nil, badRequest(err.Error())
		}
		if n == 0 {
			return nil, nil
		}
		b := mk()
		b.remaining = n
		return b, nil
	}
	if response {
		b := mk()
		b.toClose = true
		return b, nil
	}
	return nil, nil
}

// parseContentLength accepts one decimal value, or repeats of the same value.
func parseContentLength(vals []string) (int64, error) {
	if len(vals) == 1 {
		if x, ok := decimal(vals[0]); ok {
			return x, nil // the usual field: one value, digits only
		}
	}
	var n int64 = -1
	for _, v := range vals {
		for part := range strings.SplitSeq(v, ",") { // no allocation, unlike Split
			x, ok := decimal(strings.TrimSpace(part))
			if !ok {
				return 0, errors.New("invalid content-length")
			}
			if n >= 0 && x != n {
				return 0, errors.New("conflicting content-length")
			}
			n = x
		}
	}
	return n, nil
}

// decimal parses 1 to 18 decimal digits.
func decimal(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var x int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		x = x*10 + int64(c-'0')
	}
	return x, true
}

// ReadResponse reads a response head and sets up its body for a request of method
// (a response to HEAD has no body).
func (r *Reader) ReadResponse(br *bufio.Reader, method string) (*http.Response, *Body, error) {
	return r.ReadResponseInto(br, method, nil)
}

// ReadResponseInto is ReadResponse with the response and its body in into, which it
// clears first; a nil into allocates them (together: they live and die together).
func (r *Reader) ReadResponseInto(br *bufio.Reader, method string, into *ResponseBuf) (*http.Response, *Body, error) {
	n := r.MaxHeaderBytes
	if n <= 0 {
		n = 60 << 10
	}
	line, err := readLine(br, &n)
	if err != nil {
		return nil, nil, err
	}
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return nil, nil, fmt.Errorf("h1: malformed status line %q", truncate(line))
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil, nil, fmt.Errorf("h1: malformed status code %q", truncate(line))
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return nil, nil, fmt.Errorf("h1: malformed status code %q", truncate(line))
	}
	rb := into
	if rb == nil {
		rb = new(ResponseBuf)
	}
	*rb = ResponseBuf{resp: http.Response{StatusCode: code, ProtoMajor: 1}}
	resp := &rb.resp
	if line[7] == '1' {
		resp.Proto, resp.ProtoMinor = "HTTP/1.1", 1
	} else {
		resp.Proto = "HTTP/1.0"
	}
	reason := ""
	if len(line) > 13 {
		reason = string(line[13:])
	}
	resp.Status = statusString(code, reason)
	h, err := r.hr.readHeader(br, &n, false)
	if err != nil {
		return nil, nil, err
	}
	resp.Header = h
	resp.Close = shouldClose(resp.ProtoMinor, r.hr.own[ownConnection])
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified || method == http.MethodHead {
		resp.ContentLength = 0
		if method == http.MethodHead {
			if cl := r.hr.own[ownContentLength]; cl != nil {
				if v, err := parseContentLength(cl); err == nil {
					resp.ContentLength = v
				}
			}
		}
		resp.Body = http.NoBody
		return resp, nil, nil
	}
	if resp.ProtoMinor == 0 && r.hr.own[ownTransferEncoding] != nil {
		// RFC 9112 section 6.1: faulty framing; read it, then close.
		resp.Close = true
	}
	body, err := r.framing(br, h, true, method, &rb.body)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case body == nil:
		resp.Body = http.NoBody
	case body.chunked:
		resp.ContentLength = -1
		resp.TransferEncoding = chunkedTE
		resp.Trailer = http.Header{}
		body.Trailer = resp.Trailer
		resp.Body = body
	case body.toClose:
		resp.ContentLength = -1
		resp.Close = true
		resp.Body = body
	default:
		resp.ContentLength = body.remaining
		resp.Body = body
	}
	return resp, body, nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// Status is net/http's Response.Status for code ("200 OK"), without allocating for
// the codes that have a standard reason phrase.
func Status(code int) string { return statusString(code, "") }

// statusString is net/http's Response.Status ("200 OK"), without allocating for the
// standard reason phrases.
func statusString(code int, reason string) string {
	if code < len(statusStrings) && statusStrings[code] != "" && (reason == "" || reason == http.StatusText(code)) {
		return statusStrings[code]
	}
	if reason == "" {
		return strconv.Itoa(code)
	}
	return strconv.Itoa(code) + " " + reason
}

var statusStrings, statusLines = func() (s, l [600]string) {
	for c := 100; c < 600; c++ {
		if t := http.StatusText(c); t != "" {
			s[c] = strconv.Itoa(c) + " " + t
			l[c] = "HTTP/1.1 " + s[c] + "\r\n"
		}
	}
	return
}()

// StatusLine is the HTTP/1.1 status line with CRLF for code.
func StatusLine(code int) string {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " status code " + strconv.Itoa(code) + "\r\n"
}

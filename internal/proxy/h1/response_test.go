package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestReadResponse compares with http.ReadResponse on the same bytes.
func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, raw, method string
		status            string
		cl                int64
		close             bool
		body              string
		bodyless          bool // no Body to read (the connection stays with the reader)
	}{
		{"200 with length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET", "200 OK", 5, false, "hello", false},
		{"custom reason", "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n", "GET", "200 Fine Thanks", 0, false, "", true},
		// net/http's Status is "404" here; weft fills in the standard reason.
		{"no reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", "GET", "404 Not Found", 0, false, "", true},
		{"no reason with space", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", "GET", "404 Not Found", 0, false, "", true},
		{"unknown code", "HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n\r\n", "GET", "599 Odd", 0, false, "", true},
		{"HTTP/1.0 close-delimited", "HTTP/1.0 200 OK\r\n\r\nuntil close", "GET", "200 OK", -1, true, "until close", false},
		{"HTTP/1.1 close-delimited", "HTTP/1.1 200 OK\r\n\r\nuntil close", "GET", "200 OK", -1, true, "until close", false},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", "GET", "200 OK", 2, false, "ok", false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", "GET", "200 OK", 2, true, "ok", false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET", "200 OK", -1, false, "ok", false},
		{"chunked wins over length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET", "200 OK", -1, false, "ok", false},
		{"204 no body", "HTTP/1.1 204 No Content\r\n\r\n", "GET", "204 No Content", 0, false, "", true},
		{"304 with length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", "GET", "304 Not Modified", 0, false, "", true},
		{"HEAD with length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "HEAD", "200 OK", 100, false, "", true},
		{"HEAD chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD", "200 OK", 0, false, "", true},
		{"100 continue", "HTTP/1.1 100 Continue\r\n\r\n", "POST", "100 Continue", 0, false, "", true},
		{"103 early hints", "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n", "GET", "103 Early Hints", 0, false, "", true},
		{"101 switching", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "GET", "101 Switching Protocols", 0, false, "", true},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "GET", "200 OK", 2, false, "ok", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Reader
			resp, body, err := r.ReadResponse(bufio.NewReader(strings.NewReader(tc.raw)), tc.method)
			if err != nil {
				t.Fatalf("ReadResponse: %v", err)
			}
			if resp.Status != tc.status || resp.ContentLength != tc.cl || resp.Close != tc.close {
				t.Errorf("Status %q CL %d Close %v; want %q %d %v", resp.Status, resp.ContentLength, resp.Close, tc.status, tc.cl, tc.close)
			}
			if (body == nil) != tc.bodyless {
				t.Errorf("body %v, want bodyless=%v", body, tc.bodyless)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != tc.body {
				t.Errorf("body %q %v, want %q", b, err, tc.body)
			}
			ref, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.raw)), &http.Request{Method: tc.method})
			if err != nil {
				t.Fatalf("net/http: %v", err)
			}
			rb, _ := io.ReadAll(ref.Body)
			if ref.StatusCode != resp.StatusCode || (ref.Status != resp.Status && strings.TrimSpace(ref.Status) != strconv.Itoa(resp.StatusCode)) || ref.Proto != resp.Proto || ref.ProtoMinor != resp.ProtoMinor {
				t.Errorf("status %q %s, net/http %q %s", resp.Status, resp.Proto, ref.Status, ref.Proto)
			}
			if ref.Close != resp.Close {
				t.Errorf("Close %v, net/http %v", resp.Close, ref.Close)
			}
			if string(rb) != string(b) {
				t.Errorf("body %q, net/http %q", b, rb)
			}
			if ref.ContentLength != resp.ContentLength && !(tc.method == "HEAD" && tc.cl == 0) {
				t.Errorf("ContentLength %d, net/http %d", resp.ContentLength, ref.ContentLength)
			}
		})
	}
}

func TestReadResponseRefuses(t *testing.T) {
	for _, raw := range []string{
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 abc OK\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.1200 OK\r\n\r\n",
		"http/1.1 200 OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n",
	} {
		var r Reader
		if resp, _, err := r.ReadResponse(bufio.NewReader(strings.NewReader(raw)), "GET"); err == nil {
			t.Errorf("ReadResponse(%q) accepted: %s", raw, resp.Status)
		}
	}
}

// TestWriteRequestRoundTrip writes requests with WriteRequestHead and CopyBody /
// CopyKnown and reads them back with both weft's and net/http's parsers.
func TestWriteRequestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160 KB
	for _, tc := range []struct {
		name   string
		method string
		target string
		host   string
		body   []byte
		cl     int64 // request ContentLength; -1 chunked
		known  bool  // CopyKnown instead of CopyBody
		close  bool
		tr     http.Header
	}{
		{"GET", "GET", "/a/b?c=d", "h.example", nil, 0, false, false, nil},
		{"POST empty", "POST", "/p", "h", nil, 0, false, false, nil},
		{"POST known", "POST", "/p", "h", []byte("hello"), 5, true, false, nil},
		{"POST copy", "POST", "/p", "h", []byte("hello"), 5, false, true, nil},
		{"PUT large known", "PUT", "/p", "h", big, int64(len(big)), true, false, nil},
		{"PUT large chunked", "PUT", "/p", "h", big, -1, false, false, nil},
		{"chunked with trailer", "POST", "/p", "h", []byte("abc"), -1, false, false, http.Header{"X-Sum": {"1"}}},
		{"escaped path", "GET", "/a%2Fb/c%20d?x=%41", "h", nil, 0, false, false, nil},
		{"sub-delims path", "GET", "/items(1)/a!b*c'd[0]", "h", nil, 0, false, false, nil},
		{"empty query", "GET", "/p?", "h", nil, 0, false, false, nil},
		{"OPTIONS asterisk", "OPTIONS", "*", "h", nil, 0, false, false, nil},
		{"CONNECT", "CONNECT", "db.example:5432", "db.example:5432", nil, 0, false, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://x"+tc.target, nil)
			if tc.target == "*" || tc.method == http.MethodConnect {
				raw := tc.method + " " + tc.target + " HTTP/1.1\r\nHost: " + tc.host + "\r\n\r\n"
				req, _, err = readReq(t, raw, 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			req.Close = tc.close
			req.Header.Set("X-Multi", "1")
			req.Header.Add("X-Multi", "2")
			req.Header.Set("User-Agent", "t")
			if tc.body != nil {
				req.Body = io.NopCloser(bytes.NewReader(tc.body))
				req.ContentLength = tc.cl
			}
			var buf bytes.Buffer
			bw := bufio.NewWriterSize(&buf, 4096)
			chunked := WriteRequestHead(bw, req, tc.body != nil)
			if chunked != (tc.cl < 0) {
				t.Fatalf("chunked = %v for ContentLength %d", chunked, tc.cl)
			}
			if tc.body != nil {
				if tc.known {
					err = CopyKnown(bw, req.Body, tc.cl)
				} else {
					err = CopyBody(bw, req.Body, chunked, tc.cl, tc.tr, make([]byte, 1000))
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := bw.Flush(); err != nil {
				t.Fatal(err)
			}
			raw := buf.String()
			got, gotBody, err := readReq(t, raw, 0)
			if err != nil {
				t.Fatalf("reading back %q: %v", truncate([]byte(raw)), err)
			}
			if got.Method != tc.method || got.RequestURI != tc.target || got.Host != tc.host || got.Close != tc.close {
				t.Fatalf("read back %s %s host %q close %v", got.Method, got.RequestURI, got.Host, got.Close)
			}
			if !bytes.Equal(gotBody, tc.body) {
				t.Fatalf("body of %d bytes, want %d", len(gotBody), len(tc.body))
			}
			if v := got.Header["X-Multi"]; len(v) != 2 || v[0] != "1" || v[1] != "2" {
				t.Fatalf("X-Multi = %q", v)
			}
			ref, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				t.Fatalf("net/http reading it: %v", err)
			}
			refBody, err := io.ReadAll(ref.Body)
			if err != nil || !bytes.Equal(refBody, tc.body) {
				t.Fatalf("net/http body of %d bytes, %v", len(refBody), err)
			}
			if tc.tr != nil && !equalHeader(ref.Trailer, tc.tr) {
				t.Fatalf("net/http trailer %v, want %v", ref.Trailer, tc.tr)
			}
		})
	}
}

// TestCopyBodyLengthMismatch: a body that ends early or runs over its Content-Length is
// an error, never a broken frame on the connection.
func TestCopyBodyLengthMismatch(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	if err := CopyBody(bw, strings.NewReader("abc"), false, 5, nil, make([]byte, 8)); err != ErrBodyLength {
		t.Fatalf("short: %v", err)
	}
	if err := CopyBody(bw, strings.NewReader("abcdefg"), false, 5, nil, make([]byte, 8)); err != ErrBodyLength {
		t.Fatalf("long: %v", err)
	}
	if err := CopyKnown(bw, strings.NewReader("abc"), 5); err != ErrBodyLength {
		t.Fatalf("CopyKnown short: %v", err)
	}
}

// TestParseContentLength: one value or repeats of one value, digits only.
func TestParseContentLength(t *testing.T) {
	for _, c := range []struct {
		vals []string
		want int64 // -2: an error
	}{
		{[]string{"1024"}, 1024},
		{[]string{"0"}, 0},
		{[]string{"999999999999999999"}, 999999999999999999},
		{[]string{"5, 5"}, 5},
		{[]string{"5", "5"}, 5},
		{[]string{" 7 "}, 7},
		{[]string{"5,6"}, -2},
		{[]string{"5", "6"}, -2},
		{[]string{""}, -2},
		{[]string{"+5"}, -2},
		{[]string{"-1"}, -2},
		{[]string{"1e3"}, -2},
		{[]string{"5,"}, -2},
		{[]string{"1000000000000000000"}, -2}, // 19 digits
	} {
		n, err := parseContentLength(c.vals)
		if (err != nil) != (c.want == -2) || (err == nil && n != c.want) {
			t.Errorf("parseContentLength(%q) = %d, %v; want %d", c.vals, n, err, c.want)
		}
	}
}

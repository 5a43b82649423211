package h1

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// TestHTTP10RequestWithTransferEncoding: RFC 9112 section 6.1: a server that receives an
// HTTP/1.0 message with Transfer-Encoding must treat its framing as faulty. net/http
// ignores the field on HTTP/1.0 and frames by Content-Length, so the chunked bytes would
// be read as the next request: weft refuses the request.
func TestHTTP10RequestWithTransferEncoding(t *testing.T) {
	for _, raw := range []string{
		"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
	} {
		if _, _, err := readReq(t, raw, 0); statusOf(err) != http.StatusBadRequest {
			t.Errorf("%q: %v, want 400", raw, err)
		}
	}
}

// TestHTTP10ResponseWithTransferEncoding: RFC 9112 section 6.1: framing of an HTTP/1.0
// message with Transfer-Encoding is faulty; the connection must close after it.
func TestHTTP10ResponseWithTransferEncoding(t *testing.T) {
	var r Reader
	raw := "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
	resp, _, err := r.ReadResponse(bufio.NewReader(strings.NewReader(raw)), "GET")
	if err == nil && !resp.Close {
		t.Fatalf("HTTP/1.0 response with Transfer-Encoding keeps the connection")
	}
}

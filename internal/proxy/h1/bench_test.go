package h1

import (
	"bufio"
	"strings"
	"testing"
)

// BenchmarkReadRequest reads the head a server sidecar gets from a client sidecar
// (fortio's request after the client sidecar's additions), again and again on one
// reader, as a connection does; the header map goes back each time.
func BenchmarkReadRequest(b *testing.B) {
	const head = "POST /echo HTTP/1.1\r\nHost: 127.0.0.1:18001\r\nUser-Agent: fortio.org/fortio-1.68.2\r\n" +
		"Content-Length: 1024\r\nContent-Type: application/octet-stream\r\nX-Forwarded-Proto: http\r\n" +
		"X-Request-Id: 3f9c1f7e-5d2a-4c1b-9a77-0b8e2d6c4a11\r\nX-Envoy-Expected-Rq-Timeout-Ms: 15000\r\n" +
		"X-Custom-Tenant: blue\r\n\r\n"
	read := rereader(b, &Reader{}, head)
	b.ReportAllocs()
	for b.Loop() {
		read()
	}
}

// rereader returns a function that reads head with r again each time it is called, as a
// connection reads its requests one after the other, and gives the header map back.
func rereader(tb testing.TB, r *Reader, head string) func() {
	sr := strings.NewReader(head)
	br := bufio.NewReaderSize(sr, 4096)
	return func() {
		sr.Reset(head)
		br.Reset(sr)
		req, _, err := r.ReadRequest(br)
		if err != nil {
			tb.Fatal(err)
		}
		RecycleHeader(req.Header)
	}
}

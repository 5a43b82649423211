package listener

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// recordHello captures the bytes of a real Go ClientHello.
func recordHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	defer srv.Close()
	go func() {
		_ = tls.Client(cli, cfg).Handshake()
		cli.Close()
	}()
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := srv.Read(buf)
		out = append(out, buf[:n]...)
		if _, st := clientHello(out); st == done || err != nil {
			return out
		}
	}
}

func TestClientHelloParse(t *testing.T) {
	hello := recordHello(t, &tls.Config{ServerName: "Reviews.Default.svc", NextProtos: []string{"istio-peer-exchange", "h2"}})
	var d detected
	if st := inspectTLS(hello, &d); st != done {
		t.Fatal("full hello: need more")
	}
	if d.transport != "tls" || d.sni != "reviews.default.svc" || !slices.Equal(d.alpn, []string{"istio-peer-exchange", "h2"}) {
		t.Fatalf("detected %+v", d)
	}
	// Every strict prefix asks for more bytes, never decides wrongly.
	for n := 0; n < len(hello); n++ {
		var d detected
		if st := inspectTLS(hello[:n], &d); st != needMore || d.transport != "" {
			t.Fatalf("prefix %d: state %v transport %q", n, st, d.transport)
		}
	}
	// The same hello split over two records.
	body := hello[5:]
	split := len(body) / 2
	var two []byte
	for _, part := range [][]byte{body[:split], body[split:]} {
		two = append(two, 22, 3, 1, 0, 0)
		binary.BigEndian.PutUint16(two[len(two)-2:], uint16(len(part)))
		two = append(two, part...)
	}
	d = detected{}
	if st := inspectTLS(two, &d); st != done || d.sni != "reviews.default.svc" {
		t.Fatalf("two records: %v %+v", st, d)
	}
	// No SNI, no ALPN.
	d = detected{}
	if inspectTLS(recordHello(t, &tls.Config{InsecureSkipVerify: true}), &d); d.transport != "tls" || d.sni != "" || d.alpn != nil {
		t.Fatalf("bare hello: %+v", d)
	}
}

func TestInspectTLSNotTLS(t *testing.T) {
	for _, in := range []string{"G", "GET / HTTP/1.1\r\n", "\x16\x01", "\x16\x03\x01\x00\x00", "\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "SSH-2.0-OpenSSH"} {
		var d detected
		if st := inspectTLS([]byte(in), &d); st != done || d.transport != "raw_buffer" {
			t.Errorf("%q: state %v transport %q", in, st, d.transport)
		}
	}
}

func TestInspectHTTP(t *testing.T) {
	tests := []struct {
		in    string
		state parseState
		alpn  string
	}{
		{"GET / HTTP/1.1\r\n", done, "http/1.1"},
		{"OPTIONS * HTTP/1.0\r\nHost: x\r\n", done, "http/1.0"},
		{"M-SEARCH /x HTTP/1.1\r\n", done, "http/1.1"},
		{"GET / HTTP/1.", needMore, ""},
		{"GET /", needMore, ""},
		{"GET", needMore, ""},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", done, "h2c"},
		{"PRI * HTTP/2.0\r\n", needMore, ""},
		{"GET / HTTP/2.0\r\n", done, ""},
		{"GET  / HTTP/1.1\r\n", done, ""},
		{"\x16\x03\x01", done, ""},
		{"hello world\r\n", done, ""},
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n", done, ""},
		{"GET /a\x01b HTTP/1.1\r\n", done, ""},
	}
	for _, tc := range tests {
		var d detected
		st := inspectHTTP([]byte(tc.in), &d)
		got := ""
		if len(d.alpn) == 1 {
			got = d.alpn[0]
		}
		if st != tc.state || got != tc.alpn {
			t.Errorf("%q: state %v alpn %q, want %v %q", tc.in, st, got, tc.state, tc.alpn)
		}
	}
}

func TestParseSockaddr(t *testing.T) {
	v4 := []byte{2, 0, 0x23, 0x78, 10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0} // AF_INET, port 9080
	v6 := make([]byte, 28)
	binary.LittleEndian.PutUint16(v6, 10)
	binary.BigEndian.PutUint16(v6[2:], 443)
	copy(v6[8:], netip.MustParseAddr("fd00::1").AsSlice())
	mapped := slices.Clone(v6)
	copy(mapped[8:], netip.MustParseAddr("::ffff:10.0.0.7").AsSlice())
	tests := []struct {
		name string
		in   []byte
		want string
		err  bool
	}{
		{"ipv4", v4, "10.1.2.3:9080", false},
		{"ipv6", v6, "[fd00::1]:443", false},
		{"ipv4-mapped", mapped, "10.0.0.7:443", false},
		{"short v4", v4[:6], "", true},
		{"short v6", v6[:20], "", true},
		{"bad family", []byte{1, 0, 0, 0}, "", true},
		{"empty", nil, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSockaddr(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err %v", err)
			}
			if err == nil && got.String() != tc.want {
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}

func TestOriginalDstNotRedirected(t *testing.T) {
	// A plain loopback connection: SO_ORIGINAL_DST either fails (no conntrack) or
	// returns the local address itself.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if dst, ok := originalDst(c); ok && dst != addrPort(c.LocalAddr()) {
		t.Fatalf("original dst %v for a connection that was not redirected (local %v)", dst, c.LocalAddr())
	}
	if _, ok := originalDst(pipeConn()); ok {
		t.Fatal("original dst of a non-TCP conn")
	}
}

func pipeConn() net.Conn {
	a, b := net.Pipe()
	b.Close()
	return a
}

func TestPeekerBounds(t *testing.T) {
	cli, srv := net.Pipe()
	defer cli.Close()
	go func() {
		chunk := bytes.Repeat([]byte("A"), 1024)
		for i := 0; i < 100; i++ {
			if _, err := cli.Write(chunk); err != nil {
				return
			}
		}
	}()
	p := &peeker{conn: srv, deadline: time.Now().Add(5 * time.Second)}
	for p.more() {
	}
	if len(p.buf) != maxPeek {
		t.Fatalf("peeked %d bytes, want the %d cap", len(p.buf), maxPeek)
	}
	srv.Close()

	// A deadline in the past times out.
	c2, s2 := net.Pipe()
	defer c2.Close()
	p = &peeker{conn: s2, deadline: time.Now().Add(-time.Second)}
	if p.more() || !p.timedOut {
		t.Fatalf("want timeout, got more=%v timedOut=%v", true, p.timedOut)
	}
}

func FuzzClientHello(f *testing.F) {
	f.Add(recordHello(f, &tls.Config{ServerName: "a.example.com", NextProtos: []string{"h2"}}))
	f.Add([]byte("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d detected
		st := inspectTLS(b, &d)
		if st == done && d.transport == "" {
			t.Fatal("done without a transport")
		}
		// Deciding is stable as bytes are appended.
		if st == done {
			var d2 detected
			if inspectTLS(append(slices.Clone(b), 0, 0, 0), &d2) != done || d2.transport != d.transport || d2.sni != d.sni {
				t.Fatalf("verdict changed with more bytes: %+v vs %+v", d, d2)
			}
		}
	})
}

func FuzzInspectHTTP(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte(h2Preface))
	f.Add([]byte("\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d detected
		if inspectHTTP(b, &d) == done {
			var d2 detected
			if inspectHTTP(append(slices.Clone(b), 'x'), &d2) != done || !slices.Equal(d.alpn, d2.alpn) {
				t.Fatalf("verdict changed with more bytes: %v vs %v", d.alpn, d2.alpn)
			}
		}
	})
}

func BenchmarkInspectTLS(b *testing.B) {
	b.ReportAllocs()
	benchInspectTLS(b, b.N)
}

// TestBenchInspectTLSSize1 keeps the benchmark running in the suite.
func TestBenchInspectTLSSize1(t *testing.T) { benchInspectTLS(t, 1) }

func benchInspectTLS(tb testing.TB, n int) {
	hello := recordHello(tb, &tls.Config{ServerName: "outbound_.9080_._.reviews.default.svc.cluster.local", NextProtos: []string{"istio-peer-exchange", "istio"}})
	if b, ok := tb.(*testing.B); ok {
		b.SetBytes(int64(len(hello)))
		b.ResetTimer()
	}
	for i := 0; i < n; i++ {
		var d detected
		if inspectTLS(hello, &d) != done || d.transport != "tls" {
			tb.Fatal("not detected")
		}
	}
}

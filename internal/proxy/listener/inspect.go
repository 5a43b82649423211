package listener

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strings"
	"time"
)

// Listener filter inspection: the first bytes of a connection are read into a buffer
// (never more than maxPeek), parsed by the tls and http inspectors, and replayed to the
// filter chain by replayConn. Envoy peeks with MSG_PEEK; reading and replaying is the same
// to the filter chain and works for TLS termination too.

const (
	// maxPeek bounds what the inspectors read: a ClientHello with post-quantum key
	// shares is a few KiB; Envoy's tls_inspector gives up at 64 KiB as well.
	maxPeek      = 64 << 10
	peekChunk    = 4 << 10
	transportRaw = "raw_buffer"
	transportTLS = "tls"
)

// detected is what the listener filters learnt about a connection.
type detected struct {
	transport string   // "tls" or "raw_buffer" ("" until an inspector decides)
	sni       string   // lower-cased server name from the ClientHello
	alpn      []string // ClientHello ALPN list, or the http_inspector's protocol
}

// peeker reads a connection's first bytes for the inspectors.
type peeker struct {
	conn     net.Conn
	buf      []byte
	eof      bool // the peer closed or the read failed: no more bytes will come
	timedOut bool
	deadline time.Time // zero: no listener_filters_timeout
}

// more reads at least one more byte; false when no more can be had (EOF, error,
// timeout, or maxPeek reached).
func (p *peeker) more() bool {
	if p.eof || p.timedOut || len(p.buf) >= maxPeek {
		return false
	}
	if cap(p.buf)-len(p.buf) < 512 {
		n := cap(p.buf) * 2
		if n < peekChunk {
			n = peekChunk
		}
		if n > maxPeek {
			n = maxPeek
		}
		nb := make([]byte, len(p.buf), n)
		copy(nb, p.buf)
		p.buf = nb
	}
	if !p.deadline.IsZero() {
		_ = p.conn.SetReadDeadline(p.deadline)
	}
	n, err := p.conn.Read(p.buf[len(p.buf):cap(p.buf)])
	p.buf = p.buf[:len(p.buf)+n]
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			p.timedOut = true
		} else {
			p.eof = true
		}
	}
	return n > 0 || err == nil
}

// parseState is an inspector's verdict on the bytes so far.
type parseState uint8

const (
	needMore parseState = iota
	done
)

// inspectTLS decides whether the bytes start a TLS ClientHello and extracts SNI and
// ALPN (envoy.filters.listener.tls_inspector). Anything that is not a well-formed
// ClientHello is raw_buffer, as in Envoy.
func inspectTLS(b []byte, d *detected) parseState {
	hello, st := clientHello(b)
	if st == needMore {
		return needMore
	}
	if hello == nil {
		d.transport = transportRaw
		return done
	}
	d.transport = transportTLS
	if hello.sni != "" {
		d.sni = strings.ToLower(hello.sni)
	}
	if len(hello.alpn) > 0 {
		d.alpn = hello.alpn
	}
	return done
}

type helloInfo struct {
	sni  string
	alpn []string
}

// clientHello parses a TLS ClientHello that may span several handshake records. It
// returns (nil, done) when b cannot be one, (nil, needMore) when more bytes are needed.
func clientHello(b []byte) (*helloInfo, parseState) {
	// Record layer: type 22 (handshake), legacy version 3.x, length <= 2^14 (+2048
	// tolerated for old stacks).
	var msg []byte
	want := -1 // handshake message length incl. 4-byte header, once known
	for off := 0; ; {
		if len(b)-off < 5 {
			if off < len(b) && b[off] != 22 {
				return nil, done
			}
			if len(b)-off >= 2 && b[off+1] != 3 {
				return nil, done
			}
			return nil, needMore
		}
		if b[off] != 22 || b[off+1] != 3 {
			return nil, done
		}
		rl := int(binary.BigEndian.Uint16(b[off+3:]))
		if rl == 0 || rl > 1<<14+2048 {
			return nil, done
		}
		if len(b)-off-5 < rl {
			// Use what this record already holds to fail early on a bad header.
			part := append(msg, b[off+5:]...)
			if len(part) >= 1 && part[0] != 1 {
				return nil, done
			}
			return nil, needMore
		}
		if off == 0 {
			msg = b[5 : 5+rl : 5+rl] // usually the whole hello: no copy (cap set: appends copy)
		} else {
			msg = append(msg, b[off+5:off+5+rl]...)
		}
		off += 5 + rl
		if want < 0 && len(msg) >= 4 {
			if msg[0] != 1 { // client_hello
				return nil, done
			}
			want = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if want > maxPeek {
				return nil, done
			}
		}
		if want >= 0 && len(msg) >= want {
			msg = msg[:want]
			break
		}
	}
	h, ok := parseHelloBody(msg[4:])
	if !ok {
		return nil, done
	}
	return h, done
}

// cursor reads a ClientHello body; any overrun sets bad.
type cursor struct {
	b   []byte
	bad bool
}

func (c *cursor) take(n int) []byte {
	if c.bad || n > len(c.b) {
		c.bad = true
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) u8() int {
	v := c.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (c *cursor) u16() int {
	v := c.take(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func parseHelloBody(body []byte) (*helloInfo, bool) {
	c := &cursor{b: body}
	c.take(2)       // legacy_version
	c.take(32)      // random
	c.take(c.u8())  // session id
	c.take(c.u16()) // cipher suites
	c.take(c.u8())  // compression methods
	if c.bad {
		return nil, false
	}
	h := &helloInfo{}
	if len(c.b) == 0 {
		return h, true // no extensions
	}
	exts := &cursor{b: c.take(c.u16())}
	if c.bad {
		return nil, false
	}
	for len(exts.b) > 0 && !exts.bad {
		typ := exts.u16()
		data := &cursor{b: exts.take(exts.u16())}
		if exts.bad {
			return nil, false
		}
		switch typ {
		case 0: // server_name
			list := &cursor{b: data.take(data.u16())}
			for len(list.b) > 0 && !list.bad {
				nt := list.u8()
				name := list.take(list.u16())
				if nt == 0 && !list.bad && h.sni == "" {
					h.sni = string(name)
				}
			}
			if list.bad || data.bad {
				return nil, false
			}
		case 16: // application_layer_protocol_negotiation
			list := &cursor{b: data.take(data.u16())}
			for len(list.b) > 0 && !list.bad {
				p := list.take(list.u8())
				if !list.bad && len(p) > 0 {
					h.alpn = append(h.alpn, string(p))
				}
			}
			if list.bad || data.bad {
				return nil, false
			}
		}
	}
	return h, !exts.bad
}

// The HTTP/2 connection preface (RFC 9113 section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// inspectHTTP tells HTTP/1.x from h2c prior knowledge by the first bytes
// (envoy.filters.listener.http_inspector): "http/1.0", "http/1.1" or "h2c" as Envoy
// sets them for application_protocols. Anything else leaves d unchanged.
func inspectHTTP(b []byte, d *detected) parseState {
	if len(b) == 0 {
		return needMore
	}
	n := min(len(b), len(h2Preface))
	if string(b[:n]) == h2Preface[:n] {
		if n < len(h2Preface) {
			return needMore
		}
		d.alpn = []string{"h2c"}
		return done
	}
	// Request line: method SP request-target SP HTTP-version CRLF, checked byte by
	// byte so that a non-HTTP protocol is told apart as early as its first bytes.
	i := 0
	for ; i < len(b) && b[i] != ' '; i++ {
		if !isTokenChar(b[i]) || i >= 20 {
			return done
		}
	}
	if i == len(b) {
		return needMore
	}
	if i == 0 {
		return done
	}
	i++
	for ; i < len(b) && b[i] != ' '; i++ {
		if b[i] < 0x21 || b[i] == 0x7f {
			return done
		}
	}
	if i == len(b) {
		return needMore
	}
	rest := b[i+1:]
	for _, v := range [...]struct{ line, proto string }{{"HTTP/1.1\r\n", "http/1.1"}, {"HTTP/1.0\r\n", "http/1.0"}} {
		if len(rest) < len(v.line) {
			if string(rest) == v.line[:len(rest)] {
				return needMore
			}
			continue
		}
		if string(rest[:len(v.line)]) == v.line {
			d.alpn = []string{v.proto}
			return done
		}
	}
	return done
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

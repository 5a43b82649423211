package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx/tlstest"
	"github.com/weft-mesh/weft/internal/testnet"
)

func TestTwoListenersRawTCP(t *testing.T) {
	f := newFixture(t)
	f.update(t, simpleListener(t, "a", "tag-a"), simpleListener(t, "b", "tag-b"))
	for _, tc := range []struct{ name, tag string }{{"a", "tag-a"}, {"b", "tag-b"}} {
		c := dialRaw(t, f.addr(t, tc.name))
		if got := c.tag(t); got != tc.tag {
			t.Fatalf("listener %s: tag %q, want %q", tc.name, got, tc.tag)
		}
		c.echo(t, "hello "+tc.name)
		got := <-f.fac.get(tc.tag)[0].seen
		if got.Listener != tc.name || got.Chain != "chain-"+tc.tag || got.TLS || !got.Remote.Addr().IsLoopback() {
			t.Fatalf("conn metadata %+v", got)
		}
		if got.Local.String() != f.addr(t, tc.name) {
			t.Fatalf("Local %v, want %v", got.Local, f.addr(t, tc.name))
		}
		c.Close()
	}
	// Stats are named by listener (port 0) and go back to zero active.
	if v := statValue(f.stats, "listener.a.downstream_cx_total"); v != 1 {
		t.Fatalf("listener.a.downstream_cx_total = %d", v)
	}
	eventually(t, "active connections to drop", func() bool {
		return statValue(f.stats, "listener.a.downstream_cx_active") == 0 && statValue(f.stats, "listener.b.downstream_cx_active") == 0
	})
}

func TestAddressStatName(t *testing.T) {
	l := &listenerv3.Listener{Name: "virtualOutbound"}
	if got := statName(l, netip.MustParseAddrPort("0.0.0.0:15001")); got != "0.0.0.0_15001" {
		t.Fatalf("statName = %q", got)
	}
	l.StatPrefix = "outbound"
	if got := statName(l, netip.MustParseAddrPort("0.0.0.0:15001")); got != "outbound" {
		t.Fatalf("statName = %q", got)
	}
}

func TestNoFilterChainMatchClosesAndCounts(t *testing.T) {
	f := newFixture(t)
	l := simpleListener(t, "strict", "never")
	l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspector(t)}
	f.update(t, l)
	c := dialRaw(t, f.addr(t, "strict"))
	_, _ = io.WriteString(c, "plain text\n")
	if got := c.tag(t); got != "" {
		t.Fatalf("served by %q, want closed", got)
	}
	eventually(t, "no_filter_chain_match", func() bool {
		return statValue(f.stats, "listener.strict.no_filter_chain_match") == 1
	})
}

// inspectionListener routes by what the inspectors find; chains without a transport
// socket pass TLS through, one chain terminates TLS.
func inspectionListener(t *testing.T, serverTLS *tlsv3.DownstreamTlsContext) *listenerv3.Listener {
	secure := tagChain(t, "secure", "tls-terminated", &listenerv3.FilterChainMatch{ServerNames: []string{"secure.example.com"}, TransportProtocol: "tls"})
	secure.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, serverTLS)}}
	return &listenerv3.Listener{
		Name:            "inspect",
		Address:         sockAddr("127.0.0.1", 0),
		ListenerFilters: []*listenerv3.ListenerFilter{tlsInspector(t), httpInspector(t)},
		FilterChains: []*listenerv3.FilterChain{
			tagChain(t, "sni-a", "sni-a", &listenerv3.FilterChainMatch{ServerNames: []string{"a.example.com"}}),
			tagChain(t, "wild", "wild", &listenerv3.FilterChainMatch{ServerNames: []string{"*.example.com"}}),
			secure,
			tagChain(t, "tls-h2", "tls-h2", &listenerv3.FilterChainMatch{TransportProtocol: "tls", ApplicationProtocols: []string{"h2"}}),
			tagChain(t, "tls-any", "tls-any", &listenerv3.FilterChainMatch{TransportProtocol: "tls"}),
			tagChain(t, "h2c", "h2c", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"h2c"}}),
			tagChain(t, "http1", "http1", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "http/1.0"}}),
		},
		DefaultFilterChain: tagChain(t, "default", "default", nil),
	}
}

func TestFilterChainMatchOverSockets(t *testing.T) {
	ca := tlstest.NewCA(t, "root")
	serverLeaf := ca.Issue(t, tlstest.Opts{DNS: []string{"secure.example.com"}})
	clientLeaf := ca.Issue(t, tlstest.Opts{URIs: []string{"spiffe://cluster.local/ns/default/sa/client"}})
	store := tlsctx.NewStore()
	if err := store.Update([]*tlsv3.Secret{tlstest.CertSecret("default", serverLeaf), tlstest.CASecret("ROOTCA", ca)}); err != nil {
		t.Fatal(err)
	}
	serverTLS := &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"}},
			AlpnProtocols: []string{"h2", "http/1.1"},
		},
		RequireClientCertificate: wrapperspb.Bool(true),
	}
	st := newFixture(t)
	st.m.opts.Secrets = store
	st.update(t, inspectionListener(t, serverTLS))
	addr := st.addr(t, "inspect")
	if got := st.m.SecretNames(); strings.Join(got, ",") != "ROOTCA,default" {
		t.Fatalf("SecretNames = %v", got)
	}

	// TLS passthrough: the client's handshake never completes; the chain sees the
	// ClientHello bytes replayed and the inspected SNI.
	tlsCases := []struct {
		sni  string
		alpn []string
		want string
	}{
		{"a.example.com", nil, "sni-a"},
		{"b.example.com", []string{"h2"}, "wild"},
		{"deep.b.example.com", nil, "wild"},
		{"other.test", []string{"h2", "http/1.1"}, "tls-h2"},
		{"other.test", []string{"http/1.1"}, "tls-any"},
		{"", nil, "tls-any"},
	}
	for _, tc := range tlsCases {
		t.Run("tls "+tc.sni+" "+strings.Join(tc.alpn, ","), func(t *testing.T) {
			raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			go func() {
				c := tls.Client(raw, &tls.Config{ServerName: tc.sni, NextProtos: tc.alpn, InsecureSkipVerify: true})
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = c.Handshake() // fails: the tag filter does not speak TLS
			}()
			var got Conn
			select {
			case got = <-waitSeen(st.fac, tc.want):
			case <-time.After(10 * time.Second):
				t.Fatalf("no connection reached chain %q", tc.want)
			}
			if got.SNI != tc.sni || got.TLS {
				t.Fatalf("conn SNI %q TLS %v", got.SNI, got.TLS)
			}
		})
	}

	// TLS terminated by the chain's transport socket, with mTLS.
	t.Run("tls terminated", func(t *testing.T) {
		cfg := &tls.Config{ServerName: "secure.example.com", NextProtos: []string{"h2"}, RootCAs: poolOf(t, ca)}
		cert, err := tls.X509KeyPair(clientLeaf.CertPEM, clientLeaf.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		cl := &client{Conn: c, r: bufioReader(c)}
		if got := cl.tag(t); got != "tls-terminated" {
			t.Fatalf("tag %q", got)
		}
		cl.echo(t, "over tls")
		got := <-st.fac.get("tls-terminated")[0].seen
		if !got.TLS || got.ALPN != "h2" || got.SNI != "secure.example.com" ||
			got.PeerPrincipal != "spiffe://cluster.local/ns/default/sa/client" {
			t.Fatalf("conn %+v", got)
		}
		if v := statValue(st.stats, "listener.inspect.ssl.handshake"); v != 1 {
			t.Fatalf("ssl.handshake = %d", v)
		}
	})
	t.Run("tls terminated without client cert", func(t *testing.T) {
		cfg := &tls.Config{ServerName: "secure.example.com", RootCAs: poolOf(t, ca)}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			cl := &client{Conn: c, r: bufioReader(c)}
			if got := cl.tag(t); got != "" {
				t.Fatalf("served %q without a client certificate", got)
			}
			c.Close()
		}
		eventually(t, "ssl.connection_error", func() bool {
			return statValue(st.stats, "listener.inspect.ssl.connection_error") >= 1
		})
	})

	// Plaintext: http_inspector tells h2c from HTTP/1.x; other bytes take the default.
	plain := []struct{ name, send, want, alpn string }{
		{"http1.1", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "http1", "http/1.1"},
		{"http1.0", "POST /a?b=c HTTP/1.0\r\n\r\n", "http1", "http/1.1"},
		{"h2c", h2Preface, "h2c", "h2"},
		{"other", "\x00\x01binary protocol\n", "default", ""},
		{"not quite http", "GET / SMTP/1.1\r\n", "default", ""},
	}
	for _, tc := range plain {
		t.Run("plain "+tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			if got := c.tag(t); got != tc.want {
				t.Fatalf("tag %q, want %q", got, tc.want)
			}
			// The peeked bytes are replayed to the chain: the echo returns them.
			buf := make([]byte, len(tc.send))
			if _, err := io.ReadFull(c.r, buf); err != nil || string(buf) != tc.send {
				t.Fatalf("replayed %q (%v), want %q", buf, err, tc.send)
			}
			got := <-waitSeen(st.fac, tc.want)
			if got.ALPN != tc.alpn {
				t.Fatalf("ALPN %q, want %q", got.ALPN, tc.alpn)
			}
		})
	}
}

// waitSeen returns the channel of the newest filter built for tag.
func waitSeen(fac *tagFactory, tag string) chan Conn {
	fs := fac.get(tag)
	if len(fs) == 0 {
		return make(chan Conn)
	}
	return fs[len(fs)-1].seen
}

func TestListenerFiltersTimeout(t *testing.T) {
	for _, cont := range []bool{true, false} {
		t.Run(map[bool]string{true: "continue", false: "close"}[cont], func(t *testing.T) {
			f := newFixture(t)
			l := simpleListener(t, "slow", "server-first")
			l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspector(t)}
			l.ListenerFiltersTimeout = durationpb.New(200 * time.Millisecond)
			l.ContinueOnListenerFiltersTimeout = cont
			f.update(t, l)
			// A server-first protocol: the client sends nothing and waits.
			c := dialRaw(t, f.addr(t, "slow"))
			got := c.tag(t)
			if cont && got != "server-first" {
				t.Fatalf("tag %q, want the chain after the timeout", got)
			}
			if !cont && got != "" {
				t.Fatalf("served %q, want closed at the timeout", got)
			}
			if v := statValue(f.stats, "listener.slow.downstream_pre_cx_timeout"); v != 1 {
				t.Fatalf("downstream_pre_cx_timeout = %d", v)
			}
		})
	}
}

func TestUpdateSwapsChainsKeepsSocket(t *testing.T) {
	f := newFixture(t)
	f.update(t, simpleListener(t, "l", "v1"))
	addr := f.addr(t, "l")
	before := dialRaw(t, addr)
	if got := before.tag(t); got != "v1" {
		t.Fatalf("tag %q", got)
	}
	// Same config again: the filter is kept, nothing drains.
	f.update(t, simpleListener(t, "l", "v1"))
	if n := len(f.fac.get("v1")); n != 1 {
		t.Fatalf("unchanged chain rebuilt: %d builds", n)
	}
	// Same address (port 0 as configured), new chain.
	f.update(t, simpleListener(t, "l", "v2"))
	if got := f.addr(t, "l"); got != addr {
		t.Fatalf("socket rebound: %s -> %s", addr, got)
	}
	after := dialRaw(t, addr)
	if got := after.tag(t); got != "v2" {
		t.Fatalf("new connection tag %q, want v2", got)
	}
	before.echo(t, "old connection still up")
	eventually(t, "old chain drained", func() bool { return f.fac.get("v1")[0].drained.Load() == 1 })
	if f.fac.get("v2")[0].drained.Load() != 0 {
		t.Fatal("current chain drained")
	}
}

func TestInvalidUpdateChangesNothing(t *testing.T) {
	f := newFixture(t)
	f.update(t, simpleListener(t, "l", "v1"))
	addr := f.addr(t, "l")

	badFilter := simpleListener(t, "l", "v2")
	badFilter.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.proxy_protocol"}}
	unknownNetwork := simpleListener(t, "n", "v3")
	unknownNetwork.FilterChains[0].Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.rbac",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{})}}},
		unknownNetwork.FilterChains[0].Filters...)
	dupMatch := simpleListener(t, "d", "v4")
	dupMatch.FilterChains = append(dupMatch.FilterChains, tagChain(t, "again", "v5", nil))
	badAddr := simpleListener(t, "a", "v6")
	badAddr.Address = sockAddr("not-an-ip", 80)

	err := f.m.Update([]*listenerv3.Listener{badFilter, simpleListener(t, "new", "v7"), unknownNetwork, dupMatch, badAddr})
	if err == nil {
		t.Fatal("invalid update accepted")
	}
	for _, want := range []string{
		`listener "l": listener_filters[0]: unknown listener filter "envoy.filters.listener.proxy_protocol"`,
		`listener "n": filter_chains[0].filters[0] "envoy.filters.network.rbac": unknown network filter type`,
		`listener "d": filter_chains[1]: filter_chain_match duplicates filter_chains[0]`,
		`listener "a": address.socket_address.address`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nwant it to contain %q", err, want)
		}
	}
	if f.m.Addr("new") != nil {
		t.Fatal("a valid listener of a rejected update was applied")
	}
	if got := f.addr(t, "l"); got != addr {
		t.Fatal("old listener moved")
	}
	if got := dialRaw(t, addr).tag(t); got != "v1" {
		t.Fatalf("old config no longer serves: %q", got)
	}
	// Filters built for the rejected update are released.
	eventually(t, "abandoned filters drained", func() bool {
		fs := f.fac.get("v7")
		return len(fs) == 1 && fs[0].drained.Load() == 1
	})
}

func TestRemoveAndRebindListener(t *testing.T) {
	f := newFixture(t)
	// A fixed port, to check that a removed listener frees it and a renamed one keeps it.
	port := testnet.FreePort(t)
	l := simpleListener(t, "first", "one")
	l.Address = sockAddr("127.0.0.1", uint32(port))
	f.update(t, l)
	c := dialRaw(t, l.Address.GetSocketAddress().GetAddress()+":"+strconv.Itoa(port))
	if got := c.tag(t); got != "one" {
		t.Fatalf("tag %q", got)
	}
	// Renamed listener, same address: the socket is handed over.
	l2 := simpleListener(t, "second", "two")
	l2.Address = l.Address
	f.update(t, l2)
	if got := dialRaw(t, f.addr(t, "second")).tag(t); got != "two" {
		t.Fatalf("tag %q", got)
	}
	// Removed: the port refuses connections.
	f.update(t)
	eventually(t, "port closed", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}

func TestOriginalDstDispatch(t *testing.T) {
	f := newFixture(t)
	var redirected atomic.Pointer[netip.AddrPort]
	f.m.originalDst = func(net.Conn) (netip.AddrPort, bool) {
		if p := redirected.Load(); p != nil {
			return *p, true
		}
		return netip.AddrPort{}, false
	}
	capture := &listenerv3.Listener{
		Name:            "virtualOutbound",
		Address:         sockAddr("127.0.0.1", 0),
		UseOriginalDst:  wrapperspb.Bool(true),
		ListenerFilters: []*listenerv3.ListenerFilter{origDstFilter(t)},
		FilterChains:    []*listenerv3.FilterChain{tagChain(t, "PassthroughFilterChain", "passthrough", nil)},
	}
	virtual := func(name, ip string, port uint32, tag string) *listenerv3.Listener {
		return &listenerv3.Listener{
			Name:            name,
			Address:         sockAddr(ip, port),
			BindToPort:      wrapperspb.Bool(false),
			ListenerFilters: []*listenerv3.ListenerFilter{tlsInspector(t), httpInspector(t)},
			FilterChains: []*listenerv3.FilterChain{
				tagChain(t, "http", tag+"-http", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1"}}),
				tagChain(t, "tcp", tag, nil),
			},
		}
	}
	f.update(t, capture, virtual("0.0.0.0_9080", "0.0.0.0", 9080, "any-9080"), virtual("10.1.2.3_9080", "10.1.2.3", 9080, "exact"))
	if got := f.m.Addr("0.0.0.0_9080").String(); got != "0.0.0.0:9080" {
		t.Fatalf("Addr of a virtual listener = %s", got)
	}
	addr := f.addr(t, "virtualOutbound")
	tests := []struct {
		dst       string // "" not redirected
		send      string
		wantTag   string
		wantLocal string
	}{
		{"10.1.2.3:9080", "raw\r\n", "exact", "10.1.2.3:9080"},
		{"10.9.9.9:9080", "raw\r\n", "any-9080", "10.9.9.9:9080"},
		{"10.9.9.9:9080", "GET / HTTP/1.1\r\n\r\n", "any-9080-http", "10.9.9.9:9080"},
		{"10.1.2.3:7777", "x", "passthrough", "10.1.2.3:7777"},
		{"", "x", "passthrough", addr},
	}
	for _, tc := range tests {
		t.Run(tc.dst, func(t *testing.T) {
			if tc.dst == "" {
				redirected.Store(nil)
			} else {
				ap := netip.MustParseAddrPort(tc.dst)
				redirected.Store(&ap)
			}
			c := dialRaw(t, addr)
			_, _ = io.WriteString(c, tc.send)
			if got := c.tag(t); got != tc.wantTag {
				t.Fatalf("tag %q, want %q", got, tc.wantTag)
			}
			got := <-waitSeen(f.fac, tc.wantTag)
			if got.Local.String() != tc.wantLocal {
				t.Fatalf("Local %v, want %s", got.Local, tc.wantLocal)
			}
		})
	}
	if v := statValue(f.stats, "listener.0.0.0.0_9080.downstream_cx_total"); v != 2 {
		t.Fatalf("virtual listener downstream_cx_total = %d, want 2", v)
	}

	// use_original_dst alone implies the original_dst listener filter, as in Envoy.
	capture.ListenerFilters = nil
	f.update(t, capture, virtual("10.1.2.3_9080", "10.1.2.3", 9080, "exact"))
	ap := netip.MustParseAddrPort("10.1.2.3:9080")
	redirected.Store(&ap)
	c := dialRaw(t, f.addr(t, "virtualOutbound"))
	_, _ = io.WriteString(c, "raw\r\n")
	if got := c.tag(t); got != "exact" {
		t.Fatalf("implicit original_dst: tag %q", got)
	}
}

func TestDrainAndClose(t *testing.T) {
	f := newFixture(t)
	in := simpleListener(t, "in", "inbound")
	in.TrafficDirection = corev3.TrafficDirection_INBOUND
	out := simpleListener(t, "out", "outbound")
	out.TrafficDirection = corev3.TrafficDirection_OUTBOUND
	f.update(t, in, out)
	inAddr, outAddr := f.addr(t, "in"), f.addr(t, "out")
	open := dialRaw(t, outAddr)
	if open.tag(t) != "outbound" {
		t.Fatal("no tag")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.m.Drain(ctx, true); err != nil {
		t.Fatal(err)
	}
	if f.fac.get("inbound")[0].drained.Load() != 1 || f.fac.get("outbound")[0].drained.Load() != 0 {
		t.Fatal("inbound-only drain drained the wrong filters")
	}
	if c, err := net.DialTimeout("tcp", inAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("drained inbound listener still accepts")
	}
	if dialRaw(t, outAddr).tag(t) != "outbound" {
		t.Fatal("outbound listener stopped by an inbound-only drain")
	}
	// Close ends the connections still open.
	if err := f.m.Close(); err != nil {
		t.Fatal(err)
	}
	_ = open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := open.r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection survived Close: %v", err)
	}
	if err := f.m.Update([]*listenerv3.Listener{simpleListener(t, "x", "y")}); err == nil {
		t.Fatal("Update after Close accepted")
	}
}

// denyWrapper is a non-terminal filter as RBAC would be: it closes every connection when
// its config is true and passes them on otherwise.
type denyWrapper struct{}

func (denyWrapper) ConfigType() string { return "google.protobuf.BoolValue" }

func (denyWrapper) Wrap(typed *anypb.Any, _ ChainInfo, next NetworkFilter) (NetworkFilter, error) {
	var v wrapperspb.BoolValue
	if err := typed.UnmarshalTo(&v); err != nil {
		return nil, err
	}
	return &denyFilter{deny: v.GetValue(), next: next}, nil
}

type denyFilter struct {
	deny bool
	next NetworkFilter
}

func (d *denyFilter) ServeConn(ctx context.Context, c *Conn) {
	if d.deny {
		_ = c.Close()
		return
	}
	d.next.ServeConn(ctx, c)
}

func (d *denyFilter) Drain(ctx context.Context) error { return d.next.Drain(ctx) }

func TestWrappersAndIgnoredTelemetryFilters(t *testing.T) {
	f := newFixture(t)
	f.m.wrappers["google.protobuf.BoolValue"] = denyWrapper{}
	filter := func(name string, m proto.Message) *listenerv3.Filter {
		return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}
	}
	istioStats := &anypb.Any{TypeUrl: "type.googleapis.com/stats.PluginConfig"}
	deny := simpleListener(t, "deny", "denied")
	deny.FilterChains[0].Filters = append([]*listenerv3.Filter{filter("test.deny", wrapperspb.Bool(true)),
		{Name: "istio.stats", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: istioStats}}},
		deny.FilterChains[0].Filters...)
	allow := simpleListener(t, "allow", "allowed")
	allow.FilterChains[0].Filters = append([]*listenerv3.Filter{filter("test.deny", wrapperspb.Bool(false))}, allow.FilterChains[0].Filters...)
	f.update(t, deny, allow)
	if got := dialRaw(t, f.addr(t, "deny")).tag(t); got != "" {
		t.Fatalf("wrapper did not deny: %q", got)
	}
	if got := dialRaw(t, f.addr(t, "allow")).tag(t); got != "allowed" {
		t.Fatalf("wrapper did not pass: %q", got)
	}
	// A telemetry filter is accepted only as non-terminal.
	bad := simpleListener(t, "bad", "x")
	bad.FilterChains[0].Filters = []*listenerv3.Filter{{Name: "istio.stats", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: istioStats}}}
	if err := f.m.Update([]*listenerv3.Listener{bad}); err == nil || !strings.Contains(err.Error(), "unknown terminal network filter") {
		t.Fatalf("err %v", err)
	}
}

// TestUpdatesUnderLoadLoseNothing: connections made while chains are swapped again and
// again are all served, by one version or the other.
func TestUpdatesUnderLoadLoseNothing(t *testing.T) {
	f := newFixture(t)
	f.update(t, simpleListener(t, "l", "v0"))
	addr := f.addr(t, "l")
	stop := make(chan struct{})
	updated := make(chan error, 1)
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				updated <- nil
				return
			default:
			}
			if err := f.m.Update([]*listenerv3.Listener{simpleListener(t, "l", "v"+strconv.Itoa(i%3))}); err != nil {
				updated <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for i := 0; i < 100; i++ {
		c := dialRaw(t, addr)
		if got := c.tag(t); !strings.HasPrefix(got, "v") {
			t.Fatalf("connection %d not served during updates: %q", i, got)
		}
		c.echo(t, "x")
		c.Close()
	}
	close(stop)
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
}

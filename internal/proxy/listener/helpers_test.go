package listener

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx/tlstest"
)

// tagFilter is the test's terminal network filter: it reports the Conn it got, writes
// its tag and a newline, then echoes.
type tagFilter struct {
	tag     string
	seen    chan Conn
	drained atomic.Int32
	mu      sync.Mutex
	conns   []*Conn
}

func (f *tagFilter) ServeConn(ctx context.Context, c *Conn) {
	select {
	case f.seen <- *c:
	default:
	}
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
	defer c.Close()
	if _, err := io.WriteString(c, f.tag+"\n"); err != nil {
		return
	}
	_, _ = io.Copy(c, c)
}

func (f *tagFilter) Drain(ctx context.Context) error {
	f.drained.Add(1)
	return nil
}

// tagFactory builds tagFilters from a google.protobuf.StringValue holding the tag.
type tagFactory struct {
	mu    sync.Mutex
	built map[string][]*tagFilter
}

func newTagFactory() *tagFactory { return &tagFactory{built: map[string][]*tagFilter{}} }

func (*tagFactory) ConfigType() string { return "google.protobuf.StringValue" }

func (f *tagFactory) Build(typed *anypb.Any, _ ChainInfo) (NetworkFilter, error) {
	var v wrapperspb.StringValue
	if err := typed.UnmarshalTo(&v); err != nil {
		return nil, err
	}
	if v.GetValue() == "" {
		return nil, fmt.Errorf("tag must not be empty")
	}
	tf := &tagFilter{tag: v.GetValue(), seen: make(chan Conn, 64)}
	f.mu.Lock()
	f.built[tf.tag] = append(f.built[tf.tag], tf)
	f.mu.Unlock()
	return tf, nil
}

func (f *tagFactory) get(tag string) []*tagFilter {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*tagFilter(nil), f.built[tag]...)
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tagChain(t testing.TB, name, tag string, match *listenerv3.FilterChainMatch) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: match,
		Filters: []*listenerv3.Filter{{
			Name:       "test.tag",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, wrapperspb.String(tag))},
		}},
	}
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func lf(t testing.TB, name string, m proto.Message) *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, m)}}
}

func tlsInspector(t testing.TB) *listenerv3.ListenerFilter {
	return lf(t, "envoy.filters.listener.tls_inspector", &tlsinspectorv3.TlsInspector{})
}

func httpInspector(t testing.TB) *listenerv3.ListenerFilter {
	return lf(t, "envoy.filters.listener.http_inspector", &httpinspectorv3.HttpInspector{})
}

func origDstFilter(t testing.TB) *listenerv3.ListenerFilter {
	return lf(t, "envoy.filters.listener.original_dst", &origdstv3.OriginalDst{})
}

// simpleListener is a listener on 127.0.0.1:0 with one chain writing tag.
func simpleListener(t testing.TB, name, tag string) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:         name,
		Address:      sockAddr("127.0.0.1", 0),
		FilterChains: []*listenerv3.FilterChain{tagChain(t, "chain-"+tag, tag, nil)},
	}
}

type fixture struct {
	m     *Manager
	fac   *tagFactory
	stats *stats.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st := stats.New()
	fac := newTagFactory()
	m := NewManager(Options{Stats: st, Filters: []NetworkFilterFactory{fac}, DrainTimeout: time.Second})
	t.Cleanup(func() { _ = m.Close() })
	return &fixture{m: m, fac: fac, stats: st}
}

func (f *fixture) update(t *testing.T, ls ...*listenerv3.Listener) {
	t.Helper()
	if err := f.m.Update(ls); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) addr(t *testing.T, name string) string {
	t.Helper()
	a := f.m.Addr(name)
	if a == nil {
		t.Fatalf("no address for listener %q", name)
	}
	return a.String()
}

// client is a test connection that reads the tag line first.
type client struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{Conn: c, r: bufio.NewReader(c)}
}

// tag reads the tag line; "" when the server closed without one.
func (c *client) tag(t *testing.T) string {
	t.Helper()
	line, err := c.r.ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(line, "\n")
}

func (c *client) echo(t *testing.T, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c.r, buf); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo %q, want %q", buf, msg)
	}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func statValue(st *stats.Store, name string) int64 {
	v, _ := st.Value(name)
	return v
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func poolOf(t *testing.T, ca *tlstest.CA) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

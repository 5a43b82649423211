package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func asSecrets(t *testing.T, rs []types.Resource) []*tlsv3.Secret {
	t.Helper()
	out := make([]*tlsv3.Secret, len(rs))
	for i, r := range rs {
		s, ok := r.(*tlsv3.Secret)
		if !ok {
			t.Fatalf("resource %d is %T, want *tlsv3.Secret", i, r)
		}
		out[i] = s
	}
	return out
}

func TestSDSSourceSecrets(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Second)}
	c := newTestCA(t, Options{Now: clk.Now, TrustDomain: "mesh.example"})
	src, err := NewSDSSource(c, SDSOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := &node.Proxy{ID: "sidecar~10.0.0.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local", Type: node.Sidecar,
		Namespace: "bookinfo", ServiceAccount: "reviews"}
	rs, err := src.Secrets(p)
	if err != nil {
		t.Fatal(err)
	}
	secrets := asSecrets(t, rs)
	if len(secrets) != 2 || secrets[0].GetName() != names.RootCA || secrets[1].GetName() != names.WorkloadCert {
		t.Fatalf("secret names %v, want [ROOTCA default]", []string{secrets[0].GetName(), secrets[1].GetName()})
	}
	tc := secrets[1].GetTlsCertificate()
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("default secret does not parse with crypto/tls: %v", err)
	}
	if got := pair.Leaf.URIs; len(got) != 1 || got[0].String() != p.SpiffeID("mesh.example") {
		t.Fatalf("leaf URI SANs %v, want [%s]", got, p.SpiffeID("mesh.example"))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secrets[0].GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		t.Fatal("ROOTCA trusted_ca has no certificate")
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: clk.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf does not verify to ROOTCA: %v", err)
	}
	if want := clk.Now().Add(30 * time.Minute); !src.NextRenewal().Equal(want) {
		t.Fatalf("NextRenewal %v, want issue + half of 1h = %v", src.NextRenewal(), want)
	}

	// Cached: another proxy of the same identity, later but before renewal, gets the
	// same bytes.
	clk.Add(29 * time.Minute)
	p2 := *p
	p2.ID, p2.Workload = "sidecar~10.0.0.2~reviews-v2.bookinfo~bookinfo.svc.cluster.local", "reviews-v2"
	rs2, err := src.Secrets(&p2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rs {
		if !proto.Equal(rs[i], rs2[i]) {
			t.Fatalf("secret %d changed before renewal", i)
		}
	}
	// Another identity gets its own certificate.
	other := *p
	other.ServiceAccount = "ratings"
	rs3, _ := src.Secrets(&other)
	if proto.Equal(rs3[1], rs[1]) {
		t.Fatal("two identities share a certificate")
	}

	// Due: a new key and certificate.
	clk.Add(2 * time.Minute)
	rs4, err := src.Secrets(p)
	if err != nil {
		t.Fatal(err)
	}
	s4 := asSecrets(t, rs4)
	if proto.Equal(rs4[1], rs[1]) {
		t.Fatal("secret not renewed after GraceRatio of the lifetime")
	}
	pair4, err := tls.X509KeyPair(s4[1].GetTlsCertificate().GetCertificateChain().GetInlineBytes(), s4[1].GetTlsCertificate().GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	if pair4.Leaf.SerialNumber.Cmp(pair.Leaf.SerialNumber) == 0 {
		t.Fatal("renewed certificate has the old serial")
	}
	if !proto.Equal(rs4[0], rs[0]) {
		t.Fatal("ROOTCA changed on renewal")
	}
}

// The secrets load into weft-proxy's SDS store and carry an mTLS handshake over
// loopback between two identities, each side seeing the other's SPIFFE ID.
func TestSDSSecretsMTLSThroughProxyStore(t *testing.T) {
	c := newTestCA(t, Options{})
	src, err := NewSDSSource(c, SDSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store := func(sa string) *tlsctx.Store {
		rs, err := src.Secrets(&node.Proxy{ID: sa, Namespace: "default", ServiceAccount: sa})
		if err != nil {
			t.Fatal(err)
		}
		st := tlsctx.NewStore()
		if err := st.Update(asSecrets(t, rs)); err != nil {
			t.Fatalf("tlsctx.Store.Update: %v", err)
		}
		return st
	}
	common := &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: names.WorkloadCert}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: names.RootCA}},
	}
	srvCfg, err := tlsctx.Server(&tlsv3.DownstreamTlsContext{CommonTlsContext: common,
		RequireClientCertificate: wrapperspb.Bool(true)}, store("details"))
	if err != nil {
		t.Fatal(err)
	}
	cliCfg, err := tlsctx.Client(&tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: "details"}, store("productpage"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var peerOfServer atomic.Value
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		cs := tc.ConnectionState()
		peerOfServer.Store(tlsctx.PeerPrincipal(&cs))
		_, err = tc.Write([]byte("ok"))
		done <- err
	}()
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(&d, "tcp", ln.Addr().String(), cliCfg)
	if err != nil {
		t.Fatalf("mTLS handshake: %v", err)
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	if got := tlsctx.PeerPrincipal(&cs); got != "spiffe://cluster.local/ns/default/sa/details" {
		t.Fatalf("client sees %q", got)
	}
	buf := make([]byte, 2)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := peerOfServer.Load(); got != "spiffe://cluster.local/ns/default/sa/productpage" {
		t.Fatalf("server sees %q", got)
	}
}

// Run pushes once an identity is due, and the pushed generation gets a new certificate.
func TestSDSSourceRunPushesRenewal(t *testing.T) {
	c := newTestCA(t, Options{MinTTL: time.Second, DefaultTTL: time.Second})
	src, err := NewSDSSource(c, SDSOptions{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pushes := make(chan string, 8)
	runDone := make(chan struct{})
	go func() {
		src.Run(ctx, func(reason string) { pushes <- reason })
		close(runDone)
	}()
	p := &node.Proxy{ID: "p", Namespace: "default", ServiceAccount: "web"}
	rs, err := src.Secrets(p)
	if err != nil {
		t.Fatal(err)
	}
	next := src.NextRenewal()
	if next.IsZero() {
		t.Fatal("NextRenewal is zero with a cached identity")
	}
	select {
	case reason := <-pushes:
		if reason == "" {
			t.Fatal("empty push reason")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no push within 10s of a 1s renewal")
	}
	if time.Now().Before(next) {
		t.Fatalf("pushed before the renewal time %v", next)
	}
	if !src.NextRenewal().IsZero() {
		t.Fatal("due entry still cached after the push")
	}
	rs2, err := src.Secrets(p)
	if err != nil {
		t.Fatal(err)
	}
	if proto.Equal(rs[1], rs2[1]) {
		t.Fatal("generation after the renewal push returned the old certificate")
	}
	cancel()
	select {
	case <-runDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestSDSOptionsValidated(t *testing.T) {
	c := newTestCA(t, Options{})
	for _, o := range []SDSOptions{{GraceRatio: 1}, {GraceRatio: -0.1}, {TTL: 1000 * 24 * time.Hour}} {
		if _, err := NewSDSSource(c, o); err == nil {
			t.Errorf("NewSDSSource(%+v) accepted", o)
		}
	}
}

// secretsCached sets up one cached identity and returns the call every generation makes.
func secretsCached(tb testing.TB) func() {
	c := newTestCA(tb, Options{})
	src, err := NewSDSSource(c, SDSOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	p := &node.Proxy{ID: "p", Namespace: "default", ServiceAccount: "web"}
	first, err := src.Secrets(p)
	if err != nil {
		tb.Fatal(err)
	}
	return func() {
		rs, err := src.Secrets(p)
		if err != nil {
			tb.Fatal(err)
		}
		if len(rs) != 2 || rs[1] != first[1] {
			tb.Fatal("cached secret not reused")
		}
	}
}

// BenchmarkSDSSecretsCached is the per-proxy cost of SDS in every generation.
func BenchmarkSDSSecretsCached(b *testing.B) {
	call := secretsCached(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		call()
	}
}

// TestBenchSDSSecretsCached is the benchmark's size-1 twin, so it cannot rot; the
// cached path allocates only the returned slice.
func TestBenchSDSSecretsCached(t *testing.T) {
	call := secretsCached(t)
	call()
	if n := testing.AllocsPerRun(10, call); n > 1 {
		t.Fatalf("%v allocations per cached call, want <= 1", n)
	}
}

package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/weft-mesh/weft/internal/ca"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type testServer struct {
	ca   *ca.CA
	addr string
	g    *grpc.Server
}

// startCA serves a CA whose certificates may be as short as 1s on 127.0.0.1.
func startCA(t *testing.T, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	c, err := ca.New(ca.Options{MinTTL: time.Second, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, c, opts...)
}

func startServer(t *testing.T, c *ca.CA, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	ca.NewServer(c, c.Tokens(), quiet).Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return &testServer{ca: c, addr: ln.Addr().String(), g: g}
}

func (s *testServer) token(t *testing.T, ns, sa string) string {
	t.Helper()
	tok, err := s.ca.IssueToken(ca.Identity{Namespace: ns, ServiceAccount: sa, Workload: sa + "-1"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newAgent(t *testing.T, o Options) *Agent {
	t.Helper()
	if o.Log == nil {
		o.Log = quiet
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// The agent obtains a certificate, renews it at about half its 2s lifetime with a new
// key, and stops serving it once it expires with the CA gone.
func TestAgentRenewsAndNeverServesExpired(t *testing.T) {
	srv := startCA(t)
	a := newAgent(t, Options{Address: srv.addr, Insecure: true, Token: srv.token(t, "default", "web"),
		TTL: 2 * time.Second, Jitter: 0.01})
	if a.Current() != nil {
		t.Fatal("certificate before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	changed := a.Changed()
	go func() { runDone <- a.Run(ctx) }()
	waitFor(t, a.Ready(), "the first certificate")
	b1 := a.Current()
	if b1 == nil {
		t.Fatal("Ready but no certificate")
	}
	waitFor(t, changed, "the first change notification")
	if b1.Identity != "spiffe://cluster.local/ns/default/sa/web" {
		t.Fatalf("identity %q", b1.Identity)
	}
	life := b1.NotAfter.Sub(b1.IssuedAt)
	if life < time.Second || life > 3*time.Second {
		t.Fatalf("lifetime %v, want about 2s", life)
	}
	if half := b1.NotAfter.Add(-life / 2); b1.RenewAt.Before(half.Add(-200*time.Millisecond)) || b1.RenewAt.After(half.Add(200*time.Millisecond)) {
		t.Fatalf("RenewAt %v, want about half-life %v", b1.RenewAt, half)
	}
	// The bundle works with crypto/tls as-is.
	if _, err := tls.X509KeyPair(b1.ChainPEM, b1.KeyPEM); err != nil {
		t.Fatal(err)
	}

	// Renewal.
	ch := a.Changed()
	waitFor(t, ch, "the renewal")
	b2 := a.Current()
	if b2 == nil || b2 == b1 {
		t.Fatal("no new certificate after the change notification")
	}
	if b2.Certificate.Leaf.SerialNumber.Cmp(b1.Certificate.Leaf.SerialNumber) == 0 {
		t.Fatal("renewed certificate has the old serial")
	}
	if b2.Certificate.PrivateKey.(*ecdsa.PrivateKey).Equal(b1.Certificate.PrivateKey) {
		t.Fatal("key not rotated on renewal")
	}
	if !b2.IssuedAt.Before(b1.NotAfter) {
		t.Fatalf("renewed at %v, after the old certificate expired at %v", b2.IssuedAt, b1.NotAfter)
	}

	// CA gone: the agent keeps the last certificate until it expires, then serves none.
	srv.g.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for a.Current() != nil {
		cur := a.Current()
		if cur != nil && !time.Now().Before(cur.NotAfter.Add(time.Millisecond)) {
			t.Fatal("Current returned an expired certificate")
		}
		if time.Now().After(deadline) {
			t.Fatal("certificate still served 10s after the CA stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := a.GetCertificate(nil); err == nil {
		t.Fatal("GetCertificate served with no valid certificate")
	}
	if _, err := a.GetClientCertificate(nil); err == nil {
		t.Fatal("GetClientCertificate served with no valid certificate")
	}
	cancel()
	select {
	case err := <-runDone:
		if err != context.Canceled {
			t.Fatalf("Run: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// Two agents' certificates authenticate each other in an mTLS handshake over loopback;
// the agent talks to the CA over TLS (the control plane's serving certificate), with the
// token read from a file.
func TestAgentMTLSAndTLSToCA(t *testing.T) {
	c, err := ca.New(ca.Options{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := c.ServingTLS([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, c, grpc.Creds(credentials.NewTLS(serving)))
	clientTLS := &tls.Config{RootCAs: c.RootPool(), MinVersion: tls.VersionTLS12}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(srv.token(t, "shop", "cart")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cart := newAgent(t, Options{Address: srv.addr, TLS: clientTLS, TokenFile: tokFile,
		Identity: "spiffe://cluster.local/ns/shop/sa/cart", Metadata: map[string]string{"WorkloadName": "cart-1"}, ClusterID: "Kubernetes"})
	if _, err := cart.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	pay := newAgent(t, Options{Address: srv.addr, TLS: clientTLS, Token: srv.token(t, "shop", "payments")})
	if _, err := pay.Refresh(ctx); err != nil {
		t.Fatal(err)
	}

	srvCfg := &tls.Config{GetCertificate: pay.GetCertificate, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: pay.Current().Roots, MinVersion: tls.VersionTLS13}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			peer <- err.Error()
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			peer <- err.Error()
			return
		}
		peer <- tc.ConnectionState().PeerCertificates[0].URIs[0].String()
		tc.Write([]byte("x"))
	}()
	cliCfg := &tls.Config{GetClientCertificate: cart.GetClientCertificate, RootCAs: cart.Current().Roots,
		MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		// SPIFFE peers are verified by URI SAN, not host name.
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: cart.Current().Roots}); err != nil {
				return err
			}
			if leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/payments" {
				t.Errorf("server identity %v", leaf.URIs)
			}
			return nil
		}}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(&d, "tcp", ln.Addr().String(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if got := <-peer; got != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("server saw client %q", got)
	}
}

func TestAgentDenied(t *testing.T) {
	srv := startCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other := startCA(t)
	tests := []struct {
		name string
		o    Options
		want codes.Code
	}{
		{"token of another mesh", Options{Token: other.token(t, "default", "web")}, codes.Unauthenticated},
		{"garbage token", Options{Token: "weft1.x.y"}, codes.Unauthenticated},
		{"expects another identity", Options{Token: srv.token(t, "default", "web"), Identity: "spiffe://cluster.local/ns/kube-system/sa/admin"}, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.Address, tt.o.Insecure = srv.addr, true
			a := newAgent(t, tt.o)
			_, err := a.Refresh(ctx)
			if status.Code(err) != tt.want {
				t.Fatalf("Refresh: %v, want %v", err, tt.want)
			}
			if a.Current() != nil {
				t.Fatal("certificate held after a denial")
			}
		})
	}
}

func TestAgentOptions(t *testing.T) {
	for _, o := range []Options{
		{Address: "127.0.0.1:1", Insecure: true},                                // no credential
		{Address: "127.0.0.1:1", Token: "t"},                                    // neither TLS nor Insecure
		{Token: "t", Insecure: true},                                            // no address
		{Address: "127.0.0.1:1", Insecure: true, Token: "t", GraceRatio: 0.97},  // ratio + jitter >= 1
		{Address: "127.0.0.1:1", Insecure: true, Token: "t", TTL: -time.Second}, // negative ttl
	} {
		if a, err := New(o); err == nil {
			a.Close()
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// fakeCA answers with a certificate the agent must refuse.
type fakeCA struct {
	securityapi.UnimplementedIstioCertificateServiceServer
	resp func(req *securityapi.IstioCertificateRequest) []string
}

func (f *fakeCA) CreateCertificate(_ context.Context, req *securityapi.IstioCertificateRequest) (*securityapi.IstioCertificateResponse, error) {
	return &securityapi.IstioCertificateResponse{CertChain: f.resp(req)}, nil
}

func TestAgentRefusesBadResponses(t *testing.T) {
	c, err := ca.New(ca.Options{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := ca.New(ca.Options{Log: quiet})
	sign := func(c *ca.CA, csrPEM string, id string) string {
		block, _ := pem.Decode([]byte(csrPEM))
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain, err := c.Sign(csr, id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0]}))
	}
	strangerCSR := func() string {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	const id = "spiffe://cluster.local/ns/a/sa/b"
	tests := []struct {
		name    string
		resp    func(req *securityapi.IstioCertificateRequest) []string
		wantErr string
	}{
		{"only a leaf", func(r *securityapi.IstioCertificateRequest) []string { return []string{sign(c, r.Csr, id)} }, "want leaf"},
		{"another key", func(r *securityapi.IstioCertificateRequest) []string {
			return []string{sign(c, strangerCSR(), id), string(c.Roots())}
		}, "not for this agent's key"},
		{"untrusted root", func(r *securityapi.IstioCertificateRequest) []string {
			return []string{sign(otherCA, r.Csr, id), string(c.Roots())}
		}, "does not verify"},
		{"garbage", func(r *securityapi.IstioCertificateRequest) []string { return []string{"x", "y"} }, "no PEM"},
		{"good", func(r *securityapi.IstioCertificateRequest) []string {
			return []string{sign(c, r.Csr, id), string(c.Roots())}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			g := grpc.NewServer()
			securityapi.RegisterIstioCertificateServiceServer(g, &fakeCA{resp: tt.resp})
			go g.Serve(ln)
			defer g.Stop()
			a := newAgent(t, Options{Address: ln.Addr().String(), Insecure: true, Token: "t"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = a.Refresh(ctx)
			if tt.wantErr == "" {
				if err != nil || a.Current() == nil {
					t.Fatalf("Refresh: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Refresh: %v, want error containing %q", err, tt.wantErr)
			}
			if a.Current() != nil {
				t.Fatal("refused response is being served")
			}
		})
	}
}

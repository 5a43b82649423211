package ca

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	securityapi "istio.io/api/security/v1alpha1"
)

// serve runs a CSR server for c on 127.0.0.1 and returns a client.
func serve(t *testing.T, c *CA, auth Authenticator) securityapi.IstioCertificateServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	NewServer(c, auth, quiet).Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return securityapi.NewIstioCertificateServiceClient(cc)
}

func withToken(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func TestCreateCertificate(t *testing.T) {
	c := newTestCA(t, Options{})
	client := serve(t, c, c.Tokens())
	id := Identity{Namespace: "bookinfo", ServiceAccount: "reviews", Workload: "reviews-v1"}
	tok, err := c.IssueToken(id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(withToken(tok), 10*time.Second)
	defer cancel()
	// The CSR carries the caller's own identity, as Istio's agent's does.
	own, _ := url.Parse(id.SpiffeID("cluster.local"))
	resp, err := client.CreateCertificate(ctx, &securityapi.IstioCertificateRequest{
		Csr: string(csrPEM(t, ecKey(t), &x509.CertificateRequest{URIs: []*url.URL{own}})), ValidityDuration: 3600})
	if err != nil {
		t.Fatal(err)
	}
	elems := resp.GetCertChain()
	if len(elems) != 2 {
		t.Fatalf("cert_chain has %d elements, want leaf + root", len(elems))
	}
	if elems[1] != string(c.Roots()) {
		t.Fatal("last element is not the root bundle")
	}
	block, _ := pem.Decode([]byte(elems[0]))
	leaf := verifyChain(t, [][]byte{block.Bytes}, []byte(elems[1]), time.Now())
	if got := leaf.URIs[0].String(); len(leaf.URIs) != 1 || got != "spiffe://cluster.local/ns/bookinfo/sa/reviews" {
		t.Fatalf("URI SANs %v", leaf.URIs)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore) - ClockSkew; life < time.Hour-5*time.Second || life > time.Hour+5*time.Second {
		t.Fatalf("lifetime %v, want validity_duration 1h", life)
	}
}

func TestCreateCertificateDenied(t *testing.T) {
	c := newTestCA(t, Options{})
	client := serve(t, c, c.Tokens())
	id := Identity{Namespace: "bookinfo", ServiceAccount: "reviews", Workload: "reviews-v1"}
	tok, _ := c.IssueToken(id)
	otherMesh := newTestCA(t, Options{})
	foreign, _ := otherMesh.IssueToken(id)
	payload, mac, _ := strings.Cut(strings.TrimPrefix(tok, tokenPrefix), ".")
	enc := base64.RawURLEncoding
	// The payload of another identity with reviews' MAC: a forged token.
	forgedPayload := tokenPrefix + enc.EncodeToString([]byte("istio-system/istiod/x")) + "." + mac
	// An attacker's own MAC under a guessed key.
	m := hmac.New(sha256.New, []byte("guess-guess-guess-guess-guess-32"))
	m.Write([]byte(tokenMACLabel + "bookinfo/reviews/reviews-v1"))
	guessed := tokenPrefix + payload + "." + enc.EncodeToString(m.Sum(nil))
	goodCSR := string(csrPEM(t, ecKey(t), nil))
	otherID, _ := url.Parse("spiffe://cluster.local/ns/istio-system/sa/istiod")
	askOther := string(csrPEM(t, ecKey(t), &x509.CertificateRequest{URIs: []*url.URL{otherID}}))
	mismatched := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: mismatchedCSR(t).Raw}))
	impersonate, _ := structpb.NewStruct(map[string]any{impersonationKey: "spiffe://cluster.local/ns/istio-system/sa/istiod"})

	tests := []struct {
		name string
		ctx  context.Context
		req  *securityapi.IstioCertificateRequest
		want codes.Code
	}{
		{"no token", context.Background(), &securityapi.IstioCertificateRequest{Csr: goodCSR}, codes.Unauthenticated},
		{"empty bearer", metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "), &securityapi.IstioCertificateRequest{Csr: goodCSR}, codes.Unauthenticated},
		{"basic auth", metadata.AppendToOutgoingContext(context.Background(), "authorization", "Basic "+tok), &securityapi.IstioCertificateRequest{Csr: goodCSR}, codes.Unauthenticated},
		{"two tokens", metadata.AppendToOutgoingContext(withToken(tok), "authorization", "Bearer "+tok), &securityapi.IstioCertificateRequest{Csr: goodCSR}, codes.Unauthenticated},
		{"garbage token", withToken("hello"), &securityapi.IstioCertificateRequest{Csr: goodCSR}, codes.Unauthenticated},
		{"forged payload", withToken(forgedPayload), &securityapi.IstioCertificateRequest{Csr: goodCSR}, codes.Unauthenticated},
		{"MAC under a guessed key", withToken(guessed), &securityapi.IstioCertificateRequest{Csr: goodCSR}, codes.Unauthenticated},
		{"token of another mesh", withToken(foreign), &securityapi.IstioCertificateRequest{Csr: goodCSR}, codes.Unauthenticated},
		{"CSR asks for another identity", withToken(tok), &securityapi.IstioCertificateRequest{Csr: askOther}, codes.PermissionDenied},
		{"impersonation", withToken(tok), &securityapi.IstioCertificateRequest{Csr: goodCSR, Metadata: impersonate}, codes.PermissionDenied},
		{"public key does not match signature", withToken(tok), &securityapi.IstioCertificateRequest{Csr: mismatched}, codes.InvalidArgument},
		{"not a CSR", withToken(tok), &securityapi.IstioCertificateRequest{Csr: "hello"}, codes.InvalidArgument},
		{"ttl above max", withToken(tok), &securityapi.IstioCertificateRequest{Csr: goodCSR, ValidityDuration: 1 << 62}, codes.InvalidArgument},
		{"negative ttl", withToken(tok), &securityapi.IstioCertificateRequest{Csr: goodCSR, ValidityDuration: -1}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(tt.ctx, 10*time.Second)
			defer cancel()
			resp, err := client.CreateCertificate(ctx, tt.req)
			if status.Code(err) != tt.want {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tt.want)
			}
			if len(resp.GetCertChain()) != 0 {
				t.Fatal("certificate returned with an error")
			}
		})
	}
}

func TestCreateCertificateFailsClosedWithoutAuthenticator(t *testing.T) {
	c := newTestCA(t, Options{})
	client := serve(t, c, nil)
	tok, _ := c.IssueToken(Identity{Namespace: "a", ServiceAccount: "b"})
	ctx, cancel := context.WithTimeout(withToken(tok), 10*time.Second)
	defer cancel()
	_, err := client.CreateCertificate(ctx, &securityapi.IstioCertificateRequest{Csr: string(csrPEM(t, ecKey(t), nil))})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("code %v, want Unauthenticated", status.Code(err))
	}
}

// An Authenticator that vouches for a malformed identity does not get a certificate.
type badAuth struct{}

func (badAuth) Authenticate(context.Context) (Identity, error) {
	return Identity{Namespace: "a/b", ServiceAccount: "c"}, nil
}

func TestCreateCertificateInvalidIdentityDenied(t *testing.T) {
	c := newTestCA(t, Options{})
	client := serve(t, c, badAuth{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.CreateCertificate(ctx, &securityapi.IstioCertificateRequest{Csr: string(csrPEM(t, ecKey(t), nil))})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("code %v, want PermissionDenied", status.Code(err))
	}
}

func TestTokens(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	tk, err := NewTokens(secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTokens(secret[:31]); err == nil {
		t.Fatal("31-byte secret accepted")
	}
	id := Identity{Namespace: "default", ServiceAccount: "productpage", Workload: "productpage-v1"}
	tok, err := tk.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Verify(tok)
	if err != nil || got != id {
		t.Fatalf("Verify: %v %v, want %v", got, err, id)
	}
	noWorkload := Identity{Namespace: "default", ServiceAccount: "x"}
	tok2, err := tk.Issue(noWorkload)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.Verify(tok2); err != nil || got != noWorkload {
		t.Fatalf("Verify without workload: %v %v", got, err)
	}
	for _, bad := range []Identity{
		{Namespace: "", ServiceAccount: "a"},
		{Namespace: "a", ServiceAccount: ""},
		{Namespace: "a/b", ServiceAccount: "c"},
		{Namespace: "A", ServiceAccount: "c"},
		{Namespace: "a", ServiceAccount: "c", Workload: "w/x"},
		{Namespace: strings.Repeat("a", 254), ServiceAccount: "c"},
	} {
		if _, err := tk.Issue(bad); err == nil {
			t.Errorf("Issue(%+v) accepted", bad)
		}
	}
	for i := range tok {
		// Every single-character change is rejected.
		b := []byte(tok)
		b[i] ^= 1
		if _, err := tk.Verify(string(b)); err == nil {
			t.Fatalf("token with byte %d flipped verifies", i)
		} else if !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
		}
	}
	for _, bad := range []string{"", tokenPrefix, tokenPrefix + ".", tok + ".x", tok[:len(tok)-1], strings.Repeat("a", maxTokenBytes+1)} {
		if _, err := tk.Verify(bad); err == nil {
			t.Errorf("Verify(%q) accepted", bad)
		}
	}
}

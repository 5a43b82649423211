package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixedNow is a whole second so certificate times (second precision) compare exactly.
var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestCA(t testing.TB, opts Options) *CA {
	t.Helper()
	if opts.Log == nil {
		opts.Log = quiet
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func newCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func csrPEM(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: newCSR(t, key, tmpl).Raw})
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// verifyChain checks a DER chain (leaf first) against a PEM root bundle.
func verifyChain(t testing.TB, chain [][]byte, rootsPEM []byte, at time.Time) *x509.Certificate {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootsPEM) {
		t.Fatal("roots: no certificate")
	}
	inter := x509.NewCertPool()
	var certs []*x509.Certificate
	for _, d := range chain {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("chain does not verify: %v", err)
	}
	return certs[0]
}

func TestSelfSignedRootPersistedAndReloaded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	c1 := newTestCA(t, Options{Dir: dir})
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, TokenSecretFile: 0o600, CACertFile: 0o644, RootCertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", fi.Mode().Perm())
	}
	tok, err := c1.IssueToken(Identity{Namespace: "default", ServiceAccount: "web", Workload: "web-1"})
	if err != nil {
		t.Fatal(err)
	}

	c2 := newTestCA(t, Options{Dir: dir}) // a restart
	if !bytes.Equal(c1.Roots(), c2.Roots()) {
		t.Fatal("root changed across restart")
	}
	if !c1.cert.Equal(c2.cert) {
		t.Fatal("signing certificate changed across restart")
	}
	if _, err := c2.Tokens().Verify(tok); err != nil {
		t.Fatalf("token issued before the restart: %v", err)
	}
	chain, err := c2.Sign(newCSR(t, ecKey(t), nil), "spiffe://cluster.local/ns/default/sa/web", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, c1.Roots(), time.Now())

	// The directory is itself a valid cacerts layout.
	c3 := newTestCA(t, Options{CACertsDir: dir})
	if !bytes.Equal(c3.Roots(), c1.Roots()) {
		t.Fatal("cacerts view of the dir has other roots")
	}
}

func TestSelfSignedRootIncompleteDirRefused(t *testing.T) {
	dir := t.TempDir()
	newTestCA(t, Options{Dir: dir})
	if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{Dir: dir, Log: quiet})
	if err == nil || !strings.Contains(err.Error(), "need both") {
		t.Fatalf("New with a key and no cert: %v, want refusal", err)
	}
}

func TestInMemoryRootsDiffer(t *testing.T) {
	a, b := newTestCA(t, Options{}), newTestCA(t, Options{})
	if bytes.Equal(a.Roots(), b.Roots()) {
		t.Fatal("two in-memory CAs share a root")
	}
}

// testPKI is an operator CA: root -> intermediate.
type testPKI struct {
	rootKey, interKey crypto.Signer
	root, inter       *x509.Certificate
}

func mkCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newPKI(t testing.TB, interKey crypto.Signer) *testPKI {
	t.Helper()
	p := &testPKI{rootKey: ecKey(t), interKey: interKey}
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * 365 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	p.root = mkCert(t, rootTmpl, rootTmpl, p.rootKey.Public(), p.rootKey)
	interTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "operator intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * 180 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	p.inter = mkCert(t, interTmpl, p.root, interKey.Public(), p.rootKey)
	return p
}

func pemCert(c ...*x509.Certificate) []byte {
	var b []byte
	for _, x := range c {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})...)
	}
	return b
}

func write(t testing.TB, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCACertsPlugIn(t *testing.T) {
	pkcs8 := func(k crypto.Signer) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other := newPKI(t, ecKey(t))
	tests := []struct {
		name    string
		key     crypto.Signer
		files   func(p *testPKI) map[string][]byte
		wantErr string
	}{
		{name: "istio layout: cert-chain is intermediate + root", key: ecKey(t), files: func(p *testPKI) map[string][]byte {
			return map[string][]byte{CACertFile: pemCert(p.inter), CAKeyFile: pkcs8(p.interKey),
				RootCertFile: pemCert(p.root), CertChainFile: pemCert(p.inter, p.root)}
		}},
		{name: "no cert-chain.pem", key: ecKey(t), files: func(p *testPKI) map[string][]byte {
			return map[string][]byte{CACertFile: pemCert(p.inter), CAKeyFile: pkcs8(p.interKey), RootCertFile: pemCert(p.root)}
		}},
		{name: "SEC1 EC key", key: ecKey(t), files: func(p *testPKI) map[string][]byte {
			der, _ := x509.MarshalECPrivateKey(p.interKey.(*ecdsa.PrivateKey))
			return map[string][]byte{CACertFile: pemCert(p.inter), CAKeyFile: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
				RootCertFile: pemCert(p.root), CertChainFile: pemCert(p.inter)}
		}},
		{name: "PKCS1 RSA intermediate", key: rsaKey, files: func(p *testPKI) map[string][]byte {
			return map[string][]byte{CACertFile: pemCert(p.inter),
				CAKeyFile:    pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(p.interKey.(*rsa.PrivateKey))}),
				RootCertFile: pemCert(p.root), CertChainFile: pemCert(p.inter, p.root)}
		}},
		{name: "key does not match", key: ecKey(t), wantErr: "does not match", files: func(p *testPKI) map[string][]byte {
			return map[string][]byte{CACertFile: pemCert(p.inter), CAKeyFile: pkcs8(ecKey(t)), RootCertFile: pemCert(p.root)}
		}},
		{name: "intermediate not under root-cert.pem", key: ecKey(t), wantErr: "does not chain", files: func(p *testPKI) map[string][]byte {
			return map[string][]byte{CACertFile: pemCert(p.inter), CAKeyFile: pkcs8(p.interKey), RootCertFile: pemCert(other.root)}
		}},
		{name: "missing root-cert.pem", key: ecKey(t), wantErr: RootCertFile, files: func(p *testPKI) map[string][]byte {
			return map[string][]byte{CACertFile: pemCert(p.inter), CAKeyFile: pkcs8(p.interKey)}
		}},
		{name: "leaf is not a CA", key: ecKey(t), wantErr: "not a CA", files: func(p *testPKI) map[string][]byte {
			leafKey := ecKey(t)
			leaf := mkCert(t, &x509.Certificate{SerialNumber: big.NewInt(9), NotBefore: time.Now().Add(-time.Hour),
				NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{{Scheme: "spiffe", Host: "x", Path: "/y"}}}, p.root, leafKey.Public(), p.rootKey)
			return map[string][]byte{CACertFile: pemCert(leaf), CAKeyFile: pkcs8(leafKey), RootCertFile: pemCert(p.root)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t, tt.key)
			dir := t.TempDir()
			for name, b := range tt.files(p) {
				write(t, dir, name, b)
			}
			c, err := New(Options{CACertsDir: dir, TrustDomain: "corp.example", Log: quiet})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if !bytes.Equal(c.Roots(), pemCert(p.root)) {
				t.Fatal("Roots() is not root-cert.pem")
			}
			chain, err := c.Sign(newCSR(t, ecKey(t), nil), "spiffe://corp.example/ns/shop/sa/cart", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 2 {
				t.Fatalf("chain has %d certificates, want leaf + intermediate (no root)", len(chain))
			}
			if !bytes.Equal(chain[1], p.inter.Raw) {
				t.Fatal("chain[1] is not the intermediate")
			}
			// Verify against root-cert.pem as read back from disk.
			rootFile, err := os.ReadFile(filepath.Join(dir, RootCertFile))
			if err != nil {
				t.Fatal(err)
			}
			leaf := verifyChain(t, chain, rootFile, time.Now())
			if !leaf.NotAfter.Before(p.inter.NotAfter.Add(time.Second)) {
				t.Fatal("leaf outlives its issuer")
			}
		})
	}
}

// A leaf never outlives the signing certificate.
func TestLeafClampedToIssuer(t *testing.T) {
	p := newPKI(t, ecKey(t))
	dir := t.TempDir()
	der, _ := x509.MarshalPKCS8PrivateKey(p.interKey)
	write(t, dir, CACertFile, pemCert(p.inter))
	write(t, dir, CAKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	write(t, dir, RootCertFile, pemCert(p.root))
	c := newTestCA(t, Options{CACertsDir: dir, MaxTTL: 365 * 24 * time.Hour})
	chain, err := c.Sign(newCSR(t, ecKey(t), nil), "spiffe://cluster.local/ns/a/sa/b", 300*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	if !leaf.NotAfter.Equal(p.inter.NotAfter) {
		t.Fatalf("NotAfter %v, want the intermediate's %v", leaf.NotAfter, p.inter.NotAfter)
	}
}

func TestSignIdentityAndUsage(t *testing.T) {
	c := newTestCA(t, Options{Now: func() time.Time { return fixedNow }})
	key := ecKey(t)
	// The CSR asks for another identity, DNS names, an email and a subject: all ignored.
	csr := newCSR(t, key, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "admin", Organization: []string{"evil"}},
		URIs:           []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/istio-system/sa/istiod"}},
		DNSNames:       []string{"istiod.istio-system.svc"},
		EmailAddresses: []string{"root@example.com"},
	})
	const id = "spiffe://cluster.local/ns/default/sa/reviews"
	chain, err := c.Sign(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := verifyChain(t, chain, c.Roots(), fixedNow)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		t.Fatalf("URI SANs %v, want exactly [%s]", leaf.URIs, id)
	}
	if len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 {
		t.Fatalf("other SANs copied from the CSR: dns=%v email=%v ip=%v", leaf.DNSNames, leaf.EmailAddresses, leaf.IPAddresses)
	}
	if leaf.Subject.String() != "" {
		t.Fatalf("subject %q copied from the CSR, want empty", leaf.Subject)
	}
	if leaf.IsCA {
		t.Fatal("leaf is a CA")
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
		t.Fatalf("key usage %v, want %v", leaf.KeyUsage, want)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("ext key usage %v, want server+client auth", leaf.ExtKeyUsage)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("leaf is not for the CSR's key")
	}
	if !leaf.NotBefore.Equal(fixedNow.Add(-ClockSkew)) || !leaf.NotAfter.Equal(fixedNow.Add(DefaultTTL)) {
		t.Fatalf("validity %v..%v, want now-%v..now+24h", leaf.NotBefore, leaf.NotAfter, ClockSkew)
	}
	chain2, _ := c.Sign(csr, id, 0)
	leaf2, _ := x509.ParseCertificate(chain2[0])
	if leaf2.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("two certificates share a serial")
	}
}

func TestSignTTL(t *testing.T) {
	c := newTestCA(t, Options{Now: func() time.Time { return fixedNow }, MaxTTL: 48 * time.Hour})
	tests := []struct {
		ttl, want time.Duration
		err       bool
	}{
		{ttl: 0, want: DefaultTTL},
		{ttl: time.Hour, want: time.Hour},
		{ttl: 10 * time.Second, want: DefaultMinTTL},
		{ttl: 48 * time.Hour, want: 48 * time.Hour},
		{ttl: 49 * time.Hour, err: true},
		{ttl: -time.Second, err: true},
	}
	for _, tt := range tests {
		chain, err := c.Sign(newCSR(t, ecKey(t), nil), "spiffe://cluster.local/ns/a/sa/b", tt.ttl)
		if tt.err {
			if !errors.Is(err, ErrInvalidTTL) {
				t.Errorf("ttl %v: err %v, want ErrInvalidTTL", tt.ttl, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ttl %v: %v", tt.ttl, err)
		}
		leaf, _ := x509.ParseCertificate(chain[0])
		if got := leaf.NotAfter.Sub(fixedNow); got != tt.want {
			t.Errorf("ttl %v: lifetime %v, want %v", tt.ttl, got, tt.want)
		}
	}
}

func TestSignRejects(t *testing.T) {
	c := newTestCA(t, Options{})
	good := newCSR(t, ecKey(t), nil)
	tampered := *good
	tampered.Signature = append([]byte(nil), good.Signature...)
	tampered.Signature[len(tampered.Signature)-3] ^= 0xff
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tests := []struct {
		name string
		csr  *x509.CertificateRequest
		id   string
		want error
	}{
		{"nil CSR", nil, "spiffe://cluster.local/ns/a/sa/b", ErrInvalidCSR},
		{"public key does not match the signature", mismatchedCSR(t), "spiffe://cluster.local/ns/a/sa/b", ErrInvalidCSR},
		{"tampered signature", &tampered, "spiffe://cluster.local/ns/a/sa/b", ErrInvalidCSR},
		{"weak curve", newCSR(t, p224, nil), "spiffe://cluster.local/ns/a/sa/b", ErrInvalidCSR},
		{"other trust domain", good, "spiffe://evil.example/ns/a/sa/b", ErrIdentity},
		{"not spiffe", good, "https://cluster.local/ns/a/sa/b", ErrIdentity},
		{"empty path", good, "spiffe://cluster.local", ErrIdentity},
		{"query", good, "spiffe://cluster.local/ns/a/sa/b?x=1", ErrIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Sign(tt.csr, tt.id, 0); !errors.Is(err, tt.want) {
				t.Fatalf("Sign: %v, want %v", err, tt.want)
			}
		})
	}
}

// mismatchedCSR is a CSR for one key signed by another: its public key does not match
// its signature. crypto/x509 refuses to make one, so it is re-signed at the ASN.1 level.
func mismatchedCSR(t testing.TB) *x509.CertificateRequest {
	t.Helper()
	var r struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}
	if _, err := asn1.Unmarshal(newCSR(t, ecKey(t), nil).Raw, &r); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(r.TBS.FullBytes)
	sig, err := ecdsa.SignASN1(rand.Reader, ecKey(t), h[:])
	if err != nil {
		t.Fatal(err)
	}
	r.Sig = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	der, err := asn1.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if csr.CheckSignature() == nil {
		t.Fatal("re-signed CSR still verifies")
	}
	return csr
}

func TestRSAKeyType(t *testing.T) {
	c := newTestCA(t, Options{KeyType: RSA})
	if _, ok := c.signer.(*rsa.PrivateKey); !ok {
		t.Fatalf("root key %T, want RSA", c.signer)
	}
	kp, err := c.Issue("spiffe://cluster.local/ns/a/sa/b", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := kp.Certificate.PrivateKey.(*rsa.PrivateKey); !ok {
		t.Fatalf("issued key %T, want RSA", kp.Certificate.PrivateKey)
	}
	verifyChain(t, kp.Certificate.Certificate, c.Roots(), time.Now())
	if _, err := New(Options{KeyType: "DSA", Log: quiet}); err == nil {
		t.Fatal("key type DSA accepted")
	}
}

func TestParseCSR(t *testing.T) {
	good := csrPEM(t, ecKey(t), nil)
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"valid", good, true},
		{"surrounding text", append(append([]byte("hello\n"), good...), "bye\n"...), true},
		{"empty", nil, false},
		{"not PEM", []byte("csr"), false},
		{"certificate block", bytes.Replace(good, []byte("CERTIFICATE REQUEST"), []byte("CERTIFICATE"), 2), false},
		{"two blocks", append(append([]byte(nil), good...), good...), false},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), false},
		{"too large", append(bytes.Repeat([]byte(" "), maxCSRBytes), good...), false},
	}
	for _, tt := range tests {
		_, err := ParseCSR(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidCSR) {
			t.Errorf("%s: %v does not wrap ErrInvalidCSR", tt.name, err)
		}
	}
}

func TestServingTLS(t *testing.T) {
	c := newTestCA(t, Options{})
	cfg, err := c.ServingTLS([]string{"127.0.0.1", "weft.istio-system.svc"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := cfg.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := verifyChain(t, cert.Certificate, c.Roots(), time.Now())
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("weft.istio-system.svc"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ServingTLS(nil); err == nil {
		t.Fatal("ServingTLS without hosts accepted")
	}
}

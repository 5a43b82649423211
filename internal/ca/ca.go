// Package ca is weft's certificate authority, the part of Istio's istiod that issues
// workload identities. It holds a signing key (a self-signed root it generates and
// persists, or the operator's own intermediate in Istio's cacerts layout) and issues
// short-lived X.509 SVIDs whose only SAN is the workload's SPIFFE ID
// (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).
//
// Certificates reach proxies two ways:
//
//   - CSR over gRPC (server.go, Istio's IstioCertificateService): the workload's agent
//     (package ca/agent) keeps its private key and sends only a CSR, authenticated by a
//     bearer credential (Authenticator; local mode uses HMAC tokens, tokens.go).
//   - SDS over ADS (sds.go, SDSSource): the control plane generates key and certificate
//     and pushes them as the "default" and "ROOTCA" secrets. This is the first step and
//     fallback only: the key is made outside the workload.
//
// Root rotation is not implemented: the root (or plugged-in intermediate) is used until
// it expires; New refuses an expired one and warns when one is within 30 days of expiry.
package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// KeyType is the algorithm of keys the CA generates (its own root, and workload keys in
// the SDS push model). Workload keys from CSRs are whatever the workload chose.
type KeyType string

const (
	ECDSA KeyType = "ECDSA" // P-256, the default
	RSA   KeyType = "RSA"   // 2048 bits
)

// Files of Istio's cacerts layout (the "cacerts" Secret / --cacerts directory).
const (
	CACertFile    = "ca-cert.pem"    // the signing certificate (an intermediate, or the root)
	CAKeyFile     = "ca-key.pem"     // its private key
	RootCertFile  = "root-cert.pem"  // the trust bundle handed to workloads
	CertChainFile = "cert-chain.pem" // ca-cert and the intermediates up to the root
	// TokenSecretFile holds the per-mesh HMAC secret of local-mode tokens (in Options.Dir).
	TokenSecretFile = "token-secret"
)

// Defaults.
const (
	DefaultTTL     = 24 * time.Hour
	DefaultMinTTL  = time.Minute
	DefaultMaxTTL  = 90 * 24 * time.Hour // Istio's max workload certificate TTL
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
	// ClockSkew back-dates NotBefore so peers whose clocks run a little behind accept a
	// certificate as soon as it is issued.
	ClockSkew = time.Minute
)

// Errors callers can tell apart (the gRPC service maps them to status codes).
var (
	ErrInvalidCSR = errors.New("invalid certificate signing request")
	ErrInvalidTTL = errors.New("invalid certificate lifetime")
	ErrIdentity   = errors.New("invalid identity")
)

// Options configure a CA.
type Options struct {
	// TrustDomain of issued SPIFFE IDs (mesh config trustDomain); default "cluster.local".
	TrustDomain string
	// CACertsDir plugs in the operator's CA in Istio's cacerts layout (CACertFile,
	// CAKeyFile, RootCertFile, CertChainFile); it wins over Dir for the signing key.
	CACertsDir string
	// Dir persists the self-signed root (ca-cert.pem, ca-key.pem 0600, root-cert.pem) and
	// the token secret. Created 0700 if missing. Empty: everything lives in memory and
	// changes on every start.
	Dir string
	// KeyType of generated keys; default ECDSA.
	KeyType KeyType
	// DefaultTTL of workload certificates when the request names none (default 24h);
	// MinTTL raises shorter requests (default 1m); MaxTTL rejects longer ones (default
	// 90 days, as Istio's CA rejects "requested TTL is greater than the max allowed").
	DefaultTTL, MinTTL, MaxTTL time.Duration
	// RootTTL of a generated root (default 10 years).
	RootTTL time.Duration
	// TokenSecret is the HMAC key of local-mode tokens (at least 32 bytes). Empty: read
	// from Dir/token-secret, created there if missing; random per process without Dir.
	TokenSecret []byte
	Log         *slog.Logger
	// Now is the clock; tests set it.
	Now func() time.Time
}

// CA signs workload certificates. It is safe for concurrent use.
type CA struct {
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	signer crypto.Signer
	cert   *x509.Certificate // the signing certificate
	// chain is the DER of the certificates between a leaf and the roots, signing
	// certificate first; empty when the signing certificate is itself a root.
	chain    [][]byte
	notAfter time.Time // earliest NotAfter of cert and chain: no leaf outlives it
	rootsPEM []byte
	roots    *x509.CertPool
	tokens   *Tokens
	source   string // for logs and the report: "cacerts <dir>", "self-signed <dir>", ...
}

// New loads or creates the CA described by opts.
func New(opts Options) (*CA, error) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.KeyType == "" {
		opts.KeyType = ECDSA
	}
	if opts.KeyType != ECDSA && opts.KeyType != RSA {
		return nil, fmt.Errorf("ca: key type %q: must be ECDSA or RSA", opts.KeyType)
	}
	if opts.DefaultTTL == 0 {
		opts.DefaultTTL = DefaultTTL
	}
	if opts.MinTTL == 0 {
		opts.MinTTL = DefaultMinTTL
	}
	if opts.MaxTTL == 0 {
		opts.MaxTTL = DefaultMaxTTL
	}
	if opts.RootTTL == 0 {
		opts.RootTTL = DefaultRootTTL
	}
	if opts.MinTTL < 0 || opts.DefaultTTL < opts.MinTTL || opts.MaxTTL < opts.DefaultTTL {
		return nil, fmt.Errorf("ca: ttl: need 0 < min (%s) <= default (%s) <= max (%s)", opts.MinTTL, opts.DefaultTTL, opts.MaxTTL)
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &CA{opts: opts, log: opts.Log.With("component", "ca"), now: opts.Now}
	if _, err := url.Parse("spiffe://" + opts.TrustDomain + "/"); err != nil || opts.TrustDomain == "" {
		return nil, fmt.Errorf("ca: trust domain %q: not a valid host", opts.TrustDomain)
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("ca: dir: %w", err)
		}
	}
	var err error
	switch {
	case opts.CACertsDir != "":
		err = c.loadCACerts(opts.CACertsDir)
		c.source = "cacerts " + opts.CACertsDir
	case opts.Dir != "":
		err = c.loadOrCreateRoot(opts.Dir)
		c.source = "self-signed " + opts.Dir
	default:
		err = c.createRoot()
		c.source = "self-signed (in memory)"
	}
	if err != nil {
		return nil, err
	}
	now := c.now()
	if !now.Before(c.notAfter) {
		return nil, fmt.Errorf("ca: %s: signing certificate expired at %s", c.source, c.notAfter.Format(time.RFC3339))
	}
	if c.notAfter.Sub(now) < 30*24*time.Hour {
		c.log.Warn("CA certificate expires soon; root rotation is not implemented", "source", c.source, "not_after", c.notAfter)
	}
	secret, err := c.tokenSecret()
	if err != nil {
		return nil, err
	}
	c.tokens, err = NewTokens(secret)
	if err != nil {
		return nil, err
	}
	c.log.Info("certificate authority ready", "source", c.source, "trust_domain", opts.TrustDomain,
		"subject", c.cert.Subject.String(), "not_after", c.notAfter)
	return c, nil
}

// TrustDomain of the SPIFFE IDs this CA issues.
func (c *CA) TrustDomain() string { return c.opts.TrustDomain }

// Roots is the PEM trust bundle workloads verify peers with (root-cert.pem).
func (c *CA) Roots() []byte { return bytes.Clone(c.rootsPEM) }

// RootPool is Roots as a pool.
func (c *CA) RootPool() *x509.CertPool { return c.roots.Clone() }

// Tokens is the CA's local-mode token authority (issue and verify).
func (c *CA) Tokens() *Tokens { return c.tokens }

// IssueToken is the credential `weft up` hands to one workload: it authenticates that
// workload, and only it, to the CSR service (see Tokens).
func (c *CA) IssueToken(id Identity) (string, error) { return c.tokens.Issue(id) }

// TTL resolves a requested lifetime: 0 means the default, shorter than the minimum is
// raised to it, longer than the maximum is an error.
func (c *CA) TTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("ca: ttl %s: %w: negative", ttl, ErrInvalidTTL)
	case ttl == 0:
		return c.opts.DefaultTTL, nil
	case ttl < c.opts.MinTTL:
		return c.opts.MinTTL, nil
	case ttl > c.opts.MaxTTL:
		return 0, fmt.Errorf("ca: ttl %s: %w: greater than the maximum %s", ttl, ErrInvalidTTL, c.opts.MaxTTL)
	}
	return ttl, nil
}

// Sign issues a certificate for the public key of csr. Its only SAN is the URI
// identity, a SPIFFE ID in the CA's trust domain, which the caller took from an
// authenticated source: the SANs and subject the CSR asks for are ignored. The CSR's
// signature must verify (proof that the requester holds the key). ttl follows TTL.
// chain is DER, leaf first, then the intermediates; roots are not included (Roots).
func (c *CA) Sign(csr *x509.CertificateRequest, identity string, ttl time.Duration) (chain [][]byte, err error) {
	if err := CheckCSR(csr); err != nil {
		return nil, err
	}
	u, err := ParseSpiffeID(identity, c.opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	chain, _, err = c.issue(csr.PublicKey, leafSANs{uris: []*url.URL{u}}, ttl)
	return chain, err
}

// CheckCSR verifies a parsed CSR: its signature (proof of possession) and an accepted
// key (ECDSA P-256/P-384/P-521, RSA 2048..8192 bits).
func CheckCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return fmt.Errorf("ca: %w: none", ErrInvalidCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("ca: %w: signature: %w", ErrInvalidCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return fmt.Errorf("ca: %w: %w", ErrInvalidCSR, err)
	}
	return nil
}

// maxCSRBytes bounds a CSR from the wire (a 8192-bit RSA CSR is under 3 KiB of PEM).
const maxCSRBytes = 64 << 10

// ParseCSR parses and checks one PEM "CERTIFICATE REQUEST" (untrusted input). Text
// around the block is ignored, as PEM allows; a second block is an error.
func ParseCSR(pemBytes []byte) (*x509.CertificateRequest, error) {
	if len(pemBytes) > maxCSRBytes {
		return nil, fmt.Errorf("ca: %w: larger than %d bytes", ErrInvalidCSR, maxCSRBytes)
	}
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("ca: %w: no PEM block", ErrInvalidCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("ca: %w: PEM block %q, want CERTIFICATE REQUEST", ErrInvalidCSR, block.Type)
	}
	if b, _ := pem.Decode(rest); b != nil {
		return nil, fmt.Errorf("ca: %w: more than one PEM block", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %w: %w", ErrInvalidCSR, err)
	}
	if err := CheckCSR(csr); err != nil {
		return nil, err
	}
	return csr, nil
}

func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("ECDSA curve %s not accepted", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("RSA key of %d bits: must be 2048..8192", n)
		}
		return nil
	}
	return fmt.Errorf("public key type %T not accepted (ECDSA or RSA)", pub)
}

// KeyPair is a certificate with its private key, made by the CA (SDS push model and the
// control plane's own serving certificate).
type KeyPair struct {
	Certificate tls.Certificate // Leaf set
	ChainPEM    []byte          // leaf then intermediates
	KeyPEM      []byte          // PKCS#8
	IssuedAt    time.Time
	NotAfter    time.Time
}

// Issue generates a key (Options.KeyType) and a certificate for the SPIFFE ID
// identity. The key is made here, not by the workload: see SDSSource.
func (c *CA) Issue(identity string, ttl time.Duration) (*KeyPair, error) {
	u, err := ParseSpiffeID(identity, c.opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	return c.issueKeyPair(leafSANs{uris: []*url.URL{u}}, ttl)
}

func (c *CA) issueKeyPair(sans leafSANs, ttl time.Duration) (*KeyPair, error) {
	key, err := generateKey(c.opts.KeyType)
	if err != nil {
		return nil, err
	}
	issuedAt := c.now()
	chain, leaf, err := c.issue(key.Public(), sans, ttl)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: marshal key: %w", err)
	}
	return &KeyPair{
		Certificate: tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf},
		ChainPEM:    encodeCerts(chain),
		KeyPEM:      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		IssuedAt:    issuedAt,
		NotAfter:    leaf.NotAfter,
	}, nil
}

type leafSANs struct {
	uris []*url.URL
	dns  []string
	ips  []net.IP
}

// issue signs a leaf for pub. Usages follow Istio's workload certificates: digital
// signature + key encipherment, server and client auth; the subject is empty, so the SAN
// extension is critical (RFC 5280 4.2.1.6).
func (c *CA) issue(pub crypto.PublicKey, sans leafSANs, ttl time.Duration) ([][]byte, *x509.Certificate, error) {
	ttl, err := c.TTL(ttl)
	if err != nil {
		return nil, nil, err
	}
	now := c.now()
	notBefore := now.Add(-ClockSkew)
	if notBefore.Before(c.cert.NotBefore) {
		notBefore = c.cert.NotBefore
	}
	notAfter := now.Add(ttl)
	if notAfter.After(c.notAfter) {
		notAfter = c.notAfter
	}
	if !notAfter.After(now) {
		return nil, nil, fmt.Errorf("ca: signing certificate expired at %s", c.notAfter.Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  sans.uris,
		DNSNames:              sans.dns,
		IPAddresses:           sans.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.signer)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign: %w", err)
	}
	chain := make([][]byte, 0, 1+len(c.chain))
	chain = append(chain, der)
	chain = append(chain, c.chain...)
	return chain, leaf, nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits, above the 64 bits CA/B guidelines ask for; never zero.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func generateKey(t KeyType) (crypto.Signer, error) {
	var (
		k   crypto.Signer
		err error
	)
	if t == RSA {
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: generate %s key: %w", t, err)
	}
	return k, nil
}

// createRoot makes a self-signed root in memory.
func (c *CA) createRoot() error {
	key, err := generateKey(c.opts.KeyType)
	if err != nil {
		return err
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{c.opts.TrustDomain}, CommonName: "weft root CA"},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(c.opts.RootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("ca: create root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("ca: create root: %w", err)
	}
	return c.useRoot(cert, key)
}

func (c *CA) useRoot(cert *x509.Certificate, key crypto.Signer) error {
	c.cert, c.signer, c.chain, c.notAfter = cert, key, nil, cert.NotAfter
	c.rootsPEM = encodeCerts([][]byte{cert.Raw})
	c.roots = x509.NewCertPool()
	c.roots.AddCert(cert)
	return nil
}

// loadOrCreateRoot reads the self-signed root from dir, or creates and writes it. A
// half-written pair is an error, never silently replaced: that would change the mesh's
// trust root under running workloads.
func (c *CA) loadOrCreateRoot(dir string) error {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		if err := c.createRoot(); err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(c.signer)
		if err != nil {
			return fmt.Errorf("ca: marshal root key: %w", err)
		}
		// Key first: a crash between the writes leaves a key without a cert, which the
		// next start reports instead of minting a second root.
		if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			return err
		}
		if err := writeFileAtomic(certPath, c.rootsPEM, 0o644); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, RootCertFile), c.rootsPEM, 0o644); err != nil {
			return err
		}
		c.log.Info("generated self-signed root", "dir", dir, "key_type", c.opts.KeyType)
		return nil
	case certErr != nil || keyErr != nil:
		return fmt.Errorf("ca: dir %s: need both %s and %s (cert: %v, key: %v); remove the directory to start a new root",
			dir, CACertFile, CAKeyFile, certErr, keyErr)
	}
	certs, err := readCerts(certPath)
	if err != nil {
		return err
	}
	key, err := c.readKey(keyPath)
	if err != nil {
		return err
	}
	cert := certs[0]
	if err := checkSigning(cert, key, certPath); err != nil {
		return err
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return fmt.Errorf("ca: %s: not a self-signed root (use cacerts for an intermediate): %w", certPath, err)
	}
	return c.useRoot(cert, key)
}

// loadCACerts plugs in an operator CA from Istio's cacerts layout: ca-cert.pem signs,
// root-cert.pem is the trust bundle, cert-chain.pem (optional) the certificates from
// ca-cert up to the root.
func (c *CA) loadCACerts(dir string) error {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	rootPath, chainPath := filepath.Join(dir, RootCertFile), filepath.Join(dir, CertChainFile)
	certs, err := readCerts(certPath)
	if err != nil {
		return err
	}
	cert := certs[0]
	key, err := c.readKey(keyPath)
	if err != nil {
		return err
	}
	if err := checkSigning(cert, key, certPath); err != nil {
		return err
	}
	roots, err := readCerts(rootPath)
	if err != nil {
		return err
	}
	var chainCerts []*x509.Certificate
	if _, err := os.Stat(chainPath); err == nil {
		if chainCerts, err = readCerts(chainPath); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ca: %s: %w", chainPath, err)
	}
	rootPool := x509.NewCertPool()
	isRoot := map[string]bool{}
	for _, r := range roots {
		rootPool.AddCert(r)
		isRoot[string(r.Raw)] = true
	}
	inter := x509.NewCertPool()
	for _, ic := range chainCerts {
		inter.AddCert(ic)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: inter, CurrentTime: c.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("ca: %s: does not chain to %s through %s: %w", certPath, RootCertFile, CertChainFile, err)
	}
	// The chain a leaf carries: ca-cert, then cert-chain's other certificates, without
	// roots (peers have them) or repeats; order of cert-chain.pem kept.
	seen := map[string]bool{}
	notAfter := cert.NotAfter
	var chain [][]byte
	for _, x := range append([]*x509.Certificate{cert}, chainCerts...) {
		if isRoot[string(x.Raw)] || seen[string(x.Raw)] {
			continue
		}
		seen[string(x.Raw)] = true
		chain = append(chain, x.Raw)
		if x.NotAfter.Before(notAfter) {
			notAfter = x.NotAfter
		}
	}
	c.cert, c.signer, c.chain, c.notAfter = cert, key, chain, notAfter
	c.roots = rootPool
	der := make([][]byte, len(roots))
	for i, r := range roots {
		der[i] = r.Raw
	}
	c.rootsPEM = encodeCerts(der)
	return nil
}

func checkSigning(cert *x509.Certificate, key crypto.Signer, path string) error {
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return fmt.Errorf("ca: %s: not a CA certificate (basicConstraints CA:TRUE required)", path)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("ca: %s: key usage lacks keyCertSign", path)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("ca: %s: private key does not match the certificate", path)
	}
	return nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	certs, err := parseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return certs, nil
}

// parseCerts reads every PEM CERTIFICATE block; other block types are an error.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for i := 0; ; i++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d: type %q, want CERTIFICATE", i, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return certs, nil
}

func (c *CA) readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		c.log.Warn("CA key file is readable by group or others", "path", path, "mode", fi.Mode().Perm().String())
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("ca: %s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("ca: %s: PEM block %q is not a private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("ca: %s: key type %T not supported (ECDSA or RSA)", path, key)
}

func encodeCerts(ders [][]byte) []byte {
	var buf bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return buf.Bytes()
}

// writeFileAtomic writes through a temporary file in the same directory, so a reader
// never sees a partial file; the temporary file is created with perm from the start.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	return nil
}

// tokenSecret picks the HMAC key of local-mode tokens: Options.TokenSecret, else
// Dir/token-secret (created 0600 when missing), else random for this process.
func (c *CA) tokenSecret() ([]byte, error) {
	if len(c.opts.TokenSecret) > 0 {
		return c.opts.TokenSecret, nil
	}
	secret := make([]byte, 32)
	if c.opts.Dir == "" {
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("ca: token secret: %w", err)
		}
		return secret, nil
	}
	path := filepath.Join(c.opts.Dir, TokenSecretFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return b, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("ca: token secret: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("ca: token secret: %w", err)
	}
	if err := writeFileAtomic(path, secret, 0o600); err != nil {
		return nil, err
	}
	return secret, nil
}

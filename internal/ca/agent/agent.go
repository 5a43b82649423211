// Package agent is the workload side of weft's CA, the role of Istio's pilot-agent SDS
// server: it makes the workload's private key, sends only a CSR to the control plane's
// certificate service (istio.v1.auth.IstioCertificateService) with the workload's bearer
// credential, keeps the signed chain and the trust bundle, and renews before expiry.
// weft-proxy serves the result as its "default" and "ROOTCA" SDS secrets (package
// ca/secret builds them), so the key never leaves the workload.
//
// Every renewal generates a new key (as Istio's agent does): a key lives no longer than
// one certificate. It links into the sidecar, so it imports only grpc and the CA proto.
package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	securityapi "istio.io/api/security/v1alpha1"
)

// Options configure an Agent.
type Options struct {
	// Address of the CA service, host:port (the control plane's 15012 with TLS, or
	// 15010 plaintext on loopback in local mode).
	Address string
	// TLS secures the connection; nil needs Insecure (plaintext) set explicitly, since
	// the bearer token travels in the clear then.
	TLS      *tls.Config
	Insecure bool
	// Conn, when set, is used instead of dialing Address (shared connection, tests).
	Conn grpc.ClientConnInterface

	// Token is the workload's bearer credential; TokenFile, when set, is read before
	// every request instead (a rotated Kubernetes projected token, or `weft up`'s file).
	Token     string
	TokenFile string

	// Identity, when set, is the SPIFFE ID the workload expects: it is put in the CSR
	// and the issued certificate must carry it. Empty: the CA's choice is accepted.
	Identity string
	// TTL requested (validity_duration, whole seconds); 0 leaves it to the CA.
	TTL time.Duration
	// GraceRatio: renew when this fraction of the lifetime has passed (default 0.5,
	// Istio's SECRET_GRACE_PERIOD_RATIO). Jitter: plus or minus this fraction of the
	// lifetime (default 0.05) so workloads started together do not renew together.
	GraceRatio, Jitter float64
	// RequestTimeout bounds one CSR call (default 10s).
	RequestTimeout time.Duration
	// ClusterID is sent as gRPC metadata "ClusterID" (Istio's agent does; multi-cluster).
	ClusterID string
	// Metadata goes in the request's metadata struct (Istio: WorkloadName, WorkloadIP).
	Metadata map[string]string
	Log      *slog.Logger
}

// Bundle is one issued identity. It is shared and must not be modified.
type Bundle struct {
	// Certificate is the chain and key for crypto/tls; Leaf is set.
	Certificate tls.Certificate
	ChainPEM    []byte // leaf, then intermediates
	KeyPEM      []byte // PKCS#8
	RootsPEM    []byte // the trust bundle (the CA response's last element)
	Roots       *x509.CertPool
	Identity    string // the leaf's URI SAN
	// IssuedAt is when the request was sent (local clock); the lifetime RenewAt is
	// placed in runs from here to NotAfter.
	IssuedAt time.Time
	NotAfter time.Time
	RenewAt  time.Time
}

// Agent obtains and renews a workload certificate. Safe for concurrent use.
type Agent struct {
	opts   Options
	log    *slog.Logger
	client securityapi.IstioCertificateServiceClient
	closer func() error

	current atomic.Pointer[Bundle]
	mu      sync.Mutex
	changed chan struct{}
	ready   chan struct{}
	isReady bool
	// refresh serializes CSR rounds so two callers never race to publish.
	refresh sync.Mutex
}

// New prepares an agent; Run (or Refresh) obtains the certificate.
func New(opts Options) (*Agent, error) {
	if opts.GraceRatio == 0 {
		opts.GraceRatio = 0.5
	}
	if opts.Jitter == 0 {
		opts.Jitter = 0.05
	}
	if opts.Jitter < 0 || opts.GraceRatio-opts.Jitter <= 0 || opts.GraceRatio+opts.Jitter >= 1 {
		return nil, fmt.Errorf("agent: grace ratio %v +/- jitter %v: must stay within (0, 1)", opts.GraceRatio, opts.Jitter)
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("agent: ttl %s: must not be negative", opts.TTL)
	}
	if opts.Token == "" && opts.TokenFile == "" {
		return nil, fmt.Errorf("agent: no credential: set Token or TokenFile")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	a := &Agent{opts: opts, log: opts.Log.With("component", "ca-agent"), changed: make(chan struct{}), ready: make(chan struct{}), closer: func() error { return nil }}
	conn := opts.Conn
	if conn == nil {
		if opts.Address == "" {
			return nil, fmt.Errorf("agent: address: required")
		}
		var creds credentials.TransportCredentials
		switch {
		case opts.TLS != nil:
			creds = credentials.NewTLS(opts.TLS)
		case opts.Insecure:
			creds = insecure.NewCredentials()
		default:
			return nil, fmt.Errorf("agent: address %s: set TLS, or Insecure for plaintext", opts.Address)
		}
		cc, err := grpc.NewClient(opts.Address, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("agent: dial %s: %w", opts.Address, err)
		}
		conn, a.closer = cc, cc.Close
	}
	a.client = securityapi.NewIstioCertificateServiceClient(conn)
	return a, nil
}

// Close releases the connection the agent dialed.
func (a *Agent) Close() error { return a.closer() }

// Current is the certificate to serve, nil before the first one and once it has
// expired: an expired certificate is never handed out.
func (a *Agent) Current() *Bundle {
	b := a.current.Load()
	if b == nil || !time.Now().Before(b.NotAfter) {
		return nil
	}
	return b
}

// Changed returns a channel closed at the next change of Current. Take the channel
// before reading Current, so a change between the two is not missed.
func (a *Agent) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// Ready is closed once the first certificate is held.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// GetCertificate serves Current to crypto/tls servers.
func (a *Agent) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if b := a.Current(); b != nil {
		return &b.Certificate, nil
	}
	return nil, errors.New("agent: no valid workload certificate")
}

// GetClientCertificate serves Current to crypto/tls clients.
func (a *Agent) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if b := a.Current(); b != nil {
		return &b.Certificate, nil
	}
	return nil, errors.New("agent: no valid workload certificate")
}

const (
	minRenewInterval = 100 * time.Millisecond
	initialBackoff   = 500 * time.Millisecond
	maxBackoff       = 30 * time.Second
)

// Run obtains a certificate, then renews it at its RenewAt, until ctx ends. Failures are
// retried with exponential backoff (0.5s..30s, shortened while the held certificate
// nears expiry); the old certificate keeps serving until it expires.
func (a *Agent) Run(ctx context.Context) error {
	backoff := initialBackoff
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if b := a.current.Load(); b != nil {
			// The floor bounds the loop if a CA hands out certificates that end almost
			// at once (a leaf clamped to an expiring intermediate).
			timer.Reset(max(time.Until(b.RenewAt), minRenewInterval))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		}
		_, err := a.Refresh(ctx)
		if err == nil {
			backoff = initialBackoff
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := backoff + time.Duration(mrand.Int64N(int64(backoff/4)+1))
		if b := a.current.Load(); b != nil {
			if left := time.Until(b.NotAfter); left > 0 {
				wait = min(wait, max(left/4, 100*time.Millisecond))
			}
		}
		a.log.Warn("certificate request failed; retrying", "error", err, "retry_in", wait.String())
		backoff = min(backoff*2, maxBackoff)
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// Refresh makes a new key, has it certified and publishes the result.
func (a *Agent) Refresh(ctx context.Context) (*Bundle, error) {
	a.refresh.Lock()
	defer a.refresh.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return nil, fmt.Errorf("agent: generate key: %w", err)
	}
	csrPEM, err := a.csr(key)
	if err != nil {
		return nil, err
	}
	token, err := a.token()
	if err != nil {
		return nil, err
	}
	req := &securityapi.IstioCertificateRequest{Csr: string(csrPEM), ValidityDuration: int64(a.opts.TTL / time.Second)}
	if len(a.opts.Metadata) > 0 {
		m := make(map[string]any, len(a.opts.Metadata))
		for k, v := range a.opts.Metadata {
			m[k] = v
		}
		if req.Metadata, err = structpb.NewStruct(m); err != nil {
			return nil, fmt.Errorf("agent: metadata: %w", err)
		}
	}
	md := metadata.Pairs("authorization", "Bearer "+token)
	if a.opts.ClusterID != "" {
		md.Set("ClusterID", a.opts.ClusterID)
	}
	cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), a.opts.RequestTimeout)
	defer cancel()
	start := time.Now()
	resp, err := a.client.CreateCertificate(cctx, req)
	if err != nil {
		return nil, fmt.Errorf("agent: CreateCertificate: %w", err)
	}
	b, err := a.bundle(key, resp.GetCertChain(), start)
	if err != nil {
		return nil, err
	}
	a.publish(b)
	a.log.Info("workload certificate obtained", "identity", b.Identity,
		"serial", b.Certificate.Leaf.SerialNumber.Text(16), "not_after", b.NotAfter, "renew_at", b.RenewAt)
	return b, nil
}

func (a *Agent) csr(key *ecdsa.PrivateKey) ([]byte, error) {
	tmpl := &x509.CertificateRequest{}
	if a.opts.Identity != "" {
		u, err := url.Parse(a.opts.Identity)
		if err != nil {
			return nil, fmt.Errorf("agent: identity %q: %w", a.opts.Identity, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(crand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("agent: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func (a *Agent) token() (string, error) {
	if a.opts.TokenFile == "" {
		return a.opts.Token, nil
	}
	b, err := os.ReadFile(a.opts.TokenFile)
	if err != nil {
		return "", fmt.Errorf("agent: token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("agent: token file %s: empty", a.opts.TokenFile)
	}
	return t, nil
}

// bundle checks a CA response before anything is served from it: leaf first, roots
// last (Istio's order); the leaf is for our key, chains to the roots, is valid now and
// carries exactly one URI SAN (the expected one, when Options.Identity is set).
func (a *Agent) bundle(key *ecdsa.PrivateKey, elems []string, start time.Time) (*Bundle, error) {
	if len(elems) < 2 {
		return nil, fmt.Errorf("agent: response: %d cert_chain elements, want leaf ... root", len(elems))
	}
	var chain [][]byte
	for i, e := range elems[:len(elems)-1] {
		ders, err := pemCerts([]byte(e))
		if err != nil {
			return nil, fmt.Errorf("agent: response cert_chain[%d]: %w", i, err)
		}
		chain = append(chain, ders...)
	}
	rootsPEM := []byte(elems[len(elems)-1])
	rootDERs, err := pemCerts(rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("agent: response cert_chain[%d] (roots): %w", len(elems)-1, err)
	}
	roots := x509.NewCertPool()
	for _, d := range rootDERs {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("agent: response roots: %w", err)
		}
		roots.AddCert(c)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("agent: response leaf: %w", err)
	}
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("agent: response leaf is not for this agent's key")
	}
	inter := x509.NewCertPool()
	for _, d := range chain[1:] {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("agent: response intermediate: %w", err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("agent: response leaf does not verify: %w", err)
	}
	if len(leaf.URIs) != 1 {
		return nil, fmt.Errorf("agent: response leaf has %d URI SANs, want 1", len(leaf.URIs))
	}
	id := leaf.URIs[0].String()
	if a.opts.Identity != "" && id != a.opts.Identity {
		return nil, fmt.Errorf("agent: response leaf is for %s, want %s", id, a.opts.Identity)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("agent: marshal key: %w", err)
	}
	var chainPEM bytes.Buffer
	for _, d := range chain {
		_ = pem.Encode(&chainPEM, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return &Bundle{
		Certificate: tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf},
		ChainPEM:    chainPEM.Bytes(),
		KeyPEM:      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		RootsPEM:    rootsPEM,
		Roots:       roots,
		Identity:    id,
		IssuedAt:    start,
		NotAfter:    leaf.NotAfter,
		RenewAt:     a.renewAt(start, leaf.NotAfter),
	}, nil
}

// renewAt measures the lifetime from when the request was sent (NotBefore is
// back-dated for clock skew) and places renewal at GraceRatio +/- Jitter of it.
func (a *Agent) renewAt(start, notAfter time.Time) time.Time {
	life := notAfter.Sub(start)
	if life <= 0 {
		return start
	}
	ratio := a.opts.GraceRatio + a.opts.Jitter*(2*mrand.Float64()-1)
	return start.Add(time.Duration(float64(life) * ratio))
}

func (a *Agent) publish(b *Bundle) {
	a.current.Store(b)
	a.mu.Lock()
	close(a.changed)
	a.changed = make(chan struct{})
	if !a.isReady {
		a.isReady = true
		close(a.ready)
	}
	a.mu.Unlock()
}

func pemCerts(b []byte) ([][]byte, error) {
	var out [][]byte
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", block.Type)
		}
		out = append(out, block.Bytes)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

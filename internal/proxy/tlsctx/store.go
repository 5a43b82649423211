package tlsctx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Store holds named secrets: the bootstrap's static_resources.secrets (AddStatic, never
// removed) and the SDS state of the world (Update). Readers (handshakes) load an
// immutable snapshot through one atomic pointer; writers copy on write.
type Store struct {
	mu      sync.Mutex // serialises writers
	static  map[string]*secret
	dynamic map[string]*secret
	snap    atomic.Pointer[snapshot]
}

// snapshot is what a handshake reads: every secret by name and a version that changes
// whenever the content may have changed, so compiled contexts can cache what they
// resolved from it.
type snapshot struct {
	version uint64
	secrets map[string]*secret
}

// secret is one validated SDS secret.
type secret struct {
	name string
	// cert is set for a tls_certificate secret.
	cert *tls.Certificate
	// vc is set for a validation_context secret: the proto (merged into a
	// combined_validation_context's default) and its compiled form.
	vc       *tlsv3.CertificateValidationContext
	compiled *validation
	// kind names the secret type for error messages.
	kind string
}

// NewStore returns an empty store.
func NewStore() *Store {
	s := &Store{static: map[string]*secret{}, dynamic: map[string]*secret{}}
	s.snap.Store(&snapshot{secrets: map[string]*secret{}})
	return s
}

// Update replaces the SDS secrets (state of the world for the names subscribed). Every
// secret is validated first (PEM parses, private key matches the certificate, CA bundle
// parses); on any error nothing changes. A dynamic secret shadows a static one of the
// same name while it is present.
func (s *Store) Update(secrets []*tlsv3.Secret) error {
	compiled, err := compileSecrets(secrets)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dynamic = compiled
	s.publish()
	return nil
}

// AddStatic adds secrets from the bootstrap's static_resources; they are never removed.
// A name added again replaces the earlier static secret.
func (s *Store) AddStatic(secrets []*tlsv3.Secret) error {
	compiled, err := compileSecrets(secrets)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, sec := range compiled {
		s.static[name] = sec
	}
	s.publish()
	return nil
}

// Names lists every secret name present, sorted.
func (s *Store) Names() []string {
	snap := s.snap.Load()
	out := make([]string, 0, len(snap.secrets))
	for name := range snap.secrets {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Has reports whether a secret of that name is present.
func (s *Store) Has(name string) bool {
	_, ok := s.snap.Load().secrets[name]
	return ok
}

// Version changes whenever the store's content may have changed.
func (s *Store) Version() uint64 { return s.snap.Load().version }

// Leaf returns the leaf certificate of the tls_certificate secret name (for admin
// /certs and tests); nil when absent or of another type.
func (s *Store) Leaf(name string) *x509.Certificate {
	sec := s.snap.Load().secrets[name]
	if sec == nil || sec.cert == nil {
		return nil
	}
	return sec.cert.Leaf
}

// publish builds a new snapshot; s.mu must be held.
func (s *Store) publish() {
	m := make(map[string]*secret, len(s.static)+len(s.dynamic))
	for k, v := range s.static {
		m[k] = v
	}
	for k, v := range s.dynamic {
		m[k] = v
	}
	old := s.snap.Load()
	s.snap.Store(&snapshot{version: old.version + 1, secrets: m})
}

func (s *Store) load() *snapshot {
	if s == nil {
		return emptySnapshot
	}
	return s.snap.Load()
}

var emptySnapshot = &snapshot{secrets: map[string]*secret{}}

// compileSecrets validates every secret and collects every error with its path.
func compileSecrets(secrets []*tlsv3.Secret) (map[string]*secret, error) {
	out := make(map[string]*secret, len(secrets))
	var errs []error
	for i, sec := range secrets {
		if sec == nil {
			errs = append(errs, fmt.Errorf("secrets[%d]: nil", i))
			continue
		}
		path := fmt.Sprintf("secret %q", sec.GetName())
		if sec.GetName() == "" {
			errs = append(errs, fmt.Errorf("secrets[%d].name: must not be empty", i))
			continue
		}
		if _, dup := out[sec.GetName()]; dup {
			errs = append(errs, fmt.Errorf("%s: duplicate name", path))
			continue
		}
		c := &secret{name: sec.GetName()}
		switch t := sec.GetType().(type) {
		case *tlsv3.Secret_TlsCertificate:
			cert, err := loadCertificate(t.TlsCertificate)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: tls_certificate%w", path, err))
				continue
			}
			c.cert, c.kind = cert, "tls_certificate"
		case *tlsv3.Secret_ValidationContext:
			v, err := compileValidation(t.ValidationContext)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: validation_context%w", path, err))
				continue
			}
			c.vc, c.compiled, c.kind = t.ValidationContext, v, "validation_context"
		case *tlsv3.Secret_GenericSecret:
			// Kept only so that its name is known; not usable for TLS.
			c.kind = "generic_secret"
		case *tlsv3.Secret_SessionTicketKeys:
			c.kind = "session_ticket_keys"
		default:
			errs = append(errs, fmt.Errorf("%s: type: must be set", path))
			continue
		}
		out[c.name] = c
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("tlsctx: %w", errors.Join(errs...))
	}
	return out, nil
}

// fieldErr is an error whose message starts with a field path relative to its parent,
// so callers can prefix their own path: ".certificate_chain: no PEM certificate".
type fieldErr struct {
	path string
	err  error
}

func (e *fieldErr) Error() string { return e.path + ": " + e.err.Error() }
func (e *fieldErr) Unwrap() error { return e.err }

func errAt(path string, format string, args ...any) error {
	return &fieldErr{path: path, err: fmt.Errorf(format, args...)}
}

func prefixErr(path string, err error) error {
	var fe *fieldErr
	if errors.As(err, &fe) {
		return &fieldErr{path: path + fe.path, err: fe.err}
	}
	return &fieldErr{path: path, err: err}
}

// readDataSource returns the bytes of a DataSource (Envoy's config.core.v3.DataSource).
// A filename is read once, when the config is compiled.
func readDataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, errAt(".filename", "%w", err)
		}
		return b, nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, errAt(".environment_variable", "%q is not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	default:
		return nil, errAt("", "no data source set")
	}
}

// loadCertificate parses a TlsCertificate: PEM chain plus matching private key.
func loadCertificate(tc *tlsv3.TlsCertificate) (*tls.Certificate, error) {
	switch {
	case tc == nil:
		return nil, errAt("", "not set")
	case tc.GetPkcs12() != nil:
		return nil, errAt(".pkcs12", "not supported")
	case tc.GetPrivateKeyProvider() != nil:
		return nil, errAt(".private_key_provider", "not supported")
	case tc.GetPassword() != nil:
		return nil, errAt(".password", "encrypted private keys are not supported")
	}
	chain, err := readDataSource(tc.GetCertificateChain())
	if err != nil {
		return nil, prefixErr(".certificate_chain", err)
	}
	key, err := readDataSource(tc.GetPrivateKey())
	if err != nil {
		return nil, prefixErr(".private_key", err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, errAt(".certificate_chain", "%w", err)
	}
	// X509KeyPair fills Leaf since Go 1.23; keep a guard for older behaviour.
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, errAt(".certificate_chain", "%w", err)
		}
		cert.Leaf = leaf
	}
	return &cert, nil
}

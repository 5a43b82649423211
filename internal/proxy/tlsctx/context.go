package tlsctx

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

// ErrSecretNotReady is wrapped by handshake errors when a context refers to an SDS
// secret the store does not (yet) hold: the handshake fails closed.
var ErrSecretNotReady = errors.New("tlsctx: SDS secret not available")

// compiled is a CommonTlsContext plus the Downstream/Upstream specifics, ready to serve
// handshakes. What it resolves from the store is cached per store version, so a
// handshake does map lookups only after a secret changes.
type compiled struct {
	store *Store

	certs   []tls.Certificate // inline tls_certificates
	certSDS []string          // tls_certificate_sds_secret_configs names

	hasValidation bool
	vStatic       *validation                         // inline validation_context
	vSDS          string                              // validation SDS secret name
	vDefault      *tlsv3.CertificateValidationContext // combined_validation_context default

	alpn          []string
	minV, maxV    uint16
	ciphers       []uint16
	curves        []tls.CurveID
	requireClient bool
	sni           string
	autoSNISAN    bool

	cache atomic.Pointer[resolved]
}

// resolved is what one store version yields for a context.
type resolved struct {
	version uint64
	certs   []tls.Certificate
	certErr error
	v       *validation
	vErr    error
	// server side: configs returned by GetConfigForClient, with and without ALPN.
	withALPN, noALPN *tls.Config
}

// Server builds the config for a DownstreamTlsContext. The certificate and validation
// context are taken from the store at each handshake (GetConfigForClient), so a rotated
// secret applies to the next connection. A referenced SDS secret missing from the store
// fails the handshake.
func Server(ctx *tlsv3.DownstreamTlsContext, s *Store) (*tls.Config, error) {
	if ctx == nil {
		return nil, errors.New("tlsctx: downstream tls context: not set")
	}
	c, err := compileCommon(ctx.GetCommonTlsContext(), s, true)
	if err != nil {
		return nil, fmt.Errorf("tlsctx: common_tls_context%w", err)
	}
	if len(c.certs) == 0 && len(c.certSDS) == 0 {
		return nil, errors.New("tlsctx: common_tls_context: a server needs tls_certificates or tls_certificate_sds_secret_configs")
	}
	c.requireClient = ctx.GetRequireClientCertificate().GetValue()
	return &tls.Config{
		MinVersion: c.minV,
		MaxVersion: c.maxV,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			r := c.current()
			if r.certErr != nil {
				return nil, r.certErr
			}
			if r.vErr != nil {
				return nil, r.vErr
			}
			if len(c.alpn) == 0 || len(hello.SupportedProtos) == 0 || overlaps(c.alpn, hello.SupportedProtos) {
				return r.withALPN, nil
			}
			// BoringSSL (Envoy) negotiates no protocol when the lists do not overlap;
			// Go's server would abort the handshake, so offer none.
			return r.noALPN, nil
		},
	}, nil
}

// Client builds the config for an UpstreamTlsContext: sni, alpn_protocols, the client
// certificate from the store at each handshake and server verification (trusted CA, SAN
// matchers) at each handshake. Go's own verification is off: as in Envoy, the server
// name is not checked against the certificate unless auto_sni_san_validation is set;
// without a validation context the server certificate is not verified at all.
func Client(ctx *tlsv3.UpstreamTlsContext, s *Store) (*tls.Config, error) {
	if ctx == nil {
		return nil, errors.New("tlsctx: upstream tls context: not set")
	}
	c, err := compileCommon(ctx.GetCommonTlsContext(), s, false)
	if err != nil {
		return nil, fmt.Errorf("tlsctx: common_tls_context%w", err)
	}
	c.sni = ctx.GetSni()
	c.autoSNISAN = ctx.GetAutoSniSanValidation()
	cfg := &tls.Config{
		ServerName:         c.sni,
		NextProtos:         c.alpn,
		MinVersion:         c.minV,
		MaxVersion:         c.maxV,
		CipherSuites:       c.ciphers,
		CurvePreferences:   c.curves,
		InsecureSkipVerify: true, // verification is VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			r := c.current()
			if r.vErr != nil {
				return r.vErr
			}
			if c.autoSNISAN && cs.ServerName != "" {
				if len(cs.PeerCertificates) == 0 {
					return errNoPeerCert
				}
				if err := cs.PeerCertificates[0].VerifyHostname(cs.ServerName); err != nil {
					return fmt.Errorf("tlsctx: auto_sni_san_validation: %w", err)
				}
			}
			if !r.v.configured() {
				return nil
			}
			return r.v.verify(cs.PeerCertificates, time.Now())
		},
	}
	if ctx.GetAllowRenegotiation() {
		cfg.Renegotiation = tls.RenegotiateFreelyAsClient
	}
	if len(c.certs) > 0 || len(c.certSDS) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			r := c.current()
			if r.certErr != nil {
				return nil, r.certErr
			}
			// Envoy clients use a single certificate.
			return &r.certs[0], nil
		}
	}
	return cfg, nil
}

// SecretNames lists the SDS secret names a context refers to, sorted and unique.
func SecretNames(common *tlsv3.CommonTlsContext) []string {
	var names []string
	for _, sc := range common.GetTlsCertificateSdsSecretConfigs() {
		names = append(names, sc.GetName())
	}
	if n := common.GetValidationContextSdsSecretConfig().GetName(); n != "" {
		names = append(names, n)
	}
	if n := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName(); n != "" {
		names = append(names, n)
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// PeerPrincipal is the first URI SAN of the peer's leaf certificate (the SPIFFE ID), ""
// when there is none.
func PeerPrincipal(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	if u := cs.PeerCertificates[0].URIs; len(u) > 0 {
		return u[0].String()
	}
	return ""
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// compileCommon validates a CommonTlsContext; errors carry the field path below it.
func compileCommon(common *tlsv3.CommonTlsContext, s *Store, server bool) (*compiled, error) {
	c := &compiled{store: s, minV: tls.VersionTLS12, maxV: tls.VersionTLS13}
	switch {
	case common.GetTlsCertificateProviderInstance() != nil:
		return nil, errAt(".tls_certificate_provider_instance", "not supported")
	case common.GetTlsCertificateCertificateProvider() != nil:
		return nil, errAt(".tls_certificate_certificate_provider", "not supported")
	case common.GetTlsCertificateCertificateProviderInstance() != nil:
		return nil, errAt(".tls_certificate_certificate_provider_instance", "not supported")
	case common.GetCustomTlsCertificateSelector() != nil:
		return nil, errAt(".custom_tls_certificate_selector", "not supported")
	case common.GetCustomHandshaker() != nil:
		return nil, errAt(".custom_handshaker", "not supported")
	}
	if err := c.tlsParams(common.GetTlsParams()); err != nil {
		return nil, prefixErr(".tls_params", err)
	}
	c.alpn = common.GetAlpnProtocols()

	// Envoy: tls_certificates, when set, win over tls_certificate_sds_secret_configs.
	for i, tc := range common.GetTlsCertificates() {
		cert, err := loadCertificate(tc)
		if err != nil {
			return nil, prefixErr(fmt.Sprintf(".tls_certificates[%d]", i), err)
		}
		c.certs = append(c.certs, *cert)
	}
	if len(c.certs) == 0 {
		for i, sc := range common.GetTlsCertificateSdsSecretConfigs() {
			if sc.GetName() == "" {
				return nil, errAt(fmt.Sprintf(".tls_certificate_sds_secret_configs[%d].name", i), "must not be empty")
			}
			c.certSDS = append(c.certSDS, sc.GetName())
		}
	}
	if !server && len(c.certs)+len(c.certSDS) > 1 {
		return nil, errAt(".tls_certificates", "a client context takes one certificate")
	}

	switch vt := common.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		v, err := compileValidation(vt.ValidationContext)
		if err != nil {
			return nil, prefixErr(".validation_context", err)
		}
		c.hasValidation, c.vStatic = true, v
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		if vt.ValidationContextSdsSecretConfig.GetName() == "" {
			return nil, errAt(".validation_context_sds_secret_config.name", "must not be empty")
		}
		c.hasValidation, c.vSDS = true, vt.ValidationContextSdsSecretConfig.GetName()
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		cv := vt.CombinedValidationContext
		const p = ".combined_validation_context"
		if cv.GetValidationContextCertificateProvider() != nil || cv.GetValidationContextCertificateProviderInstance() != nil {
			return nil, errAt(p, "certificate providers are not supported")
		}
		if cv.GetValidationContextSdsSecretConfig().GetName() == "" {
			return nil, errAt(p+".validation_context_sds_secret_config.name", "must not be empty")
		}
		// Compile the default alone to report its errors now; the merge with the SDS
		// secret happens when the secret is known.
		if _, err := compileValidation(cv.GetDefaultValidationContext()); err != nil {
			return nil, prefixErr(p+".default_validation_context", err)
		}
		c.hasValidation = true
		c.vSDS = cv.GetValidationContextSdsSecretConfig().GetName()
		c.vDefault = cv.GetDefaultValidationContext()
		if c.vDefault == nil {
			c.vDefault = &tlsv3.CertificateValidationContext{}
		}
	default:
		return nil, errAt(".validation_context_type", "%T not supported", vt)
	}
	if (len(c.certSDS) > 0 || c.vSDS != "") && s == nil {
		return nil, errAt("", "refers to SDS secrets but no secret store is configured")
	}
	return c, nil
}

var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// cipherNames maps the OpenSSL/BoringSSL names Envoy takes in cipher_suites to Go's.
var cipherNames = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

var curveNames = map[string]tls.CurveID{
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"P-384":          tls.CurveP384,
	"P-521":          tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

func (c *compiled) tlsParams(p *tlsv3.TlsParameters) error {
	if p == nil {
		return nil
	}
	if v := p.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		c.minV = tlsVersions[v]
		if c.minV == 0 {
			return errAt(".tls_minimum_protocol_version", "unknown %v", v)
		}
	}
	if v := p.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		c.maxV = tlsVersions[v]
		if c.maxV == 0 {
			return errAt(".tls_maximum_protocol_version", "unknown %v", v)
		}
	}
	if c.minV > c.maxV {
		return errAt(".tls_minimum_protocol_version", "above tls_maximum_protocol_version")
	}
	for i, name := range p.GetCipherSuites() {
		// BoringSSL equal-preference groups: "[A|B]".
		for _, n := range strings.Split(strings.Trim(name, "[]"), "|") {
			id, ok := cipherNames[n]
			if !ok {
				return errAt(fmt.Sprintf(".cipher_suites[%d]", i), "unknown or unsupported cipher %q", n)
			}
			c.ciphers = append(c.ciphers, id)
		}
	}
	for i, name := range p.GetEcdhCurves() {
		id, ok := curveNames[name]
		if !ok {
			return errAt(fmt.Sprintf(".ecdh_curves[%d]", i), "unknown or unsupported curve %q", name)
		}
		c.curves = append(c.curves, id)
	}
	if len(p.GetSignatureAlgorithms()) > 0 {
		return errAt(".signature_algorithms", "not supported")
	}
	if len(p.GetCompliancePolicies()) > 0 {
		return errAt(".compliance_policies", "not supported")
	}
	return nil
}

// current returns what the store's present version yields for c, resolving it once
// per version.
func (c *compiled) current() *resolved {
	snap := c.store.load()
	if r := c.cache.Load(); r != nil && r.version == snap.version {
		return r
	}
	r := c.resolve(snap)
	c.cache.Store(r)
	return r
}

func (c *compiled) resolve(snap *snapshot) *resolved {
	r := &resolved{version: snap.version, certs: c.certs}
	if len(c.certs) == 0 && len(c.certSDS) > 0 {
		certs := make([]tls.Certificate, 0, len(c.certSDS))
		for _, name := range c.certSDS {
			sec := snap.secrets[name]
			if sec == nil {
				r.certErr = fmt.Errorf("%w: %q", ErrSecretNotReady, name)
				break
			}
			if sec.cert == nil {
				r.certErr = fmt.Errorf("tlsctx: secret %q is a %s, not a tls_certificate", name, sec.kind)
				break
			}
			certs = append(certs, *sec.cert)
		}
		if r.certErr == nil {
			r.certs = certs
		}
	}
	r.v = c.vStatic
	if c.vSDS != "" {
		sec := snap.secrets[c.vSDS]
		switch {
		case sec == nil:
			r.vErr = fmt.Errorf("%w: %q", ErrSecretNotReady, c.vSDS)
		case sec.vc == nil:
			r.vErr = fmt.Errorf("tlsctx: secret %q is a %s, not a validation_context", c.vSDS, sec.kind)
		case c.vDefault == nil:
			r.v = sec.compiled
		default:
			// combined_validation_context: the SDS context is merged into the default
			// (singular fields from SDS win, lists are joined), as Envoy does.
			merged := proto.Clone(c.vDefault).(*tlsv3.CertificateValidationContext)
			proto.Merge(merged, sec.vc)
			v, err := compileValidation(merged)
			if err != nil {
				r.vErr = fmt.Errorf("tlsctx: combined_validation_context with secret %q%w", c.vSDS, err)
			}
			r.v = v
		}
	}
	if r.certErr == nil && r.vErr == nil {
		r.withALPN = c.serverConfig(r, c.alpn)
		r.noALPN = c.serverConfig(r, nil)
	}
	return r
}

// serverConfig is the per-version config GetConfigForClient returns.
func (c *compiled) serverConfig(r *resolved, alpn []string) *tls.Config {
	cfg := &tls.Config{
		Certificates:     r.certs,
		NextProtos:       alpn,
		MinVersion:       c.minV,
		MaxVersion:       c.maxV,
		CipherSuites:     c.ciphers,
		CurvePreferences: c.curves,
	}
	switch {
	case c.requireClient:
		cfg.ClientAuth = tls.RequireAnyClientCert
	case c.hasValidation:
		cfg.ClientAuth = tls.RequestClientCert
	}
	v, require := r.v, c.requireClient
	// Chain and SAN checks are ours (VerifyConnection), not Go's, so that Envoy's
	// options (SAN matchers, pins, allow_expired_certificate) apply; no CA list is sent,
	// as with suppress_client_ca_list.
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			if require {
				return errNoPeerCert
			}
			return nil
		}
		if !v.configured() {
			return nil
		}
		return v.verify(cs.PeerCertificates, time.Now())
	}
	return cfg
}

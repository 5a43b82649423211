package tlsctx

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// validation is a compiled CertificateValidationContext: how a peer certificate is
// checked. It is immutable.
type validation struct {
	roots           *x509.CertPool // nil: the chain is not verified (Envoy: no trusted_ca)
	acceptUntrusted bool           // trust_chain_verification ACCEPT_UNTRUSTED
	allowExpired    bool           // allow_expired_certificate
	maxDepth        int            // max_verify_depth; -1 unlimited
	sans            []sanMatcher   // any must match when not empty
	spki            [][]byte       // verify_certificate_spki (sha256 of SubjectPublicKeyInfo)
	hashes          [][]byte       // verify_certificate_hash (sha256 of the DER certificate)
}

// anyType matches every SAN type: the deprecated match_subject_alt_names checks DNS,
// URI, email and IP SANs alike.
const anyType tlsv3.SubjectAltNameMatcher_SanType = -1

type sanMatcher struct {
	typ tlsv3.SubjectAltNameMatcher_SanType
	m   *stringMatcher
}

// compileValidation checks and compiles a CertificateValidationContext. Fields weft does
// not implement and that would weaken or change verification are rejected rather than
// ignored, so policy fails closed.
func compileValidation(vc *tlsv3.CertificateValidationContext) (*validation, error) {
	v := &validation{maxDepth: -1}
	if vc == nil {
		return v, nil
	}
	switch {
	case vc.GetCrl() != nil:
		return nil, errAt(".crl", "not supported")
	case vc.GetCustomValidatorConfig() != nil:
		return nil, errAt(".custom_validator_config", "not supported")
	case vc.GetCaCertificateProviderInstance() != nil:
		return nil, errAt(".ca_certificate_provider_instance", "not supported")
	case vc.GetRequireSignedCertificateTimestamp().GetValue():
		return nil, errAt(".require_signed_certificate_timestamp", "not supported")
	}
	if vc.GetTrustedCa() != nil {
		pem, err := readDataSource(vc.GetTrustedCa())
		if err != nil {
			return nil, prefixErr(".trusted_ca", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errAt(".trusted_ca", "no PEM certificate found")
		}
		v.roots = pool
	} else if vc.GetSystemRootCerts() != nil {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, errAt(".system_root_certs", "%w", err)
		}
		v.roots = pool
	}
	v.acceptUntrusted = vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
	v.allowExpired = vc.GetAllowExpiredCertificate()
	if d := vc.GetMaxVerifyDepth(); d != nil {
		v.maxDepth = int(d.GetValue())
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		path := fmt.Sprintf(".match_typed_subject_alt_names[%d]", i)
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS, tlsv3.SubjectAltNameMatcher_URI,
			tlsv3.SubjectAltNameMatcher_EMAIL, tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
		default:
			return nil, errAt(path+".san_type", "%v not supported", m.GetSanType())
		}
		sm, err := compileStringMatcher(m.GetMatcher())
		if err != nil {
			return nil, prefixErr(path+".matcher", err)
		}
		v.sans = append(v.sans, sanMatcher{typ: m.GetSanType(), m: sm})
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := compileStringMatcher(m)
		if err != nil {
			return nil, prefixErr(fmt.Sprintf(".match_subject_alt_names[%d]", i), err)
		}
		v.sans = append(v.sans, sanMatcher{typ: anyType, m: sm})
	}
	for i, s := range vc.GetVerifyCertificateSpki() {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != sha256.Size {
			return nil, errAt(fmt.Sprintf(".verify_certificate_spki[%d]", i), "not a base64 SHA-256 digest")
		}
		v.spki = append(v.spki, b)
	}
	for i, s := range vc.GetVerifyCertificateHash() {
		b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
		if err != nil || len(b) != sha256.Size {
			return nil, errAt(fmt.Sprintf(".verify_certificate_hash[%d]", i), "not a hex SHA-256 digest")
		}
		v.hashes = append(v.hashes, b)
	}
	return v, nil
}

// configured reports whether any peer verification is set: Envoy requests a client
// certificate when a validation context is configured.
func (v *validation) configured() bool {
	return v != nil && (v.roots != nil || len(v.sans) > 0 || len(v.spki) > 0 || len(v.hashes) > 0)
}

var (
	errNoPeerCert  = errors.New("tlsctx: peer presented no certificate")
	errSANMismatch = errors.New("tlsctx: peer certificate SAN does not match")
	errPinMismatch = errors.New("tlsctx: peer certificate does not match verify_certificate_spki/hash")
)

// verify checks a peer chain (leaf first) as Envoy's default certificate validator does:
// the chain against the trusted CA, then the SAN matchers, then the pins.
func (v *validation) verify(chain []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return errNoPeerCert
	}
	leaf := chain[0]
	if v.roots != nil && !v.acceptUntrusted {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		opts := x509.VerifyOptions{
			Roots:         v.roots,
			Intermediates: inter,
			CurrentTime:   now,
			// Envoy does not restrict the extended key usage of peer certificates.
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}
		if v.allowExpired && now.After(leaf.NotAfter) {
			opts.CurrentTime = leaf.NotAfter
		}
		chains, err := leaf.Verify(opts)
		if err != nil {
			return fmt.Errorf("tlsctx: peer certificate: %w", err)
		}
		if v.maxDepth >= 0 {
			ok := false
			for _, c := range chains {
				if len(c)-1 <= v.maxDepth {
					ok = true
					break
				}
			}
			if !ok {
				return fmt.Errorf("tlsctx: peer certificate chain longer than max_verify_depth %d", v.maxDepth)
			}
		}
	}
	if len(v.sans) > 0 && !v.matchSAN(leaf) {
		return errSANMismatch
	}
	if len(v.spki) > 0 || len(v.hashes) > 0 {
		// Envoy: when both lists are set, matching either is enough.
		ok := false
		if len(v.spki) > 0 {
			sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
			ok = containsDigest(v.spki, sum[:])
		}
		if !ok && len(v.hashes) > 0 {
			sum := sha256.Sum256(leaf.Raw)
			ok = containsDigest(v.hashes, sum[:])
		}
		if !ok {
			return errPinMismatch
		}
	}
	return nil
}

func containsDigest(list [][]byte, d []byte) bool {
	for _, b := range list {
		if bytes.Equal(b, d) {
			return true
		}
	}
	return false
}

func (v *validation) matchSAN(leaf *x509.Certificate) bool {
	for _, sm := range v.sans {
		if sm.typ == anyType || sm.typ == tlsv3.SubjectAltNameMatcher_URI {
			for _, u := range leaf.URIs {
				if sm.m.match(u.String()) {
					return true
				}
			}
		}
		if sm.typ == anyType || sm.typ == tlsv3.SubjectAltNameMatcher_DNS {
			for _, d := range leaf.DNSNames {
				if sm.m.match(d) || sm.m.matchDNSWildcard(d) {
					return true
				}
			}
		}
		if sm.typ == anyType || sm.typ == tlsv3.SubjectAltNameMatcher_EMAIL {
			for _, e := range leaf.EmailAddresses {
				if sm.m.match(e) {
					return true
				}
			}
		}
		if sm.typ == anyType || sm.typ == tlsv3.SubjectAltNameMatcher_IP_ADDRESS {
			for _, ip := range leaf.IPAddresses {
				if sm.m.match(ip.String()) {
					return true
				}
			}
		}
	}
	return false
}

// stringMatcher is a compiled type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind       byte // 'e' exact, 'p' prefix, 's' suffix, 'c' contains, 'r' regex
	value      string
	ignoreCase bool
	re         *regexp.Regexp
}

func compileStringMatcher(m *matcherv3.StringMatcher) (*stringMatcher, error) {
	if m == nil {
		return nil, errAt("", "not set")
	}
	sm := &stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = 'e', p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = 'p', p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = 's', p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = 'c', p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		// RE2 and Go's regexp share syntax; safe_regex must match the whole value.
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return nil, errAt(".safe_regex.regex", "%w", err)
		}
		sm.kind, sm.re = 'r', re
	case *matcherv3.StringMatcher_Custom:
		return nil, errAt(".custom", "not supported")
	default:
		return nil, errAt("", "match_pattern must be set")
	}
	if sm.ignoreCase {
		sm.value = strings.ToLower(sm.value)
	}
	return sm, nil
}

func (m *stringMatcher) match(s string) bool {
	if m.kind == 'r' {
		return m.re.MatchString(s)
	}
	if m.ignoreCase {
		s = strings.ToLower(s)
	}
	switch m.kind {
	case 'e':
		return s == m.value
	case 'p':
		return strings.HasPrefix(s, m.value)
	case 's':
		return strings.HasSuffix(s, m.value)
	case 'c':
		return strings.Contains(s, m.value)
	}
	return false
}

// matchDNSWildcard applies RFC 6125 section 6.4.3 for an exact matcher against a
// wildcard DNS SAN: "*.example.com" covers "a.example.com" but neither "example.com"
// nor "a.b.example.com" (Envoy's SubjectAltNameMatcher DNS + exact).
func (m *stringMatcher) matchDNSWildcard(san string) bool {
	if m.kind != 'e' || !strings.HasPrefix(san, "*.") {
		return false
	}
	label, rest, ok := strings.Cut(m.value, ".")
	if !ok || label == "" {
		return false
	}
	return strings.EqualFold(rest, san[2:])
}

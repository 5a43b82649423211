package tlsctx

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/tlsctx/tlstest"
)

const (
	spiffeProductpage = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
	spiffeReviews     = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
)

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func sdsRef(name string) *tlsv3.SdsSecretConfig { return &tlsv3.SdsSecretConfig{Name: name} }

// istioCommon is the CommonTlsContext Istio sends: cert "default" and a combined
// validation context with ROOTCA from SDS and SAN matchers in the default part.
func istioCommon(sans []*tlsv3.SubjectAltNameMatcher, alpn ...string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsRef("default")},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: sdsRef("ROOTCA"),
			},
		},
		AlpnProtocols: alpn,
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
	}
}

func uriSAN(m *matcherv3.StringMatcher) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m}
}

// tlsServer is an echo server over loopback that records each handshake's state.
type tlsServer struct {
	ln     net.Listener
	states chan tls.ConnectionState
	errs   chan error
	wg     sync.WaitGroup
}

func startServer(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{ln: ln, states: make(chan tls.ConnectionState, 16), errs: make(chan error, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					select {
					case s.errs <- err:
					default:
					}
					return
				}
				select {
				case s.states <- tc.ConnectionState():
				default:
				}
				_ = tc.SetDeadline(time.Time{})
				_, _ = io.Copy(tc, tc)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// dial handshakes and checks one echo round trip; the conn stays open for the caller.
func dial(t *testing.T, s *tlsServer, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", s.ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	// TLS 1.3 reports a rejected client certificate only on the first read.
	if err := echo(c, "ping"); err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

type pki struct {
	ca, otherCA             *tlstest.CA
	server, client, foreign *tlstest.Leaf
}

func newPKI(t *testing.T) *pki {
	ca := tlstest.NewCA(t, "root")
	other := tlstest.NewCA(t, "other root")
	return &pki{
		ca:      ca,
		otherCA: other,
		server:  ca.Issue(t, tlstest.Opts{URIs: []string{spiffeReviews}, DNS: []string{"reviews.default.svc"}}),
		client:  ca.Issue(t, tlstest.Opts{URIs: []string{spiffeProductpage}}),
		foreign: other.Issue(t, tlstest.Opts{URIs: []string{spiffeProductpage}}),
	}
}

func storeWith(t *testing.T, secrets ...*tlsv3.Secret) *Store {
	s := NewStore()
	if err := s.Update(secrets); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMTLSHandshakeSAN(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name       string
		clientLeaf *tlstest.Leaf
		serverSANs []*tlsv3.SubjectAltNameMatcher // what the server wants of the client
		clientSANs []*tlsv3.SubjectAltNameMatcher // what the client wants of the server
		wantErr    bool
	}{
		{name: "matching SANs", clientLeaf: p.client,
			serverSANs: []*tlsv3.SubjectAltNameMatcher{uriSAN(exact(spiffeProductpage))},
			clientSANs: []*tlsv3.SubjectAltNameMatcher{uriSAN(exact(spiffeReviews))}},
		{name: "prefix SAN", clientLeaf: p.client,
			serverSANs: []*tlsv3.SubjectAltNameMatcher{uriSAN(&matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/"}})}},
		{name: "client rejects wrong server SAN", clientLeaf: p.client, wantErr: true,
			clientSANs: []*tlsv3.SubjectAltNameMatcher{uriSAN(exact("spiffe://cluster.local/ns/default/sa/ratings"))}},
		{name: "server rejects wrong client SAN", clientLeaf: p.client, wantErr: true,
			serverSANs: []*tlsv3.SubjectAltNameMatcher{uriSAN(exact(spiffeReviews))}},
		{name: "server rejects client of another CA", clientLeaf: p.foreign, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srvStore := storeWith(t, tlstest.CertSecret("default", p.server), tlstest.CASecret("ROOTCA", p.ca))
			cliStore := storeWith(t, tlstest.CertSecret("default", tc.clientLeaf), tlstest.CASecret("ROOTCA", p.ca))
			srvCfg, err := Server(&tlsv3.DownstreamTlsContext{
				CommonTlsContext:         istioCommon(tc.serverSANs, "h2", "http/1.1"),
				RequireClientCertificate: wrapperspb.Bool(true),
			}, srvStore)
			if err != nil {
				t.Fatal(err)
			}
			cliCfg, err := Client(&tlsv3.UpstreamTlsContext{
				CommonTlsContext: istioCommon(tc.clientSANs, "h2"),
				Sni:              "outbound_.9080_._.reviews.default.svc.cluster.local",
			}, cliStore)
			if err != nil {
				t.Fatal(err)
			}
			s := startServer(t, srvCfg)
			c, err := dial(t, s, cliCfg)
			if tc.wantErr {
				if err == nil {
					t.Fatal("handshake succeeded, want failure")
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			cs := c.ConnectionState()
			if got := PeerPrincipal(&cs); got != spiffeReviews {
				t.Errorf("client sees principal %q, want %q", got, spiffeReviews)
			}
			if cs.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN %q, want h2", cs.NegotiatedProtocol)
			}
			ss := <-s.states
			if got := PeerPrincipal(&ss); got != spiffeProductpage {
				t.Errorf("server sees principal %q, want %q", got, spiffeProductpage)
			}
			if ss.ServerName != "outbound_.9080_._.reviews.default.svc.cluster.local" {
				t.Errorf("SNI %q", ss.ServerName)
			}
		})
	}
}

func TestRequireClientCertificate(t *testing.T) {
	p := newPKI(t)
	for _, require := range []bool{true, false} {
		t.Run(map[bool]string{true: "required", false: "optional"}[require], func(t *testing.T) {
			srvStore := storeWith(t, tlstest.CertSecret("default", p.server), tlstest.CASecret("ROOTCA", p.ca))
			srvCfg, err := Server(&tlsv3.DownstreamTlsContext{
				CommonTlsContext:         istioCommon(nil),
				RequireClientCertificate: wrapperspb.Bool(require),
			}, srvStore)
			if err != nil {
				t.Fatal(err)
			}
			// A client with a validation context but no certificate.
			cliCfg, err := Client(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
					ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: tlstest.Inline(p.ca.PEM)},
				},
			}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := startServer(t, srvCfg)
			_, err = dial(t, s, cliCfg)
			if require && err == nil {
				t.Fatal("client without certificate accepted")
			}
			if !require && err != nil {
				t.Fatalf("optional client certificate: %v", err)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	p := newPKI(t)
	srvStore := storeWith(t, tlstest.CertSecret("default", p.server), tlstest.CASecret("ROOTCA", p.ca))
	srvCfg, err := Server(&tlsv3.DownstreamTlsContext{CommonTlsContext: istioCommon(nil)}, srvStore)
	if err != nil {
		t.Fatal(err)
	}
	cliCfg, err := Client(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: tlstest.Inline(p.ca.PEM)},
		},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, srvCfg)
	old, err := dial(t, s, cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := old.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(p.server.Cert.SerialNumber) != 0 {
		t.Fatalf("first serial %v, want %v", got, p.server.Cert.SerialNumber)
	}

	rotated := p.ca.Issue(t, tlstest.Opts{URIs: []string{spiffeReviews}})
	if err := srvStore.Update([]*tlsv3.Secret{tlstest.CertSecret("default", rotated), tlstest.CASecret("ROOTCA", p.ca)}); err != nil {
		t.Fatal(err)
	}
	fresh, err := dial(t, s, cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := fresh.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(rotated.Cert.SerialNumber) != 0 {
		t.Fatalf("after rotation serial %v, want %v", got, rotated.Cert.SerialNumber)
	}
	if err := echo(old, "still up"); err != nil {
		t.Fatalf("connection made before rotation: %v", err)
	}
}

func TestUpdateInvalidChangesNothing(t *testing.T) {
	p := newPKI(t)
	s := storeWith(t, tlstest.CertSecret("default", p.server), tlstest.CASecret("ROOTCA", p.ca))
	before := s.Version()
	other := p.ca.Issue(t, tlstest.Opts{})
	mismatched := &tlsv3.Secret{Name: "mismatch", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: tlstest.Inline(p.server.CertPEM), PrivateKey: tlstest.Inline(other.KeyPEM)}}}
	badPEM := &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: tlstest.Inline([]byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")),
		PrivateKey:       tlstest.Inline(p.server.KeyPEM)}}}
	badCA := &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: tlstest.Inline([]byte("garbage"))}}}
	for _, tc := range []struct {
		name    string
		secrets []*tlsv3.Secret
		want    string
	}{
		{"bad PEM", []*tlsv3.Secret{badPEM}, `secret "default": tls_certificate.certificate_chain`},
		{"key mismatch", []*tlsv3.Secret{mismatched}, `secret "mismatch": tls_certificate.certificate_chain`},
		{"bad CA", []*tlsv3.Secret{tlstest.CertSecret("default", other), badCA}, `secret "ROOTCA": validation_context.trusted_ca: no PEM`},
		{"no type", []*tlsv3.Secret{{Name: "x"}}, `secret "x": type: must be set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Update(tc.secrets)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if s.Version() != before {
				t.Fatal("store changed on a failed update")
			}
			if got := s.Leaf("default"); got == nil || got.SerialNumber.Cmp(p.server.Cert.SerialNumber) != 0 {
				t.Fatal("default certificate replaced by a failed update")
			}
			if got := s.Names(); strings.Join(got, ",") != "ROOTCA,default" {
				t.Fatalf("names %v", got)
			}
		})
	}
}

func TestMissingSecretFailsClosed(t *testing.T) {
	p := newPKI(t)
	srvStore := NewStore() // nothing yet
	srvCfg, err := Server(&tlsv3.DownstreamTlsContext{CommonTlsContext: istioCommon(nil)}, srvStore)
	if err != nil {
		t.Fatal(err)
	}
	cliStore := storeWith(t, tlstest.CertSecret("default", p.client), tlstest.CASecret("ROOTCA", p.ca))
	cliCfg, err := Client(&tlsv3.UpstreamTlsContext{CommonTlsContext: istioCommon(nil)}, cliStore)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, srvCfg)
	if _, err := dial(t, s, cliCfg); err == nil {
		t.Fatal("handshake without the server certificate succeeded")
	}
	if err := <-s.errs; !errors.Is(err, ErrSecretNotReady) {
		t.Fatalf("server error %v, want ErrSecretNotReady", err)
	}
	// Certificate present, ROOTCA still missing: validation cannot run, so no handshake.
	if err := srvStore.Update([]*tlsv3.Secret{tlstest.CertSecret("default", p.server)}); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, s, cliCfg); err == nil {
		t.Fatal("handshake without the validation context succeeded")
	}
	if err := srvStore.Update([]*tlsv3.Secret{tlstest.CertSecret("default", p.server), tlstest.CASecret("ROOTCA", p.ca)}); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, s, cliCfg); err != nil {
		t.Fatalf("after the secrets arrived: %v", err)
	}
	// The client side fails closed too when its certificate is missing.
	cliCfg2, err := Client(&tlsv3.UpstreamTlsContext{CommonTlsContext: istioCommon(nil)},
		storeWith(t, tlstest.CASecret("ROOTCA", p.ca)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, s, cliCfg2); !errors.Is(err, ErrSecretNotReady) {
		t.Fatalf("client without its SDS certificate: err %v, want ErrSecretNotReady", err)
	}
}

func TestStaticSecretsAndShadowing(t *testing.T) {
	p := newPKI(t)
	s := NewStore()
	if err := s.AddStatic([]*tlsv3.Secret{tlstest.CertSecret("static", p.server), tlstest.CertSecret("default", p.server)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update([]*tlsv3.Secret{tlstest.CertSecret("default", p.client)}); err != nil {
		t.Fatal(err)
	}
	if got := s.Leaf("default").SerialNumber; got.Cmp(p.client.Cert.SerialNumber) != 0 {
		t.Fatal("dynamic secret does not shadow the static one")
	}
	if err := s.Update(nil); err != nil {
		t.Fatal(err)
	}
	if !s.Has("static") || s.Leaf("default").SerialNumber.Cmp(p.server.Cert.SerialNumber) != 0 {
		t.Fatal("static secrets must survive an SDS update")
	}
}

func TestALPNNoOverlapNegotiatesNothing(t *testing.T) {
	p := newPKI(t)
	srvCfg, err := Server(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{p.server.TLSCertificate()},
		AlpnProtocols:   []string{"h2", "http/1.1"},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, srvCfg)
	for _, tc := range []struct{ offer, want string }{{"istio-peer-exchange", ""}, {"http/1.1", "http/1.1"}} {
		cli := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{tc.offer}}
		c, err := dial(t, s, cli)
		if err != nil {
			t.Fatalf("offer %q: %v", tc.offer, err)
		}
		if got := c.ConnectionState().NegotiatedProtocol; got != tc.want {
			t.Errorf("offer %q: negotiated %q, want %q", tc.offer, got, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name string
		ctx  *tlsv3.DownstreamTlsContext
		want string
	}{
		{"no certificate", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}},
			"needs tls_certificates"},
		{"bad inline cert", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: tlstest.Inline([]byte("x")), PrivateKey: tlstest.Inline(p.server.KeyPEM)}}}},
			"common_tls_context.tls_certificates[0].certificate_chain"},
		{"missing file", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/nonexistent/cert.pem"}},
				PrivateKey:       tlstest.Inline(p.server.KeyPEM)}}}},
			"common_tls_context.tls_certificates[0].certificate_chain.filename"},
		{"bad regex", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{p.server.TLSCertificate()},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{uriSAN(&matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}})}}}}},
			"common_tls_context.validation_context.match_typed_subject_alt_names[0].matcher.safe_regex.regex"},
		{"unspecified SAN type", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{p.server.TLSCertificate()},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{Matcher: exact("x")}}}}}},
			"match_typed_subject_alt_names[0].san_type"},
		{"crl", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{p.server.TLSCertificate()},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				Crl: tlstest.Inline([]byte("x"))}}}},
			"validation_context.crl: not supported"},
		{"versions", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsRef("default")},
			TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}}},
			"tls_params.tls_minimum_protocol_version"},
		{"cipher", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsRef("default")},
			TlsParams:                      &tlsv3.TlsParameters{CipherSuites: []string{"[ECDHE-ECDSA-AES128-GCM-SHA256|NOPE]"}}}},
			`tls_params.cipher_suites[0]: unknown or unsupported cipher "NOPE"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Server(tc.ctx, NewStore())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// Valid params map to Go's.
	cfg, err := Client(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		CipherSuites:              []string{"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "ECDHE-RSA-AES256-GCM-SHA384"},
		EcdhCurves:                []string{"X25519", "P-256"},
	}}, Sni: "a.b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.MaxVersion != tls.VersionTLS13 || len(cfg.CipherSuites) != 3 ||
		len(cfg.CurvePreferences) != 2 || cfg.ServerName != "a.b" {
		t.Fatalf("params not applied: %+v", cfg)
	}
}

func TestSANMatchers(t *testing.T) {
	ca := tlstest.NewCA(t, "root")
	leaf := ca.Issue(t, tlstest.Opts{
		URIs: []string{spiffeReviews},
		DNS:  []string{"*.reviews.svc", "api.example.com"},
		IPs:  []string{"10.1.2.3"},
	}).Cert
	leaf.EmailAddresses = []string{"ops@example.com"} // parsed field; matching only reads it
	typed := func(typ tlsv3.SubjectAltNameMatcher_SanType, m *matcherv3.StringMatcher) *tlsv3.CertificateValidationContext {
		return &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: typ, Matcher: m}}}
	}
	re := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
	}
	tests := []struct {
		name string
		vc   *tlsv3.CertificateValidationContext
		want bool
	}{
		{"uri exact", typed(tlsv3.SubjectAltNameMatcher_URI, exact(spiffeReviews)), true},
		{"uri exact wrong", typed(tlsv3.SubjectAltNameMatcher_URI, exact(spiffeProductpage)), false},
		{"uri suffix", typed(tlsv3.SubjectAltNameMatcher_URI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "/sa/bookinfo-reviews"}}), true},
		{"uri contains ignore case", typed(tlsv3.SubjectAltNameMatcher_URI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "NS/DEFAULT"}, IgnoreCase: true}), true},
		{"uri regex full match", typed(tlsv3.SubjectAltNameMatcher_URI, re(`spiffe://cluster\.local/ns/[^/]+/sa/bookinfo-.*`)), true},
		{"uri regex partial is no match", typed(tlsv3.SubjectAltNameMatcher_URI, re(`ns/default`)), false},
		{"uri matcher ignores DNS", typed(tlsv3.SubjectAltNameMatcher_URI, exact("api.example.com")), false},
		{"dns exact", typed(tlsv3.SubjectAltNameMatcher_DNS, exact("api.example.com")), true},
		{"dns wildcard one label", typed(tlsv3.SubjectAltNameMatcher_DNS, exact("v1.reviews.svc")), true},
		{"dns wildcard not two labels", typed(tlsv3.SubjectAltNameMatcher_DNS, exact("a.v1.reviews.svc")), false},
		{"dns wildcard not apex", typed(tlsv3.SubjectAltNameMatcher_DNS, exact("reviews.svc")), false},
		{"ip", typed(tlsv3.SubjectAltNameMatcher_IP_ADDRESS, exact("10.1.2.3")), true},
		{"email", typed(tlsv3.SubjectAltNameMatcher_EMAIL, exact("ops@example.com")), true},
		{"deprecated any type", &tlsv3.CertificateValidationContext{MatchSubjectAltNames: []*matcherv3.StringMatcher{exact("10.1.2.3")}}, true},
		{"deprecated no match", &tlsv3.CertificateValidationContext{MatchSubjectAltNames: []*matcherv3.StringMatcher{exact("nope")}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := compileValidation(tc.vc)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.matchSAN(leaf); got != tc.want {
				t.Fatalf("match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestVerifyChainAndPins(t *testing.T) {
	ca := tlstest.NewCA(t, "root")
	leaf := ca.Issue(t, tlstest.Opts{URIs: []string{spiffeReviews}})
	expired := ca.Issue(t, tlstest.Opts{NotAfter: time.Now().Add(-time.Minute)})
	other := tlstest.NewCA(t, "other").Issue(t, tlstest.Opts{})
	withCA := func(mod func(*tlsv3.CertificateValidationContext)) *validation {
		vc := &tlsv3.CertificateValidationContext{TrustedCa: tlstest.Inline(ca.PEM)}
		if mod != nil {
			mod(vc)
		}
		v, err := compileValidation(vc)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	now := time.Now()
	chain := func(l *tlstest.Leaf) []*x509.Certificate { return []*x509.Certificate{l.Cert} }
	spki := sha256.Sum256(leaf.Cert.RawSubjectPublicKeyInfo)
	hash := sha256.Sum256(leaf.Cert.Raw)
	tests := []struct {
		name  string
		v     *validation
		chain []*x509.Certificate
		ok    bool
	}{
		{"trusted", withCA(nil), chain(leaf), true},
		{"untrusted CA", withCA(nil), chain(other), false},
		{"accept untrusted", withCA(func(vc *tlsv3.CertificateValidationContext) {
			vc.TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
		}), chain(other), true},
		{"expired", withCA(nil), chain(expired), false},
		{"allow expired", withCA(func(vc *tlsv3.CertificateValidationContext) { vc.AllowExpiredCertificate = true }), chain(expired), true},
		{"no certificate", withCA(nil), nil, false},
		{"spki pin", withCA(func(vc *tlsv3.CertificateValidationContext) {
			vc.VerifyCertificateSpki = []string{base64.StdEncoding.EncodeToString(spki[:])}
		}), chain(leaf), true},
		{"hash pin with colons", withCA(func(vc *tlsv3.CertificateValidationContext) {
			h := strings.ToUpper(hex.EncodeToString(hash[:]))
			var parts []string
			for i := 0; i < len(h); i += 2 {
				parts = append(parts, h[i:i+2])
			}
			vc.VerifyCertificateHash = []string{strings.Join(parts, ":")}
		}), chain(leaf), true},
		{"wrong pin", withCA(func(vc *tlsv3.CertificateValidationContext) {
			vc.VerifyCertificateSpki = []string{base64.StdEncoding.EncodeToString(hash[:])}
		}), chain(leaf), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.v.verify(tc.chain, now)
			if (err == nil) != tc.ok {
				t.Fatalf("verify = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestSecretNamesAndPeerPrincipal(t *testing.T) {
	got := SecretNames(istioCommon(nil))
	if strings.Join(got, ",") != "ROOTCA,default" {
		t.Fatalf("SecretNames = %v", got)
	}
	if n := SecretNames(&tlsv3.CommonTlsContext{}); len(n) != 0 {
		t.Fatalf("SecretNames(empty) = %v", n)
	}
	u, _ := url.Parse(spiffeReviews)
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}}}}
	if PeerPrincipal(cs) != spiffeReviews || PeerPrincipal(&tls.ConnectionState{}) != "" || PeerPrincipal(nil) != "" {
		t.Fatal("PeerPrincipal")
	}
}

func TestConcurrentHandshakesDuringRotation(t *testing.T) {
	p := newPKI(t)
	srvStore := storeWith(t, tlstest.CertSecret("default", p.server), tlstest.CASecret("ROOTCA", p.ca))
	srvCfg, err := Server(&tlsv3.DownstreamTlsContext{CommonTlsContext: istioCommon(nil), RequireClientCertificate: wrapperspb.Bool(true)}, srvStore)
	if err != nil {
		t.Fatal(err)
	}
	cliCfg, err := Client(&tlsv3.UpstreamTlsContext{CommonTlsContext: istioCommon(
		[]*tlsv3.SubjectAltNameMatcher{uriSAN(exact(spiffeReviews))})},
		storeWith(t, tlstest.CertSecret("default", p.client), tlstest.CASecret("ROOTCA", p.ca)))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, srvCfg)
	leaves := []*tlstest.Leaf{p.server}
	for i := 0; i < 4; i++ {
		leaves = append(leaves, p.ca.Issue(t, tlstest.Opts{URIs: []string{spiffeReviews}}))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := srvStore.Update([]*tlsv3.Secret{tlstest.CertSecret("default", leaves[i%len(leaves)]), tlstest.CASecret("ROOTCA", p.ca)}); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	errs := make(chan error, 40)
	var dials sync.WaitGroup
	for i := 0; i < 40; i++ {
		dials.Add(1)
		go func() {
			defer dials.Done()
			raw, err := net.DialTimeout("tcp", s.ln.Addr().String(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer raw.Close()
			c := tls.Client(raw, cliCfg)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := c.Handshake(); err != nil {
				errs <- err
				return
			}
			errs <- echo(c, "x")
		}()
	}
	dials.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("handshake during rotation: %v", err)
		}
	}
}

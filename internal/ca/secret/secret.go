// Package secret builds the Envoy SDS secrets of a workload identity: the certificate
// chain and key ("default") and the trust bundle ("ROOTCA"), the names Istio's agent
// serves and weft's generators refer to (internal/xds/gen/names). The control plane's
// SDS push (ca.SDSSource) and, later, weft-proxy's local agent both build them here, so
// the two models serve byte-identical resources. It imports only the Envoy TLS protos.
package secret

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// Certificate is a tls_certificate secret with the PEM chain (leaf first) and key inline
// (certificate_chain.inline_bytes, private_key.inline_bytes).
func Certificate(name string, chainPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chainPEM),
			PrivateKey:       inline(keyPEM),
		}},
	}
}

// Validation is a validation_context secret trusting the PEM roots (trusted_ca). SAN
// matching is not part of it: the listener or cluster that uses the secret adds it
// (combined_validation_context), as Istio's generated config does.
func Validation(name string, rootsPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(rootsPEM),
		}},
	}
}

// Workload returns the two secrets of a workload identity, sorted by name
// (names.RootCA "ROOTCA", then names.WorkloadCert "default") so output is byte-stable.
func Workload(chainPEM, keyPEM, rootsPEM []byte) []*tlsv3.Secret {
	return []*tlsv3.Secret{
		Validation(names.RootCA, rootsPEM),
		Certificate(names.WorkloadCert, chainPEM, keyPEM),
	}
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: append([]byte(nil), b...)}}
}

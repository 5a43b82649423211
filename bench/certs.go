package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// serverName is the DNS SAN of the server sidecar's certificate: nginx and HAProxy verify
// a DNS name, weft (like Envoy in Istio) the SPIFFE URI.
const serverName = "server.bench.local"

// SPIFFE identities of the two sidecars, as Istio names them.
const (
	clientSPIFFE = "spiffe://cluster.local/ns/bench/sa/client"
	serverSPIFFE = "spiffe://cluster.local/ns/bench/sa/server"
)

// certFiles are the PEM files of a run's mesh identity: one CA, a client and a server
// workload certificate. The *Full files hold certificate then key, as HAProxy wants.
type certFiles struct {
	CA, ClientCert, ClientKey, ServerCert, ServerKey, ClientFull, ServerFull string
	// PEM text, for inline Envoy data sources.
	caPEM, clientCertPEM, clientKeyPEM, serverCertPEM, serverKeyPEM string
}

// makeCerts generates a fresh CA and two SPIFFE workload certificates (ECDSA P-256, one
// day) in dir.
func makeCerts(dir string) (*certFiles, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("bench: certs: %w", err)
	}
	now := time.Now().Add(-time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"weft bench"}, CommonName: "weft bench root"},
		NotBefore:             now,
		NotAfter:              now.Add(25 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("bench: certs: ca: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("bench: certs: ca: %w", err)
	}
	leaf := func(serial int64, spiffe string, dns []string) (certPEM, keyPEM string, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		u, err := url.Parse(spiffe)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{Organization: []string{"weft bench"}},
			NotBefore:    now,
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			URIs:         []*url.URL{u},
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", "", err
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})), nil
	}
	c := &certFiles{caPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))}
	if c.clientCertPEM, c.clientKeyPEM, err = leaf(2, clientSPIFFE, []string{"client.bench.local"}); err != nil {
		return nil, fmt.Errorf("bench: certs: client: %w", err)
	}
	if c.serverCertPEM, c.serverKeyPEM, err = leaf(3, serverSPIFFE, []string{serverName}); err != nil {
		return nil, fmt.Errorf("bench: certs: server: %w", err)
	}
	files := []struct {
		dst  *string
		name string
		data string
	}{
		{&c.CA, "ca.pem", c.caPEM},
		{&c.ClientCert, "client.pem", c.clientCertPEM},
		{&c.ClientKey, "client-key.pem", c.clientKeyPEM},
		{&c.ServerCert, "server.pem", c.serverCertPEM},
		{&c.ServerKey, "server-key.pem", c.serverKeyPEM},
		{&c.ClientFull, "client-full.pem", c.clientCertPEM + c.clientKeyPEM},
		{&c.ServerFull, "server-full.pem", c.serverCertPEM + c.serverKeyPEM},
	}
	for _, f := range files {
		*f.dst = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.dst, []byte(f.data), 0o600); err != nil {
			return nil, fmt.Errorf("bench: certs: %w", err)
		}
	}
	return c, nil
}

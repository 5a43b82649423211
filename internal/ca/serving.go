package ca

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
)

// ServingTLS is the tls.Config of the control plane's own TLS port (Istio's 15012, xDS
// and the CSR service): a certificate for hosts (DNS names or IP literals, e.g.
// "weft.istio-system.svc", "127.0.0.1") issued by this CA, so workloads verify it with
// the same trust bundle (Roots). It is reissued once half its lifetime has passed. The
// key is ECDSA/RSA per Options.KeyType and never leaves the process.
func (c *CA) ServingTLS(hosts []string) (*tls.Config, error) {
	var sans leafSANs
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			sans.ips = append(sans.ips, ip)
		} else if h != "" {
			sans.dns = append(sans.dns, h)
		}
	}
	if len(sans.ips)+len(sans.dns) == 0 {
		return nil, fmt.Errorf("ca: serving certificate: hosts: at least one DNS name or IP is required")
	}
	var (
		mu  sync.Mutex
		cur *KeyPair
	)
	get := func() (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if cur == nil || !c.now().Before(renewAt(cur.IssuedAt, cur.NotAfter, 0.5)) {
			kp, err := c.issueKeyPair(sans, 0)
			if err != nil {
				return nil, fmt.Errorf("ca: serving certificate: %w", err)
			}
			cur = kp
		}
		return &cur.Certificate, nil
	}
	if _, err := get(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return get() },
		NextProtos:     []string{"h2"},
	}, nil
}

package ca

import (
	"crypto/x509"
	"testing"
)

// FuzzParseCSR feeds untrusted CSR bytes (what the CSR service receives) through the
// parser and, when accepted, through signing: accepted input must verify, and the
// certificate must carry only the identity given, never anything from the CSR.
func FuzzParseCSR(f *testing.F) {
	c := newTestCA(f, Options{})
	f.Add(csrPEM(f, ecKey(f), nil))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	const id = "spiffe://cluster.local/ns/fuzz/sa/fuzz"
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted CSR does not verify: %v", err)
		}
		chain, err := c.Sign(csr, id, 0)
		if err != nil {
			t.Fatalf("accepted CSR does not sign: %v", err)
		}
		leaf, err := x509.ParseCertificate(chain[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id || len(leaf.DNSNames) != 0 || len(leaf.EmailAddresses) != 0 || len(leaf.IPAddresses) != 0 {
			t.Fatalf("SANs leaked from the CSR: uris=%v dns=%v", leaf.URIs, leaf.DNSNames)
		}
	})
}

// FuzzVerifyToken: a token verifies only if it is exactly the one Issue makes for the
// identity it names (no second encoding of a valid token, no forged identity).
func FuzzVerifyToken(f *testing.F) {
	tk, err := NewTokens([]byte("fuzz-secret-fuzz-secret-fuzz-sec"))
	if err != nil {
		f.Fatal(err)
	}
	good, _ := tk.Issue(Identity{Namespace: "default", ServiceAccount: "web", Workload: "web-1"})
	f.Add(good)
	f.Add("weft1..")
	f.Add("weft1.ZGVmYXVsdC93ZWIvd2ViLTE.AAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := tk.Verify(tok)
		if err != nil {
			return
		}
		again, err := tk.Issue(id)
		if err != nil {
			t.Fatalf("verified identity %+v does not issue: %v", id, err)
		}
		if again != tok {
			t.Fatalf("token %q verifies but Issue gives %q", tok, again)
		}
	})
}

package secret

import (
	"bytes"
	"testing"

	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

func TestWorkload(t *testing.T) {
	chain, key, roots := []byte("chain"), []byte("key"), []byte("roots")
	s := Workload(chain, key, roots)
	if len(s) != 2 || s[0].GetName() != names.RootCA || s[1].GetName() != names.WorkloadCert {
		t.Fatalf("names %q %q, want ROOTCA, default", s[0].GetName(), s[1].GetName())
	}
	if got := s[0].GetValidationContext().GetTrustedCa().GetInlineBytes(); !bytes.Equal(got, roots) {
		t.Fatalf("trusted_ca %q", got)
	}
	tc := s[1].GetTlsCertificate()
	if !bytes.Equal(tc.GetCertificateChain().GetInlineBytes(), chain) || !bytes.Equal(tc.GetPrivateKey().GetInlineBytes(), key) {
		t.Fatal("certificate_chain / private_key not inline")
	}
	// The secrets own their bytes: a caller reusing its buffer does not change them.
	chain[0] = 'X'
	if tc.GetCertificateChain().GetInlineBytes()[0] != 'c' {
		t.Fatal("secret aliases the caller's buffer")
	}
}

package jwtauthn

import (
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func compiled(t testing.TB) *config {
	t.Helper()
	c, err := compile(strictConfig(t, localProvider(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// decide runs the filter's verification of one token, as serve does.
func decide(c *config, tok string) status {
	r, _ := http.NewRequest(http.MethodGet, "http://svc/", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	rt := c.rules[0].req
	return c.eval(rt.req, c.verify(r, rt))
}

// FuzzJWTParse: whatever the token bytes, verification does not panic and accepts nothing
// but the exact token the issuer signed.
func FuzzJWTParse(f *testing.F) {
	k := getKeys(f)
	valid := sign(f, jose.RS256, k.rsa, "rsa1", claims("alice", nil))
	f.Add(valid)
	f.Add(sign(f, jose.RS256, k.rsaOther, "rsa1", claims("alice", nil)))
	f.Add(hmacWithPublicKey(f, k))
	f.Add(unsigned(`{"alg":"none"}`, `{"iss":"`+issuer+`","aud":"`+audience+`"}`, ""))
	f.Add(unsigned(`{"alg":"RS256","kid":"rsa1"}`, `{"iss":"`+issuer+`","aud":"`+audience+`","exp":1e300}`, "AAAA"))
	f.Add(strings.Replace(valid, ".", "..", 1))
	f.Add("")
	f.Add("....")
	c := compiled(f)
	if decide(c, valid) != stOK {
		f.Fatal("the valid seed does not verify")
	}
	f.Fuzz(func(t *testing.T, tok string) {
		st := decide(c, tok)
		if st == stOK && strings.TrimSpace(tok) != valid {
			t.Fatalf("accepted a token the issuer did not sign: %q", tok)
		}
	})
}

// verifyLoop verifies one RS256 token n times.
func verifyLoop(tb testing.TB, n int, reset func()) {
	c := compiled(tb)
	tok := sign(tb, jose.RS256, getKeys(tb).rsa, "rsa1", claims("alice", nil))
	reset()
	for i := 0; i < n; i++ {
		if st := decide(c, tok); st != stOK {
			tb.Fatal(st)
		}
	}
}

func BenchmarkVerifyRS256(b *testing.B) {
	b.ReportAllocs()
	verifyLoop(b, b.N, b.ResetTimer)
}

// TestVerifyRS256Once is BenchmarkVerifyRS256's size-1 twin.
func TestVerifyRS256Once(t *testing.T) { verifyLoop(t, 1, func() {}) }

package jwtauthn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// status is the outcome of verifying one token. The messages of the common failures are
// Envoy's (jwt_verify_lib), which clients and operators already match on.
type status uint8

const (
	stOK status = iota
	stMissing
	stBadFormat
	stTooLarge
	stHeaderBadBase64
	stHeaderBadJSON
	stHeaderBadAlg
	stHeaderAlgNotSupported
	stPayloadBadBase64
	stPayloadBadJSON
	stPayloadBadClaim
	stSignatureBadBase64
	stExpired
	stNotYetValid
	stExpRequired
	stLifetimeTooLong
	stUnknownIssuer
	stAudienceNotAllowed
	stSubjectNotAllowed
	stVerificationFail
	stJwksFetchFail
	stJwksNoKey
	stRequirementNotFound
)

var statusText = [...]string{
	stOK:                    "OK",
	stMissing:               "Jwt is missing",
	stBadFormat:             "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
	stTooLarge:              "Jwt is too large",
	stHeaderBadBase64:       "Jwt header is an invalid Base64url encoded",
	stHeaderBadJSON:         "Jwt header is an invalid JSON",
	stHeaderBadAlg:          "Jwt header [alg] field is required and must be a string",
	stHeaderAlgNotSupported: "Jwt header [alg] is not supported",
	stPayloadBadBase64:      "Jwt payload is an invalid Base64url encoded",
	stPayloadBadJSON:        "Jwt payload is an invalid JSON",
	stPayloadBadClaim:       "Jwt payload has a registered claim of the wrong type",
	stSignatureBadBase64:    "Jwt signature is an invalid Base64url encoded",
	stExpired:               "Jwt is expired",
	stNotYetValid:           "Jwt not yet valid",
	stExpRequired:           "Jwt expiration is required",
	stLifetimeTooLong:       "Jwt lifetime exceeds the allowed maximum",
	stUnknownIssuer:         "Jwt issuer is not configured",
	stAudienceNotAllowed:    "Audiences in Jwt are not allowed",
	stSubjectNotAllowed:     "Jwt subject is not allowed",
	stVerificationFail:      "Jwt verification fails",
	stJwksFetchFail:         "Jwks remote fetch is failed",
	stJwksNoKey:             "Jwks doesn't have key to match kid or alg from Jwt",
	stRequirementNotFound:   "Jwt requirement is not configured for the route",
}

func (s status) String() string {
	if int(s) < len(statusText) {
		return statusText[s]
	}
	return "Jwt verification fails"
}

var b64 = base64.RawURLEncoding.Strict()

// maxTokenLen bounds the work one request can cause: a token is decoded and its JSON
// parsed before any signature is checked.
const maxTokenLen = 64 << 10

// jwt is a parsed, not yet verified, compact JWS.
type jwt struct {
	raw        string
	payloadB64 string
	alg        jose.SignatureAlgorithm
	kid        string
	header     map[string]any
	claims     map[string]any
	rawClaims  []byte

	iss, sub, azp string
	aud           []string
	exp, nbf, iat int64
	hasExp        bool
	hasNbf        bool
	hasIat        bool
}

// Algorithms accepted in a token's header. "none" is never accepted; HS* verify only
// against symmetric ("oct") keys of the provider's JWKS, so an attacker cannot sign with a
// public key used as an HMAC secret.
var supportedAlgs = map[string]jose.SignatureAlgorithm{
	"RS256": jose.RS256, "RS384": jose.RS384, "RS512": jose.RS512,
	"PS256": jose.PS256, "PS384": jose.PS384, "PS512": jose.PS512,
	"ES256": jose.ES256, "ES384": jose.ES384, "ES512": jose.ES512,
	"EdDSA": jose.EdDSA,
	"HS256": jose.HS256, "HS384": jose.HS384, "HS512": jose.HS512,
}

// parseJWT checks the token's form and decodes its header and payload. Nothing in it is
// trusted until verify succeeds.
func parseJWT(tok string) (*jwt, status) {
	if len(tok) > maxTokenLen {
		return nil, stTooLarge
	}
	// Only the base64url alphabet and the two dots: with strict decoding below, a token has
	// exactly one spelling, so no variant of a signed token (newlines, padding, stray
	// bits) is accepted as if it were a different one.
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return nil, stBadFormat
		}
	}
	h, rest, ok := strings.Cut(tok, ".")
	if !ok {
		return nil, stBadFormat
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s, ".") || h == "" || p == "" {
		return nil, stBadFormat
	}
	t := &jwt{raw: tok, payloadB64: p}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return nil, stHeaderBadBase64
	}
	if err := json.Unmarshal(hb, &t.header); err != nil || t.header == nil {
		return nil, stHeaderBadJSON
	}
	alg, ok := t.header["alg"].(string)
	if !ok {
		return nil, stHeaderBadAlg
	}
	if t.alg, ok = supportedAlgs[alg]; !ok {
		return nil, stHeaderAlgNotSupported
	}
	if kid, present := t.header["kid"]; present {
		if t.kid, ok = kid.(string); !ok {
			return nil, stHeaderBadJSON
		}
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return nil, stPayloadBadBase64
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	if err := dec.Decode(&t.claims); err != nil || t.claims == nil || dec.More() {
		return nil, stPayloadBadJSON
	}
	t.rawClaims = pb
	if _, err := b64.DecodeString(s); err != nil || s == "" {
		return nil, stSignatureBadBase64
	}
	if st := t.readClaims(); st != stOK {
		return nil, st
	}
	return t, stOK
}

// readClaims types the registered claims (RFC 7519 section 4.1).
func (t *jwt) readClaims() status {
	var ok bool
	for _, c := range [...]struct {
		name string
		dst  *string
	}{{"iss", &t.iss}, {"sub", &t.sub}, {"azp", &t.azp}} {
		v, present := t.claims[c.name]
		if !present {
			continue
		}
		if *c.dst, ok = v.(string); !ok {
			return stPayloadBadClaim
		}
	}
	switch a := t.claims["aud"].(type) {
	case nil:
		if _, present := t.claims["aud"]; present {
			return stPayloadBadClaim
		}
	case string:
		t.aud = []string{a}
	case []any:
		for _, e := range a {
			s, ok := e.(string)
			if !ok {
				return stPayloadBadClaim
			}
			t.aud = append(t.aud, s)
		}
	default:
		return stPayloadBadClaim
	}
	for _, c := range [...]struct {
		name string
		dst  *int64
		has  *bool
	}{{"exp", &t.exp, &t.hasExp}, {"nbf", &t.nbf, &t.hasNbf}, {"iat", &t.iat, &t.hasIat}} {
		v, present := t.claims[c.name]
		if !present {
			continue
		}
		f, ok := v.(float64)
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<53 {
			return stPayloadBadClaim
		}
		*c.dst, *c.has = int64(f), true
	}
	return stOK
}

// verifySignature checks the token against the key set, as Envoy picks keys: a key whose
// kid or alg is set must equal the token's, and its type must fit the algorithm; with no
// kid in the token every fitting key is tried.
func (t *jwt) verifySignature(ks *keySet) status {
	jws, err := jose.ParseSignedCompact(t.raw, []jose.SignatureAlgorithm{t.alg})
	if err != nil || len(jws.Signatures) != 1 {
		return stVerificationFail
	}
	tried := false
	for i := range ks.keys {
		k := &ks.keys[i]
		if t.kid != "" && k.KeyID != "" && k.KeyID != t.kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != string(t.alg) {
			continue
		}
		if !keyFits(t.alg, k.Key) {
			continue
		}
		tried = true
		if _, err := jws.Verify(k.Key); err == nil {
			return stOK
		}
	}
	if !tried {
		return stJwksNoKey
	}
	return stVerificationFail
}

// keyFits reports whether a JWKS key can verify the algorithm: RSA for RS*/PS*, the
// matching curve for ES*, Ed25519 for EdDSA, and only symmetric keys for HS*.
func keyFits(alg jose.SignatureAlgorithm, key any) bool {
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		_, ok := key.(*rsa.PublicKey)
		return ok
	case jose.ES256, jose.ES384, jose.ES512:
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return false
		}
		switch alg {
		case jose.ES256:
			return k.Curve == elliptic.P256()
		case jose.ES384:
			return k.Curve == elliptic.P384()
		}
		return k.Curve == elliptic.P521()
	case jose.EdDSA:
		_, ok := key.(ed25519.PublicKey)
		return ok
	case jose.HS256, jose.HS384, jose.HS512:
		_, ok := key.([]byte)
		return ok
	}
	return false
}

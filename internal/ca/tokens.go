package ca

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"
)

// Authenticator establishes the identity of the caller of the CSR service from the
// request's credentials. An error denies the request (codes.Unauthenticated). Local mode
// uses Tokens; Kubernetes will verify service-account tokens (TokenReview) behind the
// same interface.
type Authenticator interface {
	Authenticate(ctx context.Context) (Identity, error)
}

// ErrUnauthenticated is wrapped by every authentication failure.
var ErrUnauthenticated = errors.New("unauthenticated")

// BearerToken returns the token of the gRPC metadata "authorization: Bearer <token>"
// (RFC 6750 2.1; the scheme is case-insensitive). Exactly one such header is accepted.
func BearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch len(vals) {
	case 0:
		return "", fmt.Errorf("ca: %w: no authorization metadata", ErrUnauthenticated)
	case 1:
	default:
		return "", fmt.Errorf("ca: %w: %d authorization values, want 1", ErrUnauthenticated, len(vals))
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", fmt.Errorf("ca: %w: authorization is not a bearer token", ErrUnauthenticated)
	}
	return strings.TrimSpace(tok), nil
}

// Tokens are local mode's workload credentials. `weft up` asks the control plane for one
// per workload and hands it to that workload's proxy alone (an environment variable or a
// 0600 file), as Kubernetes mounts a service-account token into one pod.
//
// A token is "weft1.<payload>.<mac>", both parts unpadded base64url: payload is
// "ns/sa/workload", mac is HMAC-SHA256 under the per-mesh secret over a version label and
// the payload. Tokens do not expire; they are revoked by changing the secret (every
// workload must then get a new one). Whoever holds the secret can mint any identity, so
// it stays with the control plane (Options.Dir/token-secret, 0600).
type Tokens struct {
	key []byte
}

var _ Authenticator = (*Tokens)(nil)

const (
	tokenPrefix   = "weft1."
	tokenMACLabel = "weft ca token v1\x00"
	maxTokenBytes = 4096
)

// NewTokens uses secret (at least 32 bytes) as the HMAC key.
func NewTokens(secret []byte) (*Tokens, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("ca: token secret: %d bytes, need at least 32", len(secret))
	}
	return &Tokens{key: append([]byte(nil), secret...)}, nil
}

func (t *Tokens) mac(payload string) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(tokenMACLabel))
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// Issue returns the token of id.
func (t *Tokens) Issue(id Identity) (string, error) {
	if err := id.Validate(); err != nil {
		return "", err
	}
	payload := id.Namespace + "/" + id.ServiceAccount + "/" + id.Workload
	enc := base64.RawURLEncoding
	return tokenPrefix + enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(t.mac(payload)), nil
}

// Verify checks a token's MAC (in constant time) and returns the identity it names.
func (t *Tokens) Verify(token string) (Identity, error) {
	fail := func(why string) (Identity, error) {
		return Identity{}, fmt.Errorf("ca: %w: token %s", ErrUnauthenticated, why)
	}
	if len(token) > maxTokenBytes {
		return fail("too long")
	}
	// Only the base64url alphabet and the dots: Go's decoder skips CR and LF, which
	// would give one token several spellings.
	for i := 0; i < len(token); i++ {
		if c := token[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fail("has a byte outside base64url")
		}
	}
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return fail("has an unknown format")
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok {
		return fail("has an unknown format")
	}
	enc := base64.RawURLEncoding.Strict() // one encoding per token: no malleable trailing bits
	payload, err1 := enc.DecodeString(p64)
	sum, err2 := enc.DecodeString(m64)
	if err1 != nil || err2 != nil {
		return fail("is not base64url")
	}
	if !hmac.Equal(sum, t.mac(string(payload))) {
		return fail("signature does not verify")
	}
	parts := strings.Split(string(payload), "/")
	if len(parts) != 3 {
		return fail("payload is not ns/sa/workload")
	}
	id := Identity{Namespace: parts[0], ServiceAccount: parts[1], Workload: parts[2]}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("ca: %w: token: %w", ErrUnauthenticated, err)
	}
	return id, nil
}

// Authenticate implements Authenticator over "authorization: Bearer <token>".
func (t *Tokens) Authenticate(ctx context.Context) (Identity, error) {
	tok, err := BearerToken(ctx)
	if err != nil {
		return Identity{}, err
	}
	return t.Verify(tok)
}

package jwtauthn

import (
	"context"
	"net/http"
	"sort"
)

// Metadata namespaces a Result answers, as Envoy's dynamic metadata names them.
const (
	// FilterName is Envoy's jwt_authn namespace: payload_in_metadata (and
	// header_in_metadata) keys of the verified tokens.
	FilterName = "envoy.filters.http.jwt_authn"
	// IstioAuthn is the namespace Istio's RBAC reads the request.auth.* attributes from.
	IstioAuthn = "istio_authn"
)

// Istio's request.auth.* attributes (keys under IstioAuthn).
const (
	KeyPrincipal = "request.auth.principal" // "iss/sub"
	KeyAudiences = "request.auth.audiences"
	KeyPresenter = "request.auth.presenter" // azp
	KeyClaims    = "request.auth.claims"    // the payload; a claim path follows
	KeyRawClaims = "request.auth.raw_claims"
)

// Token is one verified JWT.
type Token struct {
	Provider  string
	Issuer    string
	Subject   string
	Audiences []string
	Presenter string
	// Claims is the payload as encoding/json decodes it, with normalize_payload_in_metadata
	// applied. Read-only.
	Claims    map[string]any
	RawClaims string

	payloadKey string         // payload_in_metadata
	headerKey  string         // header_in_metadata
	header     map[string]any // the JOSE header, for header_in_metadata
}

// Result is what the jwt_authn filter verified for one request: every token that passed,
// and the principal Istio derives from them. It is stored on the request's context, where
// later filters (RBAC) read it with FromRequest. Read-only once stored.
type Result struct {
	// Principal is "iss/sub" of the verified token whose issuer sorts first, as Istio's
	// authn filter picks it when several tokens pass.
	Principal string
	Tokens    []Token

	// Values boxed once, so that RBAC's lookups do not allocate.
	principal, presenter, rawClaims any
	audiences                       []any
	primary                         int
}

func newResult(tokens []Token) *Result {
	if len(tokens) == 0 {
		return nil
	}
	sort.SliceStable(tokens, func(i, j int) bool { return tokens[i].Issuer < tokens[j].Issuer })
	r := &Result{Tokens: tokens}
	r.seal()
	return r
}

func (r *Result) seal() {
	t := &r.Tokens[r.primary]
	r.Principal = t.Issuer + "/" + t.Subject
	r.principal = r.Principal
	if t.Presenter != "" {
		r.presenter = t.Presenter
	}
	r.rawClaims = t.RawClaims
	r.audiences = make([]any, len(t.Audiences))
	for i, a := range t.Audiences {
		r.audiences[i] = a
	}
}

type ctxKey struct{}

// FromContext returns the Result the jwt_authn filter stored, or nil.
func FromContext(ctx context.Context) *Result {
	r, _ := ctx.Value(ctxKey{}).(*Result)
	return r
}

// FromRequest returns the Result stored on the request's context, or nil.
func FromRequest(r *http.Request) *Result { return FromContext(r.Context()) }

// withResult stores res on the request, merging what an earlier jwt_authn instance of
// the same chain stored.
func withResult(r *http.Request, res *Result) *http.Request {
	if prev := FromRequest(r); prev != nil {
		res = newResult(append(append([]Token(nil), prev.Tokens...), res.Tokens...))
	}
	return r.WithContext(context.WithValue(r.Context(), ctxKey{}, res))
}

// Lookup answers RBAC's metadata matchers (it implements engine.Metadata): under
// IstioAuthn the request.auth.* keys of the primary token, under FilterName each
// token's payload_in_metadata and header_in_metadata keys.
func (r *Result) Lookup(filter string, path []string) (any, bool) {
	if r == nil || len(path) == 0 {
		return nil, false
	}
	switch filter {
	case IstioAuthn:
		t := &r.Tokens[r.primary]
		switch path[0] {
		case KeyPrincipal:
			return leaf(r.principal, path)
		case KeyAudiences:
			if len(r.audiences) == 0 {
				return nil, false
			}
			return leaf(r.audiences, path)
		case KeyPresenter:
			if r.presenter == nil {
				return nil, false
			}
			return leaf(r.presenter, path)
		case KeyRawClaims:
			return leaf(r.rawClaims, path)
		case KeyClaims:
			return walk(t.Claims, path[1:])
		}
	case FilterName:
		for i := range r.Tokens {
			t := &r.Tokens[i]
			if t.payloadKey != "" && t.payloadKey == path[0] {
				return walk(t.Claims, path[1:])
			}
			if t.headerKey != "" && t.headerKey == path[0] {
				return walk(t.header, path[1:])
			}
		}
	}
	return nil, false
}

func leaf(v any, path []string) (any, bool) {
	if len(path) != 1 {
		return nil, false
	}
	return v, true
}

// walk descends a JSON object by keys; with no keys it is the object itself.
func walk(m map[string]any, path []string) (any, bool) {
	var v any = m
	for _, k := range path {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

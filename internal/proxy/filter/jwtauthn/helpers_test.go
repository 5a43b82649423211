package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

const (
	issuer   = "https://issuer.example.com"
	audience = "bookinfo.example.com"
)

// keys are generated once per test binary: RSA generation is slow under -race.
type testKeys struct {
	rsa, rsaOther *rsa.PrivateKey
	ec            *ecdsa.PrivateKey
	ed            ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	keys     testKeys
)

func getKeys(t testing.TB) *testKeys {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if keys.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if keys.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if keys.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if _, keys.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
	return &keys
}

// jwks publishes the public halves of the test keys (not rsaOther).
func (k *testKeys) jwks(t testing.TB) string {
	t.Helper()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &k.rsa.PublicKey, KeyID: "rsa1", Algorithm: "RS256", Use: "sig"},
		{Key: &k.rsa.PublicKey, KeyID: "rsa1-ps", Algorithm: "PS256", Use: "sig"},
		{Key: &k.ec.PublicKey, KeyID: "ec1", Use: "sig"},
		{Key: k.ed.Public(), KeyID: "ed1"},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	var sk jose.SigningKey
	if kid != "" {
		sk = jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}
	} else {
		sk = jose.SigningKey{Algorithm: alg, Key: key}
	}
	s, err := jose.NewSigner(sk, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claims(sub string, mod func(map[string]any)) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{"iss": issuer, "sub": sub, "aud": audience, "iat": now, "exp": now + 3600}
	if mod != nil {
		mod(c)
	}
	return c
}

// unsigned builds a token from raw header and payload JSON with the given signature part.
func unsigned(header, payload, sig string) string {
	e := base64.RawURLEncoding
	return e.EncodeToString([]byte(header)) + "." + e.EncodeToString([]byte(payload)) + "." + sig
}

// hmacWithPublicKey is the classic key-confusion forgery: HS256 keyed with the RSA public key.
func hmacWithPublicKey(t testing.TB, k *testKeys) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return sign(t, jose.HS256, der, "rsa1", claims("mallory", nil))
}

// --- config builders ---

func localProvider(t testing.TB, mod func(*jwtv3.JwtProvider)) *jwtv3.JwtProvider {
	p := &jwtv3.JwtProvider{
		Issuer:    issuer,
		Audiences: []string{audience},
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: getKeys(t).jwks(t)}}},
		PayloadInMetadata: issuer,
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func reqProvider(name string) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func reqAllowMissing() *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}
}

func reqAny(rs ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: rs}}}
}

func reqAll(rs ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: rs}}}
}

func prefixRule(p string, r *jwtv3.JwtRequirement) *jwtv3.RequirementRule {
	rr := &jwtv3.RequirementRule{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}}
	if r != nil {
		rr.RequirementType = &jwtv3.RequirementRule_Requires{Requires: r}
	}
	return rr
}

// istioConfig is what istiod generates for one RequestAuthentication jwtRule: the
// provider, and a rule letting a request without a token through.
func istioConfig(t testing.TB, p *jwtv3.JwtProvider) *jwtv3.JwtAuthentication {
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": p},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/", reqAny(reqProvider("origins-0"), reqAllowMissing()))},
	}
}

func strictConfig(t testing.TB, p *jwtv3.JwtProvider) *jwtv3.JwtAuthentication {
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p": p},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/", reqProvider("p"))},
	}
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func build(t testing.TB, m *jwtv3.JwtAuthentication) filter.Middleware {
	t.Helper()
	mw, err := filter.Build("envoy.filters.http.jwt_authn", mustAny(t, m))
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

// --- harness: a loopback server running the filter before an upstream that reports what
// it received ---

type fakeRoute map[string]any

func (r fakeRoute) FilterConfig(name string) any { return r[name] }

type harness struct {
	srv   *httptest.Server
	infos chan *stream.Info
}

// seen is what the upstream reports.
type seen struct {
	Principal     string            `json:"principal"`
	Authorization string            `json:"authorization"`
	Query         string            `json:"query"`
	Headers       map[string]string `json:"headers"`
}

func newHarness(t testing.TB, mw filter.Middleware, route filter.Route, echo ...string) *harness {
	t.Helper()
	h := &harness{infos: make(chan *stream.Info, 64)}
	terminal := filter.HandlerFunc(func(x *filter.Exchange) error {
		s := seen{Authorization: x.R.Header.Get("Authorization"), Query: x.R.URL.RawQuery, Headers: map[string]string{}}
		if res := FromRequest(x.R); res != nil {
			s.Principal = res.Principal
		}
		for _, e := range echo {
			s.Headers[e] = x.R.Header.Get(e)
		}
		x.W.Header().Set("Content-Type", "application/json")
		x.W.WriteHeader(http.StatusOK)
		return json.NewEncoder(x.W).Encode(s)
	})
	chain := mw(terminal)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := &stream.Info{Start: time.Now()}
		info.Downstream, _ = netip.ParseAddrPort(r.RemoteAddr)
		x := &filter.Exchange{W: w, R: r, Info: info, Route: route}
		if err := chain.Serve(x); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		select {
		case h.infos <- x.Info:
		default:
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

type reply struct {
	code int
	hdr  http.Header
	body string
	seen seen
	info *stream.Info
}

func (h *harness) do(t testing.TB, path string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, hdr: resp.Header, body: string(b)}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &r.seen); err != nil {
			t.Fatalf("upstream reply %q: %v", b, err)
		}
	}
	select {
	case r.info = <-h.infos:
	case <-time.After(10 * time.Second):
		t.Fatal("no request info recorded")
	}
	return r
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

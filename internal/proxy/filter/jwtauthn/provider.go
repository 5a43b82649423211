package jwtauthn

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/weft-mesh/weft/internal/proxy/filter/rbac/engine"
)

// Defaults, as Envoy documents them.
const (
	defaultClockSkew     = 60 * time.Second
	defaultCacheDuration = 10 * time.Minute
	defaultRefetch       = time.Second
	defaultFetchTimeout  = 5 * time.Second
)

type locKind uint8

const (
	locHeader locKind = iota
	locParam
	locCookie
)

// location is one place a token is read from (from_headers, from_params, from_cookies).
type location struct {
	kind   locKind
	name   string // canonical header key, parameter or cookie name
	prefix string // value_prefix of a header
}

// provider is a compiled JwtProvider.
type provider struct {
	name        string
	issuer      string   // "" accepts any iss
	audiences   []string // normalized; empty accepts any
	subjects    *engine.StringMatcher
	requireExp  bool
	maxLifetime time.Duration
	skew        time.Duration
	forward     bool
	payloadHdr  string // canonical; "" none
	padPayload  bool
	payloadKey  string
	headerKey   string
	spaceClaims []string
	claimHdrs   []claimHeader
	clearRoute  bool
	keys        keySource
	locs        []int // indexes into config.locs
}

type claimHeader struct {
	header string   // canonical
	path   []string // claim_name split on "."
}

func compileProvider(name string, p *jwtv3.JwtProvider, cfg *config, st *Stats) (*provider, error) {
	if p == nil {
		return nil, errors.New("is required")
	}
	pv := &provider{
		name:        name,
		issuer:      p.GetIssuer(),
		requireExp:  p.GetRequireExpiration(),
		skew:        defaultClockSkew,
		forward:     p.GetForward(),
		padPayload:  p.GetPadForwardPayloadHeader(),
		payloadKey:  p.GetPayloadInMetadata(),
		headerKey:   p.GetHeaderInMetadata(),
		spaceClaims: p.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(),
		clearRoute:  p.GetClearRouteCache(),
	}
	if p.ClockSkewSeconds != 0 {
		pv.skew = time.Duration(p.GetClockSkewSeconds()) * time.Second
	}
	for _, a := range p.GetAudiences() {
		pv.audiences = append(pv.audiences, normalizeAudience(a))
	}
	if s := p.GetSubjects(); s != nil {
		sm, err := engine.CompileString(s)
		if err != nil {
			return nil, fmt.Errorf("subjects: %w", err)
		}
		pv.subjects = &sm
	}
	if d := p.GetMaxLifetime(); d != nil {
		pv.maxLifetime = d.AsDuration()
		if pv.maxLifetime <= 0 {
			return nil, errors.New("max_lifetime: must be positive")
		}
	}
	if h := p.GetForwardPayloadHeader(); h != "" {
		if !httpguts.ValidHeaderFieldName(h) {
			return nil, fmt.Errorf("forward_payload_header: %q is not a header name", h)
		}
		pv.payloadHdr = http.CanonicalHeaderKey(h)
	}
	for i, c := range p.GetClaimToHeaders() {
		if !httpguts.ValidHeaderFieldName(c.GetHeaderName()) {
			return nil, fmt.Errorf("claim_to_headers[%d].header_name: %q is not a header name", i, c.GetHeaderName())
		}
		var path []string
		if c.GetClaimName() != "" {
			path = strings.Split(c.GetClaimName(), ".")
		}
		for _, seg := range c.GetClaimPath() {
			path = append(path, seg.GetKey())
		}
		if len(path) == 0 {
			return nil, fmt.Errorf("claim_to_headers[%d]: claim_name is required", i)
		}
		pv.claimHdrs = append(pv.claimHdrs, claimHeader{header: http.CanonicalHeaderKey(c.GetHeaderName()), path: path})
	}

	switch s := p.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		b, err := dataSource(s.LocalJwks)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		ks, err := parseJWKS(b)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		pv.keys = localJWKS{ks: ks}
	case *jwtv3.JwtProvider_RemoteJwks:
		r, err := compileRemote(s.RemoteJwks, st)
		if err != nil {
			return nil, fmt.Errorf("remote_jwks: %w", err)
		}
		pv.keys = r
	default:
		return nil, errors.New("one of local_jwks or remote_jwks is required")
	}

	// Token locations; Envoy's defaults when none is given.
	var locs []location
	for i, h := range p.GetFromHeaders() {
		if !httpguts.ValidHeaderFieldName(h.GetName()) {
			return nil, fmt.Errorf("from_headers[%d].name: %q is not a header name", i, h.GetName())
		}
		locs = append(locs, location{kind: locHeader, name: http.CanonicalHeaderKey(h.GetName()), prefix: h.GetValuePrefix()})
	}
	for i, n := range p.GetFromParams() {
		if n == "" {
			return nil, fmt.Errorf("from_params[%d]: must not be empty", i)
		}
		locs = append(locs, location{kind: locParam, name: n})
	}
	for i, n := range p.GetFromCookies() {
		if n == "" {
			return nil, fmt.Errorf("from_cookies[%d]: must not be empty", i)
		}
		locs = append(locs, location{kind: locCookie, name: n})
	}
	if len(locs) == 0 {
		locs = []location{{kind: locHeader, name: "Authorization", prefix: "Bearer "}, {kind: locParam, name: "access_token"}}
	}
	for _, l := range locs {
		pv.locs = append(pv.locs, cfg.location(l))
	}
	return pv, nil
}

func compileRemote(r *jwtv3.RemoteJwks, st *Stats) (*remoteJWKS, error) {
	u := r.GetHttpUri()
	if u == nil || u.GetUri() == "" {
		return nil, errors.New("http_uri.uri: is required")
	}
	pu, err := url.Parse(u.GetUri())
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, fmt.Errorf("http_uri.uri: %q is not an http(s) URL", u.GetUri())
	}
	k := remoteKey{uri: u.GetUri(), timeout: defaultFetchTimeout, cacheFor: defaultCacheDuration, retryAfter: defaultRefetch}
	if t := u.GetTimeout(); t != nil && t.AsDuration() > 0 {
		k.timeout = t.AsDuration()
	}
	if d := r.GetCacheDuration(); d != nil {
		if k.cacheFor = d.AsDuration(); k.cacheFor <= 0 {
			return nil, errors.New("cache_duration: must be positive")
		}
	}
	if a := r.GetAsyncFetch(); a != nil {
		k.async = true
		if d := a.GetFailedRefetchDuration(); d != nil && d.AsDuration() > 0 {
			k.retryAfter = d.AsDuration()
		}
	}
	j := sharedRemote(k, st)
	if k.async {
		j.prefetch()
	}
	return j, nil
}

func dataSource(d *corev3.DataSource) ([]byte, error) {
	switch s := d.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_Filename:
		f, err := os.Open(s.Filename)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxJWKSSize+1))
		if err != nil {
			return nil, err
		}
		if len(b) > maxJWKSSize {
			return nil, fmt.Errorf("filename %q: larger than %d bytes", s.Filename, maxJWKSSize)
		}
		return b, nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, fmt.Errorf("environment_variable %q: not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	}
	return nil, errors.New("a data source is required")
}

// normalizeAudience compares audiences as Envoy's jwt_verify_lib does: without an
// http(s):// scheme and without a trailing slash.
func normalizeAudience(a string) string {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "https://"), "http://")
	return strings.TrimSuffix(a, "/")
}

// check verifies a parsed token for this provider: time constraints, audiences and
// subject first (as Envoy orders them), then the signature.
func (p *provider) check(t *jwt, now time.Time, keys func() (*keySet, bool)) status {
	sec := now.Unix()
	skew := int64(p.skew / time.Second)
	if t.hasExp && sec > t.exp+skew {
		return stExpired
	}
	if t.hasNbf && sec+skew < t.nbf {
		return stNotYetValid
	}
	if !t.hasExp && (p.requireExp || p.maxLifetime > 0) {
		return stExpRequired
	}
	if p.maxLifetime > 0 {
		start := sec
		if t.hasIat {
			start = t.iat
		}
		if t.hasNbf && t.nbf > start {
			start = t.nbf
		}
		if time.Duration(t.exp-start)*time.Second > p.maxLifetime {
			return stLifetimeTooLong
		}
	}
	if !p.audienceAllowed(t.aud) {
		return stAudienceNotAllowed
	}
	if p.subjects != nil && !p.subjects.Match(t.sub) {
		return stSubjectNotAllowed
	}
	ks, ok := keys()
	if !ok {
		return stJwksFetchFail
	}
	return t.verifySignature(ks)
}

func (p *provider) audienceAllowed(aud []string) bool {
	return audienceIn(p.audiences, aud)
}

func audienceIn(allowed, aud []string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range aud {
		na := normalizeAudience(a)
		for _, w := range allowed {
			if na == w {
				return true
			}
		}
	}
	return false
}

// token builds the verified token's record for RBAC and metadata.
func (p *provider) token(t *jwt) Token {
	claims := t.claims
	if len(p.spaceClaims) > 0 {
		// normalize_payload_in_metadata: space-delimited claims ("scope") become lists.
		claims = make(map[string]any, len(t.claims))
		for k, v := range t.claims {
			claims[k] = v
		}
		for _, name := range p.spaceClaims {
			if s, ok := claims[name].(string); ok {
				f := strings.Fields(s)
				l := make([]any, len(f))
				for i := range f {
					l[i] = f[i]
				}
				claims[name] = l
			}
		}
	}
	return Token{
		Provider: p.name, Issuer: t.iss, Subject: t.sub, Audiences: t.aud, Presenter: t.azp,
		Claims: claims, RawClaims: string(t.rawClaims),
		payloadKey: p.payloadKey, headerKey: p.headerKey, header: t.header,
	}
}

// claimValue renders a claim for claim_to_headers as Envoy does: strings, numbers and
// booleans verbatim, arrays and objects as base64 of their JSON.
func claimValue(v any) (string, bool) {
	switch c := v.(type) {
	case string:
		return c, true
	case bool:
		return strconv.FormatBool(c), true
	case float64:
		if c == float64(int64(c)) {
			return strconv.FormatInt(int64(c), 10), true
		}
		return strconv.FormatFloat(c, 'g', -1, 64), true
	case []any, map[string]any:
		b, err := json.Marshal(c)
		if err != nil {
			return "", false
		}
		return base64.StdEncoding.EncodeToString(b), true
	}
	return "", false
}

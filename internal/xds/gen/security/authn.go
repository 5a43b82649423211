package security

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	security "istio.io/api/security/v1beta1"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// JWKS defaults (Istio's).
const (
	jwksFetchTimeout = 5 * time.Second
	jwksCacheFor     = 5 * time.Minute
)

// spaceDelimited are the claims always split on spaces for matching (Istio's default:
// "scope" and "permission"), before a rule's spaceDelimitedClaims.
var spaceDelimited = []string{"scope", "permission"}

// unusableJWKS verifies no token: one RSA public key whose private half was thrown away.
// A rule whose keys weft cannot have (no jwks and no jwksUri, or a jwks without a usable
// signature key) gets it, so its tokens are rejected (401) while requests without a token
// still reach RBAC, which then does not see that issuer's principal: fail closed, the
// way Istio serves a JWKS it failed to fetch. It keeps the rest of the workload's config
// valid, where an unusable key set would have the whole listener rejected.
const unusableJWKS = `{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"weft-unresolvable-jwks","e":"AQAB","n":"` +
	`lw-oV5jHQzI9jv-tyE5J0GpUc_qEgCtAA0Nxbg5owkoot6ebBOP3tMHM_MRJEKjwzp0jmt4CpaHT3EiRUPIcqL7vN7xgdch1L6PnA7hdSi4ovEDY4cC` +
	`Q9IdvPCbwC5pPn7aY_kE8y6Nzw-uuqnIUHNwXCSxSaNaoj2yqRq4eBc8LJGRlwQaDm9pjc1rZgzNsp0aykCNaywylETr4OkryLxmm2oEEZswhpzGJA9m` +
	`QclYWHQ1ud1GgRShq_HuU6N7WORIvXOUgSZqSI3omsd-lfGyLMgBPN4QH4vUG1v3JMiQA1D5i53q_8V5K7484Hj7ciYc788q4gkcoBFbg2ZJcZQ"}]}`

// JWTAuthn builds the JWT filter (envoy.filters.http.jwt_authn) of proxy p from the
// RequestAuthentications that apply to it (mesh-wide in the root namespace, the
// namespace's, and those whose selector picks the workload); nil when none has a rule.
//
// Each jwtRule is a provider "origins-<i>" (in policy order); the one requirement, for
// every path, is any of them or no token at all (allow_missing): a request without a
// token passes and authorization decides (requestPrincipals), a request with a token
// that no provider verifies is rejected with 401. Verified claims go to dynamic
// metadata under the issuer (payload_in_metadata) and to request.auth.* for RBAC; weft's
// filter provides those itself, so there is no istio_authn filter.
func JWTAuthn(s *snapshot.Snapshot, p *node.Proxy) *jwtv3.JwtAuthentication {
	j, _ := jwtAuthn(s, p)
	return j
}

func jwtAuthn(s *snapshot.Snapshot, p *node.Proxy) (*jwtv3.JwtAuthentication, []string) {
	var rules []*security.JWTRule
	var from []snapshot.Meta
	for i := range s.RequestAuthentications {
		ra := &s.RequestAuthentications[i]
		spec := ra.Spec
		if spec == nil || !selects(s, ra.Meta, spec.GetSelector(), spec.GetTargetRef() != nil || len(spec.GetTargetRefs()) > 0, p) {
			continue
		}
		for _, r := range spec.GetJwtRules() {
			if r != nil {
				rules = append(rules, r)
				from = append(from, ra.Meta)
			}
		}
	}
	if len(rules) == 0 {
		return nil, nil
	}
	var notes []string
	out := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{},
		// A CORS preflight carries no token; let the CORS filter answer it (Istio's).
		BypassCorsPreflight: true,
	}
	anyOf := &jwtv3.JwtRequirementOrList{}
	for i, r := range rules {
		if r.GetIssuer() == "" {
			// A provider without an issuer would verify tokens of any issuer against
			// these keys; without the rule, such tokens are rejected (unknown issuer).
			notes = append(notes, fmt.Sprintf("%s: jwtRules[%d]: issuer is required: rule left out", source(from[i]), i))
			continue
		}
		name := "origins-" + strconv.Itoa(len(out.Providers))
		prov, note := provider(r)
		if note != "" {
			notes = append(notes, fmt.Sprintf("%s: jwtRules issuer %q: %s", source(from[i]), r.GetIssuer(), note))
		}
		out.Providers[name] = prov
		anyOf.Requirements = append(anyOf.Requirements, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}})
	}
	if len(out.Providers) == 0 {
		return nil, notes
	}
	anyOf.Requirements = append(anyOf.Requirements, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	out.Rules = []*jwtv3.RequirementRule{{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: anyOf},
		}},
	}}
	return out, notes
}

// provider translates one JWTRule; note says why its keys were replaced, if they were.
func provider(r *security.JWTRule) (*jwtv3.JwtProvider, string) {
	p := &jwtv3.JwtProvider{
		Issuer:    r.GetIssuer(),
		Audiences: append([]string(nil), r.GetAudiences()...),
		Forward:   r.GetForwardOriginalToken(),
		// Istio's key for the payload: RBAC's experimental.envoy.filters.http.jwt_authn
		// conditions and Envoy's own consumers find it under the issuer.
		PayloadInMetadata: r.GetIssuer(),
	}
	// Names the proxy would refuse (and with them the whole listener) are left out, and
	// then no token of the rule is verified: a token read from another place than the
	// rule says must not pass.
	var bad []string
	header := func(field, name string) bool {
		if !httpguts.ValidHeaderFieldName(name) {
			bad = append(bad, fmt.Sprintf("%s %q is not a header name", field, name))
			return false
		}
		return true
	}
	nonEmpty := func(field string, vs []string) []string {
		var out []string
		for _, v := range vs {
			if v == "" {
				bad = append(bad, field+" has an empty name")
				continue
			}
			out = append(out, v)
		}
		return out
	}
	p.FromParams = nonEmpty("fromParams", r.GetFromParams())
	p.FromCookies = nonEmpty("fromCookies", r.GetFromCookies())
	if h := r.GetOutputPayloadToHeader(); h != "" && header("outputPayloadToHeader", h) {
		p.ForwardPayloadHeader = h
	}
	for _, h := range r.GetFromHeaders() {
		if header("fromHeaders", h.GetName()) {
			p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
		}
	}
	for _, c := range r.GetOutputClaimToHeaders() {
		if header("outputClaimToHeaders", c.GetHeader()) && len(nonEmpty("outputClaimToHeaders.claim", []string{c.GetClaim()})) == 1 {
			p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: c.GetHeader(), ClaimName: c.GetClaim()})
		}
	}
	claims := append([]string(nil), spaceDelimited...)
	for _, c := range r.GetSpaceDelimitedClaims() {
		if !contains(claims, c) {
			claims = append(claims, c)
		}
	}
	p.NormalizePayloadInMetadata = &jwtv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: claims}

	if len(bad) > 0 {
		p.JwksSourceSpecifier = inlineJWKS(unusableJWKS)
		return p, strings.Join(bad, "; ") + ": no token of this issuer can be verified"
	}
	note := ""
	switch {
	case r.GetJwks() != "":
		if err := usableJWKS(r.GetJwks()); err != nil {
			note = "jwks: " + err.Error() + ": no token of this issuer can be verified"
			p.JwksSourceSpecifier = inlineJWKS(unusableJWKS)
		} else {
			p.JwksSourceSpecifier = inlineJWKS(r.GetJwks())
		}
	case r.GetJwksUri() != "":
		cluster, err := jwksCluster(r.GetJwksUri())
		if err != nil {
			note = "jwksUri: " + err.Error() + ": no token of this issuer can be verified"
			p.JwksSourceSpecifier = inlineJWKS(unusableJWKS)
			break
		}
		timeout := jwksFetchTimeout
		if d := r.GetTimeout(); d != nil && d.AsDuration() > 0 {
			timeout = d.AsDuration()
		}
		// The proxy fetches the keys itself and caches them (Envoy's remote_jwks);
		// http_uri.cluster is what Envoy fetches through, Istio's cluster name for the
		// JWKS host. weft-proxy fetches the URI directly.
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{
				Uri:              r.GetJwksUri(),
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
				Timeout:          durationpb.New(timeout),
			},
			CacheDuration: durationpb.New(jwksCacheFor),
		}}
	default:
		// Istio's control plane discovers the keys from the issuer's OpenID
		// configuration; weft's generators are pure and fetch nothing.
		note = "neither jwks nor jwksUri is set (OpenID discovery is not supported): no token of this issuer can be verified"
		p.JwksSourceSpecifier = inlineJWKS(unusableJWKS)
	}
	return p, note
}

func inlineJWKS(doc string) *jwtv3.JwtProvider_LocalJwks {
	return &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: doc}}}
}

// usableJWKS applies the proxy's rule (RFC 7517 section 5): keys it cannot use are
// skipped, and a set left with no signature key is rejected.
func usableJWKS(doc string) error {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(doc), &set); err != nil {
		return fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil || k.Key == nil || (k.Use != "" && k.Use != "sig") {
			continue
		}
		return nil
	}
	return fmt.Errorf("no usable signature key")
}

// jwksCluster is Istio's cluster name for a JWKS URI's host: "outbound|443||host".
func jwksCluster(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return "", fmt.Errorf("%q is not an http(s) URL", uri)
	}
	port := uint64(80)
	if u.Scheme == "https" {
		port = 443
	}
	if ps := u.Port(); ps != "" {
		if port, err = strconv.ParseUint(ps, 10, 16); err != nil {
			return "", fmt.Errorf("%q: port: %w", uri, err)
		}
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return names.Cluster(names.Outbound, uint32(port), "", host), nil
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// Package security translates Istio's security resources into the Envoy config a proxy
// enforces them with. It is one of the pure builders the listener generator calls while it
// builds a proxy's listeners (internal/xds/gen/listener):
//
//   - AuthorizationPolicy (authz.go, rule.go): one HTTP RBAC filter
//     (envoy.filters.http.rbac) per action on the inbound connection managers of a sidecar
//     and on a gateway's, and one network RBAC filter (envoy.filters.network.rbac) per
//     action before tcp_proxy on TCP chains. Audit first, then DENY, then ALLOW, as Istio
//     chains them.
//   - RequestAuthentication (authn.go): the JWT filter (envoy.filters.http.jwt_authn)
//     before the RBAC filters, which verifies tokens and hands request.auth.* to RBAC.
//   - PeerAuthentication (peer.go): the mTLS mode of each inbound port (STRICT,
//     PERMISSIVE, DISABLE) with Istio's precedence, which the listener generator turns
//     into filter chains.
//
// Every function is a pure function of (snapshot, proxy): same input, same bytes. Policy
// errors fail closed: what cannot be translated allows less or denies more, never the
// reverse (Diagnose says what was affected).
package security

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// Filter names, as Envoy and Istio name them.
const (
	HTTPRBACFilter    = "envoy.filters.http.rbac"
	JWTAuthnFilter    = "envoy.filters.http.jwt_authn"
	NetworkRBACFilter = "envoy.filters.network.rbac"
)

// selects reports whether a policy in namespace meta.Namespace with a workload selector
// applies to proxy p: a policy in the root namespace applies mesh-wide (its selector, if
// any, picks workloads in every namespace); one in the proxy's namespace applies to the
// namespace (or the workloads its selector picks). A policy that attaches by targetRef(s)
// is for gateways and waypoints by reference and is not applied by selector.
func selects(s *snapshot.Snapshot, meta snapshot.Meta, sel *typev1beta1.WorkloadSelector, hasTargetRef bool, p *node.Proxy) bool {
	if hasTargetRef {
		return false
	}
	if meta.Namespace != p.Namespace && meta.Namespace != s.Mesh.RootNamespace {
		return false
	}
	return labelsMatch(sel.GetMatchLabels(), p.Labels)
}

// labelsMatch: every selector label is on the workload (an empty selector matches all).
func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if w, ok := labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// --- matchers ---

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefixMatch(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func suffixMatch(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s}}
}

func regexMatch(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// wildcard turns an Istio value with its wildcards ("*", "prefix*", "*suffix", exact) into
// a string matcher over prefix+value. "*" is any non-empty value: Envoy's prefix and
// suffix matchers must not be empty, and an absent value is no value.
func wildcard(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatch(".+")
	case strings.HasPrefix(v, "*"):
		if prefix == "" {
			return suffixMatch(v[1:])
		}
		return regexMatch(regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(v[1:]))
	case strings.HasSuffix(v, "*"):
		return prefixMatch(prefix + v[:len(v)-1])
	}
	return exact(prefix + v)
}

// globRegex is a value with "*" wildcards anywhere as a regular expression.
func globRegex(v string) string {
	parts := strings.Split(v, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return strings.Join(parts, ".*")
}

// cidr parses an address ("10.0.0.1", a single host) or a CIDR ("10.0.0.0/8").
func cidr(v string) (*corev3.CidrRange, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR range: %w", v, err)
		}
		return cidrRange(p.Addr().String(), p.Bits()), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IP address: %w", v, err)
	}
	return cidrRange(a.String(), a.BitLen()), nil
}

package security

import (
	"errors"
	"fmt"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	security "istio.io/api/security/v1beta1"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// Action is one RBAC filter of a chain. Istio chains one filter per action, each
// deciding on its own: a request passes only if every filter lets it.
type Action int

const (
	// Audit: AUDIT policies, Envoy's LOG action: a match is recorded, nothing is denied.
	Audit Action = iota
	// Deny: DENY policies, and CUSTOM ones (see CUSTOM below).
	Deny
	// Allow: ALLOW policies. Once one applies to a workload, a request that matches
	// none of them is denied.
	Allow
)

// Actions are the RBAC filters in chain order (Istio's: audit, deny, allow).
var Actions = [...]Action{Audit, Deny, Allow}

func (a Action) String() string {
	switch a {
	case Audit:
		return "AUDIT"
	case Deny:
		return "DENY"
	}
	return "ALLOW"
}

func (a Action) rbac() rbacv3.RBAC_Action {
	switch a {
	case Audit:
		return rbacv3.RBAC_LOG
	case Deny:
		return rbacv3.RBAC_DENY
	}
	return rbacv3.RBAC_ALLOW
}

// DryRunAnnotation set to "true" on an AuthorizationPolicy evaluates it as shadow rules:
// counted (istio_dry_run_allow_/istio_dry_run_deny_ stats), never enforced (Istio's).
const DryRunAnnotation = "istio.io/dry-run"

// TCPStatPrefix is the stat_prefix of network RBAC filters (Istio's): tcp.rbac.allowed.
const TCPStatPrefix = "tcp."

// HTTPRBAC builds the HTTP RBAC filter of one action for the connection managers of
// proxy p that serve its workload (a sidecar's inbound, a gateway's servers); nil when no
// AuthorizationPolicy of that action applies to it.
//
// CUSTOM policies delegate to an external authorizer (MeshConfig extensionProviders),
// which weft does not have: as Istio does when a CUSTOM policy's provider is not found,
// the requests the policy would have sent to it are denied (its rules join the DENY
// filter, names ending in "-custom-unavailable").
func HTTPRBAC(s *snapshot.Snapshot, p *node.Proxy, a Action) *rbachttpv3.RBAC {
	c := collect(s, p, a, false)
	if c == nil {
		return nil
	}
	out := &rbachttpv3.RBAC{}
	if c.enforced {
		out.Rules = &rbacv3.RBAC{Action: a.rbac(), Policies: c.rules}
	}
	if c.dryRun {
		out.ShadowRules = &rbacv3.RBAC{Action: a.rbac(), Policies: c.shadow}
		out.ShadowRulesStatPrefix = dryRunPrefix(a)
	}
	return out
}

// NetworkRBAC is HTTPRBAC for the TCP chains of the same workload (before tcp_proxy).
// Rules with HTTP-only fields (hosts, methods, paths, requestPrincipals, request.*
// conditions) cannot be evaluated on a connection: an ALLOW rule with one is dropped
// (it allows less), a DENY rule is kept without them (it denies more), as Istio does.
func NetworkRBAC(s *snapshot.Snapshot, p *node.Proxy, a Action) *rbacnetv3.RBAC {
	c := collect(s, p, a, true)
	if c == nil {
		return nil
	}
	out := &rbacnetv3.RBAC{StatPrefix: TCPStatPrefix}
	if c.enforced {
		out.Rules = &rbacv3.RBAC{Action: a.rbac(), Policies: c.rules}
	}
	if c.dryRun {
		out.ShadowRules = &rbacv3.RBAC{Action: a.rbac(), Policies: c.shadow}
		out.ShadowRulesStatPrefix = dryRunPrefix(a)
	}
	return out
}

// NetworkDenyAll is a network RBAC filter that closes every connection; policy names the
// reason in the proxy's logs and stats.
func NetworkDenyAll(policy string) *rbacnetv3.RBAC {
	return &rbacnetv3.RBAC{
		StatPrefix: TCPStatPrefix,
		Rules:      &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{policy: matchAll()}},
	}
}

func dryRunPrefix(a Action) string {
	if a == Allow {
		return "istio_dry_run_allow_"
	}
	return "istio_dry_run_deny_"
}

// collected is what the policies of one action give a proxy.
type collected struct {
	enforced, dryRun bool // some policy is enforced / dry-run (even one with no rules)
	rules, shadow    map[string]*rbacv3.Policy
	notes            []string
}

// actionOf maps a policy's action to its filter; CUSTOM reports custom.
func actionOf(a security.AuthorizationPolicy_Action) (act Action, custom bool) {
	switch a {
	case security.AuthorizationPolicy_DENY:
		return Deny, false
	case security.AuthorizationPolicy_AUDIT:
		return Audit, false
	case security.AuthorizationPolicy_CUSTOM:
		return Deny, true
	}
	return Allow, false
}

// collect translates the AuthorizationPolicies of action a that apply to p; nil when
// none does. An ALLOW policy without rules is kept with no policy: it matches nothing,
// so the workload denies everything an ALLOW policy does not allow (Istio's allow-nothing).
func collect(s *snapshot.Snapshot, p *node.Proxy, a Action, tcp bool) *collected {
	var c *collected
	for i := range s.AuthorizationPolicies {
		ap := &s.AuthorizationPolicies[i]
		spec := ap.Spec
		if spec == nil || !selects(s, ap.Meta, spec.GetSelector(), spec.GetTargetRef() != nil || len(spec.GetTargetRefs()) > 0, p) {
			continue
		}
		act, custom := actionOf(spec.GetAction())
		if act != a {
			continue
		}
		if c == nil {
			c = &collected{rules: map[string]*rbacv3.Policy{}, shadow: map[string]*rbacv3.Policy{}}
		}
		into := c.rules
		if !custom && a != Audit && ap.Annotations[DryRunAnnotation] == "true" {
			into, c.dryRun = c.shadow, true
		} else {
			c.enforced = true
		}
		t := ruleTranslator{ns: ap.Namespace, tcp: tcp, dropHTTP: a != Allow}
		for ri, r := range spec.GetRules() {
			name := fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ap.Namespace, ap.Name, ri)
			if custom {
				name += "-custom-unavailable"
			}
			var dropped []string
			t.dropped = &dropped
			pol, err := t.translate(r)
			switch {
			case err == nil:
				into[name] = pol
				if len(dropped) > 0 && a == Deny {
					c.notes = append(c.notes, fmt.Sprintf("%s: rules[%d]: on TCP traffic without %s (only HTTP requests have them): it denies more connections",
						source(ap.Meta), ri, strings.Join(dropped, ", ")))
				}
			case a == Deny:
				// Fail closed: a DENY rule weft cannot express denies everything.
				into[name] = matchAll()
				c.notes = append(c.notes, fmt.Sprintf("%s: rules[%d]: %v: denying every request", source(ap.Meta), ri, err))
			case tcp && errors.Is(err, errHTTPOnly):
				c.notes = append(c.notes, fmt.Sprintf("%s: rules[%d]: %v: not applied to TCP traffic (it allows less)", source(ap.Meta), ri, err))
			default:
				c.notes = append(c.notes, fmt.Sprintf("%s: rules[%d]: %v: rule dropped (it allows less)", source(ap.Meta), ri, err))
			}
		}
		if custom {
			c.notes = append(c.notes, fmt.Sprintf("%s: action CUSTOM: no external authorizer in weft: requests its rules match are denied", source(ap.Meta)))
		}
	}
	return c
}

func source(m snapshot.Meta) string {
	if m.Source != "" {
		return m.Source
	}
	return m.Namespace + "/" + m.Name
}

// Diagnose lists what the translation of the security policies applying to p changed
// from what they say, so the operator can see it: rules dropped or widened to fail
// closed, CUSTOM policies, JWKS that cannot be used. Sorted as the policies are.
func Diagnose(s *snapshot.Snapshot, p *node.Proxy) []string {
	var out []string
	seen := map[string]bool{}
	add := func(notes []string) {
		for _, n := range notes {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	for _, tcp := range []bool{false, true} {
		for _, a := range Actions {
			if c := collect(s, p, a, tcp); c != nil {
				add(c.notes)
			}
		}
	}
	_, notes := jwtAuthn(s, p)
	add(notes)
	return out
}

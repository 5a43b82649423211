package validation

import (
	"fmt"
	"strconv"
	"strings"

	extensions "istio.io/api/extensions/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	networkingbeta "istio.io/api/networking/v1beta1"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/internal/config/smi"
)

// Meta is the part of a resource's metadata validation needs.
type Meta struct {
	Name, Namespace string
	Labels          map[string]string
	Annotations     map[string]string
	// APIVersion as written ("networking.istio.io/v1"), for version-specific rules.
	APIVersion string
}

// dryRunAnnotation is Istio's istio.io/dry-run, valid only on ALLOW/DENY AuthorizationPolicies.
const dryRunAnnotation = "istio.io/dry-run"

// Validate checks metadata and spec. spec is the decoded upstream type (a pointer).
func Validate(m Meta, spec any) Result {
	var r Result
	checkMeta(&r, m)
	switch s := spec.(type) {
	case *networking.VirtualService:
		r.Merge(VirtualService(m, s))
	case *networking.DestinationRule:
		r.Merge(DestinationRule(m, s))
	case *networking.Gateway:
		r.Merge(Gateway(m, s))
	case *networking.ServiceEntry:
		r.Merge(ServiceEntry(m, s))
	case *networking.WorkloadEntry:
		r.Merge(WorkloadEntry(m, s))
	case *networking.WorkloadGroup:
		r.Merge(WorkloadGroup(m, s))
	case *networking.Sidecar:
		r.Merge(Sidecar(m, s))
	case *networking.EnvoyFilter:
		r.Merge(EnvoyFilter(m, s))
	case *networkingbeta.ProxyConfig:
		r.Merge(ProxyConfig(m, s))
	case *security.PeerAuthentication:
		r.Merge(PeerAuthentication(m, s))
	case *security.AuthorizationPolicy:
		r.Merge(AuthorizationPolicy(m, s))
	case *security.RequestAuthentication:
		r.Merge(RequestAuthentication(m, s))
	case *telemetry.Telemetry:
		r.Merge(Telemetry(m, s))
	case *extensions.WasmPlugin:
		r.Merge(WasmPlugin(m, s))
	case *gwv1.GatewaySpec:
		r.Merge(KubernetesGateway(m, s))
	case *gwv1.HTTPRouteSpec:
		r.Merge(HTTPRoute(m, s))
	case *gwv1.GRPCRouteSpec:
		r.Merge(GRPCRoute(m, s))
	case *smi.TrafficSplitSpec:
		r.Merge(TrafficSplit(m, s))
	default:
		r.Errorf("spec", "no validation for %T", spec)
	}
	if v, ok := m.Annotations[dryRunAnnotation]; ok {
		ap, isAuthz := spec.(*security.AuthorizationPolicy)
		switch {
		case !isAuthz:
			invalidf(&r, Path("metadata.annotations").Key(dryRunAnnotation), v, "annotation is only supported on AuthorizationPolicy")
		case ap.Action != security.AuthorizationPolicy_ALLOW && ap.Action != security.AuthorizationPolicy_DENY:
			invalidf(&r, Path("metadata.annotations").Key(dryRunAnnotation), v, "annotation only supports action ALLOW/DENY, found %v", ap.Action)
		default:
			if _, err := strconv.ParseBool(v); err != nil {
				invalidf(&r, Path("metadata.annotations").Key(dryRunAnnotation), v, "must be true or false")
			}
		}
	}
	return r
}

func checkMeta(r *Result, m Meta) {
	checkName(r, "metadata.name", m.Name, false)
	if m.Namespace != "" && !isK8sLabel(m.Namespace) {
		invalidf(r, "metadata.namespace", m.Namespace, "a namespace must be a lowercase RFC 1123 label")
	}
	checkLabels(r, "metadata.labels", m.Labels)
	for _, k := range sortedStringKeys(m.Annotations) {
		if err := labelKeyErr(k); err != "" {
			invalidf(r, Path("metadata.annotations").Key(k), k, "annotation key %s", err)
		}
	}
}

// TrafficSplit validates an SMI TrafficSplit.
func TrafficSplit(_ Meta, ts *smi.TrafficSplitSpec) Result {
	var r Result
	p := Path("spec")
	if ts.Service == "" {
		required(&r, p.Field("service"))
	} else if err := ValidateFQDN(ts.Service); err != nil {
		invalidf(&r, p.Field("service"), ts.Service, "%v", err)
	}
	if len(ts.Backends) == 0 {
		required(&r, p.Field("backends"))
	}
	seen := map[string]bool{}
	var total int64
	for i, b := range ts.Backends {
		bp := p.Field("backends").Index(i)
		if b.Service == "" {
			required(&r, bp.Field("service"))
		} else if err := ValidateFQDN(b.Service); err != nil {
			invalidf(&r, bp.Field("service"), b.Service, "%v", err)
		}
		if seen[b.Service] {
			r.Errorf(bp.Field("service"), "Duplicate value: %q", b.Service)
		}
		seen[b.Service] = true
		w := b.Weight.Int
		if b.Weight.IsQuantity {
			w = b.Weight.Milli
		}
		if w < 0 {
			var v any = b.Weight.Int
			if b.Weight.IsQuantity {
				v = b.Weight.Raw
			}
			invalidf(&r, bp.Field("weight"), v, "must be >= 0")
		}
		total += w
	}
	if len(ts.Backends) > 0 && total == 0 {
		r.Errorf(p.Field("backends"), "total backend weight = 0")
	}
	for i, m := range ts.Matches {
		mp := p.Field("matches").Index(i)
		if m.Kind == "" {
			required(&r, mp.Field("kind"))
		}
		if m.Name == "" {
			required(&r, mp.Field("name"))
		}
	}
	return r
}

// Dedupe removes repeated identical findings (two rules can notice the same problem).
func (r *Result) Dedupe() {
	r.Errors = dedupe(r.Errors)
	r.Warnings = dedupe(r.Warnings)
}

func dedupe(in []FieldError) []FieldError {
	if len(in) < 2 {
		return in
	}
	seen := make(map[string]bool, len(in))
	out := in[:0]
	for _, e := range in {
		k := string(e.Path) + "\x00" + e.Msg
		if !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

// Errorf-style helper for callers that want a single error value.
func (r *Result) Err() error {
	if len(r.Errors) == 0 {
		return nil
	}
	msgs := make([]string, len(r.Errors))
	for i, e := range r.Errors {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

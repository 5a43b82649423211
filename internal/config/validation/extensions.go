package validation

import (
	"net/url"

	extensions "istio.io/api/extensions/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	networkingbeta "istio.io/api/networking/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// Telemetry follows Istio's ValidateTelemetry and its CRD rules.
func Telemetry(_ Meta, t *telemetry.Telemetry) Result {
	var r Result
	p := Path("spec")
	checkTargets(&r, p, t.Selector, t.TargetRef, t.TargetRefs)
	providers := func(pp Path, ps []*telemetry.ProviderRef) {
		for i, pr := range ps {
			if pr == nil || pr.Name == "" {
				required(&r, pp.Index(i).Field("name"))
			}
		}
	}
	for i, m := range t.Metrics {
		mp := p.Field("metrics").Index(i)
		if m == nil {
			continue
		}
		providers(mp.Field("providers"), m.Providers)
		checkDuration(&r, mp.Field("reportingInterval"), m.ReportingInterval)
		for j, o := range m.Overrides {
			op := mp.Field("overrides").Index(j)
			if o == nil {
				r.Errorf(op, "overrides may not be null")
				continue
			}
			for _, name := range sortedStringKeys(o.TagOverrides) {
				tp := op.Field("tagOverrides").Key(name)
				to := o.TagOverrides[name]
				if name == "" {
					r.Warnf(tp, "tagOverrides name may not be empty")
				}
				if to == nil {
					r.Errorf(tp, "tagOverrides may not be null")
					continue
				}
				switch to.Operation {
				case telemetry.MetricsOverrides_TagOverride_UPSERT:
					if to.Value == "" {
						invalidf(&r, tp, "object", "value must be set when operation is UPSERT")
					}
				case telemetry.MetricsOverrides_TagOverride_REMOVE:
					if to.Value != "" {
						invalidf(&r, tp, "object", "value must not be set when operation is REMOVE")
					}
				}
			}
		}
	}
	if len(t.Tracing) > 1 {
		r.Warnf(p.Field("tracing"), "multiple tracing is not currently supported")
	}
	for i, tr := range t.Tracing {
		tp := p.Field("tracing").Index(i)
		if tr == nil {
			continue
		}
		if len(tr.Providers) > 1 {
			r.Warnf(tp.Field("providers"), "multiple providers is not currently supported")
		}
		providers(tp.Field("providers"), tr.Providers)
		if tr.RandomSamplingPercentage != nil {
			checkPercentRange(&r, tp.Field("randomSamplingPercentage"), tr.RandomSamplingPercentage.GetValue())
		}
		for _, name := range sortedStringKeys(tr.CustomTags) {
			cp := tp.Field("customTags").Key(name)
			tag := tr.CustomTags[name]
			switch tt := tag.GetType().(type) {
			case *telemetry.Tracing_CustomTag_Literal:
				if tt.Literal.GetValue() == "" {
					required(&r, cp.Field("literal").Field("value"))
				}
			case *telemetry.Tracing_CustomTag_Header:
				if tt.Header.GetName() == "" {
					required(&r, cp.Field("header").Field("name"))
				}
			case *telemetry.Tracing_CustomTag_Environment:
				if tt.Environment.GetName() == "" {
					required(&r, cp.Field("environment").Field("name"))
				}
			case *telemetry.Tracing_CustomTag_Formatter:
				if tt.Formatter.GetValue() == "" {
					required(&r, cp.Field("formatter").Field("value"))
				}
			default:
				r.Errorf(cp, "one of literal, header, environment or formatter must be set")
			}
		}
	}
	for i, al := range t.AccessLogging {
		if al != nil {
			providers(p.Field("accessLogging").Index(i).Field("providers"), al.Providers)
		}
	}
	return r
}

// WasmPlugin follows Istio's ValidateWasmPlugin and its CRD rules.
func WasmPlugin(_ Meta, w *extensions.WasmPlugin) Result {
	var r Result
	p := Path("spec")
	checkTargets(&r, p, w.Selector, w.TargetRef, w.TargetRefs)
	if w.Url == "" {
		required(&r, p.Field("url"))
	} else if !wasmURLOK(w.Url) {
		invalidf(&r, p.Field("url"), w.Url, "url must have schema one of [http, https, file, oci]")
	}
	if w.Sha256 != "" && !sha256RE.MatchString(w.Sha256) {
		invalidf(&r, p.Field("sha256"), w.Sha256, "%s in body should match '%s'", p.Field("sha256"), sha256RE)
	}
	if len(w.ImagePullSecret) > 253 {
		r.Errorf(p.Field("imagePullSecret"), "Too long: may not be more than 253 bytes")
	}
	if len(w.PluginName) > 256 {
		r.Errorf(p.Field("pluginName"), "Too long: may not be more than 256 bytes")
	}
	if vm := w.VmConfig; vm != nil {
		names := map[string]bool{}
		for i, env := range vm.Env {
			ep := p.Field("vmConfig").Field("env").Index(i)
			if env == nil {
				continue
			}
			if env.Name == "" {
				required(&r, ep.Field("name"))
			} else if names[env.Name] {
				r.Errorf(ep.Field("name"), "Duplicate value: %q", env.Name)
			}
			names[env.Name] = true
			if env.ValueFrom == extensions.EnvValueSource_HOST && env.Value != "" {
				invalidf(&r, ep, "object", "value may only be set when valueFrom is INLINE")
			}
		}
	}
	for i, m := range w.Match {
		for j, port := range m.GetPorts() {
			pp := p.Field("match").Index(i).Field("ports").Index(j).Field("number")
			if port == nil || port.Number == 0 {
				required(&r, pp)
			} else {
				checkPort(&r, pp, int64(port.Number))
			}
		}
	}
	return r
}

// wasmURLOK mirrors Istio: the URL parses (as is, or with "http://" prepended for bare
// references such as "registry/image") and its scheme is one Istio can fetch.
func wasmURLOK(raw string) bool {
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		u, err = url.ParseRequestURI("http://" + raw)
		if err != nil {
			return false
		}
	}
	switch u.Scheme {
	case "", "http", "https", "file", "oci":
		return true
	}
	return false
}

// EnvoyFilter checks the parts of an EnvoyFilter weft can judge without Envoy's config
// types: structure and the CRD rules. Patch values are not interpreted.
func EnvoyFilter(_ Meta, ef *networking.EnvoyFilter) Result {
	var r Result
	p := Path("spec")
	if ef.WorkloadSelector != nil && len(ef.TargetRefs) > 0 {
		invalidf(&r, p, "object", "only one of targetRefs or workloadSelector can be set")
	}
	if ws := ef.WorkloadSelector; ws != nil {
		checkSelectorLabels(&r, p.Field("workloadSelector").Field("labels"), ws.Labels, "label")
	}
	for i, tr := range ef.TargetRefs {
		checkTargetRef(&r, p.Field("targetRefs").Index(i), tr)
	}
	for i, cp := range ef.ConfigPatches {
		pp := p.Field("configPatches").Index(i)
		if cp == nil {
			r.Errorf(pp, "config patch may not be null")
			continue
		}
		if cp.ApplyTo == networking.EnvoyFilter_INVALID {
			required(&r, pp.Field("applyTo"))
		}
		if cp.Patch == nil {
			required(&r, pp.Field("patch"))
		} else if cp.Patch.Operation == networking.EnvoyFilter_Patch_INVALID {
			required(&r, pp.Field("patch").Field("operation"))
		}
		if m := cp.Match; m != nil {
			mp := pp.Field("match")
			waypoint := m.GetWaypoint() != nil
			if waypoint != (m.Context == networking.EnvoyFilter_WAYPOINT) {
				invalidf(&r, mp, "object", "only support waypointMatch when context is WAYPOINT")
			}
			if wp := m.GetWaypoint(); wp != nil && wp.PortNumber != 0 {
				if wp.PortNumber > 65535 {
					invalidf(&r, mp.Field("waypoint").Field("portNumber"), "integer", "port must be between 1-65535")
				}
			}
		}
	}
	return r
}

// ProxyConfig follows Istio's ValidateProxyConfig.
func ProxyConfig(_ Meta, pc *networkingbeta.ProxyConfig) Result {
	var r Result
	p := Path("spec")
	if pc.Selector != nil {
		checkSelectorLabels(&r, p.Field("selector").Field("matchLabels"), pc.Selector.MatchLabels, "label")
	}
	if c := pc.Concurrency; c != nil && c.GetValue() < 0 {
		invalidf(&r, p.Field("concurrency"), c.GetValue(), "%s in body should be greater than or equal to 0", p.Field("concurrency"))
	}
	return r
}

package validation

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Schema checks a decoded JSON document (encoding/json into any, with UseNumber) against
// the protobuf message it will be decoded into, the way the apiserver checks an Istio CRD's
// structural OpenAPI schema before any Go validation runs: unknown fields, JSON types,
// nulls, enum values, required fields (google.api.field_behavior = REQUIRED, from which
// Istio generates the schema's `required`), integer ranges, and the "duration >= 1ms" rule
// Istio's CRDs put on duration fields. Messages follow the apiserver's wording.
//
// The proto is the schema because it is what the YAML is decoded into: a field the schema
// walk accepts is a field the decoder understands.
func Schema(md protoreflect.MessageDescriptor, v any, p Path) Result {
	var r Result
	w := schemaWalker{r: &r}
	w.message(md, v, p)
	return r
}

type schemaWalker struct{ r *Result }

// Durations without the CRD's ">= 1ms" rule: 0 is meaningful for them (a session cookie,
// the default budget interval).
var durationNoMinimum = map[protoreflect.FullName]bool{
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.HTTPCookie.ttl": true,
	"istio.networking.v1alpha3.TrafficPolicy.RetryBudget.budget_interval":            true,
}

// fieldRule is a CRD constraint that only the raw document can check, because decoding
// loses the difference between "absent" and "empty" (minLength on an explicit "",
// minProperties on an explicit {}).
type fieldRule struct {
	minLength     bool // minLength: 1, for a present string (each element of a list)
	pattern       *regexp.Regexp
	minProperties bool // minProperties: 1, for a present map
}

var (
	targetGroupRE = regexp.MustCompile(`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	targetKindRE  = regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
	sha256RE      = regexp.MustCompile(`(^$|^[a-f0-9]{64}$)`)
)

// schemaRules lists the cheap minLength / pattern / minProperties rules of Istio's CRDs,
// keyed by proto field.
var schemaRules = map[protoreflect.FullName]fieldRule{
	"istio.extensions.v1alpha1.WasmPlugin.url":                  {minLength: true},
	"istio.extensions.v1alpha1.WasmPlugin.image_pull_secret":    {minLength: true},
	"istio.extensions.v1alpha1.WasmPlugin.plugin_name":          {minLength: true},
	"istio.extensions.v1alpha1.WasmPlugin.sha256":               {pattern: sha256RE},
	"istio.extensions.v1alpha1.EnvVar.name":                     {minLength: true},
	"istio.security.v1beta1.JWTRule.issuer":                     {minLength: true},
	"istio.security.v1beta1.JWTRule.audiences":                  {minLength: true},
	"istio.security.v1beta1.JWTRule.jwks_uri":                   {minLength: true},
	"istio.security.v1beta1.JWTRule.from_params":                {minLength: true},
	"istio.security.v1beta1.JWTRule.from_cookies":               {minLength: true},
	"istio.security.v1beta1.JWTRule.space_delimited_claims":     {minLength: true},
	"istio.security.v1beta1.JWTHeader.name":                     {minLength: true},
	"istio.security.v1beta1.ClaimToHeader.claim":                {minLength: true},
	"istio.security.v1beta1.ClaimToHeader.header":               {minLength: true, pattern: headerNameRE},
	"istio.security.v1beta1.PeerAuthentication.port_level_mtls": {minProperties: true},
	"istio.telemetry.v1alpha1.ProviderRef.name":                 {minLength: true},
	"istio.telemetry.v1alpha1.MetricSelector.custom_metric":     {minLength: true},
	"istio.telemetry.v1alpha1.Tracing.Literal.value":            {minLength: true},
	"istio.telemetry.v1alpha1.Tracing.Environment.name":         {minLength: true},
	"istio.telemetry.v1alpha1.Tracing.RequestHeader.name":       {minLength: true},
	"istio.telemetry.v1alpha1.Tracing.Formatter.value":          {minLength: true},
	"istio.type.v1beta1.PolicyTargetReference.group":            {pattern: targetGroupRE},
	"istio.type.v1beta1.PolicyTargetReference.kind":             {minLength: true, pattern: targetKindRE},
	"istio.type.v1beta1.PolicyTargetReference.name":             {minLength: true},
	"istio.networking.v1alpha3.ExecHealthCheckConfig.command":   {minLength: true},
	"istio.networking.v1alpha3.HTTPHeader.name":                 {pattern: headerNameRE},
}

func (w schemaWalker) rule(fd protoreflect.FieldDescriptor, v any, p Path) {
	rule, ok := schemaRules[fd.FullName()]
	if !ok {
		return
	}
	if rule.minProperties {
		if m, ok := v.(map[string]any); ok && len(m) == 0 {
			invalidf(w.r, p, "object", "%s in body should have at least 1 properties", p)
		}
	}
	s, ok := v.(string)
	if !ok {
		return
	}
	if rule.minLength && s == "" {
		minLen1(w.r, p, s)
		return
	}
	if rule.pattern != nil && !rule.pattern.MatchString(s) {
		invalidf(w.r, p, s, "%s in body should match '%s'", p, rule.pattern)
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number, float64, int64, int:
		return "number"
	}
	return "unknown"
}

func (w schemaWalker) typeErr(p Path, want string, v any) { typeErrGot(w.r, p, want, jsonType(v)) }

func typeErrGot(r *Result, p Path, want, got string) {
	r.Errorf(p, "Invalid value: %q: %s in body must be of type %s: %q", got, p, want, got)
}

func isRequired(fd protoreflect.FieldDescriptor) bool {
	opts, ok := fd.Options().(*descriptorpb.FieldOptions)
	if !ok || opts == nil {
		return false
	}
	behaviors, ok := proto.GetExtension(opts, annotations.E_FieldBehavior).([]annotations.FieldBehavior)
	if !ok {
		return false
	}
	return slices.Contains(behaviors, annotations.FieldBehavior_REQUIRED)
}

func lookupField(md protoreflect.MessageDescriptor, key string) protoreflect.FieldDescriptor {
	fs := md.Fields()
	if fd := fs.ByJSONName(key); fd != nil {
		return fd
	}
	// jsonpb also accepts the proto name; some Istio CRDs list it as an alternate name
	// (mirror_percent, jwks_uri).
	return fs.ByTextName(key)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (w schemaWalker) message(md protoreflect.MessageDescriptor, v any, p Path) {
	obj, ok := v.(map[string]any)
	if !ok {
		w.typeErr(p, "object", v)
		return
	}
	fs := md.Fields()
	for i := 0; i < fs.Len(); i++ {
		fd := fs.Get(i)
		if !isRequired(fd) {
			continue
		}
		val, present := obj[fd.JSONName()]
		if !present {
			val, present = obj[fd.TextName()]
		}
		if !present || val == nil {
			required(w.r, p.Field(fd.JSONName()))
		}
	}
	oneofs := map[protoreflect.Name]string{}
	for _, key := range sortedKeys(obj) {
		val := obj[key]
		fd := lookupField(md, key)
		fp := p.Field(key)
		if fd == nil {
			w.r.Errorf(fp, "unknown field %q", key)
			continue
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && val != nil {
			if other, dup := oneofs[od.Name()]; dup {
				w.r.Errorf(fp, "Invalid value: %q: only one of %q or %q may be set", key, other, key)
			} else {
				oneofs[od.Name()] = key
			}
		}
		w.field(fd, val, fp)
	}
}

func (w schemaWalker) field(fd protoreflect.FieldDescriptor, v any, p Path) {
	if v == nil {
		if fd.IsList() {
			w.typeErr(p, "array", v)
		} else if fd.IsMap() {
			w.typeErr(p, "object", v)
		} else if !nullable(fd) {
			w.typeErr(p, schemaType(fd), v)
		}
		return
	}
	switch {
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			w.typeErr(p, "object", v)
			return
		}
		w.rule(fd, obj, p)
		kd, vd := fd.MapKey(), fd.MapValue()
		for _, k := range sortedKeys(obj) {
			kp := p.Key(k)
			if err := mapKeyOK(kd, k); err != "" {
				w.r.Errorf(kp, "type conversion error from string %q to %s", k, err)
				continue
			}
			if obj[k] == nil {
				w.typeErr(kp, schemaType(vd), nil)
				continue
			}
			w.singular(vd, obj[k], kp)
		}
	case fd.IsList():
		arr, ok := v.([]any)
		if !ok {
			w.typeErr(p, "array", v)
			return
		}
		for i, e := range arr {
			ip := p.Index(i)
			if e == nil {
				w.typeErr(ip, schemaType(fd), nil)
				continue
			}
			w.singular(fd, e, ip)
			w.rule(fd, e, ip)
		}
	default:
		w.singular(fd, v, p)
		w.rule(fd, v, p)
	}
}

// nullable mirrors `nullable: true`, which Istio's CRDs set on wrapper types.
func nullable(fd protoreflect.FieldDescriptor) bool {
	if fd.Kind() != protoreflect.MessageKind {
		return false
	}
	name := fd.Message().FullName()
	return strings.HasPrefix(string(name), "google.protobuf.") && strings.HasSuffix(string(name), "Value")
}

func mapKeyOK(kd protoreflect.FieldDescriptor, k string) string {
	switch kd.Kind() {
	case protoreflect.StringKind:
		return ""
	case protoreflect.BoolKind:
		if _, err := strconv.ParseBool(k); err != nil {
			return "bool"
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if _, err := strconv.ParseUint(k, 10, 32); err != nil {
			return "uint32"
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if _, err := strconv.ParseUint(k, 10, 64); err != nil {
			return "uint64"
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if _, err := strconv.ParseInt(k, 10, 64); err != nil {
			return "int64"
		}
	default:
		if _, err := strconv.ParseInt(k, 10, 32); err != nil {
			return "int32"
		}
	}
	return ""
}

// schemaType is the OpenAPI type Istio's CRD generator gives a field.
func schemaType(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		switch fd.Message().FullName() {
		case "google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.StringValue",
			"google.protobuf.BytesValue", "google.protobuf.FieldMask":
			return "string"
		case "google.protobuf.BoolValue":
			return "boolean"
		case "google.protobuf.DoubleValue", "google.protobuf.FloatValue":
			return "number"
		case "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
			"google.protobuf.Int64Value", "google.protobuf.UInt64Value":
			return "integer"
		case "google.protobuf.ListValue":
			return "array"
		}
		return "object"
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.EnumKind:
		return "string"
	case protoreflect.BoolKind:
		return "boolean"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return "number"
	}
	return "integer"
}

func (w schemaWalker) singular(fd protoreflect.FieldDescriptor, v any, p Path) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		w.wellKnownOrMessage(fd, v, p)
	case protoreflect.EnumKind:
		s, ok := v.(string)
		if !ok {
			w.typeErr(p, "string", v)
			return
		}
		vals := fd.Enum().Values()
		if vals.ByName(protoreflect.Name(s)) == nil {
			names := make([]string, 0, vals.Len())
			for i := 0; i < vals.Len(); i++ {
				names = append(names, strconv.Quote(string(vals.Get(i).Name())))
			}
			w.r.Errorf(p, "Unsupported value: %q: supported values: %s", s, strings.Join(names, ", "))
		}
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			w.typeErr(p, "string", v)
		}
	case protoreflect.BytesKind:
		s, ok := v.(string)
		if !ok {
			w.typeErr(p, "string", v)
			return
		}
		if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			if _, err2 := base64.URLEncoding.DecodeString(s); err2 != nil {
				invalidf(w.r, p, s, "must be base64 encoded")
			}
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			w.typeErr(p, "boolean", v)
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if _, ok := v.(json.Number); !ok {
			w.typeErr(p, "number", v)
		}
	default:
		w.integer(fd.Kind(), v, p)
	}
}

func (w schemaWalker) integer(kind protoreflect.Kind, v any, p Path) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		// protojson writes 64-bit integers as strings; the CRDs accept them (int-or-string).
		if kind != protoreflect.Int64Kind && kind != protoreflect.Uint64Kind &&
			kind != protoreflect.Sint64Kind && kind != protoreflect.Fixed64Kind && kind != protoreflect.Sfixed64Kind {
			w.typeErr(p, "integer", v)
			return
		}
		s = x
	default:
		w.typeErr(p, "integer", v)
		return
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.IsInf(f, 0) {
		typeErrGot(w.r, p, "integer", "number")
		return
	}
	var lo, hi float64
	switch kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		lo, hi = math.MinInt32, math.MaxInt32
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		lo, hi = 0, math.MaxUint32
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		lo, hi = 0, math.MaxUint64
	default:
		lo, hi = math.MinInt64, math.MaxInt64
	}
	switch {
	case f < lo:
		invalidf(w.r, p, json.Number(s), "%s in body should be greater than or equal to %.0f", p, lo)
	case f > hi:
		invalidf(w.r, p, json.Number(s), "%s in body should be less than or equal to %.0f", p, hi)
	}
}

func (w schemaWalker) wellKnownOrMessage(fd protoreflect.FieldDescriptor, v any, p Path) {
	md := fd.Message()
	switch md.FullName() {
	case "google.protobuf.Duration":
		s, ok := v.(string)
		if !ok {
			w.typeErr(p, "string", v)
			return
		}
		// jsonpb (which the Istio types use) parses durations with time.ParseDuration, so
		// "5m" and "1h30m" are accepted, not only protojson's "300s".
		d, err := time.ParseDuration(s)
		switch {
		case err != nil && durationNoMinimum[fd.FullName()]:
			invalidf(w.r, p, s, "must be a valid duration")
		case err != nil || (!durationNoMinimum[fd.FullName()] && d < time.Millisecond):
			invalidf(w.r, p, s, "must be a valid duration greater than 1ms")
		}
	case "google.protobuf.Timestamp":
		s, ok := v.(string)
		if !ok {
			w.typeErr(p, "string", v)
			return
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			invalidf(w.r, p, s, "must be an RFC 3339 timestamp")
		}
	case "google.protobuf.StringValue", "google.protobuf.FieldMask":
		if _, ok := v.(string); !ok {
			w.typeErr(p, "string", v)
		}
	case "google.protobuf.BytesValue":
		w.singular(md.Fields().ByName("value"), v, p)
	case "google.protobuf.BoolValue":
		if _, ok := v.(bool); !ok {
			w.typeErr(p, "boolean", v)
		}
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue":
		if _, ok := v.(json.Number); !ok {
			w.typeErr(p, "number", v)
		}
	case "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
		"google.protobuf.Int64Value", "google.protobuf.UInt64Value":
		w.integer(md.Fields().ByName("value").Kind(), v, p)
	case "google.protobuf.Struct", "google.protobuf.Empty":
		if _, ok := v.(map[string]any); !ok {
			w.typeErr(p, "object", v)
		}
	case "google.protobuf.ListValue":
		if _, ok := v.([]any); !ok {
			w.typeErr(p, "array", v)
		}
	case "google.protobuf.Value":
		// Any JSON value.
	case "google.protobuf.Any":
		obj, ok := v.(map[string]any)
		if !ok {
			w.typeErr(p, "object", v)
			return
		}
		if _, ok := obj["@type"].(string); !ok {
			required(w.r, p.Field("@type"))
		}
	default:
		w.message(md, v, p)
	}
}

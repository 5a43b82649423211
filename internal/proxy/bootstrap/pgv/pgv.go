// Package pgv checks the protoc-gen-validate rules ((validate.rules) and friends) that
// Envoy's protos carry, reading them from the message descriptors at run time. The
// generated Validate/ValidateAll methods make the same checks, but a call to any one of
// them keeps the generated validators of every linked Envoy message in the binary (their
// type switches call ValidateAll through an interface): about 2 MB of code plus its
// line tables and strings, which a sidecar maps and largely keeps resident. weft-proxy
// validates its bootstrap and a few filter configs; reading the rules costs nothing
// until then.
//
// Check follows the PGV semantics of the Go generator (rule by rule, the same
// messages), reporting each violation with its proto field path. Unsupported: the
// time-relative timestamp rules (lt_now, gt_now, within), which no Envoy field uses.
package pgv

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/envoyproxy/protoc-gen-validate/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Check returns every rule m violates, joined, each as "field.path: reason"; nil when
// there is none. prefix, when not empty, starts every path.
func Check(m proto.Message, prefix string) error {
	if m == nil {
		return nil
	}
	c := &checker{}
	c.message(m.ProtoReflect(), prefix)
	return errors.Join(c.errs...)
}

type checker struct{ errs []error }

func (c *checker) fail(path, format string, args ...any) {
	if path == "" {
		path = "(root)"
	}
	c.errs = append(c.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func (c *checker) message(m protoreflect.Message, path string) {
	if !m.IsValid() {
		return
	}
	md := m.Descriptor()
	if opts := md.Options(); opts != nil {
		if proto.GetExtension(opts, validate.E_Disabled).(bool) || proto.GetExtension(opts, validate.E_Ignored).(bool) {
			return
		}
	}
	oneofs := md.Oneofs()
	for i := 0; i < oneofs.Len(); i++ {
		o := oneofs.Get(i)
		if o.IsSynthetic() {
			continue
		}
		if opts := o.Options(); opts != nil && proto.GetExtension(opts, validate.E_Required).(bool) && m.WhichOneof(o) == nil {
			c.fail(join(path, string(o.Name())), "value is required")
		}
	}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() && m.WhichOneof(o) != fd {
			continue // PGV checks only the member that is set
		}
		c.field(m, fd, join(path, string(fd.Name())))
	}
}

// rulesOf is the field's (validate.rules), nil without.
func rulesOf(fd protoreflect.FieldDescriptor) *validate.FieldRules {
	opts := fd.Options()
	if opts == nil || !proto.HasExtension(opts, validate.E_Rules) {
		return nil
	}
	r, _ := proto.GetExtension(opts, validate.E_Rules).(*validate.FieldRules)
	return r
}

func (c *checker) field(m protoreflect.Message, fd protoreflect.FieldDescriptor, path string) {
	r := rulesOf(fd)
	switch {
	case fd.IsList():
		l := m.Get(fd).List()
		if rr := r.GetRepeated(); rr != nil {
			if rr.GetIgnoreEmpty() && l.Len() == 0 {
				return
			}
			c.repeated(l, fd, rr, path)
			if items := rr.GetItems(); items != nil {
				for i := 0; i < l.Len(); i++ {
					c.value(l.Get(i), fd, items, fmt.Sprintf("%s[%d]", path, i), true)
				}
				if !descend(items) {
					return
				}
			}
		}
		if fd.Message() != nil {
			for i := 0; i < l.Len(); i++ {
				c.message(l.Get(i).Message(), fmt.Sprintf("%s[%d]", path, i))
			}
		}
	case fd.IsMap():
		mp := m.Get(fd).Map()
		mr := r.GetMap()
		if mr != nil && mr.GetIgnoreEmpty() && mp.Len() == 0 {
			return
		}
		if mr != nil {
			if n := mr.MinPairs; n != nil && uint64(mp.Len()) < *n {
				c.fail(path, "value must contain at least %d pair(s)", *n)
			}
			if n := mr.MaxPairs; n != nil && uint64(mp.Len()) > *n {
				c.fail(path, "value must contain no more than %d pair(s)", *n)
			}
		}
		kd, vd := fd.MapKey(), fd.MapValue()
		mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			p := fmt.Sprintf("%s[%v]", path, k.Interface())
			if mr.GetNoSparse() && vd.Message() != nil && !v.Message().IsValid() {
				c.fail(p, "value cannot be sparse, all pairs must be non-nil")
			}
			if kr := mr.GetKeys(); kr != nil {
				c.value(k.Value(), kd, kr, p, true)
			}
			if vr := mr.GetValues(); vr != nil {
				c.value(v, vd, vr, p, true)
			}
			if vd.Message() != nil && descend(mr.GetValues()) {
				c.message(v.Message(), p)
			}
			return true
		})
	default:
		set := m.Has(fd)
		if r != nil && (set || fd.Message() != nil || !fd.HasPresence()) {
			c.value(m.Get(fd), fd, r, path, set)
		}
		if fd.Message() != nil && set && descend(r) {
			c.message(m.Get(fd).Message(), path)
		}
	}
}

// descend reports whether PGV validates the message a field holds: not when its rules
// skip it, nor when they are Any, Duration or Timestamp rules (PGV's templates for those
// check the field itself only; Envoy puts Any rules on a few plain message fields).
func descend(r *validate.FieldRules) bool {
	return !r.GetMessage().GetSkip() && r.GetAny() == nil && r.GetDuration() == nil && r.GetTimestamp() == nil
}

func (c *checker) repeated(l protoreflect.List, fd protoreflect.FieldDescriptor, rr *validate.RepeatedRules, path string) {
	if n := rr.MinItems; n != nil && uint64(l.Len()) < *n {
		c.fail(path, "value must contain at least %d item(s)", *n)
	}
	if n := rr.MaxItems; n != nil && uint64(l.Len()) > *n {
		c.fail(path, "value must contain no more than %d item(s)", *n)
	}
	if rr.GetUnique() && fd.Message() == nil {
		seen := map[any]bool{}
		for i := 0; i < l.Len(); i++ {
			k := l.Get(i).Interface()
			if b, ok := k.([]byte); ok {
				k = string(b)
			}
			if seen[k] {
				c.fail(fmt.Sprintf("%s[%d]", path, i), "repeated value must contain unique items")
			}
			seen[k] = true
		}
	}
}

// value checks one value (a singular field, a list item, a map key or value) against
// its rules. set is false for an unset singular field, where only "required" rules and
// the rules of implicit-presence scalars apply.
func (c *checker) value(v protoreflect.Value, fd protoreflect.FieldDescriptor, r *validate.FieldRules, path string, set bool) {
	if mr := r.GetMessage(); mr != nil && mr.GetRequired() && fd.Message() != nil && !v.Message().IsValid() {
		c.fail(path, "value is required")
		return
	}
	switch {
	case r.GetAny() != nil:
		c.anyRules(v, r.GetAny(), path)
	case r.GetDuration() != nil:
		c.durationRules(v, r.GetDuration(), path)
	case r.GetTimestamp() != nil:
		c.timestampRules(v, r.GetTimestamp(), path)
	case r.GetString_() != nil:
		if s, ok := scalar(v, fd); ok {
			c.stringRules(s.(string), r.GetString_(), path)
		}
	case r.GetBytes() != nil:
		if s, ok := scalar(v, fd); ok {
			c.bytesRules(s.([]byte), r.GetBytes(), path)
		}
	case r.GetEnum() != nil:
		c.enumRules(v, fd, r.GetEnum(), path)
	case r.GetBool() != nil:
		if b, ok := scalar(v, fd); ok && r.GetBool().Const != nil && b.(bool) != r.GetBool().GetConst() {
			c.fail(path, "value must equal %v", r.GetBool().GetConst())
		}
	default:
		if rules := numericRules(r); rules != nil {
			if n, ok := scalar(v, fd); ok {
				c.numberRules(n, rules, path)
			}
		}
	}
}

// scalar is the value the scalar rules apply to: the value itself, or the value field of
// a set wrapper message (google.protobuf.UInt32Value, ...); ok is false for an unset
// wrapper, which PGV skips.
func scalar(v protoreflect.Value, fd protoreflect.FieldDescriptor) (any, bool) {
	if fd.Message() == nil {
		return v.Interface(), true
	}
	m := v.Message()
	if !m.IsValid() {
		return nil, false
	}
	f := m.Descriptor().Fields().ByName("value")
	if f == nil {
		return nil, false
	}
	return m.Get(f).Interface(), true
}

// numericRules is the rules message of a numeric type (they share field names), nil for
// other types.
func numericRules(r *validate.FieldRules) protoreflect.Message {
	for _, m := range []proto.Message{r.GetFloat(), r.GetDouble(), r.GetInt32(), r.GetInt64(), r.GetUint32(), r.GetUint64(),
		r.GetSint32(), r.GetSint64(), r.GetFixed32(), r.GetFixed64(), r.GetSfixed32(), r.GetSfixed64()} {
		if m != nil && m.ProtoReflect().IsValid() {
			return m.ProtoReflect()
		}
	}
	return nil
}

// num is a comparable number: every protobuf integer fits a float64's ordering for the
// values Envoy's rules use, but compare integers exactly all the same.
type num struct {
	i     int64
	u     uint64
	f     float64
	kind  byte // 'i', 'u', 'f'
	print string
}

func toNum(x any) num {
	switch v := x.(type) {
	case int32:
		return num{i: int64(v), kind: 'i', print: fmt.Sprint(v)}
	case int64:
		return num{i: v, kind: 'i', print: fmt.Sprint(v)}
	case uint32:
		return num{u: uint64(v), kind: 'u', print: fmt.Sprint(v)}
	case uint64:
		return num{u: v, kind: 'u', print: fmt.Sprint(v)}
	case float32:
		return num{f: float64(v), kind: 'f', print: fmt.Sprint(v)}
	case float64:
		return num{f: v, kind: 'f', print: fmt.Sprint(v)}
	}
	return num{kind: 'f', f: math.NaN()}
}

// cmp returns -1, 0 or 1 (a and b are of the same kind: a rule has its field's type).
func (a num) cmp(b num) int {
	switch a.kind {
	case 'i':
		return cmp3(a.i < b.i, a.i > b.i)
	case 'u':
		return cmp3(a.u < b.u, a.u > b.u)
	}
	return cmp3(a.f < b.f, a.f > b.f)
}

func cmp3(lt, gt bool) int {
	switch {
	case lt:
		return -1
	case gt:
		return 1
	}
	return 0
}

func (c *checker) numberRules(x any, r protoreflect.Message, path string) {
	v := toNum(x)
	get := func(name string) (num, bool) {
		fd := r.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil || !r.Has(fd) {
			return num{}, false
		}
		return toNum(r.Get(fd).Interface()), true
	}
	list := func(name string) []num {
		fd := r.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil
		}
		l := r.Get(fd).List()
		out := make([]num, l.Len())
		for i := range out {
			out[i] = toNum(l.Get(i).Interface())
		}
		return out
	}
	if fd := r.Descriptor().Fields().ByName("ignore_empty"); fd != nil && r.Get(fd).Bool() && v.cmp(toNum(zeroOf(x))) == 0 {
		return
	}
	if k, ok := get("const"); ok && v.cmp(k) != 0 {
		c.fail(path, "value must equal %s", k.print)
	}
	lt, hasLT := get("lt")
	lte, hasLTE := get("lte")
	gt, hasGT := get("gt")
	gte, hasGTE := get("gte")
	c.rangeRule(path, v.cmp, lt, hasLT, lte, hasLTE, gt, hasGT, gte, hasGTE, func(n num) string { return n.print })
	if in := list("in"); len(in) > 0 && !containsNum(in, v) {
		c.fail(path, "value must be in list %s", printNums(in))
	}
	if notIn := list("not_in"); containsNum(notIn, v) {
		c.fail(path, "value must not be in list %s", printNums(notIn))
	}
}

func zeroOf(x any) any {
	switch x.(type) {
	case int32:
		return int32(0)
	case int64:
		return int64(0)
	case uint32:
		return uint32(0)
	case uint64:
		return uint64(0)
	case float32:
		return float32(0)
	}
	return float64(0)
}

func containsNum(l []num, v num) bool {
	for _, x := range l {
		if v.cmp(x) == 0 {
			return true
		}
	}
	return false
}

func printNums(l []num) string {
	s := make([]string, len(l))
	for i, x := range l {
		s[i] = x.print
	}
	return "[" + strings.Join(s, " ") + "]"
}

// rangeRule applies lt/lte/gt/gte as PGV does: with a lower and an upper bound, the value
// must lie between them, or outside them when the lower bound is the larger.
func (c *checker) rangeRule(path string, cmpTo func(num) int, lt num, hasLT bool, lte num, hasLTE bool, gt num, hasGT bool, gte num, hasGTE bool, show func(num) string) {
	var lo, hi num
	var hasLo, hasHi, loIncl, hiIncl bool
	switch {
	case hasGT:
		lo, hasLo = gt, true
	case hasGTE:
		lo, hasLo, loIncl = gte, true, true
	}
	switch {
	case hasLT:
		hi, hasHi = lt, true
	case hasLTE:
		hi, hasHi, hiIncl = lte, true, true
	}
	aboveLo := func() bool { c := cmpTo(lo); return c > 0 || (loIncl && c == 0) }
	belowHi := func() bool { c := cmpTo(hi); return c < 0 || (hiIncl && c == 0) }
	bracket := func(incl bool, open, closed string) string {
		if incl {
			return closed
		}
		return open
	}
	switch {
	case hasLo && hasHi:
		rng := bracket(loIncl, "(", "[") + show(lo) + ", " + show(hi) + bracket(hiIncl, ")", "]")
		if hi.cmp(lo) > 0 {
			if !aboveLo() || !belowHi() {
				c.fail(path, "value must be inside range %s", rng)
			}
		} else if !aboveLo() && !belowHi() {
			// lo >= hi: the valid values lie outside, above lo or below hi.
			c.fail(path, "value must be outside range %s", rng)
		}
	case hasLo:
		if !aboveLo() {
			if loIncl {
				c.fail(path, "value must be greater than or equal to %s", show(lo))
			} else {
				c.fail(path, "value must be greater than %s", show(lo))
			}
		}
	case hasHi:
		if !belowHi() {
			if hiIncl {
				c.fail(path, "value must be less than or equal to %s", show(hi))
			} else {
				c.fail(path, "value must be less than %s", show(hi))
			}
		}
	}
}

func (c *checker) stringRules(s string, r *validate.StringRules, path string) {
	if r.GetIgnoreEmpty() && s == "" {
		return
	}
	runes := uint64(utf8.RuneCountInString(s))
	if r.Const != nil && s != r.GetConst() {
		c.fail(path, "value must equal %s", r.GetConst())
	}
	if r.Len != nil && runes != r.GetLen() {
		c.fail(path, "value length must be %d runes", r.GetLen())
	}
	if r.MinLen != nil && runes < r.GetMinLen() {
		c.fail(path, "value length must be at least %d runes", r.GetMinLen())
	}
	if r.MaxLen != nil && runes > r.GetMaxLen() {
		c.fail(path, "value length must be at most %d runes", r.GetMaxLen())
	}
	if r.LenBytes != nil && uint64(len(s)) != r.GetLenBytes() {
		c.fail(path, "value length must be %d bytes", r.GetLenBytes())
	}
	if r.MinBytes != nil && uint64(len(s)) < r.GetMinBytes() {
		c.fail(path, "value length must be at least %d bytes", r.GetMinBytes())
	}
	if r.MaxBytes != nil && uint64(len(s)) > r.GetMaxBytes() {
		c.fail(path, "value length must be at most %d bytes", r.GetMaxBytes())
	}
	if r.Pattern != nil && !compiled(r.GetPattern()).MatchString(s) {
		c.fail(path, "value does not match regex pattern %q", r.GetPattern())
	}
	if r.Prefix != nil && !strings.HasPrefix(s, r.GetPrefix()) {
		c.fail(path, "value does not have prefix %q", r.GetPrefix())
	}
	if r.Suffix != nil && !strings.HasSuffix(s, r.GetSuffix()) {
		c.fail(path, "value does not have suffix %q", r.GetSuffix())
	}
	if r.Contains != nil && !strings.Contains(s, r.GetContains()) {
		c.fail(path, "value does not contain substring %q", r.GetContains())
	}
	if r.NotContains != nil && strings.Contains(s, r.GetNotContains()) {
		c.fail(path, "value contains substring %q", r.GetNotContains())
	}
	if in := r.GetIn(); len(in) > 0 && !containsString(in, s) {
		c.fail(path, "value must be in list %v", in)
	}
	if containsString(r.GetNotIn(), s) {
		c.fail(path, "value must not be in list %v", r.GetNotIn())
	}
	switch {
	case r.GetEmail():
		if a, err := mail.ParseAddress(s); err != nil || a.Name != "" || !validHostname(a.Address[strings.LastIndexByte(a.Address, '@')+1:]) {
			c.fail(path, "value must be a valid email address")
		}
	case r.GetHostname():
		if !validHostname(s) {
			c.fail(path, "value must be a valid hostname")
		}
	case r.GetIp():
		if net.ParseIP(s) == nil {
			c.fail(path, "value must be a valid IP address")
		}
	case r.GetIpv4():
		if ip := net.ParseIP(s); ip == nil || ip.To4() == nil {
			c.fail(path, "value must be a valid IPv4 address")
		}
	case r.GetIpv6():
		if ip := net.ParseIP(s); ip == nil || ip.To4() != nil {
			c.fail(path, "value must be a valid IPv6 address")
		}
	case r.GetUri():
		if u, err := url.Parse(s); err != nil {
			c.fail(path, "value must be a valid URI")
		} else if !u.IsAbs() {
			c.fail(path, "value must be absolute")
		}
	case r.GetUriRef():
		if _, err := url.Parse(s); err != nil {
			c.fail(path, "value must be a valid URI")
		}
	case r.GetAddress():
		if net.ParseIP(s) == nil && !validHostname(s) {
			c.fail(path, "value must be a valid hostname, or ip address")
		}
	case r.GetUuid():
		if !uuidRE.MatchString(s) {
			c.fail(path, "value does not match regex pattern %q", uuidRE.String())
		}
	case r.GetWellKnownRegex() == validate.KnownRegex_HTTP_HEADER_NAME:
		re := headerNameRE
		if r.Strict != nil && !r.GetStrict() {
			re = looseHeaderRE
		}
		if !re.MatchString(s) {
			c.fail(path, "value does not match regex pattern %q", re.String())
		}
	case r.GetWellKnownRegex() == validate.KnownRegex_HTTP_HEADER_VALUE:
		re := headerValueRE
		if r.Strict != nil && !r.GetStrict() {
			re = looseHeaderRE
		}
		if !re.MatchString(s) {
			c.fail(path, "value does not match regex pattern %q", re.String())
		}
	}
}

// The regular expressions of PGV's Go generator.
var (
	uuidRE        = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	headerNameRE  = regexp.MustCompile(`^:?[0-9a-zA-Z!#$%&'*+-.^_|~` + "\x60" + `]+$`)
	headerValueRE = regexp.MustCompile("^[^\u0000-\u0008\u000A-\u001F\u007F]*$")
	looseHeaderRE = regexp.MustCompile("^[^\u0000\u000A\u000D]*$")
)

var patterns sync.Map // pattern -> *regexp.Regexp

func compiled(p string) *regexp.Regexp {
	if re, ok := patterns.Load(p); ok {
		return re.(*regexp.Regexp)
	}
	re, err := regexp.Compile(p)
	if err != nil {
		re = regexp.MustCompile(`$.^`) // matches nothing: the rule cannot be satisfied
	}
	patterns.Store(p, re)
	return re
}

func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if l := len(part); l == 0 || l > 63 || part[0] == '-' || part[l-1] == '-' {
			return false
		}
		for _, r := range part {
			if !('A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (c *checker) bytesRules(b []byte, r *validate.BytesRules, path string) {
	if r.GetIgnoreEmpty() && len(b) == 0 {
		return
	}
	s := string(b)
	if r.Const != nil && s != string(r.GetConst()) {
		c.fail(path, "value must equal %v", r.GetConst())
	}
	if r.Len != nil && uint64(len(b)) != r.GetLen() {
		c.fail(path, "value length must be %d bytes", r.GetLen())
	}
	if r.MinLen != nil && uint64(len(b)) < r.GetMinLen() {
		c.fail(path, "value length must be at least %d bytes", r.GetMinLen())
	}
	if r.MaxLen != nil && uint64(len(b)) > r.GetMaxLen() {
		c.fail(path, "value length must be at most %d bytes", r.GetMaxLen())
	}
	if r.Pattern != nil && !compiled(r.GetPattern()).Match(b) {
		c.fail(path, "value does not match regex pattern %q", r.GetPattern())
	}
	if r.Prefix != nil && !strings.HasPrefix(s, string(r.GetPrefix())) {
		c.fail(path, "value does not have prefix %q", r.GetPrefix())
	}
	if r.Suffix != nil && !strings.HasSuffix(s, string(r.GetSuffix())) {
		c.fail(path, "value does not have suffix %q", r.GetSuffix())
	}
	if r.Contains != nil && !strings.Contains(s, string(r.GetContains())) {
		c.fail(path, "value does not contain %q", r.GetContains())
	}
	if in := r.GetIn(); len(in) > 0 {
		ok := false
		for _, x := range in {
			ok = ok || string(x) == s
		}
		if !ok {
			c.fail(path, "value must be in list %v", in)
		}
	}
	for _, x := range r.GetNotIn() {
		if string(x) == s {
			c.fail(path, "value must not be in list %v", r.GetNotIn())
			break
		}
	}
	switch {
	case r.GetIp():
		if len(b) != 4 && len(b) != 16 {
			c.fail(path, "value must be a valid IP address")
		}
	case r.GetIpv4():
		if len(b) != 4 {
			c.fail(path, "value must be a valid IPv4 address")
		}
	case r.GetIpv6():
		if len(b) != 16 {
			c.fail(path, "value must be a valid IPv6 address")
		}
	}
}

func (c *checker) enumRules(v protoreflect.Value, fd protoreflect.FieldDescriptor, r *validate.EnumRules, path string) {
	n := int32(v.Enum())
	if r.Const != nil && n != r.GetConst() {
		c.fail(path, "value must equal %v", r.GetConst())
	}
	if r.GetDefinedOnly() && fd.Enum() != nil && fd.Enum().Values().ByNumber(v.Enum()) == nil {
		c.fail(path, "value must be one of the defined enum values")
	}
	if in := r.GetIn(); len(in) > 0 {
		ok := false
		for _, x := range in {
			ok = ok || x == n
		}
		if !ok {
			c.fail(path, "value must be in list %v", in)
		}
	}
	for _, x := range r.GetNotIn() {
		if x == n {
			c.fail(path, "value must not be in list %v", r.GetNotIn())
			break
		}
	}
}

func (c *checker) anyRules(v protoreflect.Value, r *validate.AnyRules, path string) {
	m := v.Message()
	if !m.IsValid() {
		if r.GetRequired() {
			c.fail(path, "value is required")
		}
		return
	}
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return
	}
	if in := r.GetIn(); len(in) > 0 && !containsString(in, a.GetTypeUrl()) {
		c.fail(path, "type URL must be in list %v", in)
	}
	if containsString(r.GetNotIn(), a.GetTypeUrl()) {
		c.fail(path, "type URL must not be in list %v", r.GetNotIn())
	}
}

func durNum(d *durationpb.Duration) num {
	// Nanoseconds as an int64 orders every duration PGV rules compare (±292 years).
	return num{i: d.GetSeconds()*1e9 + int64(d.GetNanos()), kind: 'i', print: d.AsDuration().String()}
}

func (c *checker) durationRules(v protoreflect.Value, r *validate.DurationRules, path string) {
	m := v.Message()
	if !m.IsValid() {
		if r.GetRequired() {
			c.fail(path, "value is required")
		}
		return
	}
	d, ok := m.Interface().(*durationpb.Duration)
	if !ok {
		return
	}
	if err := d.CheckValid(); err != nil {
		c.fail(path, "value is not a valid duration: %v", err)
		return
	}
	x := durNum(d)
	if r.Const != nil && x.cmp(durNum(r.GetConst())) != 0 {
		c.fail(path, "value must equal %v", r.GetConst().AsDuration())
	}
	opt := func(d *durationpb.Duration) (num, bool) {
		if d == nil {
			return num{}, false
		}
		return durNum(d), true
	}
	lt, hasLT := opt(r.GetLt())
	lte, hasLTE := opt(r.GetLte())
	gt, hasGT := opt(r.GetGt())
	gte, hasGTE := opt(r.GetGte())
	c.rangeRule(path, x.cmp, lt, hasLT, lte, hasLTE, gt, hasGT, gte, hasGTE, func(n num) string { return n.print })
	if in := r.GetIn(); len(in) > 0 {
		ok := false
		for _, e := range in {
			ok = ok || x.cmp(durNum(e)) == 0
		}
		if !ok {
			c.fail(path, "value must be in list %v", in)
		}
	}
	for _, e := range r.GetNotIn() {
		if x.cmp(durNum(e)) == 0 {
			c.fail(path, "value must not be in list %v", r.GetNotIn())
			break
		}
	}
}

func tsNum(t *timestamppb.Timestamp) num {
	return num{i: t.GetSeconds()*1e9 + int64(t.GetNanos()), kind: 'i', print: t.AsTime().String()}
}

func (c *checker) timestampRules(v protoreflect.Value, r *validate.TimestampRules, path string) {
	m := v.Message()
	if !m.IsValid() {
		if r.GetRequired() {
			c.fail(path, "value is required")
		}
		return
	}
	t, ok := m.Interface().(*timestamppb.Timestamp)
	if !ok {
		return
	}
	x := tsNum(t)
	if r.Const != nil && x.cmp(tsNum(r.GetConst())) != 0 {
		c.fail(path, "value must equal %v", r.GetConst().AsTime())
	}
	opt := func(t *timestamppb.Timestamp) (num, bool) {
		if t == nil {
			return num{}, false
		}
		return tsNum(t), true
	}
	lt, hasLT := opt(r.GetLt())
	lte, hasLTE := opt(r.GetLte())
	gt, hasGT := opt(r.GetGt())
	gte, hasGTE := opt(r.GetGte())
	c.rangeRule(path, x.cmp, lt, hasLT, lte, hasLTE, gt, hasGT, gte, hasGTE, func(n num) string { return n.print })
}

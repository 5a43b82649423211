package validation

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

var (
	// Istio host labels are case-insensitive DNS-1123 labels.
	dnsLabelRE = regexp.MustCompile(`^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
	// A wildcard label is "*" or a label with a leading "*" (Istio accepts "*x" with a warning).
	wildcardLabelRE = regexp.MustCompile(`^(?:\*|\*?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?|\*-[-a-zA-Z0-9]*[a-zA-Z0-9])$`)
	// Kubernetes object names and namespaces are lowercase.
	k8sLabelRE     = regexp.MustCompile(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$`)
	k8sSubdomainRE = regexp.MustCompile(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$`)
	// Kubernetes label key name part and label values.
	qualifiedNameRE = regexp.MustCompile(`^(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	labelValueRE    = regexp.MustCompile(`^(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
	// Header names as Istio accepts them in matches and JWT settings.
	headerNameRE = regexp.MustCompile(`^[-_A-Za-z0-9]+$`)
)

// IsDNS1123Label reports whether s is a (case-insensitive) DNS-1123 label of at most 63 bytes.
func IsDNS1123Label(s string) bool { return len(s) <= 63 && dnsLabelRE.MatchString(s) }

func isK8sLabel(s string) bool     { return len(s) <= 63 && k8sLabelRE.MatchString(s) }
func isK8sSubdomain(s string) bool { return len(s) <= 253 && k8sSubdomainRE.MatchString(s) }

func isWildcardLabel(s string) bool { return len(s) <= 63 && wildcardLabelRE.MatchString(s) }

func checkDomainPreconditions(name string) error {
	if len(name) > 255 {
		return fmt.Errorf("domain name %q too long (max 255)", name)
	}
	if name == "" {
		return errors.New("empty domain name not allowed")
	}
	return nil
}

func checkDNSLabels(domain string) error {
	parts := strings.Split(domain, ".")
	if _, err := strconv.Atoi(parts[len(parts)-1]); err == nil {
		return fmt.Errorf("domain name %q invalid (top level domain %q cannot be all-numeric)", domain, parts[len(parts)-1])
	}
	for i, l := range parts {
		// A trailing dot ("istio.io.") is an unambiguous absolute name.
		if i == len(parts)-1 && l == "" && i > 0 {
			return nil
		}
		if !IsDNS1123Label(l) {
			return fmt.Errorf("domain name %q invalid (label %q invalid)", domain, l)
		}
	}
	return nil
}

// ValidateFQDN checks a DNS name without wildcards (short names are accepted: they are
// completed with the namespace later).
func ValidateFQDN(name string) error {
	if err := checkDomainPreconditions(name); err != nil {
		return err
	}
	return checkDNSLabels(name)
}

// ValidateWildcardDomain checks a DNS name that may carry a wildcard in its first label
// ("*", "*.example.com").
func ValidateWildcardDomain(name string) error {
	if err := checkDomainPreconditions(name); err != nil {
		return err
	}
	first, rest, dotted := strings.Cut(name, ".")
	if !isWildcardLabel(first) {
		return fmt.Errorf("domain name %q invalid (label %q invalid)", name, first)
	}
	if dotted {
		return checkDNSLabels(rest)
	}
	return nil
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

func partialWildcard(host string) bool {
	return strings.Contains(host, "*") && host != "*" && !strings.HasPrefix(host, "*.")
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// validateIPOrCIDR accepts an address or a prefix.
func validateIPOrCIDR(s string) error {
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("%q is not a valid CIDR block", s)
		}
		return nil
	}
	if !isIP(s) {
		return fmt.Errorf("%q is not a valid IP address", s)
	}
	return nil
}

// portErr is the one wording for port ranges, shared with Istio's CRD rule.
func checkPort(r *Result, p Path, port int64) {
	if port < 1 || port > 65535 {
		invalidf(r, p, port, "port must be between 1-65535")
	}
}

func checkPortName(r *Result, p Path, name string) {
	if !IsDNS1123Label(name) {
		invalidf(r, p, name, "port name must be valid (a DNS-1123 label)")
	}
}

// Protocols Istio understands on ports (pkg/config/protocol); names are case-insensitive.
var protocols = []string{"GRPC", "GRPC-WEB", "HTTP", "HTTP_PROXY", "HTTP2", "HTTPS", "TCP", "TLS",
	"MONGO", "REDIS", "MYSQL", "UDP", "HBONE"}

func protocolKnown(s string) bool { return slices.Contains(protocols, strings.ToUpper(s)) }

func protocolIsHTTP(s string) bool {
	switch strings.ToUpper(s) {
	case "HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY":
		return true
	}
	return false
}

func protocolIsTLS(s string) bool {
	switch strings.ToUpper(s) {
	case "HTTPS", "TLS":
		return true
	}
	return false
}

func checkProtocol(r *Result, p Path, proto string) {
	if proto != "" && !protocolKnown(proto) {
		r.Errorf(p, "Unsupported value: %q: supported protocols are %s", proto, strings.Join(protocols, ", "))
	}
}

// checkLabels validates Kubernetes label syntax (keys are qualified names, values at most 63).
func checkLabels(r *Result, p Path, labels map[string]string) {
	for _, k := range sortedStringKeys(labels) {
		if err := labelKeyErr(k); err != "" {
			invalidf(r, p.Key(k), k, "label key %s", err)
		}
		if v := labels[k]; len(v) > 63 || !labelValueRE.MatchString(v) {
			invalidf(r, p.Key(k), v, "label value must be at most 63 characters of [-A-Za-z0-9_.], beginning and ending with an alphanumeric")
		}
	}
}

func labelKeyErr(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && (prefix == "" || !isK8sSubdomain(prefix)) {
		return "prefix must be a DNS-1123 subdomain"
	}
	if name == "" || len(name) > 63 || !qualifiedNameRE.MatchString(name) {
		return "name must be at most 63 characters of [-A-Za-z0-9_.], beginning and ending with an alphanumeric"
	}
	return ""
}

func sortedStringKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkHeaderName applies Istio's header-name rule; Envoy matches header names
// case-insensitively but stores them lowercase, so uppercase only earns a warning.
func checkHeaderName(r *Result, p Path, name string) {
	if name == "" {
		r.Errorf(p, "header name cannot be empty")
		return
	}
	if !headerNameRE.MatchString(name) {
		invalidf(r, p, name, "header name must match %s", headerNameRE)
		return
	}
	if strings.ToLower(name) != name {
		r.Warnf(p, "header name %q is not lowercase; it is matched case-insensitively", name)
	}
}

// checkDuration applies Istio's duration rule (at least 1ms, millisecond precision).
func checkDuration(r *Result, p Path, d *durationpb.Duration) {
	if d == nil {
		return
	}
	dur := d.AsDuration()
	if dur < time.Millisecond {
		invalidf(r, p, dur.String(), "must be a valid duration greater than 1ms")
		return
	}
	if dur%time.Millisecond != 0 {
		invalidf(r, p, dur.String(), "only durations to ms precision are supported")
	}
}

// checkRegex checks an RE2 expression the way Envoy will compile it (Go's regexp is RE2).
func checkRegex(r *Result, p Path, re string) {
	if re == "" {
		r.Errorf(p, "regex string match should not be empty")
		return
	}
	if len(re) > 1024 {
		r.Errorf(p, "regex is too large, max length allowed is 1024")
		return
	}
	if _, err := regexp.Compile(re); err != nil {
		invalidf(r, p, re, "%v; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)", err)
	}
}

// checkUnixAddress checks the path part of a unix:// address.
func checkUnixAddress(r *Result, p Path, addr string) {
	switch {
	case addr == "":
		r.Errorf(p, "unix address must not be empty")
	case strings.HasPrefix(addr, "@"):
		// Abstract socket.
	case !path.IsAbs(addr):
		invalidf(r, p, "unix://"+addr, "UDS must be an absolute path or abstract socket")
	case strings.HasSuffix(addr, "/"):
		invalidf(r, p, "unix://"+addr, "UDS may not be a dir")
	}
}

// checkName validates metadata.name as Kubernetes does for custom resources.
func checkName(r *Result, p Path, name string, labelOnly bool) {
	switch {
	case name == "":
		required(r, p)
	case labelOnly && !isK8sLabel(name):
		invalidf(r, p, name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")
	case !isK8sSubdomain(name):
		invalidf(r, p, name, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
	}
}

// checkExportTo applies Istio's exportTo rules: no duplicates (with "." meaning the own
// namespace), "*" alone, "~" only for ServiceEntry and alone, others DNS labels.
func checkExportTo(r *Result, p Path, namespace string, exportTo []string, serviceEntry bool) {
	seen := map[string]bool{}
	for i, e := range exportTo {
		ip := p.Index(i)
		key := e
		if e == "." {
			key = namespace
		}
		if seen[key] {
			r.Errorf(ip, "Duplicate value: %q", e)
			continue
		}
		seen[key] = true
		switch {
		case e == "." || e == "*":
		case e == "~":
			if !serviceEntry {
				invalidf(r, ip, e, "~ is only allowed in ServiceEntry exportTo")
			}
		case !isK8sLabel(e):
			invalidf(r, ip, e, "exportTo entries must be ., *, or a namespace name")
		}
	}
	if len(exportTo) > 1 && seen["*"] {
		r.Errorf(p, "cannot have both public (*) and non-public exportTo values for a resource")
	}
	if len(exportTo) > 1 && seen["~"] {
		r.Errorf(p, "cannot export service entry to no one (~) and someone")
	}
}

package router

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// retryOn is the parsed retry_on / x-envoy-retry-on set.
type retryOn uint32

const (
	ro5xx retryOn = 1 << iota
	roGatewayError
	roReset
	roConnectFailure
	roRetriable4xx
	roRefusedStream
	roRetriableStatusCodes
	roRetriableHeaders
	roEnvoyRateLimited
	roGRPCCancelled
	roGRPCDeadlineExceeded
	roGRPCInternal
	roGRPCResourceExhausted
	roGRPCUnavailable
)

var retryOnNames = map[string]retryOn{
	"5xx":                    ro5xx,
	"gateway-error":          roGatewayError,
	"reset":                  roReset,
	"reset-before-request":   roReset,
	"connect-failure":        roConnectFailure,
	"retriable-4xx":          roRetriable4xx,
	"refused-stream":         roRefusedStream,
	"retriable-status-codes": roRetriableStatusCodes,
	"retriable-headers":      roRetriableHeaders,
	"envoy-ratelimited":      roEnvoyRateLimited,
	"cancelled":              roGRPCCancelled,
	"deadline-exceeded":      roGRPCDeadlineExceeded,
	"internal":               roGRPCInternal,
	"resource-exhausted":     roGRPCResourceExhausted,
	"unavailable":            roGRPCUnavailable,
}

// parseRetryOn parses a comma-separated retry_on list. Unknown names are ignored, as
// Envoy ignores them.
func parseRetryOn(s string) retryOn {
	var on retryOn
	for s != "" {
		var name string
		name, s, _ = strings.Cut(s, ",")
		on |= retryOnNames[strings.TrimSpace(name)]
	}
	return on
}

const (
	defaultRetryBase = 25 * time.Millisecond
	previousHosts    = "envoy.retry_host_predicates.previous_hosts"
	previousHostsPB  = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)

// retryPolicy is a compiled RetryPolicy.
type retryPolicy struct {
	on                 retryOn
	numRetries         int
	perTry             time.Duration
	codes              []int
	base, max          time.Duration
	previousHosts      bool
	hostSelectAttempts int
	retriableHeaders   []headerMatcher // on the response
	requestHeaders     []headerMatcher // the request must match one to be retried
}

func compileRetryPolicy(p *routev3.RetryPolicy) (*retryPolicy, error) {
	rp := &retryPolicy{
		on:                 parseRetryOn(p.GetRetryOn()),
		numRetries:         1,
		perTry:             durationOf(p.GetPerTryTimeout()),
		base:               defaultRetryBase,
		hostSelectAttempts: int(p.GetHostSelectionRetryMaxAttempts()),
	}
	if n := p.GetNumRetries(); n != nil {
		rp.numRetries = int(n.GetValue())
	}
	for _, c := range p.GetRetriableStatusCodes() {
		rp.codes = append(rp.codes, int(c))
	}
	if b := p.GetRetryBackOff(); b != nil {
		if b.GetBaseInterval() == nil || b.GetBaseInterval().AsDuration() <= 0 {
			return nil, errors.New("retry_back_off.base_interval: must be greater than zero")
		}
		rp.base = b.GetBaseInterval().AsDuration()
		if b.GetMaxInterval() != nil {
			rp.max = b.GetMaxInterval().AsDuration()
			if rp.max < rp.base {
				return nil, errors.New("retry_back_off.max_interval: must not be less than base_interval")
			}
		}
	}
	if rp.max == 0 {
		rp.max = 10 * rp.base
	}
	for _, hp := range p.GetRetryHostPredicate() {
		if hp.GetName() == previousHosts || (hp.GetTypedConfig() != nil && string(hp.GetTypedConfig().MessageName()) == previousHostsPB) {
			rp.previousHosts = true
		}
	}
	for i, h := range p.GetRetriableHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("retriable_headers[%d].%w", i, err)
		}
		if hm.pseudo != notPseudo {
			return nil, fmt.Errorf("retriable_headers[%d].name: pseudo-headers are unsupported", i)
		}
		rp.retriableHeaders = append(rp.retriableHeaders, hm)
	}
	for i, h := range p.GetRetriableRequestHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("retriable_request_headers[%d].%w", i, err)
		}
		rp.requestHeaders = append(rp.requestHeaders, hm)
	}
	if p.GetRateLimitedRetryBackOff() != nil {
		return nil, errors.New("rate_limited_retry_back_off: unsupported")
	}
	return rp, nil
}

type hashKind uint8

const (
	hashIgnored hashKind = iota
	hashHeader
	hashCookie
	hashSourceIP
	hashQuery
)

// hashPolicy is a compiled RouteAction.HashPolicy.
type hashPolicy struct {
	kind     hashKind
	key      string // header key (canonical), cookie name, query parameter
	rewrite  *regexRewrite
	ttl      time.Duration
	hasTTL   bool
	path     string
	attrs    string // "; name=value" cookie attributes, preformatted
	terminal bool
}

func compileHashPolicy(hp *routev3.RouteAction_HashPolicy) (hashPolicy, error) {
	h := hashPolicy{terminal: hp.GetTerminal()}
	switch p := hp.GetPolicySpecifier().(type) {
	case *routev3.RouteAction_HashPolicy_Header_:
		if p.Header.GetHeaderName() == "" {
			return h, errors.New("header.header_name: is required")
		}
		h.kind, h.key = hashHeader, p.Header.GetHeaderName()
		if ps, ok := pseudoOf(h.key); !ok || ps != notPseudo {
			h.key = strings.ToLower(h.key)
		} else {
			h.key = http.CanonicalHeaderKey(h.key)
		}
		rr, err := compileRegexRewrite(p.Header.GetRegexRewrite())
		if err != nil {
			return h, fmt.Errorf("header.regex_rewrite.%w", err)
		}
		h.rewrite = rr
	case *routev3.RouteAction_HashPolicy_Cookie_:
		if p.Cookie.GetName() == "" {
			return h, errors.New("cookie.name: is required")
		}
		h.kind, h.key, h.path = hashCookie, p.Cookie.GetName(), p.Cookie.GetPath()
		if p.Cookie.GetTtl() != nil {
			h.hasTTL, h.ttl = true, p.Cookie.GetTtl().AsDuration()
		}
		var b strings.Builder
		for _, a := range p.Cookie.GetAttributes() {
			b.WriteString("; ")
			b.WriteString(a.GetName())
			if a.GetValue() != "" {
				b.WriteByte('=')
				b.WriteString(a.GetValue())
			}
		}
		h.attrs = b.String()
	case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
		if p.ConnectionProperties.GetSourceIp() {
			h.kind = hashSourceIP
		}
	case *routev3.RouteAction_HashPolicy_QueryParameter_:
		if p.QueryParameter.GetName() == "" {
			return h, errors.New("query_parameter.name: is required")
		}
		h.kind, h.key = hashQuery, p.QueryParameter.GetName()
	case *routev3.RouteAction_HashPolicy_FilterState_:
		// Filter state is not modelled; the policy never produces a hash.
	default:
		return h, errors.New("policy_specifier: is required")
	}
	return h, nil
}

// requestHash computes the lb hash from the route's hash policies, combining several as
// Envoy does (rotate left by one, then xor). setCookie is a Set-Cookie value to send
// when a cookie policy with a ttl generated the cookie.
func (f *forward) requestHash(r *http.Request, remote string) (hash uint64, ok bool, setCookie string) {
	for i := range f.hash {
		hp := &f.hash[i]
		var v uint64
		var got bool
		switch hp.kind {
		case hashHeader:
			var s string
			switch hp.key {
			case ":authority":
				s, got = r.Host, r.Host != ""
			case ":path":
				s, got = requestPath(r), true
			case ":method":
				s, got = r.Method, true
			case ":scheme":
				s, got = requestScheme(r), true
			default:
				vs := r.Header[hp.key]
				if len(vs) > 0 {
					s, got = vs[0], true
				}
			}
			if got {
				if hp.rewrite != nil {
					s = hp.rewrite.apply(s)
				}
				v = xxhash.Sum64String(s)
			}
		case hashCookie:
			if s, found := cookieValue(r.Header, hp.key); found {
				v, got = xxhash.Sum64String(s), true
			} else if hp.hasTTL && remote != "" {
				// Envoy derives a new cookie from the downstream address and asks the
				// client to keep it, so later requests hash the same.
				val := strconv.FormatUint(xxhash.Sum64String(remote), 16)
				v, got = xxhash.Sum64String(val), true
				setCookie = hp.key + "=" + val
				if hp.ttl > 0 {
					setCookie += "; Max-Age=" + strconv.FormatInt(int64(hp.ttl/time.Second), 10)
				}
				if hp.path != "" {
					setCookie += "; Path=" + hp.path
				}
				setCookie += hp.attrs + "; HttpOnly"
			}
		case hashSourceIP:
			if remote != "" {
				v, got = xxhash.Sum64String(remote), true
			}
		case hashQuery:
			if s, found := queryValue(r.URL.RawQuery, hp.key); found {
				v, got = xxhash.Sum64String(s), true
			}
		}
		if got {
			if ok {
				hash = (hash<<1 | hash>>63) ^ v
			} else {
				hash, ok = v, true
			}
		}
		if ok && hp.terminal {
			break
		}
	}
	return hash, ok, setCookie
}

// mirrorPolicy is a compiled RequestMirrorPolicy.
type mirrorPolicy struct {
	cluster       string
	clusterHeader string
	num, den      uint64 // runtime_fraction default_value; den 0: always
	noSuffix      bool   // disable_shadow_host_suffix_append
	hostLiteral   string
}

func compileMirrors(ms []*routev3.RouteAction_RequestMirrorPolicy) ([]mirrorPolicy, error) {
	var out []mirrorPolicy
	var errs []error
	for i, m := range ms {
		mp := mirrorPolicy{cluster: m.GetCluster(), noSuffix: m.GetDisableShadowHostSuffixAppend(), hostLiteral: m.GetHostRewriteLiteral()}
		if m.GetClusterHeader() != "" {
			mp.clusterHeader = http.CanonicalHeaderKey(m.GetClusterHeader())
		}
		if (mp.cluster == "") == (mp.clusterHeader == "") {
			errs = append(errs, fmt.Errorf("request_mirror_policies[%d]: exactly one of cluster or cluster_header is required", i))
			continue
		}
		if rf := m.GetRuntimeFraction(); rf != nil && rf.GetDefaultValue() != nil {
			mp.num, mp.den = fraction(rf.GetDefaultValue())
		}
		if len(m.GetRequestHeadersMutations()) > 0 {
			errs = append(errs, fmt.Errorf("request_mirror_policies[%d].request_headers_mutations: unsupported", i))
			continue
		}
		out = append(out, mp)
	}
	return out, errors.Join(errs...)
}

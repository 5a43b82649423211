// Package ratelimit is the proxy's local rate limit filter (Envoy's
// envoy.filters.http.local_ratelimit): a token bucket per compiled config, filter-level
// or per route, shared by every request that config serves in this process. A request
// that finds the bucket empty is answered 429 by the proxy when the limit is enforced.
package ratelimit

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/bootstrap/pgv"
	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// ConfigType is the typed_config (and per-route config) this filter is built from.
const ConfigType = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

const (
	// ResponseDetails and body of a rate-limited request, as Envoy's.
	ResponseDetails = "local_rate_limited"
	body            = "local_rate_limited"
	// minFill is Envoy's lower bound on fill_interval.
	minFill = 50 * time.Millisecond
)

func init() { filter.Register(factory{}) }

type factory struct{}

var (
	_ filter.Factory        = factory{}
	_ filter.PerRouteParser = factory{}
)

func (factory) ConfigType() string      { return ConfigType }
func (factory) New() proto.Message      { return new(lrlv3.LocalRateLimit) }
func (factory) PerRouteTypes() []string { return []string{ConfigType} }

func (factory) ParsePerRoute(a *anypb.Any) (any, error) {
	var m lrlv3.LocalRateLimit
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("local_ratelimit: %w", err)
	}
	return compile(&m)
}

func (factory) Build(name string, cfg proto.Message) (filter.Middleware, error) {
	m, ok := cfg.(*lrlv3.LocalRateLimit)
	if !ok {
		return nil, fmt.Errorf("local_ratelimit: config is %T, want LocalRateLimit", cfg)
	}
	c, err := compile(m)
	if err != nil {
		return nil, err
	}
	f := &instance{name: name, base: c}
	return func(next filter.Handler) filter.Handler {
		return filter.HandlerFunc(func(x *filter.Exchange) error { return f.serve(next, x) })
	}, nil
}

// percent is a compiled RuntimeFractionalPercent's default_value (weft has no runtime).
type percent struct{ num, den uint32 }

// runtimePercent reads filter_enabled / filter_enforced; Envoy takes a missing one as 0%
// ("for safety"), so a config must ask for enforcement explicitly, as Istio's does.
func runtimePercent(p *corev3.RuntimeFractionalPercent) percent {
	v := p.GetDefaultValue()
	den := uint32(100)
	switch v.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	}
	return percent{v.GetNumerator(), den}
}

func (p percent) hit() bool {
	switch {
	case p.num == 0:
		return false
	case p.num >= p.den:
		return true
	}
	return rand.Uint32N(p.den) < p.num
}

type headerOp struct {
	key, value string
	action     corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty  bool
}

func compileHeaders(field string, opts []*corev3.HeaderValueOption) ([]headerOp, error) {
	var out []headerOp
	for i, o := range opts {
		h := o.GetHeader()
		if h.GetKey() == "" {
			return nil, fmt.Errorf("%s[%d].header.key: must not be empty", field, i)
		}
		op := headerOp{key: http.CanonicalHeaderKey(h.GetKey()), value: h.GetValue(), action: o.GetAppendAction(), keepEmpty: o.GetKeepEmptyValue()}
		if op.value == "" && len(h.GetRawValue()) > 0 {
			op.value = string(h.GetRawValue())
		}
		// The deprecated append=false means overwrite.
		if o.GetAppend() != nil && !o.GetAppend().GetValue() {
			op.action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
		out = append(out, op)
	}
	return out, nil
}

func applyHeaders(h http.Header, ops []headerOp) {
	for _, op := range ops {
		if op.value == "" && !op.keepEmpty {
			continue
		}
		_, exists := h[op.key]
		switch op.action {
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h[op.key] = []string{op.value}
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h[op.key] = []string{op.value}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h[op.key] = []string{op.value}
			}
		default:
			h[op.key] = append(h[op.key], op.value)
		}
	}
}

// Stats are Envoy's <stat_prefix>.http_local_rate_limit.* counters.
type Stats struct {
	Enabled     *stats.Counter
	Enforced    *stats.Counter
	RateLimited *stats.Counter
	OK          *stats.Counter
}

var statStore atomic.Pointer[stats.Store]

// UseStats makes configs compiled from now on count into s. Call it once at start-up.
func UseStats(s *stats.Store) { statStore.Store(s) }

var fallback = stats.New()

func counters(prefix string) *Stats {
	s := statStore.Load()
	if s == nil {
		s = fallback
	}
	p := prefix + ".http_local_rate_limit."
	return &Stats{
		Enabled:     s.Counter(p + "enabled"),
		Enforced:    s.Counter(p + "enforced"),
		RateLimited: s.Counter(p + "rate_limited"),
		OK:          s.Counter(p + "ok"),
	}
}

// config is one compiled LocalRateLimit.
type config struct {
	bucket      *bucket // nil: no token bucket, requests pass
	enabled     percent
	enforced    percent
	status      int
	respHeaders []headerOp
	reqHeaders  []headerOp // request_headers_to_add_when_not_enforced
	xRateLimit  bool
	retryAfter  bool
	limitHeader string // x-ratelimit-limit, formatted once
	st          *Stats
}

func compile(m *lrlv3.LocalRateLimit) (*config, error) {
	c := &config{
		enabled:    runtimePercent(m.GetFilterEnabled()),
		enforced:   runtimePercent(m.GetFilterEnforced()),
		status:     http.StatusTooManyRequests,
		xRateLimit: m.GetEnableXRatelimitHeaders() == ratelimitcommonv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		retryAfter: m.GetEnableRetryAfterHeader(),
	}
	if m.GetStatPrefix() == "" {
		return nil, fmt.Errorf("local_ratelimit: stat_prefix: must not be empty")
	}
	// Envoy uses 429 when status is unset or below 400.
	if code := int(m.GetStatus().GetCode()); code >= 400 {
		c.status = code
	}
	if tb := m.GetTokenBucket(); tb != nil {
		if tb.GetMaxTokens() == 0 {
			return nil, fmt.Errorf("local_ratelimit %q: token_bucket.max_tokens: must be greater than 0", m.GetStatPrefix())
		}
		fill := tb.GetFillInterval().AsDuration()
		if tb.GetFillInterval() == nil || fill < minFill {
			return nil, fmt.Errorf("local_ratelimit %q: token_bucket.fill_interval: must be at least %v", m.GetStatPrefix(), minFill)
		}
		perFill := uint32(1)
		if v := tb.GetTokensPerFill(); v != nil {
			perFill = v.GetValue()
		}
		c.bucket = newBucket(tb.GetMaxTokens(), perFill, fill)
		c.limitHeader = strconv.FormatUint(uint64(tb.GetMaxTokens()), 10)
	}
	var err error
	if c.respHeaders, err = compileHeaders("response_headers_to_add", m.GetResponseHeadersToAdd()); err != nil {
		return nil, fmt.Errorf("local_ratelimit %q: %w", m.GetStatPrefix(), err)
	}
	if c.reqHeaders, err = compileHeaders("request_headers_to_add_when_not_enforced", m.GetRequestHeadersToAddWhenNotEnforced()); err != nil {
		return nil, fmt.Errorf("local_ratelimit %q: %w", m.GetStatPrefix(), err)
	}
	// Descriptor-based limits would need the route's rate_limits actions; applying only
	// the default bucket would let through what the config means to limit, so refuse.
	if len(m.GetDescriptors()) > 0 || len(m.GetRateLimits()) > 0 {
		return nil, fmt.Errorf("local_ratelimit %q: descriptors: not supported", m.GetStatPrefix())
	}
	if m.GetLocalClusterRateLimit() != nil {
		return nil, fmt.Errorf("local_ratelimit %q: local_cluster_rate_limit: not supported", m.GetStatPrefix())
	}
	// local_rate_limit_per_downstream_connection is not honoured: the filter API gives no
	// connection identity, so such a config shares one bucket across connections, which
	// limits more, never less, than asked.
	if err := pgv.Check(m, ""); err != nil {
		return nil, fmt.Errorf("local_ratelimit %q: %w", m.GetStatPrefix(), err)
	}
	c.st = counters(m.GetStatPrefix())
	return c, nil
}

type instance struct {
	name string
	base *config
}

func (f *instance) serve(next filter.Handler, x *filter.Exchange) error {
	c := f.base
	if x.Route != nil {
		if rc := x.Route.FilterConfig(f.name); rc != nil {
			if filter.IsDisabled(rc) {
				return next.Serve(x)
			}
			if cc, ok := rc.(*config); ok {
				c = cc
			}
		}
	}
	if c.bucket == nil || !c.enabled.hit() {
		return next.Serve(x)
	}
	c.st.Enabled.Inc()
	ok, remaining, reset := c.bucket.takeNow()
	if ok {
		c.st.OK.Inc()
		c.setXRateLimit(x.W.Header(), remaining, reset)
		return next.Serve(x)
	}
	c.st.RateLimited.Inc()
	if !c.enforced.hit() {
		applyHeaders(x.R.Header, c.reqHeaders)
		c.setXRateLimit(x.W.Header(), 0, reset)
		return next.Serve(x)
	}
	c.st.Enforced.Inc()
	h := x.W.Header()
	applyHeaders(h, c.respHeaders)
	h.Set("X-Envoy-Ratelimited", "true")
	c.setXRateLimit(h, 0, reset)
	if c.retryAfter {
		h.Set("Retry-After", seconds(reset))
	}
	x.LocalReply(c.status, body, stream.RateLimited, ResponseDetails)
	return nil
}

// setXRateLimit adds the draft-03 RateLimit headers when enable_x_ratelimit_headers asks.
func (c *config) setXRateLimit(h http.Header, remaining uint32, reset time.Duration) {
	if !c.xRateLimit {
		return
	}
	h.Set("X-Ratelimit-Limit", c.limitHeader)
	h.Set("X-Ratelimit-Remaining", strconv.FormatUint(uint64(remaining), 10))
	h.Set("X-Ratelimit-Reset", seconds(reset))
}

// seconds rounds up, so a client told to wait never retries before the fill.
func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

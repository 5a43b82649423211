// Package cors is the proxy's CORS filter (Envoy's envoy.filters.http.cors). The
// filter-level config is empty; each route (or virtual host) carries a CorsPolicy in
// typed_per_filter_config, as Istio's VirtualService corsPolicy generates. Allowed
// preflights are answered by the proxy; allowed actual requests get the
// Access-Control-Allow-* response headers. A route without a policy passes through.
package cors

import (
	"bufio"
	"fmt"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap/pgv"
	"github.com/weft-mesh/weft/internal/proxy/matcher"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
)

// Config types: the filter's own (empty) config and the per-route policy.
const (
	ConfigType   = "envoy.extensions.filters.http.cors.v3.Cors"
	PolicyType   = "envoy.extensions.filters.http.cors.v3.CorsPolicy"
	localDetails = "cors_response"
)

const (
	hdrOrigin           = "Origin"
	hdrRequestMethod    = "Access-Control-Request-Method"
	hdrRequestPrivNet   = "Access-Control-Request-Private-Network"
	hdrAllowOrigin      = "Access-Control-Allow-Origin"
	hdrAllowCredentials = "Access-Control-Allow-Credentials"
	hdrAllowMethods     = "Access-Control-Allow-Methods"
	hdrAllowHeaders     = "Access-Control-Allow-Headers"
	hdrExposeHeaders    = "Access-Control-Expose-Headers"
	hdrMaxAge           = "Access-Control-Max-Age"
	hdrAllowPrivNet     = "Access-Control-Allow-Private-Network"
)

func init() { filter.Register(factory{}) }

type factory struct{}

var (
	_ filter.Factory        = factory{}
	_ filter.PerRouteParser = factory{}
)

func (factory) ConfigType() string      { return ConfigType }
func (factory) New() proto.Message      { return new(corsv3.Cors) }
func (factory) PerRouteTypes() []string { return []string{PolicyType} }

func (factory) ParsePerRoute(a *anypb.Any) (any, error) {
	var m corsv3.CorsPolicy
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("cors: %w", err)
	}
	return compile(&m)
}

func (factory) Build(name string, cfg proto.Message) (filter.Middleware, error) {
	if _, ok := cfg.(*corsv3.Cors); !ok {
		return nil, fmt.Errorf("cors: config is %T, want Cors", cfg)
	}
	f := &instance{name: name, st: counters()}
	return func(next filter.Handler) filter.Handler {
		return filter.HandlerFunc(func(x *filter.Exchange) error { return f.serve(next, x) })
	}, nil
}

// percent is a compiled RuntimeFractionalPercent's default_value (weft has no runtime).
type percent struct{ num, den uint32 }

func runtimePercent(p *corev3.RuntimeFractionalPercent, def uint32) percent {
	if p == nil {
		return percent{def, 100}
	}
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

// policy is one compiled CorsPolicy.
type policy struct {
	origins        []matcher.String
	allowAll       bool // a matcher accepts the literal "*", as Envoy checks
	methods        string
	headers        string
	expose         string
	maxAge         string
	credentials    bool
	privateNetwork bool
	forwardBad     bool // forward_not_matching_preflights, default true
	enabled        percent
	shadow         percent
}

func compile(m *corsv3.CorsPolicy) (*policy, error) {
	p := &policy{
		methods:        m.GetAllowMethods(),
		headers:        m.GetAllowHeaders(),
		expose:         m.GetExposeHeaders(),
		maxAge:         m.GetMaxAge(),
		credentials:    m.GetAllowCredentials().GetValue(),
		privateNetwork: m.GetAllowPrivateNetworkAccess().GetValue(),
		forwardBad:     m.GetForwardNotMatchingPreflights() == nil || m.GetForwardNotMatchingPreflights().GetValue(),
		// Envoy: without filter_enabled the policy is on for every request;
		// shadow_enabled only evaluates and counts.
		enabled: runtimePercent(m.GetFilterEnabled(), 100),
		shadow:  runtimePercent(m.GetShadowEnabled(), 0),
	}
	for i, sm := range m.GetAllowOriginStringMatch() {
		c, err := matcher.CompileString(sm)
		if err != nil {
			return nil, fmt.Errorf("cors: allow_origin_string_match[%d]: %w", i, err)
		}
		if c.Match("*") {
			p.allowAll = true
		}
		p.origins = append(p.origins, c)
	}
	if err := pgv.Check(m, ""); err != nil {
		return nil, fmt.Errorf("cors: %w", err)
	}
	return p, nil
}

func (p *policy) allows(origin string) bool {
	if p.allowAll {
		return true
	}
	for i := range p.origins {
		if p.origins[i].Match(origin) {
			return true
		}
	}
	return false
}

// Stats are the CORS filter's counters, named as Envoy's http.<prefix>.cors.* without the
// connection manager's prefix, which the filter API does not give a filter.
type Stats struct {
	OriginValid   *stats.Counter // http.cors.origin_valid
	OriginInvalid *stats.Counter // http.cors.origin_invalid
}

var statStore atomic.Pointer[stats.Store]

// UseStats makes filters built from now on count into s. Call it once at start-up.
func UseStats(s *stats.Store) { statStore.Store(s) }

var fallback = stats.New()

func counters() *Stats {
	s := statStore.Load()
	if s == nil {
		s = fallback
	}
	return &Stats{
		OriginValid:   s.Counter("http.cors.origin_valid"),
		OriginInvalid: s.Counter("http.cors.origin_invalid"),
	}
}

type instance struct {
	name string
	st   *Stats
}

func (f *instance) serve(next filter.Handler, x *filter.Exchange) error {
	if x.Route == nil {
		return next.Serve(x)
	}
	p, ok := x.Route.FilterConfig(f.name).(*policy)
	if !ok {
		return next.Serve(x)
	}
	origin := x.R.Header.Get(hdrOrigin)
	if origin == "" {
		return next.Serve(x)
	}
	enforce := p.enabled.hit()
	if !enforce && !p.shadow.hit() {
		return next.Serve(x)
	}
	valid := p.allows(origin)
	if valid {
		f.st.OriginValid.Inc()
	} else {
		f.st.OriginInvalid.Inc()
	}
	if !enforce {
		return next.Serve(x)
	}
	preflight := x.R.Method == http.MethodOptions && x.R.Header.Get(hdrRequestMethod) != ""
	if preflight {
		if !valid {
			if p.forwardBad {
				return next.Serve(x)
			}
			x.Info.ResponseDetails = localDetails
			x.W.WriteHeader(http.StatusOK)
			return nil
		}
		h := x.W.Header()
		h.Set(hdrAllowOrigin, origin)
		if p.credentials {
			h.Set(hdrAllowCredentials, "true")
		}
		if p.methods != "" {
			h.Set(hdrAllowMethods, p.methods)
		}
		if p.headers != "" {
			h.Set(hdrAllowHeaders, p.headers)
		}
		if p.maxAge != "" {
			h.Set(hdrMaxAge, p.maxAge)
		}
		if p.privateNetwork && x.R.Header.Get(hdrRequestPrivNet) == "true" {
			h.Set(hdrAllowPrivNet, "true")
		}
		x.Info.ResponseDetails = localDetails
		x.W.WriteHeader(http.StatusOK)
		return nil
	}
	if !valid {
		return next.Serve(x)
	}
	// The headers are set when the response starts, so they replace any the upstream
	// sent, as Envoy's encodeHeaders does.
	w := &writer{ResponseWriter: x.W, p: p, origin: origin}
	x.W = w
	err := next.Serve(x)
	x.W = w.ResponseWriter
	return err
}

// writer adds the CORS response headers of an actual request when its headers go out.
// It forwards Flush, Hijack and ReadFrom, and Unwrap for http.ResponseController.
type writer struct {
	http.ResponseWriter
	p       *policy
	origin  string
	started bool
}

func (w *writer) start() {
	if w.started {
		return
	}
	w.started = true
	h := w.ResponseWriter.Header()
	h.Set(hdrAllowOrigin, w.origin)
	if w.p.credentials {
		h.Set(hdrAllowCredentials, "true")
	}
	if w.p.expose != "" {
		h.Set(hdrExposeHeaders, w.p.expose)
	}
}

func (w *writer) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.start()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(b []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(b)
}

func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	w.start()
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

func (w *writer) Flush() {
	w.start()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("cors: connection cannot be hijacked")
	}
	return hj.Hijack()
}

func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Package fault is the proxy's HTTP fault injection filter (Envoy's
// envoy.filters.http.fault): it delays and aborts a share of requests before they reach
// the router, as Istio's VirtualService fault settings ask. Istio sends an empty
// filter-level config and the real one per route in typed_per_filter_config; both forms
// are compiled once, when the config arrives.
package fault

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/bootstrap/pgv"
	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// ConfigType is the typed_config (and per-route config) this filter is built from.
const ConfigType = "envoy.extensions.filters.http.fault.v3.HTTPFault"

// Header controls, as Envoy names them (config_http_filters_fault_injection_http_header).
const (
	hdrAbort           = "X-Envoy-Fault-Abort-Request"
	hdrAbortGRPC       = "X-Envoy-Fault-Abort-Grpc-Request"
	hdrAbortPercentage = "X-Envoy-Fault-Abort-Request-Percentage"
	hdrDelay           = "X-Envoy-Fault-Delay-Request"
	hdrDelayPercentage = "X-Envoy-Fault-Delay-Request-Percentage"
	hdrDownstreamNode  = "X-Envoy-Downstream-Service-Node"
)

const (
	defaultAbortBody = "fault filter abort"
	// ResponseDetails is %RESPONSE_CODE_DETAILS% of an aborted request.
	ResponseDetails = "fault_filter_abort"
)

func init() { filter.Register(factory{}) }

type factory struct{}

var (
	_ filter.Factory        = factory{}
	_ filter.PerRouteParser = factory{}
)

func (factory) ConfigType() string      { return ConfigType }
func (factory) New() proto.Message      { return new(faultv3.HTTPFault) }
func (factory) PerRouteTypes() []string { return []string{ConfigType} }

func (factory) ParsePerRoute(a *anypb.Any) (any, error) {
	var m faultv3.HTTPFault
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("fault: %w", err)
	}
	return compile(&m)
}

func (factory) Build(name string, cfg proto.Message) (filter.Middleware, error) {
	m, ok := cfg.(*faultv3.HTTPFault)
	if !ok {
		return nil, fmt.Errorf("fault: config is %T, want HTTPFault", cfg)
	}
	c, err := compile(m)
	if err != nil {
		return nil, err
	}
	f := &instance{name: name, base: c, st: counters()}
	return func(next filter.Handler) filter.Handler {
		return filter.HandlerFunc(func(x *filter.Exchange) error { return f.serve(next, x) })
	}, nil
}

// percent is a compiled FractionalPercent: a request is picked when a uniform draw in
// [0, den) is below num, as Envoy's runtime featureEnabled does.
type percent struct{ num, den uint32 }

func toPercent(p *typev3.FractionalPercent) percent {
	den := uint32(100)
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	}
	return percent{num: p.GetNumerator(), den: den}
}

func (p percent) hit() bool {
	switch {
	case p.num == 0:
		return false
	case p.num >= p.den:
		return true
	}
	// math/rand/v2's top-level source is per-thread and lock-free.
	return rand.Uint32N(p.den) < p.num
}

// withHeader follows Envoy's header-controlled percentage: the header gives a numerator
// over the configured denominator, capped by the configured numerator; a missing or bad
// header leaves the configured percentage.
func (p percent) withHeader(h http.Header, name string) percent {
	v := h.Get(name)
	if v == "" {
		return p
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return p
	}
	if uint32(n) < p.num {
		p.num = uint32(n)
	}
	return p
}

type delayCfg struct {
	fixed      time.Duration
	fromHeader bool
	pct        percent
}

type abortCfg struct {
	httpStatus int
	grpcStatus int // -1 when the abort is an HTTP status
	fromHeader bool
	pct        percent
	body       string
}

// config is one compiled HTTPFault, filter-level or per route.
type config struct {
	delay     *delayCfg
	abort     *abortCfg
	cluster   string
	headers   []headerMatcher
	nodes     map[string]struct{}
	maxActive int64 // max_active_faults; -1: unlimited
}

func compile(m *faultv3.HTTPFault) (*config, error) {
	c := &config{cluster: m.GetUpstreamCluster(), maxActive: -1}
	if d := m.GetDelay(); d != nil {
		dc := &delayCfg{pct: toPercent(d.GetPercentage())}
		switch s := d.GetFaultDelaySecifier().(type) {
		case *faultcommonv3.FaultDelay_FixedDelay:
			dc.fixed = s.FixedDelay.AsDuration()
			if dc.fixed <= 0 {
				return nil, fmt.Errorf("fault: delay.fixed_delay: must be positive")
			}
		case *faultcommonv3.FaultDelay_HeaderDelay_:
			dc.fromHeader = true
		default:
			return nil, fmt.Errorf("fault: delay: one of fixed_delay or header_delay is required")
		}
		c.delay = dc
	}
	if a := m.GetAbort(); a != nil {
		ac := &abortCfg{grpcStatus: -1, pct: toPercent(a.GetPercentage()), body: a.GetResponseBody()}
		if ac.body == "" {
			ac.body = defaultAbortBody
		}
		switch s := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			if s.HttpStatus < 200 || s.HttpStatus >= 600 {
				return nil, fmt.Errorf("fault: abort.http_status: %d is not in [200, 600)", s.HttpStatus)
			}
			ac.httpStatus = int(s.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			ac.grpcStatus = int(s.GrpcStatus)
		case *faultv3.FaultAbort_HeaderAbort_:
			ac.fromHeader = true
		default:
			return nil, fmt.Errorf("fault: abort: one of http_status, grpc_status or header_abort is required")
		}
		c.abort = ac
	}
	for i, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("fault: headers[%d]: %w", i, err)
		}
		c.headers = append(c.headers, hm)
	}
	if n := m.GetDownstreamNodes(); len(n) > 0 {
		c.nodes = make(map[string]struct{}, len(n))
		for _, s := range n {
			c.nodes[s] = struct{}{}
		}
	}
	if v := m.GetMaxActiveFaults(); v != nil {
		// An explicit 0 means no fault may be active, as in Envoy.
		c.maxActive = int64(v.GetValue())
	}
	// The proto's own rules last: the checks above name fields as the config spells them.
	if err := pgv.Check(m, ""); err != nil {
		return nil, fmt.Errorf("fault: %w", err)
	}
	return c, nil
}

// delayFor returns the delay to inject into this request, 0 for none.
func (c *config) delayFor(h http.Header) time.Duration {
	d := c.delay
	if d == nil {
		return 0
	}
	dur := d.fixed
	pct := d.pct
	if d.fromHeader {
		ms, err := strconv.ParseUint(h.Get(hdrDelay), 10, 32)
		if err != nil || ms == 0 {
			return 0
		}
		dur = time.Duration(ms) * time.Millisecond
		pct = pct.withHeader(h, hdrDelayPercentage)
	}
	if !pct.hit() {
		return 0
	}
	return dur
}

// abortFor decides the abort of this request: an HTTP status, or a gRPC status (grpc >= 0).
func (c *config) abortFor(h http.Header) (status, grpc int, ok bool) {
	a := c.abort
	if a == nil {
		return 0, -1, false
	}
	status, grpc = a.httpStatus, a.grpcStatus
	pct := a.pct
	if a.fromHeader {
		status, grpc = 0, -1
		if v := h.Get(hdrAbort); v != "" {
			n, err := strconv.Atoi(v)
			if err == nil && n >= 200 && n < 600 {
				status = n
			}
		}
		if status == 0 {
			if v := h.Get(hdrAbortGRPC); v != "" {
				n, err := strconv.ParseUint(v, 10, 31)
				if err == nil {
					grpc = int(n)
				}
			}
		}
		if status == 0 && grpc < 0 {
			return 0, -1, false
		}
		pct = pct.withHeader(h, hdrAbortPercentage)
	}
	if !pct.hit() {
		return 0, -1, false
	}
	return status, grpc, true
}

// routeCluster is what the router's Route offers to honour upstream_cluster: its fixed
// cluster ("" for weighted ones), else the filter reads stream.Info.Cluster.
type routeCluster interface{ Cluster() string }

func (c *config) applies(x *filter.Exchange) bool {
	if c.cluster != "" {
		cl := ""
		if rc, ok := x.Route.(routeCluster); ok {
			cl = rc.Cluster()
		}
		if cl == "" {
			cl = x.Info.Cluster
		}
		if cl != c.cluster {
			return false
		}
	}
	if c.nodes != nil {
		if _, ok := c.nodes[x.R.Header.Get(hdrDownstreamNode)]; !ok {
			return false
		}
	}
	return matchAll(c.headers, x.R.Header)
}

// Stats are the fault filter's counters, named as Envoy's http.<prefix>.fault.* without
// the connection manager's prefix, which the filter API does not give a filter.
type Stats struct {
	DelaysInjected *stats.Counter // http.fault.delays_injected
	AbortsInjected *stats.Counter // http.fault.aborts_injected
	FaultsOverflow *stats.Counter // http.fault.faults_overflow
	ActiveFaults   *stats.Gauge   // http.fault.active_faults
}

var statStore atomic.Pointer[stats.Store]

// UseStats makes filters built from now on count into s. Call it once at start-up,
// before the first config is compiled; filters built before keep their old counters.
func UseStats(s *stats.Store) { statStore.Store(s) }

var fallback = stats.New()

func counters() *Stats {
	s := statStore.Load()
	if s == nil {
		s = fallback
	}
	return &Stats{
		DelaysInjected: s.Counter("http.fault.delays_injected"),
		AbortsInjected: s.Counter("http.fault.aborts_injected"),
		FaultsOverflow: s.Counter("http.fault.faults_overflow"),
		ActiveFaults:   s.Gauge("http.fault.active_faults"),
	}
}

// instance is one fault filter in one listener's chain.
type instance struct {
	name   string
	base   *config
	st     *Stats
	active atomic.Int64 // faults in progress through this instance, for max_active_faults
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
	if (c.delay == nil && c.abort == nil) || !c.applies(x) {
		return next.Serve(x)
	}
	h := x.R.Header
	delay := c.delayFor(h)
	status, grpc, abort := c.abortFor(h)
	if delay == 0 && !abort {
		return next.Serve(x)
	}
	// max_active_faults is a fuzzy limit in Envoy too: check, then count.
	if c.maxActive >= 0 && f.active.Load() >= c.maxActive {
		f.st.FaultsOverflow.Inc()
		return next.Serve(x)
	}
	f.active.Add(1)
	f.st.ActiveFaults.Inc()
	defer func() {
		f.active.Add(-1)
		f.st.ActiveFaults.Dec()
	}()

	if delay > 0 {
		x.Info.SetFlag(stream.DelayInjected)
		f.st.DelaysInjected.Inc()
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-x.R.Context().Done():
			// The client went away while delayed: nothing is left to answer.
			t.Stop()
			x.Info.SetFlag(stream.DownstreamConnectionTermination)
			return nil
		}
	}
	if !abort {
		return next.Serve(x)
	}
	f.st.AbortsInjected.Inc()
	if grpc >= 0 {
		// A trailers-only gRPC response, as Envoy's gRPC local replies are.
		x.Info.SetFlag(stream.FaultInjected)
		x.Info.ResponseDetails = ResponseDetails
		x.Info.GRPCStatus = strconv.Itoa(grpc)
		wh := x.W.Header()
		wh.Set("Content-Type", "application/grpc")
		wh.Set("Grpc-Status", x.Info.GRPCStatus)
		wh.Set("Grpc-Message", c.abort.body)
		x.W.WriteHeader(http.StatusOK)
		return nil
	}
	x.LocalReply(status, c.abort.body, stream.FaultInjected, ResponseDetails)
	return nil
}

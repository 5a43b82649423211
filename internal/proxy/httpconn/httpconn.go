// Package httpconn is the proxy's HTTP connection manager: Envoy's
// envoy.filters.network.http_connection_manager. A filter chain hands it a downstream
// connection; it speaks HTTP/1.1, HTTP/2 over TLS (ALPN h2) or h2c with prior knowledge,
// stamps each request (x-request-id, x-forwarded-for/-proto, x-forwarded-client-cert),
// matches the route (inline route_config or RDS), runs the HTTP filters in the config's
// order with the router last, and writes the access log.
//
// Everything that does not depend on a request is done in Build: a compiled manager is
// immutable, and a config change builds a new one while the old drains.
package httpconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/h2"
	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/router"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
)

// ConfigType is the typed_config this package builds from.
const ConfigType = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

const routerType = "envoy.extensions.filters.http.router.v3.Router"

// AccessLogger writes one access log entry per request.
type AccessLogger interface {
	Log(info *stream.Info, req, resp http.Header)
}

// Options are what every manager built by a Factory shares.
type Options struct {
	Routes   *router.Store     // RDS route configurations
	Clusters *upstream.Manager // for the router
	Stats    *stats.Store
	Log      *slog.Logger
	// AccessLogs compiles the access_log entries of a manager; nil disables access logs.
	AccessLogs func([]*accesslogv3.AccessLog) (AccessLogger, error)
	// DefaultAccessLog, when not nil, logs requests of managers that configure none
	// (weft-proxy's --access-log flag).
	DefaultAccessLog AccessLogger
	// DrainTimeout bounds how long a replaced manager waits for its requests.
	DrainTimeout time.Duration
}

// Factory builds managers; it is the listener.NetworkFilterFactory for the HCM type.
type Factory struct{ opts Options }

var _ listener.NetworkFilterFactory = (*Factory)(nil)

// NewFactory returns a factory sharing opts.
func NewFactory(opts Options) *Factory {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Stats == nil {
		opts.Stats = stats.New()
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	return &Factory{opts: opts}
}

// ConfigType implements listener.NetworkFilterFactory.
func (f *Factory) ConfigType() string { return ConfigType }

// Build implements listener.NetworkFilterFactory.
func (f *Factory) Build(typed *anypb.Any, chain listener.ChainInfo) (listener.NetworkFilter, error) {
	cfg := new(hcmv3.HttpConnectionManager)
	if err := typed.UnmarshalTo(cfg); err != nil {
		return nil, fmt.Errorf("http_connection_manager: %w", err)
	}
	return f.build(cfg, chain)
}

// Manager serves the HTTP connections of one filter chain.
type Manager struct {
	opts    Options
	chain   listener.ChainInfo
	prefix  string
	inline  *router.Table // route_config, when inline
	rdsName string        // rds.route_config_name, when over RDS
	handler filter.Handler
	// rerouteFn is m.reroute, bound once: a method value made per request allocates.
	rerouteFn func(*filter.Exchange)
	codec     hcmv3.HttpConnectionManager_CodecType

	useRemoteAddress  bool
	skipXFFAppend     bool
	generateRequestID bool
	preserveRequestID bool
	serverName        string
	serverVal         []string // shared by every response: never written into
	xfcc              xfccPolicy
	inbound           bool
	accessLog         AccessLogger

	// HTTP/1.1 and HTTP/2 are served by weft's codecs (h1.go, package h2).
	h1             h1server
	h2             h2server
	h2cfg          h2.Config // what every HTTP/2 connection starts from
	http1, http2   bool      // the codecs the config allows
	idleTimeout    time.Duration
	headersTimeout time.Duration
	maxHeaderBytes int

	rqTotal, rqActive                  *stats.Counter
	rq1xx, rq2xx, rq3xx, rq4xx, rq5xx  *stats.Counter
	cxTotal                            *stats.Counter
	cxActive, rqActiveGauge            *stats.Gauge
	rqTime                             *stats.Histogram
	noRoute, noCluster, rqTimeoutCount *stats.Counter
}

var _ listener.NetworkFilter = (*Manager)(nil)

func (f *Factory) build(cfg *hcmv3.HttpConnectionManager, chain listener.ChainInfo) (*Manager, error) {
	m := &Manager{
		opts:              f.opts,
		chain:             chain,
		prefix:            cfg.GetStatPrefix(),
		codec:             cfg.GetCodecType(),
		useRemoteAddress:  cfg.GetUseRemoteAddress().GetValue(),
		skipXFFAppend:     cfg.GetSkipXffAppend(),
		generateRequestID: cfg.GetGenerateRequestId() == nil || cfg.GetGenerateRequestId().GetValue(),
		preserveRequestID: cfg.GetPreserveExternalRequestId(),
		serverName:        cfg.GetServerName(),
		inbound:           chain.Inbound,
	}
	if m.prefix == "" {
		return nil, errors.New("http_connection_manager: stat_prefix is required")
	}
	if m.serverName == "" {
		m.serverName = "envoy" // Envoy's default server_name, which tools may match on
	}
	if cfg.GetServerHeaderTransformation() == hcmv3.HttpConnectionManager_PASS_THROUGH {
		m.serverName = ""
	}
	if m.serverName != "" {
		m.serverVal = []string{m.serverName}
	}
	var err error
	if m.xfcc, err = newXFCC(cfg); err != nil {
		return nil, err
	}

	switch rs := cfg.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_RouteConfig:
		if m.inline, err = router.Compile(rs.RouteConfig); err != nil {
			return nil, fmt.Errorf("http_connection_manager: route_config: %w", err)
		}
	case *hcmv3.HttpConnectionManager_Rds:
		m.rdsName = rs.Rds.GetRouteConfigName()
		if m.rdsName == "" {
			return nil, errors.New("http_connection_manager: rds.route_config_name is required")
		}
		if f.opts.Routes == nil {
			return nil, errors.New("http_connection_manager: rds is not available")
		}
	default:
		return nil, errors.New("http_connection_manager: route_config or rds is required (scoped_routes is not supported)")
	}

	if m.handler, err = f.buildFilters(cfg.GetHttpFilters()); err != nil {
		return nil, err
	}

	if logs := cfg.GetAccessLog(); len(logs) > 0 && f.opts.AccessLogs != nil {
		if m.accessLog, err = f.opts.AccessLogs(logs); err != nil {
			return nil, fmt.Errorf("http_connection_manager: access_log: %w", err)
		}
	} else if len(logs) == 0 {
		m.accessLog = f.opts.DefaultAccessLog
	}

	st := f.opts.Stats
	tag := stats.Tag{Key: "envoy_http_conn_manager_prefix", Value: m.prefix}
	m.rqTotal = st.Counter("http.downstream_rq_total", tag)
	class := func(c string) *stats.Counter {
		return st.Counter("http.downstream_rq_{envoy_response_code_class}xx", tag, stats.Tag{Key: "envoy_response_code_class", Value: c})
	}
	m.rq1xx, m.rq2xx, m.rq3xx, m.rq4xx, m.rq5xx = class("1"), class("2"), class("3"), class("4"), class("5")
	m.cxTotal = st.Counter("http.downstream_cx_total", tag)
	m.cxActive = st.Gauge("http.downstream_cx_active", tag)
	m.rqActiveGauge = st.Gauge("http.downstream_rq_active", tag)
	m.rqTime = st.Histogram("http.downstream_rq_time", tag)
	m.noRoute = st.Counter("http.no_route", tag)
	m.noCluster = st.Counter("http.no_cluster", tag)
	m.rqTimeoutCount = st.Counter("http.downstream_rq_timeout", tag)

	m.rerouteFn = m.reroute
	m.configure(cfg)
	return m, nil
}

// buildFilters compiles http_filters into one handler: the filters wrap the router in
// the config's order, so the first listed runs first.
func (f *Factory) buildFilters(list []*hcmv3.HttpFilter) (filter.Handler, error) {
	if len(list) == 0 {
		return nil, errors.New("http_connection_manager: http_filters: the router filter is required")
	}
	var mws []filter.Middleware
	var terminal filter.Handler
	for i, hf := range list {
		typed := hf.GetTypedConfig()
		if typed == nil {
			return nil, fmt.Errorf("http_connection_manager: http_filters[%d] (%s): typed_config is required", i, hf.GetName())
		}
		if typed.MessageName() == routerType {
			if i != len(list)-1 {
				return nil, fmt.Errorf("http_connection_manager: http_filters[%d] (%s): the router must be the last filter", i, hf.GetName())
			}
			rc := new(routerv3.Router)
			if err := typed.UnmarshalTo(rc); err != nil {
				return nil, fmt.Errorf("http_connection_manager: http_filters[%d] (%s): %w", i, hf.GetName(), err)
			}
			terminal = router.NewRouter(rc, router.Options{Clusters: f.opts.Clusters, Stats: f.opts.Stats, Log: f.opts.Log})
			continue
		}
		mw, err := filter.Build(hf.GetName(), typed)
		if err != nil {
			if hf.GetIsOptional() {
				f.opts.Log.Warn("skipping optional http filter", "filter", hf.GetName(), "err", err)
				continue
			}
			return nil, fmt.Errorf("http_connection_manager: http_filters[%d]: %w", i, err)
		}
		mws = append(mws, mw)
	}
	if terminal == nil {
		return nil, errors.New("http_connection_manager: http_filters: the last filter must be envoy.filters.http.router")
	}
	h := terminal
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h, nil
}

// ServeConn implements listener.NetworkFilter; it returns at once. HTTP/1.1 (ALPN
// http/1.1, or a plaintext connection that does not start with the HTTP/2 preface)
// goes to the HTTP/1.1 codec, HTTP/2 (ALPN h2, or the h2c preface) to package h2.
func (m *Manager) ServeConn(ctx context.Context, c *listener.Conn) {
	var nc net.Conn = c
	// Under TLS the codecs read and write the *tls.Conn; its metadata travels beside
	// it in the requests' context.
	if c.TLS {
		nc = c.Conn
	}
	m.cxTotal.Inc()
	switch {
	case c.ALPN == "h2" || !m.http1:
		go m.serveH2(c, nc, nil)
	case c.TLS || c.ALPN == "http/1.1" || !m.http2:
		go m.serveH1(c, nc, nil)
	default:
		// Plaintext of unknown protocol: h2c prior knowledge or HTTP/1.
		go m.detect(c, nc)
	}
}

func (m *Manager) detect(c *listener.Conn, nc net.Conn) {
	br := bufio.NewReaderSize(nc, h1BufSize)
	_ = nc.SetReadDeadline(time.Now().Add(m.idleTimeout))
	h2, err := isH2Preface(br)
	if err != nil {
		_ = nc.Close()
		return
	}
	if h2 {
		_ = nc.SetReadDeadline(time.Time{})
		m.serveH2(c, nc, br)
		return
	}
	m.serveH1(c, nc, br)
}

// Drain implements listener.NetworkFilter: HTTP/1.1 connections close after their
// current request (answered with Connection: close) or, when idle, after a short
// grace; HTTP/2 connections get GOAWAY and close once their open streams are done.
func (m *Manager) Drain(ctx context.Context) error {
	h1err := make(chan error, 1)
	go func() { h1err <- m.drainH1(ctx) }()
	err := m.drainH2(ctx)
	if e := <-h1err; err == nil {
		err = e
	}
	return err
}

// configure takes the codecs, timeouts and limits from the config.
func (m *Manager) configure(cfg *hcmv3.HttpConnectionManager) {
	switch cfg.GetCodecType() {
	case hcmv3.HttpConnectionManager_HTTP1:
		m.http1 = true
	case hcmv3.HttpConnectionManager_HTTP2:
		m.http2 = true
	default: // AUTO: by ALPN over TLS, by the connection preface in plaintext
		m.http1, m.http2 = true, true
	}
	m.idleTimeout = time.Hour // Envoy's default idle_timeout
	if d := cfg.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		m.idleTimeout = d.AsDuration()
	}
	if d := cfg.GetRequestHeadersTimeout(); d != nil && d.AsDuration() > 0 {
		m.headersTimeout = d.AsDuration()
	}
	m.maxHeaderBytes = 60 * 1024 // Envoy's default max_request_headers_kb
	if kb := cfg.GetMaxRequestHeadersKb(); kb != nil {
		m.maxHeaderBytes = int(kb.GetValue()) * 1024
	}
	if m.idleTimeout <= 0 {
		m.idleTimeout = 100 * 365 * 24 * time.Hour // 0 disables it, as in Envoy
	}
	m.h2cfg = h2.Config{Handler: m, MaxHeaderBytes: m.maxHeaderBytes, IdleTimeout: m.idleTimeout, Log: m.opts.Log}
	if o := cfg.GetHttp2ProtocolOptions(); o != nil {
		m.h2cfg.MaxConcurrentStreams = o.GetMaxConcurrentStreams().GetValue()
		m.h2cfg.StreamWindow = o.GetInitialStreamWindowSize().GetValue()
		m.h2cfg.ConnWindow = o.GetInitialConnectionWindowSize().GetValue()
	}
}

type connKey struct{}

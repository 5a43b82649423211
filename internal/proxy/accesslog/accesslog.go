// Package accesslog writes the proxy's access logs as Envoy's file and stdout/stderr
// access loggers do: the HTTP connection manager and the TCP proxy hand each finished
// request or connection (a stream.Info plus its headers) to a Logger built from their
// access_log config. Formats are compiled once; a line is formatted on the request's
// goroutine into a pooled buffer and queued to the file's single writer, so lines are
// whole and the request never waits on the disk.
package accesslog

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// EnvoyTextFormat is Envoy's default access log format, used when a logger gives none.
const EnvoyTextFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// IstioTextFormat is the text format Istio's meshConfig.accessLogFile uses by default.
const IstioTextFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% ` +
	`%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ` +
	`%REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

// istioJSON are the keys of Istio's JSON access log (meshConfig accessLogEncoding: JSON).
var istioJSON = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

// IstioJSONFormat returns Istio's JSON access log format, for a log_format.json_format.
func IstioJSONFormat() *structpb.Struct {
	fields := make(map[string]*structpb.Value, len(istioJSON))
	for k, v := range istioJSON {
		fields[k] = structpb.NewStringValue(v)
	}
	return &structpb.Struct{Fields: fields}
}

// IstioJSONAccessLog is an access_log entry writing Istio's JSON format to path, the
// shape the control plane can put into a connection manager's access_log.
func IstioJSONAccessLog(path string) *accesslogv3.AccessLog {
	cfg := &filev3.FileAccessLog{
		Path: path,
		AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: IstioJSONFormat()},
		}},
	}
	a := &accesslogv3.AccessLog{Name: "envoy.access_loggers.file"}
	if tc, err := anyOf(cfg); err == nil {
		a.ConfigType = &accesslogv3.AccessLog_TypedConfig{TypedConfig: tc}
	}
	return a
}

// Logger writes the entries of one access_log list. A nil *Logger logs nothing, so
// callers need not check.
type Logger struct {
	entries []entry
}

type entry struct {
	filter    filterFunc // nil: every request
	text      template
	json      *jsonFormat
	omitEmpty bool
	sink      *sink
}

// Build compiles an access_log list. It returns nil, nil for an empty list. Every path
// named is opened (created, appended to) now, so a bad path is a config error.
func Build(logs []*accesslogv3.AccessLog) (*Logger, error) {
	if len(logs) == 0 {
		return nil, nil
	}
	l := &Logger{}
	for i, a := range logs {
		e, err := buildEntry(a)
		if err != nil {
			l.Close()
			name := a.GetName()
			if name == "" {
				name = strconv.Itoa(i)
			}
			return nil, fmt.Errorf("accesslog: access_log[%d] %q: %w", i, name, err)
		}
		l.entries = append(l.entries, e)
	}
	return l, nil
}

// Default is a logger writing Istio's JSON format to path, for connection managers that
// configure no access log of their own (weft-proxy's --access-log).
func Default(path string) (*Logger, error) {
	return Build([]*accesslogv3.AccessLog{IstioJSONAccessLog(path)})
}

func buildEntry(a *accesslogv3.AccessLog) (entry, error) {
	var e entry
	if a.GetFilter() != nil {
		f, err := compileFilter(a.GetFilter())
		if err != nil {
			return e, fmt.Errorf("filter: %w", err)
		}
		e.filter = f
	}
	tc := a.GetTypedConfig()
	if tc == nil {
		return e, fmt.Errorf("typed_config: required")
	}
	msg, err := tc.UnmarshalNew()
	if err != nil {
		return e, fmt.Errorf("typed_config: %w", err)
	}
	var path string
	var sf *corev3.SubstitutionFormatString
	switch c := msg.(type) {
	case *filev3.FileAccessLog:
		path = c.GetPath()
		if path == "" {
			return e, fmt.Errorf("typed_config.path: required")
		}
		switch f := c.GetAccessLogFormat().(type) {
		case *filev3.FileAccessLog_Format:
			if e.text, err = parseTemplate(f.Format); err != nil {
				return e, fmt.Errorf("typed_config.format: %w", err)
			}
		case *filev3.FileAccessLog_JsonFormat:
			if e.json, err = compileJSON(f.JsonFormat, false, false); err != nil {
				return e, fmt.Errorf("typed_config.json_format.%w", err)
			}
		case *filev3.FileAccessLog_TypedJsonFormat:
			if e.json, err = compileJSON(f.TypedJsonFormat, true, false); err != nil {
				return e, fmt.Errorf("typed_config.typed_json_format.%w", err)
			}
		case *filev3.FileAccessLog_LogFormat:
			sf = f.LogFormat
		}
	case *streamv3.StdoutAccessLog:
		path, sf = "/dev/stdout", c.GetLogFormat()
	case *streamv3.StderrAccessLog:
		path, sf = "/dev/stderr", c.GetLogFormat()
	default:
		return e, fmt.Errorf("typed_config: unsupported access logger %s", tc.MessageName())
	}
	if sf != nil {
		if err := e.compileSubstitution(sf); err != nil {
			return e, fmt.Errorf("typed_config.log_format.%w", err)
		}
	}
	if e.text == nil && e.json == nil {
		e.text, _ = parseTemplate(EnvoyTextFormat)
	}
	s, err := openSink(path)
	if err != nil {
		return e, fmt.Errorf("typed_config.path: %w", err)
	}
	e.sink = s
	return e, nil
}

// compileSubstitution reads a SubstitutionFormatString. Its formatters extensions only
// enable operators (REQ_WITHOUT_QUERY, METADATA, CEL) in Envoy; weft knows the operators
// it supports, so they are ignored.
func (e *entry) compileSubstitution(sf *corev3.SubstitutionFormatString) error {
	e.omitEmpty = sf.GetOmitEmptyValues()
	var err error
	switch f := sf.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormat:
		if e.text, err = parseTemplate(f.TextFormat); err != nil {
			return fmt.Errorf("text_format: %w", err)
		}
	case *corev3.SubstitutionFormatString_TextFormatSource:
		src, err := dataSource(f.TextFormatSource)
		if err != nil {
			return fmt.Errorf("text_format_source: %w", err)
		}
		if e.text, err = parseTemplate(src); err != nil {
			return fmt.Errorf("text_format_source: %w", err)
		}
	case *corev3.SubstitutionFormatString_JsonFormat:
		// Envoy's log_format json_format keeps value types.
		if e.json, err = compileJSON(f.JsonFormat, true, e.omitEmpty); err != nil {
			return fmt.Errorf("json_format.%w", err)
		}
	case nil:
	default:
		return fmt.Errorf("format: unsupported %T", f)
	}
	return nil
}

func dataSource(d *corev3.DataSource) (string, error) {
	switch s := d.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return s.InlineString, nil
	case *corev3.DataSource_InlineBytes:
		return string(s.InlineBytes), nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		return string(b), err
	case *corev3.DataSource_EnvironmentVariable:
		return os.Getenv(s.EnvironmentVariable), nil
	}
	return "", fmt.Errorf("empty data source")
}

// Log writes one entry per configured access log. req and resp are nil for TCP.
func (l *Logger) Log(info *stream.Info, req, resp http.Header) {
	if l == nil || info == nil {
		return
	}
	c := ctx{info: info, req: req, resp: resp}
	for i := range l.entries {
		e := &l.entries[i]
		if e.filter != nil && !e.filter(&c) {
			continue
		}
		bp := bufPool.Get().(*[]byte)
		if e.json != nil {
			sp := bufPool.Get().(*[]byte)
			b := e.json.appendJSON((*bp)[:0], &c, sp)
			*bp = append(b, '\n')
			putBuf(sp)
		} else {
			*bp = e.text.appendText((*bp)[:0], &c, e.omitEmpty)
		}
		e.sink.enqueue(bp)
	}
}

// Close releases the logger's files; the last logger of a file flushes and closes it.
// Lines logged after Close are dropped.
func (l *Logger) Close() {
	if l == nil {
		return
	}
	for _, e := range l.entries {
		if e.sink != nil {
			e.sink.release()
		}
	}
	l.entries = nil
}

// --- filters ---

type filterFunc func(c *ctx) bool

var flagByName = func() map[string]stream.Flags {
	m := map[string]stream.Flags{}
	for bit := stream.Flags(1); bit != 0; bit <<= 1 {
		if n := bit.String(); n != "" && !containsComma(n) {
			m[n] = bit
		}
	}
	return m
}()

func containsComma(s string) bool {
	for i := range len(s) {
		if s[i] == ',' {
			return true
		}
	}
	return false
}

// compileFilter supports the AccessLogFilter kinds whose inputs stream.Info carries.
func compileFilter(f *accesslogv3.AccessLogFilter) (filterFunc, error) {
	switch x := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		cmp, err := comparison(x.StatusCodeFilter.GetComparison())
		if err != nil {
			return nil, fmt.Errorf("status_code_filter.%w", err)
		}
		return func(c *ctx) bool { return cmp(uint64(c.info.ResponseCode)) }, nil
	case *accesslogv3.AccessLogFilter_DurationFilter:
		cmp, err := comparison(x.DurationFilter.GetComparison())
		if err != nil {
			return nil, fmt.Errorf("duration_filter.%w", err)
		}
		return func(c *ctx) bool { return cmp(uint64(c.info.Duration.Milliseconds())) }, nil
	case *accesslogv3.AccessLogFilter_ResponseFlagFilter:
		var want stream.Flags
		for i, n := range x.ResponseFlagFilter.GetFlags() {
			b, ok := flagByName[n]
			if !ok {
				return nil, fmt.Errorf("response_flag_filter.flags[%d]: unknown flag %q", i, n)
			}
			want |= b
		}
		if want == 0 {
			// No flags listed: any response flag passes, as in Envoy.
			return func(c *ctx) bool { return c.info.Flags != 0 }, nil
		}
		return func(c *ctx) bool { return c.info.Flags&want != 0 }, nil
	case *accesslogv3.AccessLogFilter_GrpcStatusFilter:
		var set uint64
		for _, s := range x.GrpcStatusFilter.GetStatuses() {
			set |= 1 << uint(s)
		}
		exclude := x.GrpcStatusFilter.GetExclude()
		return func(c *ctx) bool {
			n := grpcCode(c)
			if n < 0 {
				n = 2 // Envoy treats a request without a gRPC status as UNKNOWN
			}
			in := n < 64 && set&(1<<uint(n)) != 0
			return in != exclude
		}, nil
	case *accesslogv3.AccessLogFilter_NotHealthCheckFilter:
		// weft does not answer health checks in the connection manager, so no request is one.
		return func(*ctx) bool { return true }, nil
	case *accesslogv3.AccessLogFilter_RuntimeFilter:
		p := x.RuntimeFilter.GetPercentSampled()
		num, den := p.GetNumerator(), denominator(p.GetDenominator())
		return func(*ctx) bool { return num >= den || num > 0 && rand.Uint32N(den) < num }, nil
	case *accesslogv3.AccessLogFilter_AndFilter, *accesslogv3.AccessLogFilter_OrFilter:
		var subs []*accesslogv3.AccessLogFilter
		and := false
		if a, ok := x.(*accesslogv3.AccessLogFilter_AndFilter); ok {
			subs, and = a.AndFilter.GetFilters(), true
		} else {
			subs = x.(*accesslogv3.AccessLogFilter_OrFilter).OrFilter.GetFilters()
		}
		fs := make([]filterFunc, 0, len(subs))
		for i, s := range subs {
			sf, err := compileFilter(s)
			if err != nil {
				return nil, fmt.Errorf("filters[%d].%w", i, err)
			}
			fs = append(fs, sf)
		}
		if and {
			return func(c *ctx) bool {
				for _, f := range fs {
					if !f(c) {
						return false
					}
				}
				return true
			}, nil
		}
		return func(c *ctx) bool {
			for _, f := range fs {
				if f(c) {
					return true
				}
			}
			return false
		}, nil
	case nil:
		return nil, fmt.Errorf("filter_specifier: required")
	default:
		m := f.ProtoReflect()
		name := "filter"
		if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("filter_specifier")); fd != nil {
			name = string(fd.Name())
		}
		return nil, fmt.Errorf("%s: not supported", name)
	}
}

func anyOf(m proto.Message) (*anypb.Any, error) { return anypb.New(m) }

func denominator(d typev3.FractionalPercent_DenominatorType) uint32 {
	switch d {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return 10_000
	case typev3.FractionalPercent_MILLION:
		return 1_000_000
	}
	return 100
}

func comparison(c *accesslogv3.ComparisonFilter) (func(uint64) bool, error) {
	v := uint64(c.GetValue().GetDefaultValue())
	switch c.GetOp() {
	case accesslogv3.ComparisonFilter_EQ:
		return func(x uint64) bool { return x == v }, nil
	case accesslogv3.ComparisonFilter_GE:
		return func(x uint64) bool { return x >= v }, nil
	case accesslogv3.ComparisonFilter_LE:
		return func(x uint64) bool { return x <= v }, nil
	case accesslogv3.ComparisonFilter_NE:
		return func(x uint64) bool { return x != v }, nil
	}
	return nil, fmt.Errorf("comparison.op: unsupported %v", c.GetOp())
}

package accesslog

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// ctx is what one log line is formatted from.
type ctx struct {
	info      *stream.Info
	req, resp http.Header // nil for TCP
}

// valType says what an operator produced, for JSON typing and the "-" of missing values.
type valType uint8

const (
	vMissing valType = iota // nothing appended: "-" in text, null in JSON
	vString
	vNumber
)

type opKind uint8

const (
	opStartTime opKind = iota
	opReq
	opResp
	opReqWithoutQuery
	opProtocol
	opResponseCode
	opResponseFlags
	opResponseFlagsLong
	opResponseCodeDetails
	opBytesReceived
	opBytesSent
	opDuration
	opResponseDuration
	opUpstreamHost
	opUpstreamCluster
	opUpstreamFailure
	opDownstreamRemote
	opDownstreamRemoteNoPort
	opDownstreamRemotePort
	opDownstreamLocal
	opDownstreamLocalNoPort
	opDownstreamLocalPort
	opPeerURISAN
	opRequestedServerName
	opRouteName
	opVirtualHost
	opAttempts
	opGRPCStatus
	opConstant // HOSTNAME, ENVIRONMENT(X): resolved when compiled
	opMissing  // Envoy operators weft knows but has no data for: always "-"
)

// op is one compiled command operator.
type op struct {
	kind    opKind
	hdr     string // canonical header name, or a pseudo-header (":path")
	alt     string // the Y of REQ(X?Y)
	maxLen  int    // the :Z suffix; 0 for none
	tf      []timePart
	grpcFmt uint8 // 0 camel, 1 snake, 2 number
	konst   string
}

// Operators Envoy defines that weft accepts but cannot fill (no dynamic metadata, filter
// state, tracing or upstream connection details in stream.Info): they print "-", so
// configs written for Envoy (and Istio's Telemetry) are accepted rather than rejected.
var missingOps = map[string]bool{
	"UPSTREAM_LOCAL_ADDRESS": true, "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": true, "UPSTREAM_LOCAL_PORT": true,
	"UPSTREAM_REMOTE_PORT":           true,
	"CONNECTION_TERMINATION_DETAILS": true, "CONNECTION_ID": true, "UPSTREAM_CONNECTION_ID": true,
	"REQUEST_DURATION": true, "REQUEST_TX_DURATION": true, "RESPONSE_TX_DURATION": true,
	"DOWNSTREAM_HANDSHAKE_DURATION": true, "ROUNDTRIP_DURATION": true, "COMMON_DURATION": true,
	"DOWNSTREAM_LOCAL_URI_SAN": true, "DOWNSTREAM_PEER_SUBJECT": true, "DOWNSTREAM_LOCAL_SUBJECT": true,
	"DOWNSTREAM_TLS_VERSION": true, "DOWNSTREAM_TLS_CIPHER": true, "DOWNSTREAM_TLS_SESSION_ID": true,
	"DOWNSTREAM_PEER_ISSUER": true, "DOWNSTREAM_PEER_SERIAL": true, "DOWNSTREAM_PEER_FINGERPRINT_256": true,
	"DOWNSTREAM_PEER_FINGERPRINT_1": true, "DOWNSTREAM_PEER_CERT": true, "DOWNSTREAM_PEER_CERT_V_START": true,
	"DOWNSTREAM_PEER_CERT_V_END": true, "DOWNSTREAM_PEER_DNS_SAN": true, "DOWNSTREAM_LOCAL_DNS_SAN": true,
	"UPSTREAM_PEER_URI_SAN": true, "UPSTREAM_PEER_SUBJECT": true, "UPSTREAM_TLS_VERSION": true,
	"UPSTREAM_PEER_ISSUER": true, "UPSTREAM_LOCAL_URI_SAN": true,
	"DYNAMIC_METADATA": true, "CLUSTER_METADATA": true, "UPSTREAM_METADATA": true, "METADATA": true,
	"FILTER_STATE": true, "UPSTREAM_FILTER_STATE": true, "CEL": true, "TRACE_ID": true,
	"STREAM_ID": true, "UNIQUE_ID": true, "VIRTUAL_CLUSTER_NAME": true, "LOCAL_REPLY_BODY": true,
	"TRAILER": true, "REQUEST_HEADERS_BYTES": true, "RESPONSE_HEADERS_BYTES": true,
	"RESPONSE_TRAILERS_BYTES": true, "UPSTREAM_WIRE_BYTES_SENT": true, "UPSTREAM_WIRE_BYTES_RECEIVED": true,
	"UPSTREAM_HEADER_BYTES_SENT": true, "UPSTREAM_HEADER_BYTES_RECEIVED": true,
	"DOWNSTREAM_WIRE_BYTES_SENT": true, "DOWNSTREAM_WIRE_BYTES_RECEIVED": true,
	"DOWNSTREAM_HEADER_BYTES_SENT": true, "DOWNSTREAM_HEADER_BYTES_RECEIVED": true,
	"DOWNSTREAM_TRANSPORT_FAILURE_REASON": true, "UPSTREAM_CLUSTER_RAW": true, "ACCESS_LOG_TYPE": true,
}

var simpleOps = map[string]opKind{
	"PROTOCOL":                                      opProtocol,
	"RESPONSE_CODE":                                 opResponseCode,
	"RESPONSE_FLAGS":                                opResponseFlags,
	"RESPONSE_FLAGS_LONG":                           opResponseFlagsLong,
	"RESPONSE_CODE_DETAILS":                         opResponseCodeDetails,
	"BYTES_RECEIVED":                                opBytesReceived,
	"BYTES_SENT":                                    opBytesSent,
	"DURATION":                                      opDuration,
	"RESPONSE_DURATION":                             opResponseDuration,
	"UPSTREAM_HOST":                                 opUpstreamHost,
	"UPSTREAM_REMOTE_ADDRESS":                       opUpstreamHost,
	"UPSTREAM_CLUSTER":                              opUpstreamCluster,
	"UPSTREAM_TRANSPORT_FAILURE_REASON":             opUpstreamFailure,
	"DOWNSTREAM_REMOTE_ADDRESS":                     opDownstreamRemote,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":              opDownstreamRemote,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":        opDownstreamRemoteNoPort,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": opDownstreamRemoteNoPort,
	"DOWNSTREAM_REMOTE_PORT":                        opDownstreamRemotePort,
	"DOWNSTREAM_DIRECT_REMOTE_PORT":                 opDownstreamRemotePort,
	"DOWNSTREAM_LOCAL_ADDRESS":                      opDownstreamLocal,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         opDownstreamLocalNoPort,
	"DOWNSTREAM_LOCAL_PORT":                         opDownstreamLocalPort,
	"DOWNSTREAM_PEER_URI_SAN":                       opPeerURISAN,
	"REQUESTED_SERVER_NAME":                         opRequestedServerName,
	"ROUTE_NAME":                                    opRouteName,
	"VIRTUAL_HOST_NAME":                             opVirtualHost,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT":                opAttempts,
}

// part is a literal or an operator of a compiled format string.
type part struct {
	lit string
	op  *op
}

// template is a compiled format string.
type template []part

// parseTemplate compiles an Envoy format string: literal text and %COMMAND%,
// %COMMAND(args)% or %COMMAND(args):N% operators; "%%" is a literal percent sign.
func parseTemplate(s string) (template, error) {
	var t template
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t = append(t, part{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit.WriteByte('%')
			i += 2
			continue
		}
		end, o, err := parseOp(s, i+1)
		if err != nil {
			return nil, err
		}
		flush()
		t = append(t, part{op: o})
		i = end
	}
	flush()
	return t, nil
}

// parseOp reads one operator starting after its opening '%' at s[start:], returning the
// index after its closing '%'.
func parseOp(s string, start int) (int, *op, error) {
	i := start
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
		i++
	}
	name := s[start:i]
	if name == "" {
		return 0, nil, fmt.Errorf("format %q: bad operator at offset %d", s, start-1)
	}
	var arg string
	hasArg := false
	if i < len(s) && s[i] == '(' {
		// Arguments may hold parentheses (a strftime format rarely does, CEL does): take
		// the text up to the ")" that is followed by '%' or ':'.
		j := i + 1
		for ; j < len(s); j++ {
			if s[j] == ')' && (j+1 == len(s) || s[j+1] == '%' || s[j+1] == ':') {
				break
			}
		}
		if j >= len(s) {
			return 0, nil, fmt.Errorf("format %q: operator %s: missing ')'", s, name)
		}
		arg, hasArg = s[i+1:j], true
		i = j + 1
	}
	maxLen := 0
	if i < len(s) && s[i] == ':' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(s[i+1 : j])
		if err != nil || n <= 0 {
			return 0, nil, fmt.Errorf("format %q: operator %s: bad length", s, name)
		}
		maxLen, i = n, j
	}
	if i >= len(s) || s[i] != '%' {
		return 0, nil, fmt.Errorf("format %q: operator %s: missing closing '%%'", s, name)
	}
	o, err := compileOp(name, arg, hasArg, maxLen)
	if err != nil {
		return 0, nil, fmt.Errorf("format %q: %w", s, err)
	}
	return i + 1, o, nil
}

func compileOp(name, arg string, hasArg bool, maxLen int) (*op, error) {
	o := &op{maxLen: maxLen}
	switch name {
	case "REQ", "RESP", "REQ_WITHOUT_QUERY":
		if !hasArg || arg == "" {
			return nil, fmt.Errorf("operator %s needs a header name", name)
		}
		o.kind = map[string]opKind{"REQ": opReq, "RESP": opResp, "REQ_WITHOUT_QUERY": opReqWithoutQuery}[name]
		x, y, _ := strings.Cut(arg, "?")
		o.hdr, o.alt = headerKey(x), headerKey(y)
		return o, nil
	case "START_TIME":
		o.kind = opStartTime
		tf, err := compileTime(arg)
		if err != nil {
			return nil, fmt.Errorf("START_TIME(%s): %w", arg, err)
		}
		o.tf = tf
		return o, nil
	case "GRPC_STATUS":
		o.kind = opGRPCStatus
		switch arg {
		case "", "CAMEL_STRING":
		case "SNAKE_STRING":
			o.grpcFmt = 1
		case "NUMBER":
			o.grpcFmt = 2
		default:
			return nil, fmt.Errorf("GRPC_STATUS(%s): want CAMEL_STRING, SNAKE_STRING or NUMBER", arg)
		}
		return o, nil
	case "GRPC_STATUS_NUMBER":
		o.kind, o.grpcFmt = opGRPCStatus, 2
		return o, nil
	case "HOSTNAME":
		h, _ := os.Hostname()
		o.kind, o.konst = opConstant, h
		return o, nil
	case "ENVIRONMENT":
		o.kind, o.konst = opConstant, os.Getenv(arg)
		return o, nil
	}
	if k, ok := simpleOps[name]; ok {
		o.kind = k
		return o, nil
	}
	if missingOps[name] {
		o.kind = opMissing
		return o, nil
	}
	return nil, fmt.Errorf("operator %%%s%% is not supported", name)
}

// headerKey keeps pseudo-headers lower-case and canonicalizes the rest for http.Header.
func headerKey(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, ":") {
		return strings.ToLower(s)
	}
	if s == "" {
		return ""
	}
	return http.CanonicalHeaderKey(s)
}

// appendText formats the template as a text line: missing values print "-" (or nothing
// with omit_empty_values).
func (t template) appendText(b []byte, c *ctx, omitEmpty bool) []byte {
	for i := range t {
		p := &t[i]
		if p.op == nil {
			b = append(b, p.lit...)
			continue
		}
		var vt valType
		b, vt = p.op.eval(b, c)
		if vt == vMissing && !omitEmpty {
			b = append(b, '-')
		}
	}
	return b
}

// eval appends the operator's value, truncated to its :N length.
func (o *op) eval(b []byte, c *ctx) ([]byte, valType) {
	start := len(b)
	b, vt := o.value(b, c)
	if o.maxLen > 0 && len(b)-start > o.maxLen {
		b = b[:start+o.maxLen]
	}
	return b, vt
}

func appendStr(b []byte, s string) ([]byte, valType) {
	if s == "" {
		return b, vMissing
	}
	return append(b, s...), vString
}

func (o *op) value(b []byte, c *ctx) ([]byte, valType) {
	i := c.info
	switch o.kind {
	case opStartTime:
		return appendTime(b, i.Start, o.tf), vString
	case opReq:
		b, vt := requestHeader(b, c, o.hdr)
		if vt == vMissing && o.alt != "" {
			return requestHeader(b, c, o.alt)
		}
		return b, vt
	case opReqWithoutQuery:
		start := len(b)
		b, vt := requestHeader(b, c, o.hdr)
		if vt == vMissing && o.alt != "" {
			b, vt = requestHeader(b, c, o.alt)
		}
		if q := indexByte(b[start:], '?'); q >= 0 {
			b = b[:start+q]
		}
		return b, vt
	case opResp:
		b, vt := responseHeader(b, c, o.hdr)
		if vt == vMissing && o.alt != "" {
			return responseHeader(b, c, o.alt)
		}
		return b, vt
	case opProtocol:
		switch i.Protocol {
		case "", "TCP":
			return b, vMissing // Envoy prints "-" for TCP
		case "HTTP/2.0":
			return append(b, "HTTP/2"...), vString
		case "HTTP/3.0":
			return append(b, "HTTP/3"...), vString
		}
		return append(b, i.Protocol...), vString
	case opResponseCode:
		return strconv.AppendInt(b, int64(i.ResponseCode), 10), vNumber
	case opResponseFlags:
		return append(b, i.Flags.String()...), vString
	case opResponseFlagsLong:
		return appendLongFlags(b, i.Flags), vString
	case opResponseCodeDetails:
		return appendStr(b, i.ResponseDetails)
	case opBytesReceived:
		return strconv.AppendInt(b, i.BytesReceived, 10), vNumber
	case opBytesSent:
		return strconv.AppendInt(b, i.BytesSent, 10), vNumber
	case opDuration:
		return strconv.AppendInt(b, i.Duration.Milliseconds(), 10), vNumber
	case opResponseDuration:
		if i.UpstreamDuration <= 0 {
			return b, vMissing
		}
		return strconv.AppendInt(b, i.UpstreamDuration.Milliseconds(), 10), vNumber
	case opUpstreamHost:
		return appendStr(b, i.UpstreamHost)
	case opUpstreamCluster:
		return appendStr(b, i.Cluster)
	case opUpstreamFailure:
		return appendStr(b, i.UpstreamFailure)
	case opDownstreamRemote:
		return appendAddrPort(b, i.Downstream)
	case opDownstreamRemoteNoPort:
		return appendAddr(b, i.Downstream)
	case opDownstreamRemotePort:
		return appendPort(b, i.Downstream)
	case opDownstreamLocal:
		return appendAddrPort(b, i.DownstreamLocal)
	case opDownstreamLocalNoPort:
		return appendAddr(b, i.DownstreamLocal)
	case opDownstreamLocalPort:
		return appendPort(b, i.DownstreamLocal)
	case opPeerURISAN:
		return appendStr(b, i.PeerPrincipal)
	case opRequestedServerName:
		return appendStr(b, i.RequestedServer)
	case opRouteName:
		return appendStr(b, i.RouteName)
	case opVirtualHost:
		return appendStr(b, i.VirtualHost)
	case opAttempts:
		return strconv.AppendInt(b, int64(i.Attempts), 10), vNumber
	case opGRPCStatus:
		return appendGRPCStatus(b, c, o.grpcFmt)
	case opConstant:
		return appendStr(b, o.konst)
	}
	return b, vMissing
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// requestHeader reads a request header; pseudo-headers and the headers the connection
// manager copies into stream.Info come from Info, so TCP lines and filters that rewrote
// the request still log what was received.
func requestHeader(b []byte, c *ctx, name string) ([]byte, valType) {
	i := c.info
	switch name {
	case ":method":
		return appendStr(b, i.Method)
	case ":path":
		return appendStr(b, i.Path)
	case ":authority", "Host":
		return appendStr(b, i.Authority)
	case ":scheme":
		if i.Method == "" {
			return b, vMissing
		}
		if i.DownstreamTLS {
			return append(b, "https"...), vString
		}
		return append(b, "http"...), vString
	case ":protocol":
		return b, vMissing
	}
	if c.req == nil { // a TCP stream's log: no request headers
		if name == "X-Request-Id" {
			return appendStr(b, i.RequestID)
		}
		return b, vMissing
	}
	return appendHeader(b, c.req, name)
}

func responseHeader(b []byte, c *ctx, name string) ([]byte, valType) {
	if name == ":status" {
		if c.info.ResponseCode == 0 {
			return b, vMissing
		}
		return strconv.AppendInt(b, int64(c.info.ResponseCode), 10), vString
	}
	b, vt := appendHeader(b, c.resp, name)
	// The router may not stamp x-envoy-upstream-service-time; Info has the same figure.
	if vt == vMissing && name == "X-Envoy-Upstream-Service-Time" && c.info.UpstreamDuration > 0 {
		return strconv.AppendInt(b, c.info.UpstreamDuration.Milliseconds(), 10), vString
	}
	return b, vt
}

// appendHeader appends a header's values, comma-joined when repeated.
func appendHeader(b []byte, h http.Header, name string) ([]byte, valType) {
	vs := h[name]
	if len(vs) == 0 {
		return b, vMissing
	}
	for k, v := range vs {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, v...)
	}
	return b, vString
}

func appendAddrPort(b []byte, ap netip.AddrPort) ([]byte, valType) {
	if !ap.IsValid() {
		return b, vMissing
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).AppendTo(b), vString
}

func appendAddr(b []byte, ap netip.AddrPort) ([]byte, valType) {
	if !ap.IsValid() {
		return b, vMissing
	}
	return ap.Addr().Unmap().AppendTo(b), vString
}

func appendPort(b []byte, ap netip.AddrPort) ([]byte, valType) {
	if !ap.IsValid() {
		return b, vMissing
	}
	return strconv.AppendUint(b, uint64(ap.Port()), 10), vNumber
}

var longFlagNames = map[stream.Flags]string{
	stream.FailedLocalHealthCheck: "FailedLocalHealthCheck", stream.NoHealthyUpstream: "NoHealthyUpstream",
	stream.UpstreamRequestTimeout: "UpstreamRequestTimeout", stream.LocalReset: "LocalReset",
	stream.UpstreamRemoteReset: "UpstreamRemoteReset", stream.UpstreamConnectionFailure: "UpstreamConnectionFailure",
	stream.UpstreamConnectionTermination: "UpstreamConnectionTermination", stream.UpstreamOverflow: "UpstreamOverflow",
	stream.NoRouteFound: "NoRouteFound", stream.DelayInjected: "DelayInjected", stream.FaultInjected: "FaultInjected",
	stream.RateLimited: "RateLimited", stream.UnauthorizedExternalService: "UnauthorizedExternalService",
	stream.RateLimitServiceError: "RateLimitServiceError", stream.DownstreamConnectionTermination: "DownstreamConnectionTermination",
	stream.UpstreamRetryLimitExceeded: "UpstreamRetryLimitExceeded", stream.StreamIdleTimeout: "StreamIdleTimeout",
	stream.InvalidEnvoyRequestHeaders: "InvalidEnvoyRequestHeaders", stream.DownstreamProtocolError: "DownstreamProtocolError",
	stream.UpstreamMaxStreamDurationReached: "UpstreamMaxStreamDurationReached", stream.NoClusterFound: "NoClusterFound",
	stream.OverloadManager: "OverloadManager", stream.DurationTimeout: "DurationTimeout",
	stream.UpstreamProtocolError: "UpstreamProtocolError", stream.NoFilterConfigFound: "NoFilterConfigFound",
	stream.DownstreamRemoteReset: "DownstreamRemoteReset", stream.UnauthorizedRBAC: "RbacAccessDenied",
}

func appendLongFlags(b []byte, f stream.Flags) []byte {
	if f == 0 {
		return append(b, '-')
	}
	first := true
	for bit := stream.Flags(1); bit != 0; bit <<= 1 {
		if f&bit == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		if n, ok := longFlagNames[bit]; ok {
			b = append(b, n...)
		} else {
			b = append(b, bit.String()...)
		}
	}
	return b
}

var grpcCamel = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
	"Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

var grpcSnake = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// grpcCode is the request's gRPC status: stream.Info's, else the response's grpc-status
// header (a trailers-only response); -1 when there is none.
func grpcCode(c *ctx) int {
	s := c.info.GRPCStatus
	if s == "" && c.resp != nil {
		s = c.resp.Get("Grpc-Status")
	}
	if s == "" {
		return -1
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		for k, name := range grpcSnake {
			if strings.EqualFold(s, name) || strings.EqualFold(s, grpcCamel[k]) {
				return k
			}
		}
		return -1
	}
	return n
}

func appendGRPCStatus(b []byte, c *ctx, format uint8) ([]byte, valType) {
	n := grpcCode(c)
	if n < 0 {
		return b, vMissing
	}
	if format == 2 || n >= len(grpcCamel) {
		return strconv.AppendInt(b, int64(n), 10), vNumber
	}
	if format == 1 {
		return append(b, grpcSnake[n]...), vString
	}
	return append(b, grpcCamel[n]...), vString
}

// --- START_TIME formats ---

// timePart is a piece of a compiled START_TIME format: a literal, a Go layout fragment,
// seconds since the epoch, or a fraction of a second with n digits.
type timePart struct {
	lit    string
	layout string
	epoch  bool
	frac   int
}

// defaultTime is Envoy's START_TIME default: UTC, milliseconds, e.g. 2024-05-01T10:00:00.123Z.
var defaultTime = []timePart{{layout: "2006-01-02T15:04:05.000Z"}}

// strftime conversions to Go layouts for the specifiers Envoy formats use.
var strftime = map[byte]string{
	'Y': "2006", 'y': "06", 'm': "01", 'd': "02", 'e': "_2", 'H': "15", 'I': "03", 'M': "04",
	'S': "05", 'p': "PM", 'b': "Jan", 'h': "Jan", 'B': "January", 'a': "Mon", 'A': "Monday",
	'j': "002", 'z': "-0700", 'Z': "MST", 'F': "2006-01-02", 'T': "15:04:05", 'D': "01/02/06",
	'R': "15:04",
}

func compileTime(f string) ([]timePart, error) {
	if f == "" {
		return defaultTime, nil
	}
	var out []timePart
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			out = append(out, timePart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 == len(f) {
			lit.WriteByte(f[i])
			continue
		}
		i++
		c := f[i]
		switch {
		case c == '%':
			lit.WriteByte('%')
		case c == 's':
			flush()
			out = append(out, timePart{epoch: true})
		case c == 'f':
			flush()
			out = append(out, timePart{frac: 9})
		case c >= '1' && c <= '9' && i+1 < len(f) && f[i+1] == 'f':
			flush()
			out = append(out, timePart{frac: int(c - '0')})
			i++
		case c == 'E' && i+1 < len(f) && f[i+1] == 'z':
			flush()
			out = append(out, timePart{layout: "-07:00"})
			i++
		case c == 'E' && i+2 < len(f) && f[i+1] >= '1' && f[i+1] <= '9' && f[i+2] == 'S':
			// %E3S: seconds with 3 fractional digits.
			flush()
			out = append(out, timePart{layout: "05." + strings.Repeat("0", int(f[i+1]-'0'))})
			i += 2
		default:
			l, ok := strftime[c]
			if !ok {
				return nil, fmt.Errorf("unsupported specifier %%%c", c)
			}
			flush()
			out = append(out, timePart{layout: l})
		}
	}
	flush()
	return out, nil
}

func appendTime(b []byte, t time.Time, parts []timePart) []byte {
	t = t.UTC()
	for _, p := range parts {
		switch {
		case p.layout != "":
			b = t.AppendFormat(b, p.layout)
		case p.epoch:
			b = strconv.AppendInt(b, t.Unix(), 10)
		case p.frac > 0:
			ns := t.Nanosecond()
			for k := 9; k > p.frac; k-- {
				ns /= 10
			}
			var tmp [10]byte
			s := strconv.AppendInt(tmp[:0], int64(ns), 10)
			for k := len(s); k < p.frac; k++ {
				b = append(b, '0')
			}
			b = append(b, s...)
		default:
			b = append(b, p.lit...)
		}
	}
	return b
}

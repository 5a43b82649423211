package router

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// gRPC status codes the router uses.
const (
	grpcOK                = 0
	grpcCancelled         = 1
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// GRPCStatusFromHTTP maps the HTTP status of a local reply to the grpc-status of its
// gRPC form, as Envoy does (gRPC's http-grpc-status-mapping: 400 INTERNAL,
// 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504
// UNAVAILABLE, anything else UNKNOWN).
func GRPCStatusFromHTTP(code int) int {
	switch code {
	case http.StatusBadRequest:
		return grpcInternal
	case http.StatusUnauthorized:
		return grpcUnauthenticated
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusNotFound:
		return grpcUnimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return grpcUnavailable
	}
	return grpcUnknown
}

// IsGRPC reports whether the request is gRPC (content-type application/grpc,
// application/grpc+proto, ...).
func IsGRPC(r *http.Request) bool {
	return isGRPCContentType(r.Header.Get("Content-Type"))
}

// LocalReply answers the exchange from the proxy, as filter.Exchange.LocalReply does,
// except that a gRPC request gets a trailers-only gRPC response (HTTP 200 with
// grpc-status mapped from code and grpc-message from body), as Envoy's local replies do.
// Filters that answer gRPC clients may use it too.
func LocalReply(x *filter.Exchange, code int, body string, flag stream.Flags, details string) {
	if x.R != nil && IsGRPC(x.R) {
		GRPCLocalReply(x, GRPCStatusFromHTTP(code), body, flag, details)
		return
	}
	x.LocalReply(code, body, flag, details)
	x.Info.ResponseCode = code
}

// GRPCLocalReply writes a trailers-only gRPC response with the given status.
func GRPCLocalReply(x *filter.Exchange, grpcStatus int, message string, flag stream.Flags, details string) {
	x.Info.SetFlag(flag)
	x.Info.ResponseDetails = details
	x.Info.ResponseCode = http.StatusOK
	x.Info.GRPCStatus = strconv.Itoa(grpcStatus)
	h := x.W.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/grpc")
	h.Set(hdrGRPCStatus, x.Info.GRPCStatus)
	if message != "" {
		h.Set(hdrGRPCMessage, encodeGRPCMessage(message))
	}
	x.W.WriteHeader(http.StatusOK)
}

// encodeGRPCMessage percent-encodes grpc-message as the gRPC HTTP/2 protocol requires
// (printable ASCII except '%' stays as is).
func encodeGRPCMessage(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// parseGRPCTimeout parses a grpc-timeout header ("100m", "5S": up to 8 digits and a unit
// of H, M, S, m, u or n).
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

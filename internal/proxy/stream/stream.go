// Package stream holds what the proxy knows about one downstream request or connection
// while it is served: timing, addresses, the route and upstream chosen, and Envoy's
// response flags. The HTTP connection manager, the router, the filters, the TCP proxy and
// the access log all read and write one *Info; nothing here allocates per request beyond it.
package stream

import (
	"net/netip"
	"strings"
	"time"
)

// Flags are Envoy's response flags (%RESPONSE_FLAGS%): why a request ended the way it did.
// The short names are Envoy's, so operators can read weft's access log as they read Envoy's.
type Flags uint32

const (
	FailedLocalHealthCheck           Flags = 1 << iota // LH
	NoHealthyUpstream                                  // UH
	UpstreamRequestTimeout                             // UT
	LocalReset                                         // LR
	UpstreamRemoteReset                                // UR
	UpstreamConnectionFailure                          // UF
	UpstreamConnectionTermination                      // UC
	UpstreamOverflow                                   // UO
	NoRouteFound                                       // NR
	DelayInjected                                      // DI
	FaultInjected                                      // FI
	RateLimited                                        // RL
	UnauthorizedExternalService                        // UAEX
	RateLimitServiceError                              // RLSE
	DownstreamConnectionTermination                    // DC
	UpstreamRetryLimitExceeded                         // URX
	StreamIdleTimeout                                  // SI
	InvalidEnvoyRequestHeaders                         // IH
	DownstreamProtocolError                            // DPE
	UpstreamMaxStreamDurationReached                   // UMSDR
	NoClusterFound                                     // NC
	OverloadManager                                    // OM
	DurationTimeout                                    // DT
	UpstreamProtocolError                              // UPE
	NoFilterConfigFound                                // NFCF
	DownstreamRemoteReset                              // DR
	UnauthorizedRBAC                                   // RBAC (Envoy prints "RBAC" for rbac denials)
)

var flagNames = [...]string{
	"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
	"DC", "URX", "SI", "IH", "DPE", "UMSDR", "NC", "OM", "DT", "UPE", "NFCF", "DR", "RBAC",
}

// String renders the flags as Envoy does: comma-separated short names, "-" when none.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	var b strings.Builder
	for i, name := range flagNames {
		if f&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name)
	}
	return b.String()
}

// Has reports whether every flag of g is set in f.
func (f Flags) Has(g Flags) bool { return f&g == g }

// Info describes one downstream request (HTTP) or connection (TCP).
type Info struct {
	Start time.Time
	// Duration is set when the exchange ends.
	Duration time.Duration

	Listener         string
	Downstream       netip.AddrPort // the peer's address
	DownstreamLocal  netip.AddrPort // the address the peer dialled (original destination when captured)
	DownstreamTLS    bool
	PeerPrincipal    string // URI SAN of the peer certificate, if any (spiffe://...)
	RequestedServer  string // SNI
	Protocol         string // "HTTP/1.1", "HTTP/2", "TCP"
	Method           string
	Authority        string
	Path             string
	RequestID        string
	RouteName        string
	VirtualHost      string
	Cluster          string
	UpstreamHost     string // address of the last upstream host tried
	UpstreamFailure  string // %UPSTREAM_TRANSPORT_FAILURE_REASON%
	ResponseCode     int
	ResponseDetails  string // %RESPONSE_CODE_DETAILS%, e.g. "via_upstream", "route_not_found"
	GRPCStatus       string
	Flags            Flags
	Attempts         int
	BytesReceived    int64
	BytesSent        int64
	UpstreamDuration time.Duration // time to the upstream's response headers
	// BodyHeld is set while an upstream transport may still read the request's body:
	// from the first attempt that sends it until the transport says it let go of the
	// request (the router's release). A server reuses the exchange's storage, the
	// request's body included, only when it is not set.
	BodyHeld bool
}

// SetFlag adds a response flag.
func (i *Info) SetFlag(f Flags) { i.Flags |= f }

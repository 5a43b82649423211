// Package listener accepts downstream connections: it binds each Listener's address,
// runs the listener filters (original_dst, tls_inspector, http_inspector), picks the
// filter chain by Envoy's filter_chain_match rules (destination port and IP, SNI,
// transport protocol, ALPN, source), terminates TLS when the chain has a transport
// socket, and hands the connection to the chain's network filter (HTTP connection
// manager or TCP proxy). The sidecar's capture listeners (15001, 15006) read the
// original destination (SO_ORIGINAL_DST) and dispatch to the listener bound to it, or
// to their own chains (passthrough) when the mesh does not know it.
package listener

import (
	"context"
	"net"
	"net/netip"

	"google.golang.org/protobuf/types/known/anypb"
)

// Conn is an accepted connection after listener filters and TLS termination.
type Conn struct {
	net.Conn                     // plain, or the *tls.Conn after the handshake
	Listener      string         // name of the listener whose chain serves it
	Chain         string         // filter chain name
	Remote        netip.AddrPort // downstream peer
	Local         netip.AddrPort // destination: original destination when captured
	TLS           bool           // TLS terminated by the proxy
	SNI           string         // server name (inspected, or from the handshake)
	ALPN          string         // negotiated (TLS) or detected ("h2", "http/1.1") protocol; "" unknown
	PeerPrincipal string         // peer certificate's URI SAN (mTLS)
	// Peeked holds bytes already read by inspection that the network filter must see
	// first; Conn's Read returns them before reading the socket, so most users can
	// ignore it.
}

// NetworkFilter serves connections handed over by a filter chain. It is built when the
// chain's config is compiled and is immutable; a changed chain gets a new NetworkFilter
// and the old one is drained.
type NetworkFilter interface {
	ServeConn(ctx context.Context, c *Conn)
	// Drain stops taking new requests on existing connections (HTTP: Connection: close /
	// GOAWAY) and returns when they are gone or ctx ends.
	Drain(ctx context.Context) error
}

// HandOff is implemented by network filters that can move their connections to the
// filter replacing them, when an update changed only the filter's own config (same
// listener, filter chain name, filter_chain_match and transport socket): the next
// request on such a connection is served by the new config at once, instead of by the
// old one while it drains. The listener manager calls HandOff before Drain.
type HandOff interface {
	HandOff(next NetworkFilter) bool
}

// NetworkFilterFactory compiles a terminal network filter (the last in a chain's
// filters: envoy.filters.network.http_connection_manager or tcp_proxy) from its
// typed_config.
type NetworkFilterFactory interface {
	ConfigType() string // full proto message name
	Build(typed *anypb.Any, chain ChainInfo) (NetworkFilter, error)
}

// ChainInfo is what a network filter may know about its chain when it is built.
type ChainInfo struct {
	Listener string
	Chain    string
	Inbound  bool // traffic_direction INBOUND
}

// API the xDS glue codes against. Keep these signatures; add what you need beside them.
//
//	type Manager struct{ ... }
//	func NewManager(opts Options) *Manager
//	type Options struct {
//		Secrets  *tlsctx.Store
//		Stats    *stats.Store
//		Log      *slog.Logger
//		Filters  []NetworkFilterFactory // by ConfigType
//	}
//	// Update replaces the whole set of listeners (LDS is state of the world): binds new
//	// addresses, swaps chains of changed listeners atomically (draining the old chains'
//	// connections in the background), closes removed ones. It validates everything
//	// first and changes nothing on error (the error names the listener and field).
//	func (m *Manager) Update(listeners []*listenerv3.Listener) error
//	func (m *Manager) Addr(name string) net.Addr   // bound address (port 0 resolved), for tests
//	func (m *Manager) SecretNames() []string
//	func (m *Manager) Drain(ctx context.Context, inboundOnly bool) error // /drain_listeners
//	func (m *Manager) Close() error

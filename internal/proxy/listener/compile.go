package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
)

// Type names of the listener filters and transport sockets this package implements.
const (
	typeTLSInspector  = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
	typeHTTPInspector = "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
	typeOriginalDst   = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
	typeDownstreamTLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	typeRawBuffer     = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
)

// Listener filters by their well-known names, for configs without typed_config.
var listenerFilterNames = map[string]string{
	"envoy.filters.listener.tls_inspector":  typeTLSInspector,
	"envoy.filters.listener.http_inspector": typeHTTPInspector,
	"envoy.filters.listener.original_dst":   typeOriginalDst,
	"envoy.listener.tls_inspector":          typeTLSInspector,
	"envoy.listener.http_inspector":         typeHTTPInspector,
	"envoy.listener.original_dst":           typeOriginalDst,
}

// Non-terminal network filters that only feed Istio's telemetry (peer metadata
// exchange, Istio's stats plugin). Ignoring them changes no traffic or policy decision,
// so a config written by istiod still loads; anything else unknown is rejected.
var ignorableFilterTypes = map[string]bool{
	"envoy.tcp.metadataexchange.config.MetadataExchange": true,
	"stats.PluginConfig": true,
}

var ignorableTypedStructNames = map[string]bool{"istio.metadata_exchange": true, "istio.stats": true}

const (
	defaultListenerFiltersTimeout = 15 * time.Second // Envoy's listener_filters_timeout
	defaultHandshakeTimeout       = 15 * time.Second // when transport_socket_connect_timeout is unset
)

type lfKind uint8

const (
	lfOriginalDst lfKind = iota
	lfTLSInspector
	lfHTTPInspector
)

type listenerFilter struct {
	kind     lfKind
	disabled *portPredicate // filter_disabled; nil: always on
}

// portPredicate is a compiled ListenerFilterChainMatchPredicate.
type portPredicate struct {
	op     byte // '|' or, '&' and, '!' not, '*' any, 'r' destination port range
	subs   []*portPredicate
	lo, hi int32 // [lo, hi)
}

func (p *portPredicate) eval(port uint16) bool {
	switch p.op {
	case '|':
		for _, s := range p.subs {
			if s.eval(port) {
				return true
			}
		}
		return false
	case '&':
		for _, s := range p.subs {
			if !s.eval(port) {
				return false
			}
		}
		return true
	case '!':
		return !p.subs[0].eval(port)
	case '*':
		return true
	default:
		return int32(port) >= p.lo && int32(port) < p.hi
	}
}

func compilePredicate(m *listenerv3.ListenerFilterChainMatchPredicate, path string, depth int) (*portPredicate, error) {
	if depth > 16 {
		return nil, fmt.Errorf("%s: nested too deep", path)
	}
	switch r := m.GetRule().(type) {
	case *listenerv3.ListenerFilterChainMatchPredicate_OrMatch, *listenerv3.ListenerFilterChainMatchPredicate_AndMatch:
		p := &portPredicate{op: '|'}
		rules, field := m.GetOrMatch().GetRules(), "or_match"
		if _, ok := r.(*listenerv3.ListenerFilterChainMatchPredicate_AndMatch); ok {
			p.op, rules, field = '&', m.GetAndMatch().GetRules(), "and_match"
		}
		if len(rules) < 2 {
			return nil, fmt.Errorf("%s.%s.rules: needs at least 2 rules", path, field)
		}
		for i, sub := range rules {
			s, err := compilePredicate(sub, fmt.Sprintf("%s.%s.rules[%d]", path, field, i), depth+1)
			if err != nil {
				return nil, err
			}
			p.subs = append(p.subs, s)
		}
		return p, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_NotMatch:
		s, err := compilePredicate(r.NotMatch, path+".not_match", depth+1)
		if err != nil {
			return nil, err
		}
		return &portPredicate{op: '!', subs: []*portPredicate{s}}, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_AnyMatch:
		if !r.AnyMatch {
			return nil, fmt.Errorf("%s.any_match: must be true", path)
		}
		return &portPredicate{op: '*'}, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if lo < 0 || hi > 65536 || lo >= hi {
			return nil, fmt.Errorf("%s.destination_port_range: [%d, %d) is not a port range", path, lo, hi)
		}
		return &portPredicate{op: 'r', lo: lo, hi: hi}, nil
	default:
		return nil, fmt.Errorf("%s: rule must be set", path)
	}
}

// compiledListener is one Listener ready to serve: immutable once built.
type compiledListener struct {
	name              string
	addr              netip.AddrPort // configured (port 0: any free port)
	bind              bool
	useOriginalDst    bool
	inbound           bool
	filters           []listenerFilter
	timeout           time.Duration // 0: none
	continueOnTimeout bool
	root              *matchNode
	defaultChain      *chain
	chains            []*chain // every chain incl. the default one
	stats             *listenerStats
	secretNames       []string
}

// chain is a compiled FilterChain.
type chain struct {
	name             string
	tls              *tls.Config // nil: plaintext
	handshakeTimeout time.Duration
	filter           NetworkFilter
	key              string // identity of the network filter, for reuse across updates
}

type listenerStats struct {
	cxTotal, cxDestroy, noMatch, preTimeout, sslErr, sslHandshake *stats.Counter
	cxActive                                                      *stats.Gauge
}

func newListenerStats(s *stats.Store, prefix string) *listenerStats {
	tag := stats.Tag{Key: "envoy_listener_address", Value: prefix}
	return &listenerStats{
		cxTotal:      s.Counter("listener.downstream_cx_total", tag),
		cxDestroy:    s.Counter("listener.downstream_cx_destroy", tag),
		cxActive:     s.Gauge("listener.downstream_cx_active", tag),
		noMatch:      s.Counter("listener.no_filter_chain_match", tag),
		preTimeout:   s.Counter("listener.downstream_pre_cx_timeout", tag),
		sslErr:       s.Counter("listener.ssl.connection_error", tag),
		sslHandshake: s.Counter("listener.ssl.handshake", tag),
	}
}

// statName is Envoy's listener stat scope: stat_prefix, else the address as
// "0.0.0.0_15001". A port-0 address (tests) is not unique, so the name is used.
func statName(l *listenerv3.Listener, addr netip.AddrPort) string {
	if p := l.GetStatPrefix(); p != "" {
		return p
	}
	if addr.Port() == 0 {
		return l.GetName()
	}
	return addr.Addr().String() + "_" + fmt.Sprint(addr.Port())
}

// compiler builds listeners for one Update; it reuses network filters of the current
// generation whose config is unchanged and remembers the ones it built, so they can be
// drained when the update is abandoned.
type compiler struct {
	m     *Manager
	reuse map[string]NetworkFilter
	built map[string]NetworkFilter // new this update
	used  map[string]NetworkFilter // reused or built, by key
	// places maps a filter's key to where its chain sits (listener, chain name,
	// match, transport socket).
	places map[string]string
}

func (cp *compiler) listener(l *listenerv3.Listener) (*compiledListener, []error) {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("listener %q: "+format, append([]any{l.GetName()}, args...)...))
	}
	cl := &compiledListener{name: l.GetName(), bind: true}
	if l.GetName() == "" {
		fail("name: must not be empty")
	}
	addr, err := listenerAddress(l.GetAddress())
	if err != nil {
		fail("address%v", err)
	}
	cl.addr = addr
	switch {
	case l.GetApiListener() != nil:
		fail("api_listener: not supported")
	case l.GetInternalListener() != nil:
		fail("internal_listener: not supported")
	case l.GetUdpListenerConfig() != nil:
		fail("udp_listener_config: not supported")
	case len(l.GetAdditionalAddresses()) > 0:
		fail("additional_addresses: not supported")
	case l.GetFilterChainMatcher() != nil:
		fail("filter_chain_matcher: not supported (use filter_chain_match)")
	case l.GetFcdsConfig() != nil:
		fail("fcds_config: not supported")
	case l.GetTransparent().GetValue():
		fail("transparent: not supported (TPROXY)")
	}
	if b := l.GetBindToPort(); b != nil {
		cl.bind = b.GetValue()
	}
	cl.useOriginalDst = l.GetUseOriginalDst().GetValue()
	cl.inbound = l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND
	cl.timeout = defaultListenerFiltersTimeout
	if d := l.GetListenerFiltersTimeout(); d != nil {
		cl.timeout = d.AsDuration()
	}
	cl.continueOnTimeout = l.GetContinueOnListenerFiltersTimeout()

	for i, lf := range l.GetListenerFilters() {
		path := fmt.Sprintf("listener_filters[%d]", i)
		if lf.GetConfigDiscovery() != nil {
			fail("%s.config_discovery: not supported", path)
			continue
		}
		typ := listenerFilterNames[lf.GetName()]
		if tc := lf.GetTypedConfig(); tc != nil {
			typ = typeName(tc)
		}
		f := listenerFilter{}
		switch typ {
		case typeOriginalDst:
			f.kind = lfOriginalDst
		case typeTLSInspector:
			f.kind = lfTLSInspector
		case typeHTTPInspector:
			f.kind = lfHTTPInspector
		default:
			fail("%s: unknown listener filter %q (type %q)", path, lf.GetName(), typ)
			continue
		}
		if d := lf.GetFilterDisabled(); d != nil {
			p, err := compilePredicate(d, path+".filter_disabled", 0)
			if err != nil {
				fail("%v", err)
				continue
			}
			f.disabled = p
		}
		cl.filters = append(cl.filters, f)
	}

	if cl.useOriginalDst && !slices.ContainsFunc(cl.filters, func(f listenerFilter) bool { return f.kind == lfOriginalDst }) {
		// Envoy adds the original_dst listener filter itself when use_original_dst is
		// set, ahead of the configured ones.
		cl.filters = append([]listenerFilter{{kind: lfOriginalDst}}, cl.filters...)
	}

	info := ChainInfo{Listener: l.GetName(), Inbound: cl.inbound}
	cl.root = &matchNode{}
	for i, fc := range l.GetFilterChains() {
		path := fmt.Sprintf("filter_chains[%d]", i)
		ch, err := cp.chain(fc, info, path)
		if err != nil {
			fail("%v", err)
			continue
		}
		m, err := compileMatch(fc.GetFilterChainMatch())
		if err != nil {
			fail("%s.filter_chain_match.%v", path, err)
			continue
		}
		if err := cl.root.insert(0, m, ch, i); err != nil {
			fail("%v", err)
			continue
		}
		cl.chains = append(cl.chains, ch)
		cl.secretNames = append(cl.secretNames, chainSecretNames(fc)...)
	}
	if fc := l.GetDefaultFilterChain(); fc != nil {
		ch, err := cp.chain(fc, info, "default_filter_chain")
		if err != nil {
			fail("%v", err)
		} else {
			cl.defaultChain = ch
			cl.chains = append(cl.chains, ch)
			cl.secretNames = append(cl.secretNames, chainSecretNames(fc)...)
		}
	}
	if len(l.GetFilterChains()) == 0 && l.GetDefaultFilterChain() == nil {
		fail("filter_chains: at least one filter chain or default_filter_chain is required")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	cl.stats = newListenerStats(cp.m.opts.Stats, statName(l, addr))
	return cl, nil
}

func chainSecretNames(fc *listenerv3.FilterChain) []string {
	tc := fc.GetTransportSocket().GetTypedConfig()
	if tc == nil || typeName(tc) != typeDownstreamTLS {
		return nil
	}
	var d tlsv3.DownstreamTlsContext
	if err := tc.UnmarshalTo(&d); err != nil {
		return nil
	}
	return tlsctx.SecretNames(d.GetCommonTlsContext())
}

// listenerAddress accepts a TCP socket_address with a numeric IP and port.
func listenerAddress(a *corev3.Address) (netip.AddrPort, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		if a.GetPipe() != nil || a.GetEnvoyInternalAddress() != nil {
			return netip.AddrPort{}, errors.New(": only socket_address is supported")
		}
		return netip.AddrPort{}, errors.New(".socket_address: must be set")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return netip.AddrPort{}, errors.New(".socket_address.protocol: only TCP is supported")
	}
	if sa.GetResolverName() != "" {
		return netip.AddrPort{}, errors.New(".socket_address.resolver_name: not supported")
	}
	if sa.GetNamedPort() != "" {
		return netip.AddrPort{}, errors.New(".socket_address.named_port: not supported")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf(".socket_address.address: %w", err)
	}
	if sa.GetPortValue() > 65535 {
		return netip.AddrPort{}, fmt.Errorf(".socket_address.port_value: %d out of range", sa.GetPortValue())
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), nil
}

// typeName is the full message name of an Any ("envoy.config...").
func typeName(a *anypb.Any) string {
	u := a.GetTypeUrl()
	if i := strings.LastIndexByte(u, '/'); i >= 0 {
		return u[i+1:]
	}
	return u
}

func (cp *compiler) chain(fc *listenerv3.FilterChain, info ChainInfo, path string) (*chain, error) {
	if fc.GetUseProxyProto().GetValue() {
		return nil, fmt.Errorf("%s.use_proxy_proto: not supported", path)
	}
	info.Chain = fc.GetName()
	ch := &chain{name: fc.GetName(), handshakeTimeout: defaultHandshakeTimeout}
	if d := fc.GetTransportSocketConnectTimeout(); d != nil && d.AsDuration() > 0 {
		ch.handshakeTimeout = d.AsDuration()
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		tc := ts.GetTypedConfig()
		switch {
		case tc == nil && ts.GetName() == "envoy.transport_sockets.raw_buffer":
		case tc == nil:
			return nil, fmt.Errorf("%s.transport_socket.typed_config: must be set", path)
		case typeName(tc) == typeRawBuffer:
		case typeName(tc) == typeDownstreamTLS:
			var d tlsv3.DownstreamTlsContext
			if err := tc.UnmarshalTo(&d); err != nil {
				return nil, fmt.Errorf("%s.transport_socket.typed_config: %w", path, err)
			}
			cfg, err := tlsctx.Server(&d, cp.m.opts.Secrets)
			if err != nil {
				return nil, fmt.Errorf("%s.transport_socket: %w", path, err)
			}
			ch.tls = cfg
		default:
			return nil, fmt.Errorf("%s.transport_socket: unsupported type %q", path, typeName(tc))
		}
	}
	f, key, err := cp.networkFilters(fc.GetFilters(), info, path)
	if err != nil {
		return nil, err
	}
	ch.filter, ch.key = f, key
	// Where the chain sits: a filter replaced at the same place may take over its
	// predecessor's connections (HandOff).
	var place strings.Builder
	fmt.Fprintf(&place, "%q|%q|", info.Listener, fc.GetName())
	mo := proto.MarshalOptions{Deterministic: true}
	m1, err1 := mo.Marshal(fc.GetFilterChainMatch())
	m2, err2 := mo.Marshal(fc.GetTransportSocket())
	if err1 == nil && err2 == nil {
		place.Write(m1)
		place.WriteByte('|')
		place.Write(m2)
		cp.places[key] = place.String()
	}
	return ch, nil
}

// networkFilters builds the chain's filters: the last is terminal (a
// NetworkFilterFactory), the ones before wrap it from the inside out.
func (cp *compiler) networkFilters(fs []*listenerv3.Filter, info ChainInfo, path string) (NetworkFilter, string, error) {
	if len(fs) == 0 {
		return nil, "", fmt.Errorf("%s.filters: a terminal network filter is required", path)
	}
	// The key identifies the built filter: its config and what it was told of the chain.
	var key strings.Builder
	fmt.Fprintf(&key, "%q|%q|%v", info.Listener, info.Chain, info.Inbound)
	mo := proto.MarshalOptions{Deterministic: true}
	for _, f := range fs {
		b, err := mo.Marshal(f)
		if err != nil {
			return nil, "", fmt.Errorf("%s.filters: %w", path, err)
		}
		key.WriteByte('|')
		key.Write(b)
	}
	k := key.String()
	if f, ok := cp.used[k]; ok {
		return f, k, nil
	}
	if f, ok := cp.reuse[k]; ok {
		cp.used[k] = f
		return f, k, nil
	}

	last := len(fs) - 1
	for i, f := range fs {
		if f.GetConfigDiscovery() != nil {
			return nil, "", fmt.Errorf("%s.filters[%d].config_discovery: not supported", path, i)
		}
		if f.GetTypedConfig() == nil {
			return nil, "", fmt.Errorf("%s.filters[%d] %q: typed_config must be set", path, i, f.GetName())
		}
	}
	tc := fs[last].GetTypedConfig()
	fac := cp.m.terminal[typeName(tc)]
	if fac == nil {
		return nil, "", fmt.Errorf("%s.filters[%d] %q: unknown terminal network filter type %q", path, last, fs[last].GetName(), typeName(tc))
	}
	// Validate the wrappers before building anything.
	for i := last - 1; i >= 0; i-- {
		if cp.m.wrappers[typeName(fs[i].GetTypedConfig())] == nil && !ignorable(fs[i]) {
			return nil, "", fmt.Errorf("%s.filters[%d] %q: unknown network filter type %q", path, i, fs[i].GetName(), typeName(fs[i].GetTypedConfig()))
		}
	}
	nf, err := fac.Build(tc, info)
	if err != nil {
		return nil, "", fmt.Errorf("%s.filters[%d] %q: %w", path, last, fs[last].GetName(), err)
	}
	for i := last - 1; i >= 0; i-- {
		w := cp.m.wrappers[typeName(fs[i].GetTypedConfig())]
		if w == nil {
			cp.m.log.Debug("listener: ignoring telemetry-only network filter", "listener", info.Listener, "filter", fs[i].GetName())
			continue
		}
		wrapped, err := w.Wrap(fs[i].GetTypedConfig(), info, nf)
		if err != nil {
			cp.built[k+"#partial"] = nf // drained with the abandoned update
			return nil, "", fmt.Errorf("%s.filters[%d] %q: %w", path, i, fs[i].GetName(), err)
		}
		nf = wrapped
	}
	cp.built[k] = nf
	cp.used[k] = nf
	return nf, k, nil
}

func ignorable(f *listenerv3.Filter) bool {
	t := typeName(f.GetTypedConfig())
	if ignorableFilterTypes[t] {
		return true
	}
	return (t == "udpa.type.v1.TypedStruct" || t == "xds.type.v3.TypedStruct") && ignorableTypedStructNames[f.GetName()]
}

func sortedUnique(in []string) []string {
	sort.Strings(in)
	return slices.Compact(in)
}

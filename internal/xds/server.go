// Package xds is the control plane's xDS transport: the ADS server that `weft control`
// runs for proxies (weft-proxy, Envoy) and proxyless gRPC clients. It sits between the
// per-type generators (internal/xds/gen, behind the Generator interface) and the wire:
// it learns each proxy's identity from its first request (node.Parse), asks the
// Generator for that proxy's whole configuration, encodes it with per-type content-hash
// versions, and lets go-control-plane's server speak State-of-the-World and Delta xDS
// from it. Pushes (config or registry changes) are debounced and regenerate every
// connected proxy on a bounded worker pool.
//
// A mesh of thousands of services and proxies is mostly the same resources sent to
// many proxies, so nothing is done per proxy that can be done per resource: each
// resource is encoded and hashed once (encodingMemo; the generators hand the same
// resource objects to every proxy of a class and across pushes), a type whose
// resources are the ones sent before costs a pointer comparison (buildSnapshotFrom),
// the SotW cache (sotwCache) answers from lists of shared encodings, and the gRPC codec
// writes a response from those encodings without copying them (responseCodec). Delta
// streams are served by go-control-plane's snapshot cache. It also keeps
// per-proxy sync status (sent / ACKed / NACKed per type) for `weft proxy-status`, the
// /debug handlers and Prometheus metrics.
package xds

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/weft-mesh/weft/internal/node"
)

// Resources is one proxy's complete configuration, by type URL (resource/v3 type
// names), each list sorted by resource name. The server owns what a Generator returns:
// the resources are marshalled lazily for every stream, so they must not be changed
// after Generate returns.
type Resources map[string][]types.Resource

// Generator computes a proxy's configuration from the current mesh state. It must be a
// pure function of (state, proxy): same input, same bytes. Generate is called
// concurrently for different proxies (never concurrently for the same proxy).
type Generator interface {
	Generate(p *node.Proxy) (Resources, error)
}

// GeneratorFunc adapts a function to Generator.
type GeneratorFunc func(p *node.Proxy) (Resources, error)

// Generate calls f(p).
func (f GeneratorFunc) Generate(p *node.Proxy) (Resources, error) { return f(p) }

// Defaults of Options, Istio's PILOT_DEBOUNCE_AFTER and PILOT_DEBOUNCE_MAX.
const (
	DefaultDebounce    = 100 * time.Millisecond
	DefaultDebounceMax = time.Second
	// DefaultDisconnectGrace keeps a disconnected proxy's snapshot this long, so a
	// proxy that reconnects (control plane restart of its connection, MaxConnectionAge)
	// is answered from the cache at once.
	DefaultDisconnectGrace = 30 * time.Second
)

// Options configure a Server.
type Options struct {
	Generator Generator
	// Debounce: pushes wait this long after the last Push call (default 100ms) ...
	Debounce time.Duration
	// DebounceMax: ... but no longer than this after the first one (default 1s).
	DebounceMax time.Duration
	// DisconnectGrace: how long a proxy's snapshot outlives its last stream.
	DisconnectGrace time.Duration
	// Workers bounds concurrent Generate calls (default GOMAXPROCS).
	Workers int
	Log     *slog.Logger
}

// Server is the ADS server. Create it with New, attach it to a grpc.Server with
// Register, call Push when the mesh state changes, Close when done.
type Server struct {
	opts      Options
	log       *slog.Logger
	cache     *sotwCache
	xds       serverv3.Server
	ctx       context.Context
	cancel    context.CancelFunc
	sem       chan struct{} // bounds concurrent Generate calls
	metrics   *metrics
	encodings *encodingMemo // resource encodings shared by proxies and responses

	mu      sync.Mutex
	proxies map[string]*proxyState // by node id, while connected or within the grace period
	streams map[streamKey]*streamState

	pushMu     sync.Mutex
	pending    pendingPush
	pushNotify chan struct{}
	loopDone   chan struct{}
	closeOnce  sync.Once
}

// New creates a Server and starts its push loop.
func New(opts Options) *Server {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.DebounceMax <= 0 {
		opts.DebounceMax = DefaultDebounceMax
	}
	if opts.DebounceMax < opts.Debounce {
		opts.DebounceMax = opts.Debounce
	}
	if opts.DisconnectGrace <= 0 {
		opts.DisconnectGrace = DefaultDisconnectGrace
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	log := opts.Log.With("component", "xds")
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:       opts,
		log:        log,
		ctx:        ctx,
		cancel:     cancel,
		sem:        make(chan struct{}, opts.Workers),
		metrics:    newMetrics(),
		encodings:  newEncodingMemo(),
		proxies:    map[string]*proxyState{},
		streams:    map[streamKey]*streamState{},
		pushNotify: make(chan struct{}, 1),
		loopDone:   make(chan struct{}),
	}
	// The cache answers a request for named resources with the named subset of the
	// snapshot (go-control-plane's ads=false): with ads=true it would hold back any
	// response whose request does not name every resource of the type in the snapshot,
	// which never happens for proxyless gRPC clients (they ask for one listener by name).
	s.cache = newSotwCache(gcpLogger{log})
	s.xds = serverv3.NewServer(ctx, s.cache, &callbacks{s}, withLogger(gcpLogger{log}))
	go s.pushLoop()
	return s
}

// Register attaches the ADS service and the per-type services (LDS, RDS, CDS, EDS,
// SDS, for Envoys not configured for ADS) to g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	secretservice.RegisterSecretDiscoveryServiceServer(g, s.xds)
}

// Metrics is the registry holding the server's Prometheus metrics (Istio's names).
func (s *Server) Metrics() *prometheus.Registry { return s.metrics.reg }

// Close stops the push loop and ends every open stream. The grpc.Server is the
// caller's to stop.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.loopDone
		s.mu.Lock()
		for _, ps := range s.proxies {
			if ps.expiry != nil {
				ps.expiry.Stop()
			}
		}
		s.mu.Unlock()
	})
}

// GRPCServerOptions are the grpc.Server options the xDS port should use.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Ping an idle connection every 30s and drop it after 10s without an answer,
			// so a proxy that vanished (node lost, NAT dropped) is noticed and its
			// streams close instead of lingering as "connected".
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
			// Make proxies reconnect every 30 minutes so that, with several control
			// plane replicas, connections rebalance (Istio's MaxServerConnectionAge).
			// The grace lets a stream finish a response; the proxy reconnects at once
			// and is answered from the snapshot kept for DisconnectGrace.
			MaxConnectionAge:      30 * time.Minute,
			MaxConnectionAgeGrace: 10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// Envoy and grpc-go clients may send HTTP/2 keepalive pings on their xDS
			// connection, also while no stream is open; refusing them would GOAWAY the
			// connection with ENHANCE_YOUR_CALM.
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		// One ADS stream per proxy, or five per-type streams: a control plane carries
		// many thousands of streams on few connections (behind a load balancer).
		grpc.MaxConcurrentStreams(100000),
		// Large snapshots (big meshes' CDS/EDS) are sent faster with bigger windows.
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(1 << 20),
		// Fewer, larger writes of big responses (one syscall per 32 KB by default, most
		// of a push's CPU); the buffer is taken per write burst and released after each
		// flush, not held by every mostly idle proxy connection.
		grpc.WriteBufferSize(256 << 10),
		grpc.SharedWriteBuffer(true),
		// Requests are small (subscriptions, ACKs): an 8 KB read buffer per connection
		// instead of 32 KB (24 MB less for 1,000 proxies).
		grpc.ReadBufferSize(8 << 10),
		// Responses written from the resources' shared encodings (see responseCodec).
		grpc.ForceServerCodecV2(newResponseCodec()),
	}
}

// proxyState is one proxy (node id) the server knows about.
type proxyState struct {
	id string
	// genMu serializes generation + SetSnapshot for this proxy, so an older state never
	// overwrites a newer one. Lock order: Server.sem, then genMu, then Server.mu.
	genMu sync.Mutex

	// Fields below are guarded by Server.mu.
	proxy       *node.Proxy
	streams     int
	connectedAt time.Time
	expiry      *time.Timer
	resources   Resources         // last generated, for config_dump
	versions    map[string]string // per type URL, of resources
	snap        *proxySnapshot    // made of resources
	perType     map[string]*TypeStatus
	genErrors   int
	lastGenErr  string
}

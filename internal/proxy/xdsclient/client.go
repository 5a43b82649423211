// Package xdsclient is weft-proxy's Aggregated Discovery Service client: it holds one
// Envoy xDS v3 ADS stream to the control plane (State-of-the-World or Delta), keeps the
// last accepted state of every resource type, hands complete per-type states to a Handler
// (the proxy glue that compiles listeners, clusters, routes, endpoints and secrets), and
// ACKs or NACKs each response. It sits between the control plane's ADS server and the
// proxy's config compiler.
//
// When the stream breaks nothing is cleared: the Handler keeps serving the last good
// config while the client reconnects with jittered exponential backoff, and the re-sent
// requests carry what the client already holds (version_info for SotW,
// initial_resource_versions for Delta) so the server need not resend it.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the resource types the proxy consumes.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// wildcardTypes are subscribed at stream start with no names (xDS "wildcard"), in the
// order Envoy requests them: CDS before LDS, so clusters exist before listeners use them.
var wildcardTypes = []string{ClusterType, ListenerType}

// namedOrder is the order named types are re-requested on a new stream: endpoints and
// secrets before routes, as Envoy warms clusters before listeners. Types not listed
// follow in lexical order.
var namedOrder = []string{EndpointType, SecretType, RouteType}

const (
	defaultBackoffBase = 500 * time.Millisecond
	defaultBackoffMax  = 30 * time.Second
)

// Config configures a Client.
type Config struct {
	// Target is the control plane's gRPC target, e.g. "127.0.0.1:15010".
	Target string
	// DialOpts are passed to grpc.NewClient; they must carry transport credentials
	// (insecure or TLS).
	DialOpts []grpc.DialOption
	// Node identifies this proxy; sent on the first request of each type on each stream.
	Node *corev3.Node
	// Delta selects DeltaAggregatedResources instead of StreamAggregatedResources.
	Delta bool
	// Log receives ACK/NACK and connection events; nil means slog.Default().
	Log *slog.Logger
	// BackoffBase and BackoffMax bound the jittered exponential reconnect delay
	// (defaults 500ms and 30s). BackoffBase also paces repeated NACKs of one version.
	BackoffBase, BackoffMax time.Duration
}

// Handler applies the complete current state of one resource type. Returning an error
// NACKs the update (error_detail carries the message) and the client keeps its previous
// state for that type, so the next update is diffed against the last ACKed state.
//
// Apply is called from the Client's Run goroutine only, never concurrently, in the order
// the responses arrive. It may call Client.Subscribe. The map belongs to the Handler after
// the call: the client never modifies it (it builds a new map for every update).
// version is version_info (SotW) or system_version_info (Delta, may be empty).
type Handler interface {
	Apply(typeURL, version string, resources map[string]*anypb.Any) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(typeURL, version string, resources map[string]*anypb.Any) error

// Apply calls f.
func (f HandlerFunc) Apply(typeURL, version string, resources map[string]*anypb.Any) error {
	return f(typeURL, version, resources)
}

// Status is a point-in-time view of the client, for the admin endpoint and tests.
type Status struct {
	Target    string
	Delta     bool
	Connected bool      // an ADS stream is open
	Streams   int       // streams opened since New
	LastError string    // why the last stream ended (or failed to open)
	Since     time.Time // when Connected last changed
	Types     map[string]TypeStatus
}

// TypeStatus is the state of one resource type.
type TypeStatus struct {
	Wildcard  bool
	Names     []string // subscribed names of a named type, sorted
	Version   string   // version of the last ACKed update
	Nonce     string   // nonce of the last response received
	Resources []string // names in the last ACKed state, sorted
	// LastNACK is the error of the last rejected update; cleared when a later update is
	// ACKed, like Envoy's config_dump error_state.
	LastNACK        string
	LastNACKVersion string
	ACKs, NACKs     uint64
	LastUpdate      time.Time // last ACK
}

// Client is an ADS client. Create it with New, start it with Run.
type Client struct {
	cfg Config
	h   Handler
	log *slog.Logger

	// wake tells the Run goroutine that Subscribe changed something.
	wake chan struct{}

	mu      sync.Mutex
	running bool
	desired map[string][]string // type URL -> names, written by Subscribe
	status  Status

	// Owned by the Run goroutine.
	types map[string]*typeState
}

// New returns a Client that reports to h. It does not connect until Run.
func New(cfg Config, h Handler) *Client {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = defaultBackoffBase
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = defaultBackoffMax
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		cfg.BackoffMax = cfg.BackoffBase
	}
	c := &Client{
		cfg:     cfg,
		h:       h,
		log:     cfg.Log.With("component", "xdsclient", "target", cfg.Target),
		wake:    make(chan struct{}, 1),
		desired: map[string][]string{},
		types:   map[string]*typeState{},
		status:  Status{Target: cfg.Target, Delta: cfg.Delta, Types: map[string]TypeStatus{}},
	}
	for _, u := range wildcardTypes {
		st := &typeState{url: u, wildcard: true}
		c.types[u] = st
		c.status.Types[u] = st.snapshot()
	}
	return c
}

// Subscribe sets the names wanted for a named (non-wildcard) type such as RouteType,
// EndpointType or SecretType, replacing the previous set. Names no longer wanted are
// dropped from the state and the Handler gets the reduced state. On a live stream this
// sends a SotW request with the full name list, or a Delta subscribe/unsubscribe.
// Safe to call from any goroutine, including from within Handler.Apply, and before Run.
// Subscribe on a wildcard type (LDS, CDS) is ignored.
func (c *Client) Subscribe(typeURL string, names []string) {
	if slices.Contains(wildcardTypes, typeURL) {
		c.log.Warn("xds subscribe by name ignored for a wildcard type", "type", typeURL)
		return
	}
	set := slices.Clone(names)
	slices.Sort(set)
	set = slices.Compact(set)
	if set == nil {
		set = []string{}
	}
	c.mu.Lock()
	c.desired[typeURL] = set
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Status returns a copy of the client's current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Types = make(map[string]TypeStatus, len(c.status.Types))
	for k, v := range c.status.Types {
		v.Names = slices.Clone(v.Names)
		v.Resources = slices.Clone(v.Resources)
		s.Types[k] = v
	}
	return s
}

// Run connects to the control plane and keeps an ADS stream open, reconnecting with
// jittered exponential backoff, until ctx ends; it then returns nil. It returns an error
// only for a configuration that can never connect (bad target, no credentials) or if
// Run is already running.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("xdsclient: Run called twice")
	}
	c.running = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()

	// Fail fast on a target or options grpc can never use; each attempt below dials anew.
	probe, err := grpc.NewClient(c.cfg.Target, c.cfg.DialOpts...)
	if err != nil {
		return fmt.Errorf("xdsclient: target %q: %w", c.cfg.Target, err)
	}
	_ = probe.Close()

	attempt := 0
	for {
		healthy, err := c.runStream(ctx)
		c.setConnected(false, err)
		if ctx.Err() != nil {
			return nil
		}
		if healthy {
			attempt = 0
		}
		delay := backoff(c.cfg.BackoffBase, c.cfg.BackoffMax, attempt)
		attempt++
		c.log.Info("xds stream closed, retrying", "error", err, "delay", delay)
		if !c.sleep(ctx, delay) {
			return nil
		}
	}
}

// sleep waits d while still applying Subscribe changes locally (unsubscribed names are
// dropped even while disconnected). It reports false if ctx ended.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-c.wake:
			_ = c.syncSubscriptions(nil)
		}
	}
}

func (c *Client) setConnected(up bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if up {
		c.status.Streams++
	}
	if c.status.Connected != up {
		c.status.Since = time.Now()
	}
	c.status.Connected = up
	if err != nil {
		c.status.LastError = err.Error()
	}
}

// publish copies st into the Status view.
func (c *Client) publish(st *typeState) {
	s := st.snapshot()
	c.mu.Lock()
	c.status.Types[st.url] = s
	c.mu.Unlock()
}

// typeState returns the state of a type, creating a named type's state on first use.
func (c *Client) typeState(url string) *typeState {
	st := c.types[url]
	if st == nil {
		st = &typeState{url: url}
		c.types[url] = st
	}
	return st
}

// requestOrder lists the types to request on a new stream: wildcard types first, then
// named types in namedOrder, then the rest sorted.
func (c *Client) requestOrder() []string {
	out := slices.Clone(wildcardTypes)
	var rest []string
	for u, st := range c.types {
		if st.wildcard || slices.Contains(namedOrder, u) {
			continue
		}
		rest = append(rest, u)
	}
	for _, u := range namedOrder {
		if _, ok := c.types[u]; ok {
			out = append(out, u)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

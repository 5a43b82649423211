// Package control assembles `weft control`, the control plane: the config store and its
// sources (a watched directory, the HTTP API), the service registry (mesh file,
// ServiceEntry), the snapshot builder, the xDS generators and the ADS server, plus the
// HTTP API and debug endpoints that the weft CLI talks to.
//
//	store ──┐
//	        ├─ change ─► debounce ─► snapshot.Build ─► gen.Set ─► xds.Push ─► proxies
//	registry┘
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/weft-mesh/weft/internal/ca"
	"github.com/weft-mesh/weft/internal/config"
	"github.com/weft-mesh/weft/internal/config/convert"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds"
	"github.com/weft-mesh/weft/internal/xds/gen"
)

// Options configure a control plane.
type Options struct {
	// XDSAddress serves ADS (Istio's 15010); APIAddress the HTTP API, debug endpoints and
	// metrics (Istio's monitoring port 15014).
	XDSAddress, APIAddress string
	// ConfigDir, when set, is watched for Istio YAML.
	ConfigDir string
	// Registry sources (the mesh file in local mode).
	Sources []registry.Source
	Mesh    snapshot.MeshConfig
	Log     *slog.Logger
	// Debounce of pushes (default 100 ms).
	Debounce time.Duration
	// CA configures the certificate authority. Its Dir persists the root; empty keeps
	// it in memory (a new root every start). TrustDomain is taken from Mesh.
	CA ca.Options
	// WorkloadCertTTL is the lifetime of workload certificates (default 24 h).
	WorkloadCertTTL time.Duration
}

// Server is a running control plane.
type Server struct {
	opts     Options
	log      *slog.Logger
	store    config.Store
	registry *registry.Registry
	gen      *gen.Generator
	xds      *xds.Server
	api      *api
	dir      *dirSource
	ca       *ca.CA
	sds      *ca.SDSSource

	xdsLn, apiLn net.Listener
	grpc         *grpc.Server
	http         *http.Server

	rebuild chan struct{}
	ready   chan struct{}
}

// New builds a control plane and binds its ports; Run serves.
func New(opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.XDSAddress == "" {
		opts.XDSAddress = "127.0.0.1:15010"
	}
	if opts.APIAddress == "" {
		opts.APIAddress = "127.0.0.1:15014"
	}
	if opts.Mesh.TrustDomain == "" {
		opts.Mesh = snapshot.DefaultMeshConfig()
	}
	s := &Server{
		opts:     opts,
		log:      opts.Log,
		store:    config.NewMemoryStore(config.WithLogger(opts.Log)),
		registry: registry.New(),
		rebuild:  make(chan struct{}, 1),
		ready:    make(chan struct{}),
	}
	for _, src := range opts.Sources {
		s.registry.Set(src)
	}
	s.gen = gen.New(s.buildSnapshot())
	caOpts := opts.CA
	caOpts.TrustDomain = opts.Mesh.TrustDomain
	if caOpts.Log == nil {
		caOpts.Log = opts.Log
	}
	if opts.WorkloadCertTTL > 0 {
		caOpts.DefaultTTL = opts.WorkloadCertTTL
	}
	var err error
	if s.ca, err = ca.New(caOpts); err != nil {
		return nil, fmt.Errorf("control: ca: %w", err)
	}
	if s.sds, err = ca.NewSDSSource(s.ca, ca.SDSOptions{TTL: opts.WorkloadCertTTL}); err != nil {
		return nil, fmt.Errorf("control: ca: %w", err)
	}
	s.gen.Secrets = s.sds
	s.xds = xds.New(xds.Options{Generator: s.gen, Debounce: opts.Debounce, Log: opts.Log})
	s.api = &api{s: s, sources: map[string][]config.Key{}}
	if s.xdsLn, err = net.Listen("tcp", opts.XDSAddress); err != nil {
		return nil, fmt.Errorf("control: xds: %w", err)
	}
	if s.apiLn, err = net.Listen("tcp", opts.APIAddress); err != nil {
		s.xdsLn.Close()
		return nil, fmt.Errorf("control: api: %w", err)
	}
	if opts.ConfigDir != "" {
		s.dir = newDirSource(opts.ConfigDir, s.store, opts.Log)
	}
	return s, nil
}

// XDSAddr and APIAddr are the bound addresses.
func (s *Server) XDSAddr() string { return s.xdsLn.Addr().String() }
func (s *Server) APIAddr() string { return s.apiLn.Addr().String() }

// Store is the config store (tests and the local runner apply to it directly).
func (s *Server) Store() config.Store { return s.store }

// Registry is the service registry.
func (s *Server) Registry() *registry.Registry { return s.registry }

// CA is the certificate authority.
func (s *Server) CA() *ca.CA { return s.ca }

// XDS is the ADS server.
func (s *Server) XDS() *xds.Server { return s.xds }

// Ready is closed once the first snapshot is served.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.grpc = grpc.NewServer(xds.GRPCServerOptions()...)
	s.xds.Register(s.grpc)
	// Workloads that hold their own keys send CSRs here (Istio's CA service).
	ca.NewServer(s.ca, s.ca.Tokens(), s.log).Register(s.grpc)
	s.http = &http.Server{Handler: s.api.handler(), ReadHeaderTimeout: 10 * time.Second}

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(3)
	go func() { defer wg.Done(); errc <- s.grpc.Serve(s.xdsLn) }()
	go func() {
		defer wg.Done()
		if err := s.http.Serve(s.apiLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	go func() { defer wg.Done(); s.loop(ctx) }()
	go s.sds.Run(ctx, s.xds.Push)

	cancelSub := s.store.Subscribe(func(config.Event) { s.trigger() })
	defer cancelSub()
	s.registry.OnChange(s.trigger)
	if s.dir != nil {
		if err := s.dir.start(ctx); err != nil {
			cancel()
			s.stop()
			wg.Wait()
			return err
		}
	}
	s.trigger()
	s.log.Info("control plane serving", "xds", s.XDSAddr(), "api", s.APIAddr())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	s.stop()
	wg.Wait()
	return err
}

func (s *Server) stop() {
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.http.Shutdown(shutdown)
	s.grpc.Stop()
	s.xds.Close()
}

func (s *Server) trigger() {
	select {
	case s.rebuild <- struct{}{}:
	default:
	}
}

// loop rebuilds the snapshot after changes and asks the xDS server to push. The xDS
// server debounces pushes; the rebuild itself is cheap next to generation.
func (s *Server) loop(ctx context.Context) {
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.rebuild:
		}
		s.gen.Set(s.buildSnapshot())
		s.xds.Push("config or registry change")
		if first {
			close(s.ready)
			first = false
		}
	}
}

// buildSnapshot reads the store and the registry into a new snapshot.
func (s *Server) buildSnapshot() *snapshot.Snapshot {
	in := snapshot.Input{
		Mesh:      s.opts.Mesh,
		Services:  s.registry.Services(),
		Instances: s.registry.Instances(),
	}
	st := s.store
	in.VirtualServices = configs[*networking.VirtualService](st, config.KindVirtualService)
	in.DestinationRules = configs[*networking.DestinationRule](st, config.KindDestinationRule)
	in.Gateways = configs[*networking.Gateway](st, config.KindGateway)
	in.ServiceEntries = configs[*networking.ServiceEntry](st, config.KindServiceEntry)
	in.WorkloadEntries = configs[*networking.WorkloadEntry](st, config.KindWorkloadEntry)
	in.Sidecars = configs[*networking.Sidecar](st, config.KindSidecar)
	in.PeerAuthentications = configs[*security.PeerAuthentication](st, config.KindPeerAuthentication)
	in.AuthorizationPolicies = configs[*security.AuthorizationPolicy](st, config.KindAuthorizationPolicy)
	in.RequestAuthentications = configs[*security.RequestAuthentication](st, config.KindRequestAuthentication)
	s.addConverted(&in)
	return snapshot.Build(in)
}

// addConverted translates the Gateway API and SMI resources into Istio Gateways and
// VirtualServices, so the generators read one model. A resource that cannot be
// translated is logged and left out; the rest of the mesh is unaffected.
func (s *Server) addConverted(in *snapshot.Input) {
	opts := convert.Options{DomainSuffix: s.opts.Mesh.TrustDomain}
	var out []*config.Resource
	for _, r := range s.store.List(config.KindKubernetesGateway, "") {
		g, err := convert.KubernetesGateway(r)
		if err != nil {
			s.log.Warn("cannot translate", "resource", r.String(), "err", err)
			continue
		}
		out = append(out, g)
	}
	for _, k := range []config.Kind{config.KindHTTPRoute, config.KindGRPCRoute} {
		for _, r := range s.store.List(k, "") {
			f := convert.HTTPRoute
			if k == config.KindGRPCRoute {
				f = convert.GRPCRoute
			}
			vs, err := f(r, opts)
			if err != nil {
				s.log.Warn("cannot translate", "resource", r.String(), "err", err)
				continue
			}
			out = append(out, vs...)
		}
	}
	for _, r := range s.store.List(config.KindTrafficSplit, "") {
		vs, err := convert.TrafficSplit(r, opts)
		if err != nil {
			s.log.Warn("cannot translate", "resource", r.String(), "err", err)
			continue
		}
		out = append(out, vs)
	}
	for _, r := range out {
		meta := snapshot.Meta{Name: r.Name, Namespace: r.Namespace, Labels: r.Labels, Annotations: r.Annotations,
			Source: r.Source.String() + ": " + r.String(), CreationIndex: uint64(r.ResourceVersion)}
		switch spec := r.Spec.(type) {
		case *networking.Gateway:
			in.Gateways = append(in.Gateways, snapshot.Config[*networking.Gateway]{Meta: meta, Spec: spec})
		case *networking.VirtualService:
			in.VirtualServices = append(in.VirtualServices, snapshot.Config[*networking.VirtualService]{Meta: meta, Spec: spec})
		}
	}
}

func configs[T any](st config.Store, k config.Kind) []snapshot.Config[T] {
	rs := st.List(k, "")
	out := make([]snapshot.Config[T], 0, len(rs))
	for _, r := range rs {
		spec, ok := r.Spec.(T)
		if !ok {
			continue
		}
		out = append(out, snapshot.Config[T]{Meta: snapshot.Meta{
			Name: r.Name, Namespace: r.Namespace, Labels: r.Labels, Annotations: r.Annotations,
			Source: r.Source.String() + ": " + r.String(), CreationIndex: uint64(r.ResourceVersion),
		}, Spec: spec})
	}
	return out
}

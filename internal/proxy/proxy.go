// Package proxy assembles weft-proxy, the data plane: it loads the bootstrap, applies its
// static resources, connects to the control plane over ADS (package xdsclient), and turns
// each accepted xDS update into the runtime objects of the listener, router, upstream and
// tlsctx packages, which swap them in atomically. It also serves the admin endpoints and
// runs the graceful shutdown.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weft-mesh/weft/internal/proxy/accesslog"
	"github.com/weft-mesh/weft/internal/proxy/admin"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
	_ "github.com/weft-mesh/weft/internal/proxy/filter/all" // the HTTP filters
	"github.com/weft-mesh/weft/internal/proxy/filter/cors"
	"github.com/weft-mesh/weft/internal/proxy/filter/fault"
	"github.com/weft-mesh/weft/internal/proxy/filter/jwtauthn"
	"github.com/weft-mesh/weft/internal/proxy/filter/ratelimit"
	"github.com/weft-mesh/weft/internal/proxy/filter/rbac"
	"github.com/weft-mesh/weft/internal/proxy/httpconn"
	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/netrbac"
	"github.com/weft-mesh/weft/internal/proxy/router"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/proxy/tcpproxy"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
	"github.com/weft-mesh/weft/internal/proxy/xdsclient"
)

// Options configure a proxy.
type Options struct {
	Bootstrap *bootstrapv3.Bootstrap
	// AdminAddress, HealthAddress and PrometheusAddress override the bootstrap's admin
	// address and the defaults 127.0.0.1:15000, 0.0.0.0:15021 and 0.0.0.0:15090; "-"
	// disables a server (the admin one cannot be disabled).
	AdminAddress, HealthAddress, PrometheusAddress string
	// AccessLog, when not empty, is the path ("/dev/stdout") where requests of HTTP
	// connection managers without an access_log of their own are logged, in Istio's
	// JSON format.
	AccessLog string
	// DrainTimeout bounds the graceful shutdown (Envoy's --drain-time-s).
	DrainTimeout time.Duration
	Log          *slog.Logger
	// CA, when its Address is set, makes the proxy get its own workload certificate.
	CA CAOptions
}

// Proxy is one running weft-proxy.
type Proxy struct {
	opts      Options
	log       *slog.Logger
	stats     *stats.Store
	secrets   *tlsctx.Store
	clusters  *upstream.Manager
	routes    *router.Store
	listeners *listener.Manager
	xds       *xdsclient.Client
	admin     *admin.Server

	static struct {
		listeners []*listenerv3.Listener
		clusters  []*clusterv3.Cluster
	}
	// dynClusters are the names of the clusters CDS gave (admin's added_via_api);
	// the decoded messages are not kept (see upstream.Manager.Update).
	dynClusters atomic.Pointer[map[string]bool]
	state       state
	// agentSecrets are the workload certificate and roots the CA agent obtained
	// (guarded by state.mu), for config_dump.
	agentSecrets []*tlsv3.Secret
	agentUpdated time.Time

	// warm is set when the first LDS and CDS updates are applied (or at once without a
	// control plane): the proxy is ready.
	needWarm  map[string]bool
	warmMu    sync.Mutex
	ready     atomic.Bool
	quit      chan struct{}
	quitOnce  sync.Once
	startedAt time.Time
}

// New builds a proxy and applies the bootstrap's static resources. Nothing listens until
// Run.
func New(opts Options) (*Proxy, error) {
	if opts.Bootstrap == nil {
		return nil, errors.New("proxy: a bootstrap is required")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	p := &Proxy{
		opts:      opts,
		log:       opts.Log,
		stats:     stats.New(),
		secrets:   tlsctx.NewStore(),
		routes:    router.NewStore(),
		quit:      make(chan struct{}),
		startedAt: time.Now(),
	}
	// The stats matcher decides which metrics exist, so it is set before any is made.
	accept, err := compileStatsMatcher(opts.Bootstrap.GetStatsConfig().GetStatsMatcher())
	if err != nil {
		return nil, fmt.Errorf("proxy: stats_config.stats_matcher.%w", err)
	}
	if accept != nil {
		p.stats.SetFilter(accept)
	}
	p.clusters = upstream.NewManager(upstream.Options{Secrets: p.secrets, Stats: p.stats, Log: p.log})
	// The filters' counters go to this proxy's store (the filter API passes none).
	fault.UseStats(p.stats)
	cors.UseStats(p.stats)
	ratelimit.UseStats(p.stats)
	rbac.UseStats(p.stats)
	jwtauthn.UseStats(p.stats)

	hcm := httpconn.Options{
		Routes:       p.routes,
		Clusters:     p.clusters,
		Stats:        p.stats,
		Log:          p.log,
		DrainTimeout: opts.DrainTimeout,
		AccessLogs: func(logs []*accesslogv3.AccessLog) (httpconn.AccessLogger, error) {
			l, err := accesslog.Build(logs)
			if err != nil || l == nil {
				return nil, err // a nil *Logger must not become a non-nil interface
			}
			return l, nil
		},
	}
	if opts.AccessLog != "" {
		l, err := accesslog.Default(opts.AccessLog)
		if err != nil {
			return nil, fmt.Errorf("proxy: access log: %w", err)
		}
		hcm.DefaultAccessLog = l
	}
	tcp := tcpproxy.NewFactory(tcpproxy.Options{
		Clusters: p.clusters,
		Stats:    p.stats,
		Log:      p.log,
		AccessLogs: func(logs []*accesslogv3.AccessLog) (func(*stream.Info), error) {
			l, err := accesslog.Build(logs)
			if err != nil || l == nil {
				return nil, err
			}
			return func(i *stream.Info) { l.Log(i, nil, nil) }, nil
		},
	})
	p.listeners = listener.NewManager(listener.Options{
		Secrets:      p.secrets,
		Stats:        p.stats,
		Log:          p.log,
		Filters:      []listener.NetworkFilterFactory{httpconn.NewFactory(hcm), tcp},
		Wrappers:     []listener.WrapperFactory{netrbac.NewFactory(p.stats, p.log)},
		DrainTimeout: opts.DrainTimeout,
	})

	b := opts.Bootstrap
	sr := b.GetStaticResources()
	if err := p.secrets.AddStatic(sr.GetSecrets()); err != nil {
		return nil, fmt.Errorf("proxy: static_resources.secrets: %w", err)
	}
	p.static.clusters = sr.GetClusters()
	if err := p.clusters.Update(p.static.clusters); err != nil {
		return nil, fmt.Errorf("proxy: static_resources.clusters: %w", err)
	}
	p.static.listeners = sr.GetListeners()
	p.needWarm = map[string]bool{}
	if opts.CA.Address != "" {
		p.needWarm["ca"] = true
	}
	if _, _, _, ok, err := bootstrap.XDS(b); err != nil {
		return nil, fmt.Errorf("proxy: dynamic_resources: %w", err)
	} else if ok {
		if b.GetDynamicResources().GetCdsConfig() != nil || b.GetDynamicResources().GetAdsConfig() != nil {
			p.needWarm[TypeCluster] = true
			p.needWarm[TypeListener] = true
		}
	}
	return p, nil
}

// Run serves until ctx ends or /quitquitquit, then drains and stops.
func (p *Proxy) Run(ctx context.Context) error {
	if err := p.listeners.Update(p.static.listeners); err != nil {
		return fmt.Errorf("proxy: static_resources.listeners: %w", err)
	}
	adminAddr := p.opts.AdminAddress
	if adminAddr == "" {
		adminAddr = bootstrapAdminAddress(p.opts.Bootstrap)
	}
	a, err := admin.Start(admin.Options{
		Address:           adminAddr,
		HealthAddress:     orDefault(p.opts.HealthAddress, "0.0.0.0:15021"),
		PrometheusAddress: orDefault(p.opts.PrometheusAddress, "0.0.0.0:15090"),
		Stats:             p.stats,
		Source:            p,
		Log:               p.log,
	})
	if err != nil {
		_ = p.listeners.Close()
		return fmt.Errorf("proxy: admin: %w", err)
	}
	p.admin = a

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if target, delta, tlsCtx, ok, _ := bootstrap.XDS(p.opts.Bootstrap); ok {
		creds := insecure.NewCredentials()
		if tlsCtx != nil {
			cfg, err := tlsctx.Client(tlsCtx, p.secrets)
			if err != nil {
				return fmt.Errorf("proxy: ads tls: %w", err)
			}
			creds = credentials.NewTLS(cfg)
		}
		p.xds = xdsclient.New(xdsclient.Config{
			Target:   target,
			DialOpts: []grpc.DialOption{grpc.WithTransportCredentials(creds)},
			Node:     p.opts.Bootstrap.GetNode(),
			Delta:    delta,
			Log:      p.log,
		}, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.xds.Run(runCtx); err != nil && runCtx.Err() == nil {
				p.log.Error("xds client stopped", "err", err)
			}
		}()
	}
	if p.opts.CA.Address != "" {
		if err := p.runCA(runCtx); err != nil {
			return err
		}
	}
	p.checkWarm()

	select {
	case <-ctx.Done():
	case <-p.quit:
	}
	p.log.Info("shutting down: draining listeners", "timeout", p.opts.DrainTimeout)
	p.ready.Store(false)
	drainCtx, drainCancel := context.WithTimeout(context.Background(), p.opts.DrainTimeout)
	_ = p.listeners.Drain(drainCtx, false)
	drainCancel()
	cancel()
	wg.Wait()
	_ = p.listeners.Close()
	p.clusters.Close()
	_ = p.admin.Close()
	accesslog.Flush()
	return nil
}

// Stats is the proxy's metric store.
func (p *Proxy) Stats() *stats.Store { return p.stats }

// Listeners gives tests the bound addresses.
func (p *Proxy) Listeners() *listener.Manager { return p.listeners }

// Admin is the running admin server (nil before Run).
func (p *Proxy) Admin() *admin.Server { return p.admin }

// XDSStatus is the ADS client's status; ok is false without a control plane.
func (p *Proxy) XDSStatus() (xdsclient.Status, bool) {
	if p.xds == nil {
		return xdsclient.Status{}, false
	}
	return p.xds.Status(), true
}

func (p *Proxy) markWarm(typeURL string) {
	p.warmMu.Lock()
	delete(p.needWarm, typeURL)
	p.warmMu.Unlock()
	p.checkWarm()
}

func (p *Proxy) checkWarm() {
	p.warmMu.Lock()
	done := len(p.needWarm) == 0
	p.warmMu.Unlock()
	if done && !p.ready.Load() {
		select {
		case <-p.quit:
			return
		default:
		}
		p.ready.Store(true)
		p.log.Info("proxy ready")
	}
}

// Ready implements admin.Source.
func (p *Proxy) Ready() bool { return p.ready.Load() }

// Quit implements admin.Source.
func (p *Proxy) Quit() { p.quitOnce.Do(func() { close(p.quit) }) }

// DrainListeners implements admin.Source.
func (p *Proxy) DrainListeners(ctx context.Context, inboundOnly bool) error {
	return p.listeners.Drain(ctx, inboundOnly)
}

func bootstrapAdminAddress(b *bootstrapv3.Bootstrap) string {
	if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
		return fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
	}
	return "127.0.0.1:15000"
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

var _ = http.StatusOK

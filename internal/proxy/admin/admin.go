// Package admin serves the proxy's operator endpoints as Envoy's admin interface does, so
// the tools that read Envoy (istioctl proxy-config, curl localhost:15000/...) read weft:
// the admin listener (127.0.0.1:15000: /ready, /stats, /config_dump, /clusters,
// /drain_listeners, /quitquitquit, /memory, ...), the health listener (:15021,
// /healthz/ready) and the Prometheus listener (:15090, /stats/prometheus). It reads the
// running proxy through Source and never changes it except to drain or quit.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/stats"
)

// Default addresses, Istio's ports.
const (
	DefaultAddress           = "127.0.0.1:15000"
	DefaultHealthAddress     = ":15021"
	DefaultPrometheusAddress = ":15090"
	// Disabled as an address turns the health or Prometheus listener off.
	Disabled = "-"
)

// Source is the running proxy as the admin endpoints see it.
type Source interface {
	// Ready reports whether the proxy has its first configuration and serves traffic.
	Ready() bool
	// ConfigDump is Envoy's /config_dump. resource is the ?resource= query, passed as is;
	// when the dump it returns has no configs, the admin server instead picks the
	// repeated field of that name (Envoy's "dynamic_active_clusters", ...) out of the
	// full dump (ConfigDump("")), as Envoy does.
	ConfigDump(resource string) (*ConfigDump, error)
	// DrainListeners stops the listeners accepting (inbound ones only when asked) and
	// lets their connections finish; ctx bounds the wait.
	DrainListeners(ctx context.Context, inboundOnly bool) error
	// Quit asks the proxy to shut down gracefully.
	Quit()
}

// ClusterSource is implemented by a Source that can list its clusters for /clusters.
type ClusterSource interface {
	Clusters() []ClusterStatus
}

// ServerInfoSource is implemented by a Source that describes itself for /server_info. A
// *Message or a proto.Message is written as protojson, anything else with encoding/json.
type ServerInfoSource interface {
	ServerInfo() any
}

// ErrNotFound, wrapped in a ConfigDump error, makes /config_dump answer 404.
var ErrNotFound = errors.New("not found")

// Options configure the admin server.
type Options struct {
	// Address of the admin listener; empty means DefaultAddress.
	Address string
	// HealthAddress and PrometheusAddress; empty means the defaults, Disabled ("-") none.
	HealthAddress, PrometheusAddress string
	Stats                            *stats.Store
	Source                           Source
	Log                              *slog.Logger
	// LogLevel, when set, can be read and changed with POST /logging?level=debug.
	LogLevel *slog.LevelVar
	// Version is reported by /server_info when the Source gives no ServerInfo.
	Version string
}

// Addrs are the bound addresses; empty for a disabled listener.
type Addrs struct {
	Admin, Health, Prometheus string
}

// Server is the running admin, health and Prometheus listeners.
type Server struct {
	opts    Options
	log     *slog.Logger
	started time.Time
	addrs   Addrs
	servers []*http.Server
	wg      sync.WaitGroup
	ctx     context.Context // ends at Close; bounds background drains
	cancel  context.CancelFunc
}

// Start binds every listener (failing as a whole if one cannot bind) and serves them.
func Start(opts Options) (*Server, error) {
	if opts.Source == nil {
		return nil, errors.New("admin: a Source is required")
	}
	if opts.Stats == nil {
		opts.Stats = stats.New()
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Log, started: time.Now()}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	type plan struct {
		addr    string
		handler http.Handler
		dst     *string
	}
	plans := []plan{{or(opts.Address, DefaultAddress), s.adminMux(), &s.addrs.Admin}}
	if a := or(opts.HealthAddress, DefaultHealthAddress); a != Disabled {
		plans = append(plans, plan{a, s.healthMux(), &s.addrs.Health})
	}
	if a := or(opts.PrometheusAddress, DefaultPrometheusAddress); a != Disabled {
		plans = append(plans, plan{a, s.promMux(), &s.addrs.Prometheus})
	}
	lns := make([]net.Listener, 0, len(plans))
	for _, p := range plans {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			for _, l := range lns {
				_ = l.Close()
			}
			s.cancel()
			return nil, fmt.Errorf("admin: listen %s: %w", p.addr, err)
		}
		lns = append(lns, ln)
		*p.dst = ln.Addr().String()
	}
	for i, p := range plans {
		srv := &http.Server{
			Handler:           p.handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(opts.Log.Handler(), slog.LevelDebug),
		}
		s.servers = append(s.servers, srv)
		s.wg.Add(1)
		go func(ln net.Listener) {
			defer s.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin listener stopped", "addr", ln.Addr().String(), "err", err)
			}
		}(lns[i])
	}
	s.log.Info("admin listening", "admin", s.addrs.Admin, "health", s.addrs.Health, "prometheus", s.addrs.Prometheus)
	return s, nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Addrs returns the bound addresses (useful with port 0).
func (s *Server) Addrs() Addrs { return s.addrs }

// Close stops the listeners, letting requests in flight finish for a moment.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			_ = srv.Close()
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Package bookinfo is a Go rendition of Istio's Bookinfo sample: the four
// services productpage, details, reviews (v1, v2, v3) and ratings, with the
// same ports, URLs, JSON shapes, timeouts and header propagation as the
// originals, so that Istio's Bookinfo traffic rules (routing on end-user,
// fault injection on ratings, timeouts on reviews) behave under weft as they
// do under Istio. The weft binary runs any of them with Run; a standalone
// entry point lives in cmd/bookinfo.
//
// Where it sits: these are the workloads of the mesh, not part of it. They
// reach each other by plain HTTP to hostnames such as http://reviews:9080; a
// sidecar set in HTTP_PROXY carries those calls when the services run without
// transparent capture (see DESIGN.md, "Two ways to run").
package bookinfo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// Service names accepted by Run and Handler.
const (
	ProductPage = "productpage"
	Details     = "details"
	Reviews     = "reviews"
	Ratings     = "ratings"
)

// Defaults, as in Istio's Bookinfo.
const (
	DefaultAddr = ":9080"
	// DefaultTimeout is productpage's per-call timeout to details, reviews and
	// ratings (Istio's productpage uses 3 s on each request).
	DefaultTimeout = 3 * time.Second
	// ReviewsAttempts is how many times productpage tries the reviews call
	// before showing the reviews error (Istio's productpage tries twice).
	ReviewsAttempts = 2
	// Reviews' timeout on its ratings call: v2 waits 10 s, v3 2.5 s, which is
	// what makes Istio's "ratings delay 7s" fault task show different results
	// for the two versions.
	RatingsTimeoutV2 = 10 * time.Second
	RatingsTimeoutV3 = 2500 * time.Millisecond
)

// Config configures one Bookinfo service. The zero value runs v1 on :9080
// with upstreams at http://details:9080, http://reviews:9080 and
// http://ratings:9080.
type Config struct {
	// Addr is the listen address used by Run; default ":9080".
	Addr string
	// Version is v1, v2 or v3 for reviews and v1 for the others. Empty means
	// $SERVICE_VERSION, else v1.
	Version string
	// Base URLs of the upstreams, without a trailing path. Empty means, as in
	// Istio's productpage: http://$X_HOSTNAME$SERVICES_DOMAIN:$X_SERVICE_PORT
	// with X_HOSTNAME defaulting to the service name, SERVICES_DOMAIN to ""
	// (a non-empty domain is joined with a dot) and X_SERVICE_PORT to 9080.
	DetailsURL, ReviewsURL, RatingsURL string
	// HTTPClient makes the upstream calls. nil means a client whose proxy is
	// taken from HTTP_PROXY/HTTPS_PROXY/NO_PROXY, read when the handler is
	// built, so a sidecar set in HTTP_PROXY carries the calls. As with
	// net/http's ProxyFromEnvironment, requests to localhost and loopback
	// addresses never go through the proxy.
	HTTPClient *http.Client
	// Log receives one line per response; nil means slog.Default().
	Log *slog.Logger
	// Timeout bounds each productpage call attempt; default DefaultTimeout.
	Timeout time.Duration
	// RatingsTimeout bounds reviews' call to ratings; 0 means
	// RatingsTimeoutV2 for v2 and RatingsTimeoutV3 for v3.
	RatingsTimeout time.Duration
	// PodName and ClusterName are reported by reviews (and shown on the
	// product page as "Reviews served by"). Empty means $HOSTNAME, else
	// "reviews-<version>", and $CLUSTER_NAME, else "null", as Istio's reviews.
	PodName, ClusterName string
}

// Run serves one Bookinfo service on cfg.Addr until ctx is done, then shuts
// down gracefully. It returns nil after a shutdown caused by ctx.
func Run(ctx context.Context, service string, cfg Config) error {
	h, err := Handler(service, cfg)
	if err != nil {
		return err
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("bookinfo: %s: listen %q: %w", service, addr, err)
	}
	return serve(ctx, ln, h, service, logger(cfg))
}

// Serve is Run on a listener the caller already holds (so a caller can bind
// port 0 and learn the port first). It closes ln.
func Serve(ctx context.Context, ln net.Listener, service string, cfg Config) error {
	h, err := Handler(service, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	return serve(ctx, ln, h, service, logger(cfg))
}

func serve(ctx context.Context, ln net.Listener, h http.Handler, service string, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("bookinfo: serving", "service", service, "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("bookinfo: %s: serve: %w", service, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
		return fmt.Errorf("bookinfo: %s: shutdown: %w", service, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bookinfo: %s: serve: %w", service, err)
	}
	return nil
}

// Handler returns the HTTP handler of one Bookinfo service, wrapped with the
// access log. It fails on an unknown service or version.
func Handler(service string, cfg Config) (http.Handler, error) {
	c, err := resolve(service, cfg)
	if err != nil {
		return nil, err
	}
	var mux *http.ServeMux
	switch service {
	case ProductPage:
		mux = newProductPage(c).routes()
	case Details:
		mux = detailsRoutes()
	case Reviews:
		mux = newReviews(c).routes()
	case Ratings:
		mux = newRatings().routes()
	}
	return accessLog(service, c.Version, c.Log, mux), nil
}

// resolve validates cfg for service and fills every default, reading the
// environment in this one place.
func resolve(service string, cfg Config) (Config, error) {
	switch service {
	case ProductPage, Details, Reviews, Ratings:
	default:
		return cfg, fmt.Errorf("bookinfo: service %q: must be one of productpage, details, reviews, ratings", service)
	}
	if cfg.Version == "" {
		cfg.Version = os.Getenv("SERVICE_VERSION")
	}
	if cfg.Version == "" {
		cfg.Version = "v1"
	}
	switch {
	case service == Reviews && cfg.Version != "v1" && cfg.Version != "v2" && cfg.Version != "v3":
		return cfg, fmt.Errorf("bookinfo: reviews: version %q: must be v1, v2 or v3", cfg.Version)
	case service != Reviews && cfg.Version != "v1":
		return cfg, fmt.Errorf("bookinfo: %s: version %q: must be v1", service, cfg.Version)
	}
	var err error
	if cfg.DetailsURL, err = upstreamURL("details", cfg.DetailsURL, "DETAILS"); err != nil {
		return cfg, err
	}
	if cfg.ReviewsURL, err = upstreamURL("reviews", cfg.ReviewsURL, "REVIEWS"); err != nil {
		return cfg, err
	}
	if cfg.RatingsURL, err = upstreamURL("ratings", cfg.RatingsURL, "RATINGS"); err != nil {
		return cfg, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RatingsTimeout <= 0 {
		cfg.RatingsTimeout = RatingsTimeoutV2
		if cfg.Version == "v3" {
			cfg.RatingsTimeout = RatingsTimeoutV3
		}
	}
	if cfg.PodName == "" {
		cfg.PodName = os.Getenv("HOSTNAME")
	}
	if cfg.PodName == "" {
		cfg.PodName = service + "-" + cfg.Version
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = os.Getenv("CLUSTER_NAME")
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = "null"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultClient()
	}
	cfg.Log = logger(cfg)
	return cfg, nil
}

// upstreamURL returns the configured base URL, or the one Istio's
// productpage derives from the environment.
func upstreamURL(name, configured, envPrefix string) (string, error) {
	u := configured
	if u == "" {
		host := os.Getenv(envPrefix + "_HOSTNAME")
		if host == "" {
			host = name
		}
		if d := os.Getenv("SERVICES_DOMAIN"); d != "" {
			host += "." + strings.TrimPrefix(d, ".")
		}
		port := os.Getenv(envPrefix + "_SERVICE_PORT")
		if port == "" {
			port = "9080"
		}
		u = "http://" + net.JoinHostPort(host, port)
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return "", fmt.Errorf("bookinfo: %s URL %q: must be http(s)://host[:port]", name, u)
	}
	return strings.TrimRight(u, "/"), nil
}

func logger(cfg Config) *slog.Logger {
	if cfg.Log != nil {
		return cfg.Log
	}
	return slog.Default()
}

// defaultClient proxies through HTTP_PROXY like http.ProxyFromEnvironment,
// but reads the environment now rather than once per process, so a process
// that runs several services (or a test) can point each at its own sidecar.
func defaultClient() *http.Client {
	proxy := httpproxy.FromEnvironment().ProxyFunc()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = func(r *http.Request) (*url.URL, error) { return proxy(r.URL) }
	return &http.Client{Transport: tr}
}

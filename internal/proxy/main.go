package proxy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
)

const usage = `weft-proxy: weft's sidecar and gateway proxy, configured over Envoy xDS v3.

Usage:
  weft-proxy -c bootstrap.yaml [flags]        an Envoy v3 bootstrap (YAML or JSON)
  weft-proxy --xds-address HOST:PORT --node-id ID [flags]

Flags:
`

// Main runs weft-proxy with the command-line arguments (without the program name) and
// returns the exit code.
func Main(args []string) int {
	return run(args, os.Stderr)
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("weft-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("c", "", "Envoy v3 bootstrap `file` (YAML or JSON); also --config-path")
		xdsAddr    = fs.String("xds-address", "", "control plane ADS address `host:port`, when no bootstrap file is given")
		nodeID     = fs.String("node-id", "", "node id sent to the control plane (Envoy's --service-node)")
		cluster    = fs.String("service-cluster", "", "node cluster sent to the control plane")
		delta      = fs.Bool("delta", false, "use incremental (Delta) xDS instead of State of the World")
		adminAddr  = fs.String("admin-address", "", "admin `address` (default: the bootstrap's, else 127.0.0.1:15000)")
		healthAddr = fs.String("health-address", "0.0.0.0:15021", "health `address` serving /healthz/ready; - disables")
		promAddr   = fs.String("stats-address", "0.0.0.0:15090", "Prometheus `address` serving /stats/prometheus; - disables")
		accessLog  = fs.String("access-log", "", "log requests in JSON to this `path` (/dev/stdout) for HTTP managers without their own access_log")
		drain      = fs.Duration("drain-timeout", 5*time.Second, "how long shutdown waits for in-flight requests")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		caAddr     = fs.String("ca-address", "", "CA service `host:port`: get the workload certificate by CSR (the key stays here)")
		caToken    = fs.String("ca-token-file", "", "`file` holding the workload's credential for the CA")
		caIdentity = fs.String("ca-identity", "", "SPIFFE ID the workload certificate must carry")
	)
	fs.StringVar(configPath, "config-path", "", "same as -c")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "weft-proxy: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	var b *bootstrapv3.Bootstrap
	switch {
	case *configPath != "":
		var err error
		if b, err = bootstrap.Load(*configPath); err != nil {
			fmt.Fprintf(stderr, "weft-proxy: %v\n", err)
			return 1
		}
		if *nodeID != "" {
			if b.Node == nil {
				b.Node = bootstrap.FromFlags(bootstrap.Flags{NodeID: *nodeID}).GetNode()
			}
			b.Node.Id = *nodeID
		}
	case *xdsAddr != "":
		if *nodeID == "" {
			fmt.Fprintln(stderr, "weft-proxy: --node-id is required with --xds-address")
			return 2
		}
		b = bootstrap.FromFlags(bootstrap.Flags{NodeID: *nodeID, Cluster: *cluster, XDSAddress: *xdsAddr, Delta: *delta, AdminAddress: *adminAddr})
	default:
		fs.Usage()
		return 2
	}
	if err := bootstrap.Validate(b); err != nil {
		fmt.Fprintf(stderr, "weft-proxy: %v\n", err)
		return 1
	}

	p, err := New(Options{
		Bootstrap:         b,
		AdminAddress:      *adminAddr,
		HealthAddress:     *healthAddr,
		PrometheusAddress: *promAddr,
		AccessLog:         strings.TrimSpace(*accessLog),
		DrainTimeout:      *drain,
		Log:               log,
		CA:                CAOptions{Address: *caAddr, TokenFile: *caToken, Identity: *caIdentity},
	})
	if err != nil {
		fmt.Fprintf(stderr, "weft-proxy: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "weft-proxy: %v\n", err)
		return 1
	}
	return 0
}

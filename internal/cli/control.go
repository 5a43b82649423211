package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/internal/ca"
	"github.com/weft-mesh/weft/internal/control"
	"github.com/weft-mesh/weft/internal/local"
	"github.com/weft-mesh/weft/internal/meshfile"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/samples/bookinfo"
)

type controlFlags struct {
	configDir  string
	meshFile   string
	xdsAddr    string
	apiAddr    string
	accessLogs bool
	caDir      string
	cacerts    string
	certTTL    time.Duration
}

func (f *controlFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.configDir, "config", "", "`dir` of Istio YAML to watch (edits apply within a second)")
	fl.StringVar(&f.xdsAddr, "xds-address", "127.0.0.1:15010", "xDS (ADS) listen `address`")
	fl.StringVar(&f.apiAddr, "api-address", "127.0.0.1:15014", "HTTP API, debug and metrics listen `address`")
	fl.BoolVar(&f.accessLogs, "access-logs", false, "turn on proxies' access logs (Istio's meshConfig.accessLogFile: /dev/stdout)")
	fl.StringVar(&f.caDir, "ca-dir", "", "`dir` where the CA keeps its self-signed root (default: <state-dir>/ca)")
	fl.StringVar(&f.cacerts, "cacerts", "", "`dir` with the operator's CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)")
	fl.DurationVar(&f.certTTL, "workload-cert-ttl", 24*time.Hour, "lifetime of workload certificates (renewed at half of it)")
}

func (f *controlFlags) options(g *globals, mesh *meshfile.Mesh) control.Options {
	mc := snapshot.DefaultMeshConfig()
	var sources []registry.Source
	if mesh != nil {
		mc.TrustDomain = mesh.TrustDomain
		sources = append(sources, mesh.Source())
	}
	if f.accessLogs {
		mc.AccessLogFile = "/dev/stdout"
	}
	caDir := f.caDir
	if caDir == "" {
		caDir = filepath.Join(stateDir(g), "ca")
	}
	return control.Options{
		XDSAddress: f.xdsAddr, APIAddress: f.apiAddr, ConfigDir: f.configDir,
		Sources: sources, Mesh: mc, Log: g.logger(),
		CA:              ca.Options{Dir: caDir, CACertsDir: f.cacerts},
		WorkloadCertTTL: f.certTTL,
	}
}

func controlCmd(g *globals) *cobra.Command {
	var f controlFlags
	c := &cobra.Command{
		Use:   "control",
		Short: "Run the control plane (weft's istiod)",
		Long: `Run the control plane: it watches a directory of Istio YAML, takes services from a mesh
file, and serves xDS to weft-proxy, Envoy and proxyless gRPC clients.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var mesh *meshfile.Mesh
			if f.meshFile != "" {
				var err error
				if mesh, err = meshfile.Load(f.meshFile); err != nil {
					return err
				}
			}
			s, err := control.New(f.options(g, mesh))
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	f.add(c)
	c.Flags().StringVarP(&f.meshFile, "mesh", "f", "", "mesh `file` with services and workloads")
	return c
}

type upFlags struct {
	controlFlags
	proxy string
}

func upCmd(g *globals) *cobra.Command {
	var f upFlags
	c := &cobra.Command{
		Use:   "up -f MESH_FILE [--config DIR]",
		Short: "Run a whole mesh on this machine: control plane, workloads with sidecars, ingress gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.meshFile == "" {
				return errors.New("up: -f MESH_FILE is required")
			}
			mesh, err := meshfile.Load(f.meshFile)
			if err != nil {
				return err
			}
			return up(cmd.Context(), g, &f, mesh)
		},
	}
	f.add(c)
	c.Flags().StringVarP(&f.meshFile, "file", "f", "", "mesh `file`")
	c.Flags().StringVar(&f.proxy, "proxy", "", "weft-proxy `binary` (default: next to weft, else in PATH)")
	return c
}

func demoCmd(g *globals) *cobra.Command {
	var f upFlags
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run Istio's Bookinfo on a local mesh (weft up with the bundled sample)",
		Long: `Run Bookinfo as Istio's demo does: productpage, details, reviews v1/v2/v3 and ratings,
each with a sidecar, behind an ingress gateway on http://127.0.0.1:8080/productpage.

The config directory starts with Bookinfo's gateway and destination rules; edit it, or
apply Istio's own rules, e.g.:
  weft apply -f virtual-service-reviews-test-v2.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mesh, err := meshfile.Parse(bookinfo.MeshFile, "bookinfo mesh (bundled)")
			if err != nil {
				return err
			}
			if f.configDir == "" {
				dir := filepath.Join(stateDir(g), "bookinfo-config")
				if err := seedConfig(dir); err != nil {
					return err
				}
				f.configDir = dir
				fmt.Fprintf(g.stdout, "config directory: %s (edit it; changes apply within a second)\n", dir)
			}
			return up(cmd.Context(), g, &f, mesh)
		},
	}
	f.add(c)
	c.Flags().StringVar(&f.proxy, "proxy", "", "weft-proxy `binary` (default: next to weft, else in PATH)")
	return c
}

// seedConfig writes Bookinfo's starting config into dir, unless dir already has files.
func seedConfig(dir string) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return fs.WalkDir(bookinfo.Rules, "config", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := bookinfo.Rules.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o644)
	})
}

func stateDir(g *globals) string {
	if g.stateDir != "" {
		return g.stateDir
	}
	return local.DefaultStateDir()
}

func up(ctx context.Context, g *globals, f *upFlags, mesh *meshfile.Mesh) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	proxy, err := findProxy(f.proxy, self)
	if err != nil {
		return err
	}
	opts := f.options(g, mesh)
	s, err := control.New(opts)
	if err != nil {
		return err
	}
	return local.Up(ctx, local.Options{
		Mesh: mesh, StateDir: stateDir(g), ProxyBinary: proxy, Self: self,
		XDSAddress: s.XDSAddr(), APIAddress: s.APIAddr(), Out: g.stdout, Log: g.logger(),
		IssueToken: func(ns, sa, workload string) (string, error) {
			return s.CA().IssueToken(ca.Identity{Namespace: ns, ServiceAccount: sa, Workload: workload})
		},
		ControlPlane: func(ctx context.Context, ready chan<- struct{}) error {
			go func() {
				select {
				case <-s.Ready():
					close(ready)
				case <-ctx.Done():
				}
			}()
			return s.Run(ctx)
		},
	})
}

// findProxy locates weft-proxy: the flag, next to the weft binary, then PATH.
func findProxy(flag, self string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	beside := filepath.Join(filepath.Dir(self), "weft-proxy")
	if _, err := os.Stat(beside); err == nil {
		return beside, nil
	}
	if p, err := exec.LookPath("weft-proxy"); err == nil {
		return p, nil
	}
	return "", errors.New("weft-proxy not found next to weft or in PATH: build both with `go build -o bin/ ./cmd/...` (make build), or pass --proxy")
}

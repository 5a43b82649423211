// Package cli is the weft command: the control plane (`weft control`), the local mesh
// (`weft up`, `weft demo`), config tools (`weft validate`, `apply`, `delete`, `get`) and
// the views of a running mesh (`weft status`, `proxy-status`, `proxy-config`).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Version is set at build time (-ldflags "-X .../internal/cli.Version=...").
var Version = "dev"

// exitError carries an exit code without printing more than the command did.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Execute runs the weft command with args and returns the exit code.
func Execute(args []string) int {
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(stderr, "weft:", err)
		return 1
	}
}

type globals struct {
	server   string // control plane API
	stateDir string
	logLevel string
	stdout   io.Writer
	stderr   io.Writer
}

func (g *globals) logger() *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(g.logLevel))
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "weft",
		Short: "weft is a service mesh: Istio's API, Envoy's xDS, one Go build",
		Long: `weft is a service mesh. Its control plane reads Istio's own YAML and serves Envoy
xDS v3 to weft-proxy sidecars and gateways (or to Envoy and proxyless gRPC clients).

Run a whole mesh on this machine:   weft demo
Check config files offline:         weft validate -f DIR`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", "http://127.0.0.1:15014", "control plane API `URL`")
	pf.StringVar(&g.stateDir, "state-dir", "", "local mesh state `dir` (default $XDG_RUNTIME_DIR/weft or ~/.weft/run)")
	pf.StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	root.AddCommand(
		controlCmd(g), upCmd(g), demoCmd(g),
		validateCmd(g), applyCmd(g), deleteCmd(g), getCmd(g),
		statusCmd(g), proxyStatusCmd(g), proxyConfigCmd(g), tlsCheckCmd(g),
		sampleCmd(g), versionCmd(g),
	)
	return root
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(g.stdout, "weft", Version) },
	}
}

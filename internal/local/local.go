// Package local runs a whole mesh on one machine, without root and without Kubernetes:
// the control plane in process, and for each workload of the mesh file its application
// and a weft-proxy beside it, plus an ingress gateway. It is `weft up` and `weft demo`.
//
// Each workload gets its own loopback addresses (see package meshfile): the sidecar owns
// the workload's mesh address (127.2.X.Y) and keeps Istio's ports on it (inbound service
// ports, 15001 outbound HTTP proxy, 15000 admin, 15021 health, 15090 stats); the
// application listens on 127.1.X.Y and calls other services through its sidecar
// (HTTP_PROXY). The ingress gateway serves on 127.0.0.1.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weft-mesh/weft/internal/meshfile"
	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
)

// Options configure a local mesh.
type Options struct {
	Mesh *meshfile.Mesh
	// StateDir holds bootstraps, logs and state.json (default: DefaultStateDir()).
	StateDir string
	// ProxyBinary is the weft-proxy executable.
	ProxyBinary string
	// Self is the weft executable, for $WEFT in commands.
	Self string
	// XDSAddress is where the control plane serves xDS (default 127.0.0.1:15010);
	// APIAddress its HTTP API and debug endpoints (default 127.0.0.1:15014).
	XDSAddress, APIAddress string
	// ControlPlane runs the control plane until ctx ends; it is called once, before any
	// proxy starts, and must close ready when it serves.
	ControlPlane func(ctx context.Context, ready chan<- struct{}) error
	// Out receives the human summary (addresses, URLs).
	Out io.Writer
	Log *slog.Logger
	// ProxyLogLevel is passed to every proxy (default "warn").
	ProxyLogLevel string
	// IssueToken, when set, gives each sidecar its own credential for the CA service
	// (namespace, service account, workload): the proxy then generates its key and gets
	// its certificate by CSR, and the key never leaves it. Without it the control plane
	// pushes certificates over SDS.
	IssueToken func(namespace, serviceAccount, workload string) (string, error)
	// TrustDomain of the workloads' SPIFFE IDs (default: the mesh file's).
	TrustDomain string
}

// DefaultStateDir is $XDG_RUNTIME_DIR/weft, else ~/.weft/run.
func DefaultStateDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "weft")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".weft", "run")
	}
	return filepath.Join(os.TempDir(), "weft")
}

// State is what `weft status` reads: what runs where.
type State struct {
	Mesh       string          `json:"mesh"`
	StartedAt  time.Time       `json:"startedAt"`
	PID        int             `json:"pid"`
	XDS        string          `json:"xds"`
	API        string          `json:"api"`
	GatewayURL string          `json:"gatewayURL,omitempty"`
	Workloads  []WorkloadState `json:"workloads"`
	Gateway    *WorkloadState  `json:"gateway,omitempty"`
	LogDir     string          `json:"logDir"`
}

// WorkloadState is one workload's addresses.
type WorkloadState struct {
	Name      string `json:"name"`
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	App       string `json:"app"`     // application IP
	Sidecar   string `json:"sidecar"` // the workload's mesh address (sidecar IP)
	Admin     string `json:"admin"`   // sidecar admin URL
	NodeID    string `json:"nodeID"`
}

// Up runs the mesh until ctx ends, then stops everything.
func Up(ctx context.Context, o Options) error {
	if o.Mesh == nil {
		return errors.New("local: a mesh is required")
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir()
	}
	if o.XDSAddress == "" {
		o.XDSAddress = "127.0.0.1:15010"
	}
	if o.APIAddress == "" {
		o.APIAddress = "127.0.0.1:15014"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.ProxyLogLevel == "" {
		o.ProxyLogLevel = "warn"
	}
	if _, err := os.Stat(o.ProxyBinary); err != nil {
		return fmt.Errorf("local: weft-proxy binary: %w", err)
	}
	logDir := filepath.Join(o.StateDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("local: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	cpErr := make(chan error, 1)
	ready := make(chan struct{})
	if o.ControlPlane != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cpErr <- o.ControlPlane(ctx, ready)
		}()
		select {
		case <-ready:
		case err := <-cpErr:
			return fmt.Errorf("local: control plane: %w", err)
		case <-time.After(30 * time.Second):
			return errors.New("local: control plane not ready within 30s")
		}
	}

	st := &State{Mesh: o.Mesh.Mesh, StartedAt: time.Now(), PID: os.Getpid(), XDS: o.XDSAddress, API: o.APIAddress, LogDir: logDir}
	var procs []*process
	for _, w := range o.Mesh.Workloads() {
		ws, ps, err := o.workload(w, logDir)
		if err != nil {
			return err
		}
		st.Workloads = append(st.Workloads, ws)
		procs = append(procs, ps...)
	}
	if g := o.Mesh.Gateway; g != nil {
		ws, p, err := o.gateway(g, logDir)
		if err != nil {
			return err
		}
		st.Gateway = &ws
		st.GatewayURL = fmt.Sprintf("http://127.0.0.1:%d", g.Port)
		procs = append(procs, p)
	}
	for _, p := range procs {
		wg.Add(1)
		go func(p *process) {
			defer wg.Done()
			p.run(ctx)
		}(p)
	}
	if err := writeState(o.StateDir, st); err != nil {
		o.Log.Warn("cannot write state", "err", err)
	}
	defer os.Remove(filepath.Join(o.StateDir, "state.json"))
	o.summary(st)
	go o.waitReady(ctx, st)

	select {
	case <-ctx.Done():
	case err := <-cpErr:
		if err != nil {
			o.Log.Error("control plane stopped", "err", err)
		}
		cancel()
	}
	fmt.Fprintln(o.Out, "stopping the mesh...")
	wg.Wait()
	return nil
}

func (o *Options) env(w *meshfile.Workload, extra ...string) []string {
	env := append(os.Environ(), extra...)
	for k, v := range w.Env {
		env = append(env, k+"="+o.expand(v, w))
	}
	sort.Strings(env[len(os.Environ()):])
	return env
}

// expand replaces $WEFT, $APP_IP, $APP_ADDR, $POD_IP and $PROXY.
func (o *Options) expand(s string, w *meshfile.Workload) string {
	return os.Expand(s, func(k string) string {
		switch k {
		case "WEFT":
			return o.Self
		case "APP_IP", "APP_ADDR":
			return w.AppIP.String()
		case "POD_IP":
			return w.PodIP.String()
		case "PROXY":
			return fmt.Sprintf("http://%s:15001", w.PodIP)
		}
		return os.Getenv(k)
	})
}

func (o *Options) workload(w *meshfile.Workload, logDir string) (WorkloadState, []*process, error) {
	ns := w.Service.Namespace
	id := node.ID(node.Sidecar, w.PodIP, w.Name, ns, ns+".svc."+o.Mesh.TrustDomain)
	ws := WorkloadState{
		Name: w.Name, Service: w.Service.Name, Namespace: ns, App: w.AppIP.String(), Sidecar: w.PodIP.String(),
		Admin: fmt.Sprintf("http://%s:15000", w.PodIP), NodeID: id,
	}
	var procs []*process
	if len(w.Command) > 0 {
		argv := make([]string, len(w.Command))
		for i, a := range w.Command {
			argv[i] = o.expand(a, w)
		}
		lf, err := logFile(logDir, w.Name)
		if err != nil {
			return ws, nil, err
		}
		env := o.env(w, "POD_IP="+w.PodIP.String(), "APP_IP="+w.AppIP.String(), "SERVICE_VERSION="+w.Labels["version"])
		if !w.NoSidecar {
			proxy := fmt.Sprintf("http://%s:15001", w.PodIP)
			env = append(env, "HTTP_PROXY="+proxy, "http_proxy="+proxy)
		}
		procs = append(procs, &process{name: w.Name, argv: argv, env: env, log: lf, lg: o.Log})
	}
	if w.NoSidecar {
		return ws, procs, nil
	}
	p := &node.Proxy{
		Type: node.Sidecar, IP: w.PodIP, Workload: w.Name, Namespace: ns, ServiceAccount: w.ServiceAccount,
		Labels: w.Labels, Interception: node.Explicit, AppIP: w.AppIP, CAAgent: o.IssueToken != nil,
	}
	pp, err := o.proxyProcess(w.Name, id, p, w.PodIP, logDir)
	if err != nil {
		return ws, nil, err
	}
	return ws, append(procs, pp), nil
}

func (o *Options) gateway(g *meshfile.Gateway, logDir string) (WorkloadState, *process, error) {
	ip := netip.MustParseAddr("127.0.0.1")
	const name, ns = "istio-ingressgateway", "istio-system"
	id := node.ID(node.Router, ip, name, ns, ns+".svc."+o.Mesh.TrustDomain)
	p := &node.Proxy{Type: node.Router, IP: ip, Workload: name, Namespace: ns, ServiceAccount: "istio-ingressgateway-service-account",
		Labels: g.Labels, Interception: node.Explicit, CAAgent: o.IssueToken != nil}
	pp, err := o.proxyProcess(name, id, p, ip, logDir)
	ws := WorkloadState{Name: name, Service: name, Namespace: ns, Sidecar: ip.String(), Admin: "http://127.0.0.1:15000", NodeID: id}
	return ws, pp, err
}

// proxyProcess writes the proxy's bootstrap and returns its supervised process.
func (o *Options) proxyProcess(name, id string, p *node.Proxy, ip netip.Addr, logDir string) (*process, error) {
	b := bootstrap.FromFlags(bootstrap.Flags{NodeID: id, Cluster: name, XDSAddress: o.XDSAddress, AdminAddress: ip.String() + ":15000"})
	b.Node.Metadata = node.Metadata(p)
	b.Node.Locality = &corev3.Locality{}
	if err := bootstrap.Validate(b); err != nil {
		return nil, fmt.Errorf("local: bootstrap of %s: %w", name, err)
	}
	data, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(o.StateDir, "proxies")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return nil, err
	}
	lf, err := logFile(logDir, name+".proxy")
	if err != nil {
		return nil, err
	}
	argv := []string{o.ProxyBinary, "-c", path,
		"--health-address", ip.String() + ":15021", "--stats-address", ip.String() + ":15090",
		"--log-level", o.ProxyLogLevel, "--drain-timeout", "2s"}
	if p.CAAgent {
		// The credential goes in a file only this proxy is told about (0600), never on
		// the command line where ps would show it.
		token, err := o.IssueToken(p.Namespace, p.ServiceAccount, p.Workload)
		if err != nil {
			return nil, fmt.Errorf("local: credential of %s: %w", name, err)
		}
		tokenFile := filepath.Join(dir, name+".token")
		if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
			return nil, err
		}
		td := o.TrustDomain
		if td == "" {
			td = o.Mesh.TrustDomain
		}
		argv = append(argv, "--ca-address", o.XDSAddress, "--ca-token-file", tokenFile, "--ca-identity", p.SpiffeID(td))
	}
	return &process{name: name + ".proxy", argv: argv, env: os.Environ(), log: lf, lg: o.Log}, nil
}

func (o *Options) summary(st *State) {
	w := o.Out
	fmt.Fprintf(w, "\nweft mesh %q is starting\n\n", st.Mesh)
	fmt.Fprintf(w, "  control plane   xDS %s   API http://%s\n", st.XDS, st.API)
	if st.Gateway != nil {
		fmt.Fprintf(w, "  ingress gateway %s   (admin %s)\n", st.GatewayURL, st.Gateway.Admin)
	}
	fmt.Fprintf(w, "\n  %-22s %-14s %-12s %-12s %s\n", "WORKLOAD", "SERVICE", "APP", "SIDECAR", "ADMIN")
	for _, ws := range st.Workloads {
		fmt.Fprintf(w, "  %-22s %-14s %-12s %-12s %s\n", ws.Name, ws.Service, ws.App, ws.Sidecar, ws.Admin)
	}
	fmt.Fprintf(w, "\n  logs: %s\n  weft status shows what runs; Ctrl-C stops everything.\n\n", st.LogDir)
}

// waitReady prints once every proxy reports ready.
func (o *Options) waitReady(ctx context.Context, st *State) {
	admins := []string{}
	for _, ws := range st.Workloads {
		admins = append(admins, ws.Admin)
	}
	if st.Gateway != nil {
		admins = append(admins, st.Gateway.Admin)
	}
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		notReady := 0
		for _, a := range admins {
			resp, err := c.Get(a + "/ready")
			if err != nil {
				notReady++
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				notReady++
			}
		}
		if notReady == 0 {
			msg := "mesh ready"
			if st.GatewayURL != "" {
				msg += ": " + st.GatewayURL
			}
			fmt.Fprintln(o.Out, msg)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
	}
	fmt.Fprintln(o.Out, "some proxies are not ready after 2 minutes: see weft status and the logs")
}

func writeState(dir string, st *State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "state.json"), data, 0o644)
}

// ReadState reads the state of the running local mesh.
func ReadState(dir string) (*State, error) {
	if dir == "" {
		dir = DefaultStateDir()
	}
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no local mesh is running (no %s)", filepath.Join(dir, "state.json"))
		}
		return nil, err
	}
	st := new(State)
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "state.json"), err)
	}
	return st, nil
}

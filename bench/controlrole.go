package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/internal/config"
	"github.com/weft-mesh/weft/internal/control"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
)

// roleEnv selects what the harness's binary does when it starts: empty runs the
// benchmark; "control" serves a weft control plane over a generated mesh (the
// control-plane cases run it as a child process, so its CPU and RSS are its own).
const roleEnv = "WEFT_BENCH_ROLE"

// profileEnv, when set in the harness's environment (children inherit it), makes each
// control plane child write a CPU profile of its whole life to <value>-<pid>.cpu and a
// heap profile at exit to <value>-<pid>.heap (and every 2 s to <value>-<pid>-NNN.heap),
// for `go tool pprof`.
const profileEnv = "WEFT_BENCH_CP_PROFILE"

// profileControl starts the CPU profile; the returned func stops it and writes the heap
// profile.
func profileControl(prefix string) (func(), error) {
	base := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	f, err := os.Create(base + ".cpu")
	if err != nil {
		return nil, fmt.Errorf("bench: cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: cpu profile: %w", err)
	}
	// Heap profiles every 2 s as well, so the one at a given phase (all connected, a
	// change) can be read, not only the one at exit.
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if h, err := os.Create(fmt.Sprintf("%s-%03d.heap", base, i)); err == nil {
				_ = pprof.Lookup("heap").WriteTo(h, 0)
				h.Close()
			}
		}
	}()
	return func() {
		close(done)
		pprof.StopCPUProfile()
		f.Close()
		h, err := os.Create(base + ".heap")
		if err != nil {
			return
		}
		defer h.Close()
		_ = pprof.Lookup("heap").WriteTo(h, 0)
	}, nil
}

// benchNS is the namespace of the generated mesh.
const benchNS = "bench"

// servicePort is the one HTTP port of every generated service.
const servicePort = 8080

// meshSize is a generated mesh: Services services with Endpoints endpoints each.
type meshSize struct{ Services, Endpoints int }

func serviceHost(i int) string { return fmt.Sprintf("svc-%d.%s.svc.cluster.local", i, benchNS) }

// workloadIP is the address of the n-th workload (0-based): 127.77.0.1 onwards, a range
// no other weft test uses; nothing listens there except the one real sidecar.
func workloadIP(n int) netip.Addr {
	n++
	return netip.AddrFrom4([4]byte{127, byte(77 + n>>16), byte(n >> 8), byte(n)})
}

// generatedMesh is the registry source of a mesh of the given size: service i has
// endpoints on workloads i*M .. i*M+M-1.
func generatedMesh(sz meshSize) *registry.Static {
	st := &registry.Static{SourceName: "bench"}
	for i := 0; i < sz.Services; i++ {
		host := serviceHost(i)
		st.Svcs = append(st.Svcs, &registry.Service{
			Hostname: host, Name: fmt.Sprintf("svc-%d", i), Namespace: benchNS,
			Ports:  []registry.Port{{Name: "http", Number: servicePort, Protocol: registry.HTTP}},
			Source: "bench",
		})
		for j := 0; j < sz.Endpoints; j++ {
			n := i*sz.Endpoints + j
			st.Insts = append(st.Insts, &registry.Instance{
				Service: host, ServicePort: servicePort, Address: workloadIP(n).String(), Port: servicePort,
				Workload: fmt.Sprintf("svc-%d-%d", i, j), Namespace: benchNS,
				Labels:         map[string]string{"app": fmt.Sprintf("svc-%d", i)},
				ServiceAccount: fmt.Sprintf("svc-%d", i), Weight: 1, Healthy: true, Sidecar: true,
			})
		}
	}
	registry.SortInstances(st.Insts)
	return st
}

// sidecarYAML is the Sidecar resource of the scoped cases: every proxy of the namespace
// reaches only the first `hosts` services (what a workload with a few dependencies
// declares), so its config no longer grows with the mesh.
func sidecarYAML(hosts int) string {
	s := "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: " + benchNS +
		"\nspec:\n  egress:\n  - hosts:\n"
	for i := 0; i < hosts; i++ {
		s += fmt.Sprintf("    - %s/%s\n", benchNS, serviceHost(i))
	}
	return s
}

// serveControl is the "control" role: a control plane over a generated mesh, serving until
// SIGTERM. It prints "ready" on stdout once its first snapshot is served.
func serveControl(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("control", flag.ContinueOnError)
	services := fs.Int("services", 10, "services in the mesh")
	endpoints := fs.Int("endpoints", 2, "endpoints per service")
	xdsAddr := fs.String("xds", "127.0.0.1:0", "ADS address")
	apiAddr := fs.String("api", "127.0.0.1:0", "HTTP API address")
	scope := fs.Int("sidecar-hosts", 0, "when > 0, a Sidecar limits egress to this many services")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if path := os.Getenv(profileEnv); path != "" {
		stop, err := profileControl(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer stop()
	}
	s, err := control.New(control.Options{
		XDSAddress: *xdsAddr, APIAddress: *apiAddr, Log: log,
		Sources: []registry.Source{generatedMesh(meshSize{*services, *endpoints})},
		Mesh:    snapshot.DefaultMeshConfig(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *scope > 0 {
		res := config.ParseFile("bench-sidecar.yaml", []byte(sidecarYAML(*scope)))
		if !res.OK() {
			fmt.Fprintln(os.Stderr, res.Err())
			return 1
		}
		if err := s.Store().Apply("bench", res.Resources); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		select {
		case <-s.Ready():
			fmt.Fprintf(stdout, "ready xds=%s api=%s\n", s.XDSAddr(), s.APIAddr())
		case <-ctx.Done():
		}
	}()
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// fortioModule is the newest fortio that installs here: later versions need a module the
// module proxy refuses (see issue 5).
const fortioModule = "fortio.org/fortio@v1.68.2"

// tools are the binaries a run uses. An empty path means the tool is not available and
// the paths that need it are skipped (with the reason in skipped).
type tools struct {
	RepoRoot  string
	Dir       string // bench/.tools
	Fortio    string
	WeftProxy string
	GoProxy   string // httputil.ReverseProxy baseline (bench/goproxy)
	ProfProxy string // weft-proxy with a CPU profile written at exit (bench/profproxy)
	Nginx     string
	HAProxy   string
	skipped   map[string]string // tool -> why it is missing
}

// repoRoot is the directory of the module's go.mod.
func repoRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("bench: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("bench: run inside the weft module (go run ./bench from the repo root)")
	}
	return filepath.Dir(mod), nil
}

// runLogged runs a command with a deadline and returns its combined output on failure.
// weft-proxy is built as the Makefile builds it: static (no libc mapped) and without
// grpc's x/net/trace support, which links html/template and, through its reflection,
// every exported method of every linked type (peak RSS -3.6 MB together, measured).
var (
	proxyBuildEnv  = []string{"CGO_ENABLED=0"}
	proxyBuildTags = "-tags=grpcnotrace"
)

func runLogged(ctx context.Context, timeout time.Duration, dir string, env []string, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		s := strings.TrimSpace(string(out))
		if len(s) > 2000 {
			s = s[len(s)-2000:]
		}
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, s)
	}
	return nil
}

// ensureFortio installs fortio into dir on first use.
func ensureFortio(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "fortio")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	// Outside the module: fortio must not enter weft's go.mod.
	if err := runLogged(ctx, 5*time.Minute, os.TempDir(), []string{"GOBIN=" + dir},
		"go", "install", fortioModule); err != nil {
		return "", fmt.Errorf("bench: install fortio: %w", err)
	}
	return bin, nil
}

// ensureApt finds bin in PATH, or installs pkg with apt-get when running as root.
func ensureApt(ctx context.Context, bin, pkg string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(d, bin); fileExists(p) {
			return p, nil
		}
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%s not installed and not root (apt-get install %s)", bin, pkg)
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if err := runLogged(ctx, 5*time.Minute, "", env, "apt-get", "install", "-y", "--no-install-recommends", pkg); err != nil {
		if err := runLogged(ctx, 5*time.Minute, "", env, "apt-get", "update"); err != nil {
			return "", fmt.Errorf("apt-get update: %w", err)
		}
		if err := runLogged(ctx, 5*time.Minute, "", env, "apt-get", "install", "-y", "--no-install-recommends", pkg); err != nil {
			return "", err
		}
	}
	// Debian starts the packaged service; the harness runs its own instances on other
	// ports, so the service's listeners do not matter.
	for _, d := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(d, bin); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found after apt-get install %s", bin, pkg)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// setupTools builds weft-proxy from this checkout and finds or installs the rest. Fortio
// is required; nginx and HAProxy are optional (their paths are skipped when missing).
func setupTools(ctx context.Context, dir string, needNginx, needHAProxy bool) (*tools, error) {
	root, err := repoRoot(ctx)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		dir = filepath.Join(root, "bench", ".tools")
	}
	dir = mustAbs(dir)
	t := &tools{RepoRoot: root, Dir: dir, skipped: map[string]string{}}
	if t.Fortio, err = ensureFortio(ctx, dir); err != nil {
		return nil, err
	}
	t.WeftProxy = filepath.Join(dir, "weft-proxy")
	if err := runLogged(ctx, 5*time.Minute, root, proxyBuildEnv, "go", "build", proxyBuildTags, "-o", t.WeftProxy, "./cmd/weft-proxy"); err != nil {
		return nil, fmt.Errorf("bench: build weft-proxy: %w", err)
	}
	t.GoProxy = filepath.Join(dir, "goproxy")
	if err := runLogged(ctx, 5*time.Minute, root, nil, "go", "build", "-o", t.GoProxy, "./bench/goproxy"); err != nil {
		return nil, fmt.Errorf("bench: build goproxy: %w", err)
	}
	if needNginx {
		if t.Nginx, err = ensureApt(ctx, "nginx", "nginx"); err != nil {
			t.skipped["nginx"] = err.Error()
		}
	}
	if needHAProxy {
		if t.HAProxy, err = ensureApt(ctx, "haproxy", "haproxy"); err != nil {
			t.skipped["haproxy"] = err.Error()
		}
	}
	return t, nil
}

// buildProfProxy builds weft-proxy with a CPU profile hook (bench/profproxy).
func (t *tools) buildProfProxy(ctx context.Context) error {
	t.ProfProxy = filepath.Join(t.Dir, "weft-proxy-prof")
	if err := runLogged(ctx, 5*time.Minute, t.RepoRoot, proxyBuildEnv, "go", "build", proxyBuildTags, "-o", t.ProfProxy, "./bench/profproxy"); err != nil {
		t.ProfProxy = ""
		return fmt.Errorf("bench: build profproxy: %w", err)
	}
	return nil
}

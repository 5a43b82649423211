package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/weft-mesh/weft/internal/meshfile"
	"github.com/weft-mesh/weft/internal/testnet"
)

// The README's examples are checked here so that the docs stay true (as CoreDNS's
// test/readme_test.go does): its indented command blocks and inline `code` are parsed;
// commands that are safe on a shared machine run for real (weft --help, weft validate,
// weft apply/get/proxy-status against an in-process control plane, the weft-proxy
// example on free loopback ports); the others must name commands, views and flags
// that exist; make targets and paths must exist.

const repoRoot = "../.."

// readmeLine is one line of README.md: an indented block line (indent removed) or an
// inline code span, with the section it is in.
type readmeLine struct {
	section string
	line    int
	text    string
}

func (l readmeLine) String() string {
	return fmt.Sprintf("README.md:%d (%s): %s", l.line, l.section, l.text)
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

func readme(t *testing.T) (blocks, spans []readmeLine) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := ""
	inBlock := false
	prevBlank := true
	for i, l := range strings.Split(string(data), "\n") {
		n := i + 1
		switch {
		case strings.HasPrefix(l, "#"):
			section = strings.TrimSpace(strings.TrimLeft(l, "#"))
			inBlock = false
		case strings.HasPrefix(l, "    ") && (inBlock || prevBlank):
			inBlock = true
			blocks = append(blocks, readmeLine{section, n, strings.TrimRight(l[4:], " ")})
		case strings.TrimSpace(l) == "":
		default:
			inBlock = false
			for _, m := range codeSpan.FindAllStringSubmatch(l, -1) {
				spans = append(spans, readmeLine{section, n, m[1]})
			}
		}
		prevBlank = strings.TrimSpace(l) == ""
	}
	if len(blocks) == 0 {
		t.Fatal("README.md has no indented blocks")
	}
	return blocks, spans
}

// command is one README command, split into words.
type command struct {
	at   readmeLine
	argv []string
}

var (
	descSep     = regexp.MustCompile(`\s{2,}`)
	alternative = regexp.MustCompile(`^[a-z-]+(\|[a-z-]+)+$`)
)

// commands reads the commands of the blocks and spans: a trailing "# comment" and "&"
// are dropped; in synopsis lines ("weft get KIND [NAME]   description") the
// description is dropped, commas separate commands, brackets are removed, and
// lowercase alternatives ("apply|delete") give one command each. Lines that are not
// commands (the layout table) are left out.
func commands(lines []readmeLine) []command {
	var out []command
	for _, l := range lines {
		s := l.text
		if strings.HasPrefix(s, " ") {
			continue // a continuation line of a table
		}
		if i := strings.Index(s, " #"); i >= 0 {
			s = s[:i]
		}
		s = descSep.Split(strings.TrimSpace(s), 2)[0]
		s = strings.TrimSpace(strings.TrimSuffix(s, "&"))
		for _, part := range strings.Split(s, ", ") {
			words := strings.Fields(strings.NewReplacer("[", "", "]", "").Replace(part))
			if len(words) == 0 {
				continue
			}
			switch words[0] {
			case "weft", "bin/weft", "weft-proxy", "bin/weft-proxy", "bin/hello", "make", "go":
			default:
				continue
			}
			for _, argv := range expand(words) {
				out = append(out, command{at: l, argv: argv})
			}
		}
	}
	return out
}

func expand(words []string) [][]string {
	out := [][]string{nil}
	for _, w := range words {
		alts := []string{w}
		if alternative.MatchString(w) {
			alts = strings.Split(w, "|")
		}
		var next [][]string
		for _, prefix := range out {
			for _, a := range alts {
				next = append(next, append(append([]string(nil), prefix...), a))
			}
		}
		out = next
	}
	return out
}

func isWeft(argv []string) bool { return argv[0] == "weft" || argv[0] == "bin/weft" }

// placeholder reports whether a word stands for something ("FILE|DIR", "COMMAND").
func placeholder(w string) bool {
	return regexp.MustCompile(`^[A-Z][A-Z_|]*$`).MatchString(w)
}

func TestReadmeCommandParsing(t *testing.T) {
	got := commands([]readmeLine{
		{text: "weft apply|delete -f FILE|DIR, weft get KIND [NAME]   what it does"},
		{text: "bin/weft status                        # what runs where"},
		{text: "bin/hello -addr 127.0.0.1:8080 &"},
		{text: "cmd/weft, cmd/weft-proxy  the CLI"},
		{text: "                          router, filter/<name>"},
	})
	var s []string
	for _, c := range got {
		s = append(s, strings.Join(c.argv, " "))
	}
	want := []string{"weft apply -f FILE|DIR", "weft delete -f FILE|DIR", "weft get KIND NAME", "bin/weft status", "bin/hello -addr 127.0.0.1:8080"}
	if strings.Join(s, "\n") != strings.Join(want, "\n") {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(s, "\n"), strings.Join(want, "\n"))
	}
}

// TestReadmeWeftCommandsExist checks that every weft command line of the README names a
// command that exists, with flags it has and arguments it accepts; proxy-config views
// are accepted by the command.
func TestReadmeWeftCommandsExist(t *testing.T) {
	blocks, spans := readme(t)
	n := 0
	for _, c := range commands(append(blocks, spans...)) {
		if !isWeft(c.argv) {
			continue
		}
		args := c.argv[1:]
		if len(args) > 0 && placeholder(args[0]) { // weft COMMAND --help
			continue
		}
		n++
		root := newRoot(io.Discard, io.Discard)
		cmd, rest, err := root.Find(args)
		if err != nil {
			t.Errorf("%v: %v", c.at, err)
			continue
		}
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") && cmd == root {
			t.Errorf("%v: no command %q", c.at, args[0])
			continue
		}
		if err := cmd.ParseFlags(rest); err != nil && !errors.Is(err, pflag.ErrHelp) {
			t.Errorf("%v: %s: %v", c.at, cmd.CommandPath(), err)
			continue
		}
		if help, _ := cmd.Flags().GetBool("help"); help {
			continue
		}
		if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
			t.Errorf("%v: %s: %v", c.at, cmd.CommandPath(), err)
		}
		if cmd.Name() == "proxy-config" && len(cmd.Flags().Args()) > 0 {
			// The view is checked before the proxy is read: an unreachable admin
			// URL fails later, an unknown view fails first.
			view := cmd.Flags().Args()[0]
			code, _, errOut := weft(t, "proxy-config", view, "--admin", "http://127.0.0.1:1")
			if code == 0 || strings.Contains(errOut, "unknown view") {
				t.Errorf("%v: proxy-config %s: exit %d: %s", c.at, view, code, errOut)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d weft commands found in README.md", n)
	}
	// The proxy the README's proxy-config example names is a workload of the demo.
	mesh, err := meshfile.Load(filepath.Join(repoRoot, "samples", "bookinfo", "mesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	workloads := map[string]bool{}
	for _, w := range mesh.Workloads() {
		workloads[w.Name] = true
	}
	for _, c := range commands(blocks) {
		if isWeft(c.argv) && len(c.argv) == 4 && c.argv[1] == "proxy-config" && !placeholder(c.argv[3]) && !workloads[c.argv[3]] {
			t.Errorf("%v: %q is not a workload of samples/bookinfo/mesh.yaml", c.at, c.argv[3])
		}
	}
	// "open http://127.0.0.1:8080/productpage": the demo's gateway port.
	if mesh.Gateway == nil || mesh.Gateway.Port != 8080 {
		t.Errorf("samples/bookinfo/mesh.yaml gateway %+v: README.md says the demo serves on 127.0.0.1:8080", mesh.Gateway)
	}
}

// TestReadmeMakeTargets checks that `make demo` and `make test` exist and that their
// scripts do.
func TestReadmeMakeTargets(t *testing.T) {
	blocks, spans := readme(t)
	mk, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]string{} // target -> recipe
	var cur string
	for _, l := range strings.Split(string(mk), "\n") {
		if m := regexp.MustCompile(`^([a-zA-Z0-9_.-]+):`).FindStringSubmatch(l); m != nil {
			cur = m[1]
			targets[cur] = ""
			continue
		}
		if strings.HasPrefix(l, "\t") && cur != "" {
			targets[cur] += strings.TrimSpace(l) + "\n"
		} else if strings.TrimSpace(l) == "" {
			cur = ""
		}
	}
	seen := map[string]bool{}
	for _, c := range commands(append(blocks, spans...)) {
		if c.argv[0] != "make" {
			continue
		}
		for _, target := range c.argv[1:] {
			seen[target] = true
			recipe, ok := targets[target]
			if !ok {
				t.Errorf("%v: the Makefile has no target %q", c.at, target)
				continue
			}
			// A recipe that runs a script in the repository: the script exists and
			// can be executed.
			for _, w := range strings.Fields(recipe) {
				if strings.HasPrefix(w, "./") {
					st, err := os.Stat(filepath.Join(repoRoot, w))
					if err != nil {
						t.Errorf("make %s runs %s: %v", target, w, err)
					} else if st.Mode()&0o111 == 0 {
						t.Errorf("make %s runs %s, which is not executable", target, w)
					}
				}
			}
		}
	}
	for _, want := range []string{"demo", "test"} {
		if !seen[want] {
			t.Errorf("README.md no longer says `make %s`", want)
		}
	}
}

// TestReadmePaths checks the layout table and the paths in inline code.
func TestReadmePaths(t *testing.T) {
	blocks, spans := readme(t)
	exists := func(at readmeLine, p string) {
		t.Helper()
		if strings.HasPrefix(p, "../") {
			if _, err := os.Stat(filepath.Join(repoRoot, "..", "shared")); err != nil {
				return // the shared directory beside the repository is not here
			}
		}
		if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
			t.Errorf("%v: %v", at, err)
		}
	}
	n := 0
	proxyLine := false
	for _, l := range blocks {
		if l.section != "Layout" {
			continue
		}
		if strings.HasPrefix(l.text, " ") {
			if proxyLine {
				for _, p := range proxyPackages(l.text) {
					exists(l, "internal/proxy/"+p)
				}
			}
			continue
		}
		cols := descSep.Split(l.text, 2)
		prev := ""
		for _, p := range strings.Split(cols[0], ", ") {
			p = strings.TrimSpace(p)
			n++
			// "internal/xds, xds/gen": a later entry may be written relative to the
			// directory of the one before it.
			if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil && prev != "" {
				p = filepath.Join(filepath.Dir(prev), p)
			}
			exists(l, p)
			prev = p
		}
		proxyLine = strings.TrimSpace(cols[0]) == "internal/proxy/"
		if proxyLine && len(cols) == 2 {
			_, list, _ := strings.Cut(cols[1], ":")
			for _, p := range proxyPackages(list) {
				exists(l, "internal/proxy/"+p)
			}
		}
	}
	if n < 5 {
		t.Errorf("only %d layout paths found in README.md", n)
	}
	pathLike := regexp.MustCompile(`^(\.\./)?[a-z][a-z0-9_.-]*/[a-zA-Z0-9_./-]*$`)
	for _, s := range spans {
		if pathLike.MatchString(s.text) {
			exists(s, s.text)
		}
	}
}

// proxyPackages reads "router, filter/<name>, upstream (lb, pool)" as package paths:
// router, filter, upstream, upstream/lb, upstream/pool.
func proxyPackages(s string) []string {
	var out []string
	parent := ""
	for _, tok := range regexp.MustCompile(`[a-z/<>]+|[(),]`).FindAllString(s, -1) {
		switch tok {
		case ",":
		case "(":
			if len(out) > 0 {
				parent = out[len(out)-1] + "/"
			}
		case ")":
			parent = ""
		default:
			tok = strings.TrimSuffix(tok, "/<name>")
			out = append(out, parent+tok)
		}
	}
	return out
}

func TestProxyPackages(t *testing.T) {
	got := strings.Join(proxyPackages(" router, filter/<name>, upstream (lb, pool), tcpproxy"), " ")
	if want := "router filter upstream upstream/lb upstream/pool tcpproxy"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestReadmeExamplesRun builds the binaries and runs the README's commands that are
// safe on a shared machine.
func TestReadmeExamplesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	blocks, spans := readme(t)
	all := commands(append(blocks, spans...))
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	// The README's own `go build` line (into a temp dir), plus weft.
	pkgs := []string{"./cmd/weft"}
	for _, c := range all {
		if c.argv[0] == "go" && len(c.argv) > 1 && c.argv[1] == "build" {
			for _, a := range c.argv[2:] {
				if strings.HasPrefix(a, "./") {
					pkgs = append(pkgs, a)
				}
			}
		}
	}
	if len(pkgs) < 3 {
		t.Fatalf("README.md's go build line lists %v", pkgs[1:])
	}
	build := exec.Command("go", append([]string{"build", "-o", bin + "/"}, pkgs...)...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", pkgs, err, out)
	}
	binary := func(name string) string { return filepath.Join(bin, filepath.Base(name)) }
	runBin := func(argv ...string) (int, string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary(argv[0]), argv[1:]...)
		cmd.Dir = root
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
		return code, out.String(), errb.String()
	}

	t.Run("weft --help", func(t *testing.T) {
		code, out, errOut := runBin("weft", "--help")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		// Every command the README names is listed.
		for _, c := range all {
			if isWeft(c.argv) && len(c.argv) > 1 && !strings.HasPrefix(c.argv[1], "-") && !placeholder(c.argv[1]) &&
				!strings.Contains(out, "\n  "+c.argv[1]+" ") {
				t.Errorf("%v: weft --help does not list %q", c.at, c.argv[1])
			}
		}
	})

	t.Run("weft-proxy --help", func(t *testing.T) {
		code, out, errOut := runBin("weft-proxy", "--help")
		if code != 0 {
			t.Fatalf("exit %d: %s%s", code, out, errOut)
		}
		help := out + errOut
		// Every flag the README gives weft-proxy, in its commands and in the text.
		flags := map[string]readmeLine{}
		for _, c := range all {
			if strings.HasSuffix(c.argv[0], "weft-proxy") {
				for _, a := range c.argv[1:] {
					if strings.HasPrefix(a, "-") && a != "--help" && a != "-h" {
						flags[a] = c.at
					}
				}
			}
		}
		for _, s := range spans {
			if s.section == "weft-proxy" && strings.HasPrefix(s.text, "--") && !strings.Contains(s.text, " ") {
				flags[s.text] = s
			}
		}
		if len(flags) < 5 {
			t.Errorf("only %d weft-proxy flags found in README.md: %v", len(flags), flags)
		}
		for f, at := range flags {
			name := strings.TrimLeft(f, "-")
			if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `\b`).MatchString(help) {
				t.Errorf("%v: weft-proxy --help does not list %s", at, f)
			}
		}
	})

	t.Run("weft validate", func(t *testing.T) {
		ran := 0
		for _, c := range all {
			if !isWeft(c.argv) || len(c.argv) < 2 || c.argv[1] != "validate" {
				continue
			}
			argv := append([]string{"weft"}, c.argv[1:]...)
			for i, a := range argv {
				if a == "FILE|DIR" || a == "DIR" || a == "FILE" {
					argv[i] = "samples/bookinfo/config" // the demo's own starting rules
				}
			}
			code, out, errOut := runBin(argv...)
			if code != 0 || !strings.Contains(out, "validation succeed") {
				t.Errorf("%v: %v: exit %d\n%s%s", c.at, argv, code, out, errOut)
			}
			ran++
		}
		if ran == 0 {
			t.Error("README.md has no weft validate command")
		}
	})

	t.Run("weft apply, get, proxy-status", func(t *testing.T) {
		s := startControl(t)
		server := "--server=http://" + s.APIAddr()
		ran := 0
		var applied []string
		for _, c := range commands(blocks) {
			if !isWeft(c.argv) || len(c.argv) < 2 {
				continue
			}
			concrete := true
			for _, a := range c.argv {
				concrete = concrete && !placeholder(a)
			}
			switch c.argv[1] {
			case "apply", "get", "proxy-status":
			default:
				continue
			}
			if !concrete {
				continue
			}
			argv := append([]string{"weft", server}, c.argv[1:]...)
			if c.argv[1] == "apply" {
				f := c.argv[len(c.argv)-1]
				if _, err := os.Stat(filepath.Join(root, f)); err != nil {
					t.Logf("%v: skipped: %v", c.at, err)
					continue
				}
				applied = append(applied, f)
			}
			code, out, errOut := runBin(argv...)
			if code != 0 {
				t.Errorf("%v: exit %d\n%s%s", c.at, code, out, errOut)
				continue
			}
			ran++
			switch c.argv[1] {
			case "apply":
				if !strings.Contains(out, " applied") {
					t.Errorf("%v: output:\n%s", c.at, out)
				}
			case "get":
				// The VirtualServices the README applied before are listed.
				if len(applied) > 0 && (!strings.Contains(out, "kind: VirtualService") || !strings.Contains(out, "name: reviews")) {
					t.Errorf("%v: after applying %v:\n%s", c.at, applied, out)
				}
			case "proxy-status":
				if !strings.HasPrefix(out, "NAME") {
					t.Errorf("%v: output:\n%s", c.at, out)
				}
			}
		}
		if ran == 0 {
			t.Error("no README command ran against the control plane")
		}
	})

	t.Run("weft-proxy example", func(t *testing.T) {
		readmeProxyExample(t, all, spans, root, binary)
	})
}

// readmeProxyExample runs "bin/hello -addr ... &" and "bin/weft-proxy -c
// examples/proxy/bootstrap.yaml" with the example's ports moved to free loopback
// ports, sends a request through the proxy, and reads the admin, health and stats
// endpoints the README lists.
func readmeProxyExample(t *testing.T, all []command, spans []readmeLine, root string, binary func(string) string) {
	var hello, proxy []string
	for _, c := range all {
		switch {
		case c.argv[0] == "bin/hello":
			hello = c.argv
		case c.argv[0] == "bin/weft-proxy" && len(c.argv) == 3 && c.argv[1] == "-c":
			proxy = c.argv
		}
	}
	if hello == nil || proxy == nil {
		t.Fatalf("README.md lacks the hello / weft-proxy -c example (hello %v, proxy %v)", hello, proxy)
	}
	helloPort, listenerPort, adminPort, healthPort, statsPort := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	bootstrap, err := os.ReadFile(filepath.Join(root, proxy[2]))
	if err != nil {
		t.Fatal(err)
	}
	b := string(bootstrap)
	for old, port := range map[string]int{"8080": helloPort, "10000": listenerPort, "15000": adminPort} {
		if !strings.Contains(b, "port_value: "+old) {
			t.Fatalf("%s has no port_value: %s (the README's example changed: update this test)", proxy[2], old)
		}
		b = strings.ReplaceAll(b, "port_value: "+old, fmt.Sprintf("port_value: %d", port))
	}
	bsPath := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(bsPath, []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}

	helloArgv := append([]string(nil), hello[1:]...)
	for i, a := range helloArgv {
		if a == "127.0.0.1:8080" {
			helloArgv[i] = fmt.Sprintf("127.0.0.1:%d", helloPort)
		}
	}
	start := func(name string, args ...string) (exited <-chan struct{}) {
		cmd := exec.Command(binary(name), args...)
		cmd.Dir = root
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
			if t.Failed() {
				t.Logf("%s output:\n%s", name, out.String())
			}
		})
		return done
	}
	start("hello", helloArgv...)
	proxyExited := start("weft-proxy", "-c", bsPath,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", healthPort), "--stats-address", fmt.Sprintf("127.0.0.1:%d", statsPort),
		"--log-level", "warn")

	c := &http.Client{Timeout: 5 * time.Second}
	get := func(url string) (int, string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	// Through the proxy's listener to hello.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := get(fmt.Sprintf("http://127.0.0.1:%d/greet", listenerPort))
		if err == nil && code == 200 && strings.Contains(body, "hello from GET /greet") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no greeting through weft-proxy within 30s: %d %q %v", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	// The endpoints the README lists: admin paths answer GET, except the mutating
	// ones, which take POST as Envoy's do (and /quitquitquit stops the proxy: last);
	// /healthz/ready is on the health port.
	var paths, posts []string
	for _, s := range spans {
		if s.section != "weft-proxy" || !strings.HasPrefix(s.text, "/") {
			continue
		}
		switch s.text {
		case "/drain_listeners", "/quitquitquit":
			posts = append(posts, s.text)
		default:
			paths = append(paths, s.text)
		}
	}
	if len(paths) < 5 || len(posts) != 2 || posts[1] != "/quitquitquit" {
		t.Fatalf("README.md's weft-proxy endpoints changed: GET %v, POST %v (update this test)", paths, posts)
	}
	for _, p := range paths {
		url := admin + p
		if p == "/healthz/ready" {
			url = fmt.Sprintf("http://127.0.0.1:%d%s", healthPort, p)
		}
		if code, body, err := get(url); err != nil || code != 200 || (body == "" && p != "/healthz/ready") {
			t.Errorf("GET %s: %d %v", url, code, err)
		}
	}
	if _, body, _ := get(admin + "/clusters"); !strings.Contains(body, fmt.Sprintf("hello::127.0.0.1:%d", helloPort)) {
		t.Errorf("admin /clusters does not show the hello endpoint:\n%s", body)
	}
	if code, body, err := get(fmt.Sprintf("http://127.0.0.1:%d/stats/prometheus", statsPort)); err != nil || code != 200 || !strings.Contains(body, "envoy_") {
		t.Errorf("GET stats /stats/prometheus: %d %v", code, err)
	}
	for _, p := range posts {
		if code, _, _ := get(admin + p); code != http.StatusMethodNotAllowed {
			t.Errorf("GET admin %s: %d, want 405 (POST only)", p, code)
		}
		resp, err := c.Post(admin+p, "text/plain", nil)
		if err != nil {
			t.Errorf("POST admin %s: %v", p, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("POST admin %s: %s", p, resp.Status)
		}
	}
	select {
	case <-proxyExited:
	case <-time.After(20 * time.Second):
		t.Errorf("weft-proxy still runs 20s after /quitquitquit")
	}
}

func freePort(t *testing.T) int { return testnet.FreePort(t) }

// syncBuffer is a bytes.Buffer safe for a process's output and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

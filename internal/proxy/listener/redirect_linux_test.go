package listener

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRedirectNetns checks real SO_ORIGINAL_DST: in a network namespace of its own, an
// iptables REDIRECT sends 127.0.0.1:9999 to the capture listener on 15001, which must
// dispatch the connection to the virtual listener 0.0.0.0_9999 with the original
// destination as Local. The listener runs in a re-executed test binary inside the
// namespace (ip netns exec), so no thread of this process changes namespace.
func TestRedirectNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and iptables rules")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %q on PATH (%v)", tool, err)
		}
	}
	ns := fmt.Sprintf("weft-test-%d", os.Getpid())
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("ip", "netns", "add", ns); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := run("ip", "netns", "del", ns); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	if out, err := run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	if out, err := run("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "OUTPUT",
		"-p", "tcp", "--dport", "9999", "-j", "REDIRECT", "--to-ports", "15001"); err != nil {
		t.Skipf("iptables nat REDIRECT unavailable in this kernel: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0],
		"-test.run=^TestRedirectHelperProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "WEFT_NETNS_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "REDIRECT-OK") {
		t.Fatalf("helper in %s failed: %v\n%s", ns, err, out)
	}
}

// TestRedirectHelperProcess is the listener side of TestRedirectNetns; it only runs
// when re-executed inside the namespace.
func TestRedirectHelperProcess(t *testing.T) {
	if os.Getenv("WEFT_NETNS_HELPER") != "1" {
		t.Skip("helper of TestRedirectNetns")
	}
	f := newFixture(t)
	capture := &listenerv3.Listener{
		Name:            "virtualOutbound",
		Address:         sockAddr("127.0.0.1", 15001),
		UseOriginalDst:  wrapperspb.Bool(true),
		ListenerFilters: []*listenerv3.ListenerFilter{origDstFilter(t)},
		FilterChains:    []*listenerv3.FilterChain{tagChain(t, "PassthroughFilterChain", "passthrough", nil)},
	}
	virtual := &listenerv3.Listener{
		Name:         "0.0.0.0_9999",
		Address:      sockAddr("0.0.0.0", 9999),
		BindToPort:   wrapperspb.Bool(false),
		FilterChains: []*listenerv3.FilterChain{tagChain(t, "tcp", "virtual-9999", nil)},
	}
	f.update(t, capture, virtual)
	for _, tc := range []struct{ dial, tag, local string }{
		{"127.0.0.1:9999", "virtual-9999", "127.0.0.1:9999"},  // redirected
		{"127.0.0.1:15001", "passthrough", "127.0.0.1:15001"}, // direct
	} {
		c := dialRaw(t, tc.dial)
		if got := c.tag(t); got != tc.tag {
			t.Fatalf("dial %s: tag %q, want %q", tc.dial, got, tc.tag)
		}
		c.echo(t, "through "+tc.dial)
		got := <-waitSeen(f.fac, tc.tag)
		if got.Local.String() != tc.local {
			t.Fatalf("dial %s: Local %v, want %s", tc.dial, got.Local, tc.local)
		}
	}
	fmt.Println("REDIRECT-OK")
}

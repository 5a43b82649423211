// Package testnet helps tests pick loopback ports for servers they start later (a
// proxy's listener, a child process).
package testnet

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// Port range FreePort draws from: below Linux's default ephemeral range (32768-60999),
// so the outgoing connections of every test running on the machine, which take their
// local ports from that range, cannot take a port between the moment it is picked and
// the moment its server binds it. A port from "127.0.0.1:0" is an ephemeral port, and
// was seen taken that way under parallel test packages.
const (
	lowPort  = 20000
	highPort = 32000
)

// FreePort returns a TCP port on 127.0.0.1 that was free when picked.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		p := lowPort + rand.IntN(highPort-lowPort)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatal("testnet: no free port in 100 tries")
	return 0
}

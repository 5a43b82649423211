package xdsclient

import (
	"fmt"
	"strings"
	"testing"
)

// TestResponseLargerThanGRPCDefault: a CDS response above gRPC's default 4 MB receive
// limit (a mesh of thousands of services) is accepted instead of failing the stream
// forever.
func TestResponseLargerThanGRPCDefault(t *testing.T) {
	var clusters []string
	pad := strings.Repeat("x", 1000)
	for i := 0; i < 6000; i++ { // ~6 MB of cluster names alone
		clusters = append(clusters, fmt.Sprintf("c%05d-%s", i, pad))
	}
	h := start(t, false, nil, world{version: "1", clusters: clusters, port: 1})
	eventually(t, "6,000 clusters applied", func() bool { return len(h.p.names(ClusterType)) == len(clusters) })
}

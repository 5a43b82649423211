// Command weft-proxy is weft's data plane: a sidecar and gateway proxy configured over
// Envoy xDS v3. See internal/proxy. The garbage-collector flags are taken here (gc.go)
// because they set process-wide runtime state before the proxy starts.
package main

import (
	"os"

	"github.com/weft-mesh/weft/internal/proxy"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr, proxy.Main)) }

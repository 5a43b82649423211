// Command weft-proxy is weft's data plane: a sidecar and gateway proxy configured over
// Envoy xDS v3. See internal/proxy.
package main

import (
	"os"

	"github.com/weft-mesh/weft/internal/proxy"
)

func main() { os.Exit(proxy.Main(os.Args[1:])) }

// Command weft is the service mesh's CLI and control plane. See internal/cli.
package main

import (
	"os"

	"github.com/weft-mesh/weft/internal/cli"
)

func main() { os.Exit(cli.Execute(os.Args[1:])) }

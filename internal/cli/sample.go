package cli

import (
	"errors"
	"flag"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/samples/bookinfo"
)

func sampleCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "sample",
		Short: "Run a bundled sample application (the workloads of weft demo)",
	}
	c.AddCommand(&cobra.Command{
		Use:                "bookinfo SERVICE [flags]",
		Short:              "Run one Bookinfo service: productpage, details, reviews or ratings",
		DisableFlagParsing: true, // bookinfo parses its own flags (--addr, --version, ...)
		RunE: func(cmd *cobra.Command, args []string) error {
			err := bookinfo.Main(cmd.Context(), args, g.stderr)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		},
	})
	return c
}

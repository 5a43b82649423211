package cli

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/internal/config"
	"github.com/weft-mesh/weft/internal/config/source/file"
)

func validateCmd(g *globals) *cobra.Command {
	var files []string
	c := &cobra.Command{
		Use:   "validate -f FILE|DIR ...",
		Short: "Check Istio, Gateway API and SMI config files offline (as istioctl validate)",
		Long: `Check config files without a control plane. Every error names the file, the resource
(kind namespace/name) and the field. Exits non-zero when any file has an error.
Use -f - to read standard input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("validate: -f FILE|DIR is required")
			}
			rep, err := config.ValidatePaths(files)
			if ferr := rep.Format(g.stdout); ferr != nil {
				return ferr
			}
			if err != nil {
				fmt.Fprintln(g.stderr, err)
				return exitError{1}
			}
			if !rep.OK() {
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "file or directory (repeatable, - for stdin)")
	return c
}

// configFiles lists the files a -f names (directories: their YAML/JSON files).
func configFiles(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && file.IsConfigFile(path) {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (g *globals) client() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// send posts or deletes each file against the control plane's config API.
func send(g *globals, method string, paths []string) error {
	files, err := configFiles(paths)
	if err != nil {
		return err
	}
	failed := false
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		abs, _ := filepath.Abs(f)
		req, err := http.NewRequest(method, g.server+"/apis/config?file="+url.QueryEscape(abs), bytes.NewReader(data))
		if err != nil {
			return err
		}
		resp, err := g.client().Do(req)
		if err != nil {
			return fmt.Errorf("control plane at %s: %w (is weft control, up or demo running?)", g.server, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed = true
			fmt.Fprintf(g.stderr, "%s", body)
			continue
		}
		fmt.Fprintf(g.stdout, "%s", body)
	}
	if failed {
		return exitError{1}
	}
	return nil
}

func applyCmd(g *globals) *cobra.Command {
	var files []string
	c := &cobra.Command{
		Use:   "apply -f FILE|DIR",
		Short: "Apply config files to a running control plane (validated whole: a bad file changes nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("apply: -f FILE|DIR is required")
			}
			return send(g, http.MethodPost, files)
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "file or directory (repeatable)")
	return c
}

func deleteCmd(g *globals) *cobra.Command {
	var files []string
	c := &cobra.Command{
		Use:   "delete -f FILE|DIR",
		Short: "Delete the resources that config files name from a running control plane",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("delete: -f FILE|DIR is required")
			}
			return send(g, http.MethodDelete, files)
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "file or directory (repeatable)")
	return c
}

func getCmd(g *globals) *cobra.Command {
	var ns string
	c := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show config resources held by a running control plane (kinds: virtualservice|vs, destinationrule|dr, gateway|gw, ...)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{"kind": {args[0]}}
			if len(args) == 2 {
				q.Set("name", args[1])
			}
			if ns != "" {
				q.Set("namespace", ns)
			}
			resp, err := g.client().Get(g.server + "/apis/config?" + q.Encode())
			if err != nil {
				return fmt.Errorf("control plane at %s: %w", g.server, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				fmt.Fprintf(g.stderr, "%s", body)
				return exitError{1}
			}
			_, err = g.stdout.Write(body)
			return err
		},
	}
	c.Flags().StringVarP(&ns, "namespace", "n", "", "namespace (default: all)")
	return c
}

package bookinfo

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

const usage = `usage: bookinfo SERVICE [flags]

SERVICE is one of productpage, details, reviews, ratings.
Upstream URLs left empty come from DETAILS_HOSTNAME, REVIEWS_HOSTNAME,
RATINGS_HOSTNAME (+ SERVICES_DOMAIN, *_SERVICE_PORT) as in Istio's Bookinfo.

flags:
`

// Main runs the standalone bookinfo command: parse args (without the program
// name), then Run until ctx is done.
func Main(ctx context.Context, args []string, stderr io.Writer) error {
	service, cfg, err := ParseArgs(args, stderr)
	if err != nil {
		return err
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, nil))
	return Run(ctx, service, cfg)
}

// ParseArgs parses `SERVICE [flags]` (the service may also follow the flags).
func ParseArgs(args []string, stderr io.Writer) (string, Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("bookinfo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Addr, "addr", DefaultAddr, "listen address")
	fs.StringVar(&cfg.Version, "version", "", "service version: v1, v2 or v3 for reviews, v1 otherwise (default $SERVICE_VERSION, else v1)")
	fs.StringVar(&cfg.DetailsURL, "details-url", "", "details base URL (default http://details:9080)")
	fs.StringVar(&cfg.ReviewsURL, "reviews-url", "", "reviews base URL (default http://reviews:9080)")
	fs.StringVar(&cfg.RatingsURL, "ratings-url", "", "ratings base URL (default http://ratings:9080)")
	fs.DurationVar(&cfg.Timeout, "timeout", DefaultTimeout, "productpage per-call timeout")
	fs.DurationVar(&cfg.RatingsTimeout, "ratings-timeout", 0, "reviews' ratings call timeout (default 10s for v2, 2.5s for v3)")

	var service string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		service, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", cfg, fmt.Errorf("bookinfo: %w", err)
	}
	if service == "" && fs.NArg() > 0 {
		service = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return "", cfg, fmt.Errorf("bookinfo: %w", err)
		}
	}
	if fs.NArg() > 0 {
		return "", cfg, fmt.Errorf("bookinfo: unexpected argument %q", fs.Arg(0))
	}
	if service == "" {
		fs.Usage()
		return "", cfg, fmt.Errorf("bookinfo: missing SERVICE (productpage, details, reviews or ratings)")
	}
	return service, cfg, nil
}

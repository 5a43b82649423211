// Command goproxy is the Go baseline of the benchmark: net/http/httputil.ReverseProxy
// with a keep-alive pool of 64 idle connections per host (the issue's setup for "Go
// httputil.ReverseProxy"), so weft's first milestone, "ahead of every Go proxy", is
// measured in the same run as weft instead of quoted. Plaintext HTTP/1.1 only.
//
//	goproxy -listen 127.0.0.1:8001 -upstream 127.0.0.1:8002
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	upstream := flag.String("upstream", "", "host:port to proxy to")
	flag.Parse()
	if *upstream == "" {
		fmt.Fprintln(os.Stderr, "goproxy: -upstream is required")
		os.Exit(2)
	}
	target := &url.URL{Scheme: "http", Host: *upstream}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = r.In.Host },
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        64,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
		ErrorLog: log.New(os.Stderr, "goproxy: ", 0),
	}
	srv := &http.Server{Addr: *listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "goproxy:", err)
		os.Exit(1)
	}
}

// Command hello is the sample service behind weft-proxy in the README's demo: it
// answers every request with a greeting and echoes the headers the proxy added.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"sort"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s %s\n", r.Method, r.URL.Path)
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "%s: %s\n", k, r.Header.Get(k))
		}
	})
	log.Printf("hello listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}

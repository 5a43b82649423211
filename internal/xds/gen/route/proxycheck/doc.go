// Package proxycheck holds tests only: it feeds the route configurations the route
// generator makes to weft-proxy's own route compiler (internal/proxy/router), so a
// generated configuration the data plane would NACK fails here, and checks that the
// proxy's matcher picks the same route as the simulator (simtest) for a request corpus.
// It is a separate package so that the generator's own tests do not depend on the data
// plane's.
package proxycheck

// Package filter is the API of the proxy's HTTP filters and their registry.
//
// An HTTP filter is middleware around a Handler. The HTTP connection manager builds the
// chain once, when a listener's config is compiled, in the order of the config's
// http_filters, with the router last; a request only walks it. Each filter lives in its own
// package under internal/proxy/filter/<name>, registers its Factory in an init function,
// and is linked into the proxy by one import line in internal/proxy/filter/all.
package filter

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// Route is what a filter may see of the route the request matched.
type Route interface {
	// FilterConfig returns the per-route config for the filter instance of that name
	// (typed_per_filter_config on the route, else its virtual host, else the route
	// configuration), as parsed by the filter's PerRouteParser; nil when there is none.
	FilterConfig(name string) any
}

// Exchange is one HTTP request while the proxy serves it.
type Exchange struct {
	W    http.ResponseWriter
	R    *http.Request
	Info *stream.Info
	// Route is the route matched before the filters ran; nil when none matched (the
	// router then answers 404 with NR). A filter that changes headers the route depends
	// on calls ClearRoute so the router matches again.
	Route Route
	// Reroute, when set by the connection manager, matches the route again.
	Reroute func(x *Exchange)
}

// ClearRoute re-matches the route after a filter changed the request (Envoy's
// clearRouteCache).
func (x *Exchange) ClearRoute() {
	if x.Reroute != nil {
		x.Reroute(x)
	}
}

// Handler serves an exchange. An error means the handler could not answer: the connection
// manager replies 500 if nothing was written yet.
type Handler interface {
	Serve(x *Exchange) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(x *Exchange) error

func (f HandlerFunc) Serve(x *Exchange) error { return f(x) }

// Middleware wraps the rest of the chain.
type Middleware func(next Handler) Handler

// Factory builds one kind of HTTP filter from its typed_config.
type Factory interface {
	// ConfigType is the full proto message name of the typed_config it builds from,
	// e.g. "envoy.extensions.filters.http.fault.v3.HTTPFault"; it is the registry key, as
	// Envoy matches filters by config type.
	ConfigType() string
	// Build compiles the filter. name is the instance name in http_filters, under which
	// routes carry its per-route config. Build does every piece of work that does not
	// depend on the request.
	Build(name string, cfg proto.Message) (Middleware, error)
	// New returns an empty config message of ConfigType, to unmarshal into.
	New() proto.Message
}

// PerRouteParser is implemented by factories whose filter has per-route config.
type PerRouteParser interface {
	// PerRouteTypes are the full message names accepted in typed_per_filter_config.
	PerRouteTypes() []string
	// ParsePerRoute compiles one per-route config.
	ParsePerRoute(cfg *anypb.Any) (any, error)
}

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
	perRoute  = map[string]PerRouteParser{}
)

// Register adds a factory. It panics on a duplicate, which is a programming error.
func Register(f Factory) {
	mu.Lock()
	defer mu.Unlock()
	t := f.ConfigType()
	if _, dup := factories[t]; dup {
		panic("filter: duplicate registration of " + t)
	}
	factories[t] = f
	if p, ok := f.(PerRouteParser); ok {
		for _, pt := range p.PerRouteTypes() {
			perRoute[pt] = p
		}
	}
}

// Registered lists the config types of every registered filter, sorted.
func Registered() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(factories))
	for t := range factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Build compiles the filter instance named name from its typed_config.
func Build(name string, typed *anypb.Any) (Middleware, error) {
	if typed == nil {
		return nil, fmt.Errorf("http filter %q: typed_config is required", name)
	}
	mu.RLock()
	f, ok := factories[string(typed.MessageName())]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("http filter %q: unsupported type %s", name, typed.MessageName())
	}
	cfg := f.New()
	if err := typed.UnmarshalTo(cfg); err != nil {
		return nil, fmt.Errorf("http filter %q: %w", name, err)
	}
	mw, err := f.Build(name, cfg)
	if err != nil {
		return nil, fmt.Errorf("http filter %q: %w", name, err)
	}
	return mw, nil
}

// Disabled is the per-route config of a filter that a route turns off
// (envoy.config.route.v3.FilterConfig{disabled: true}).
type disabled struct{}

// Disabled is returned by ParsePerRoute for a filter a route disables.
var Disabled any = disabled{}

// ParsePerRoute compiles one typed_per_filter_config entry. An unknown type is an error
// unless the entry is wrapped in a FilterConfig marked optional, when ok is false.
func ParsePerRoute(name string, typed *anypb.Any) (cfg any, ok bool, err error) {
	optional := false
	if typed.MessageName() == "envoy.config.route.v3.FilterConfig" {
		var fc routev3.FilterConfig
		if err := typed.UnmarshalTo(&fc); err != nil {
			return nil, false, fmt.Errorf("typed_per_filter_config[%s]: %w", name, err)
		}
		if fc.GetDisabled() {
			return Disabled, true, nil
		}
		optional = fc.GetIsOptional()
		typed = fc.GetConfig()
		if typed == nil {
			return nil, false, nil
		}
	}
	mu.RLock()
	p, found := perRoute[string(typed.MessageName())]
	mu.RUnlock()
	if !found {
		if optional {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("typed_per_filter_config[%s]: unsupported type %s", name, typed.MessageName())
	}
	c, err := p.ParsePerRoute(typed)
	if err != nil {
		return nil, false, fmt.Errorf("typed_per_filter_config[%s]: %w", name, err)
	}
	return c, true, nil
}

// IsDisabled reports whether a route's per-route config turns the filter off.
func IsDisabled(cfg any) bool { _, ok := cfg.(disabled); return ok }

// LocalReply answers the request from the proxy itself, as Envoy's local replies do:
// it sets the response flag and details for the access log, and writes a text body.
func (x *Exchange) LocalReply(code int, body string, flag stream.Flags, details string) {
	x.Info.SetFlag(flag)
	x.Info.ResponseDetails = details
	h := x.W.Header()
	if body != "" {
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	x.W.WriteHeader(code)
	if body != "" && x.R.Method != http.MethodHead {
		_, _ = io.WriteString(x.W, body)
	}
}

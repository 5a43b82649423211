// Package lb holds the proxy's load balancers: ROUND_ROBIN (weighted), LEAST_REQUEST
// (power of two choices), RANDOM, RING_HASH and MAGLEV, and the priority/locality layer
// above them (Envoy's priority levels with overprovisioning and locality weights).
//
// A balancer is built once per host-set change and then only picks; picking must not
// allocate.
package lb

// Host is what a balancer needs of an upstream host.
type Host interface {
	// Key identifies the host for hashing (its address "ip:port").
	Key() string
	// Weight is the endpoint's load_balancing_weight (1 when unset).
	Weight() uint32
	// Available is false while the host is unhealthy (active health check or EDS status)
	// or ejected by outlier detection.
	Available() bool
	// ActiveRequests is the number of requests in flight to the host.
	ActiveRequests() int64
}

// Context is what a pick may depend on.
type Context struct {
	// Hash is the request's hash for RING_HASH and MAGLEV (from the route's hash
	// policies); HasHash is false when no policy produced one (a random pick then).
	Hash    uint64
	HasHash bool
	// Exclude, when not nil, skips hosts already tried (retry host predicate
	// envoy.retry_host_predicates.previous_hosts); the balancer tries a few times, then
	// falls back to any available host.
	Exclude func(Host) bool
	// MaxExcludeAttempts is the route's retry_policy.host_selection_retry_max_attempts:
	// how many excluded hosts a pick passes over before it returns an excluded (but
	// available) host anyway. 0 means Envoy's default, 1.
	MaxExcludeAttempts uint32
}

// Balancer picks one host of a fixed set.
type Balancer interface {
	// Pick returns the chosen host, or nil when none is available.
	Pick(ctx *Context) Host
}

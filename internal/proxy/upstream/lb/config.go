package lb

// Policy is a cluster's lb_policy.
type Policy uint8

const (
	RoundRobin Policy = iota
	LeastRequest
	Random
	RingHash
	Maglev
	// ClusterProvided (CLUSTER_PROVIDED) leaves the choice to the cluster type
	// (ORIGINAL_DST); Config.New returns a RANDOM balancer for it.
	ClusterProvided
)

var policyNames = [...]string{"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV", "CLUSTER_PROVIDED"}

func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return "UNKNOWN"
}

// Every balancer of this package accepts a nil *Context (no hash, no exclusions) and is
// safe for concurrent picks.

// Factory builds a balancer over a fixed set of hosts. The priority layer calls it once
// per locality and once per priority level whenever the host set changes.
type Factory func(hosts []Host) Balancer

// Config is one balancing policy with its parameters, as FromCluster compiles them from
// a cluster. Zero numeric fields mean Envoy's defaults, except ActiveRequestBias (0 is a
// meaningful bias; FromCluster sets the default 1.0).
type Config struct {
	Policy Policy
	// LEAST_REQUEST: least_request_lb_config.choice_count and active_request_bias.
	ChoiceCount       uint32
	ActiveRequestBias float64
	// RING_HASH: ring_hash_lb_config.minimum_ring_size / maximum_ring_size.
	MinRingSize, MaxRingSize uint64
	// MAGLEV: maglev_lb_config.table_size.
	TableSize uint64
	// Seed, when not 0, makes every random choice of the balancers built from this
	// Config reproducible (tests). 0 uses the runtime's random source.
	Seed uint64
}

// New builds the configured balancer over hosts. It is a Factory.
func (c Config) New(hosts []Host) Balancer {
	var r *rng
	if c.Seed != 0 {
		r = newRNG(c.Seed)
	}
	switch c.Policy {
	case LeastRequest:
		return newLeastRequest(hosts, c.ChoiceCount, c.ActiveRequestBias, r)
	case Random, ClusterProvided:
		return newRandom(hosts, r)
	case RingHash:
		return newRingHash(hosts, c.MinRingSize, c.MaxRingSize, r)
	case Maglev:
		return newMaglev(hosts, c.TableSize, r)
	default:
		return newRoundRobin(hosts, r)
	}
}

package upstream

import (
	"math/rand/v2"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
)

// lbConfig maps the cluster's lb_policy and its *_lb_config onto package lb.
func lbConfig(c *clusterv3.Cluster) lb.Config {
	var cfg lb.Config
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_LEAST_REQUEST:
		cfg.Policy = lb.LeastRequest
		cfg.ActiveRequestBias = 1
		if lr := c.GetLeastRequestLbConfig(); lr != nil {
			cfg.ChoiceCount = lr.GetChoiceCount().GetValue()
			if b := lr.GetActiveRequestBias(); b != nil {
				cfg.ActiveRequestBias = b.GetDefaultValue()
			}
		}
	case clusterv3.Cluster_RANDOM:
		cfg.Policy = lb.Random
	case clusterv3.Cluster_RING_HASH:
		cfg.Policy = lb.RingHash
		if rh := c.GetRingHashLbConfig(); rh != nil {
			cfg.MinRingSize = rh.GetMinimumRingSize().GetValue()
			cfg.MaxRingSize = rh.GetMaximumRingSize().GetValue()
		}
	case clusterv3.Cluster_MAGLEV:
		cfg.Policy = lb.Maglev
		cfg.TableSize = c.GetMaglevLbConfig().GetTableSize().GetValue()
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		cfg.Policy = lb.ClusterProvided
	default:
		cfg.Policy = lb.RoundRobin
	}
	return cfg
}

// buildBalancer builds the balancer of a host set: one balancer per priority level and
// Envoy's priority load split over them (a level gets min(100%, overprovisioning_factor
// × available/total) of what the levels above left).
//
// TODO(weft): locality weights (locality_weighted_lb_config) and panic mode come with
// package lb's priority layer once it lands; until then levels balance across all
// their hosts.
func (c *Cluster) buildBalancer(hosts []*Host) lb.Balancer {
	cfg := lbConfig(c.src)
	if len(hosts) == 0 {
		return emptyBalancer{}
	}
	byPrio := map[uint32][]lb.Host{}
	for _, h := range hosts {
		p := h.meta.Load().priority
		byPrio[p] = append(byPrio[p], h)
	}
	prios := make([]uint32, 0, len(byPrio))
	for p := range byPrio {
		prios = append(prios, p)
	}
	sort.Slice(prios, func(i, j int) bool { return prios[i] < prios[j] })
	if len(prios) == 1 {
		return cfg.New(byPrio[prios[0]])
	}
	pb := &priorityBalancer{}
	health := make([]uint64, len(prios))
	var sum uint64
	for i, p := range prios {
		hs := byPrio[p]
		pb.levels = append(pb.levels, cfg.New(hs))
		avail := 0
		for _, h := range hs {
			if h.Available() {
				avail++
			}
		}
		v := uint64(c.overprov) * uint64(avail) / uint64(len(hs))
		if v > 100 {
			v = 100
		}
		health[i] = v
		sum += v
	}
	// Loads out of 10000, cumulative; when the levels together are less than 100%
	// healthy the loads are normalised over their health (Envoy's normalized total
	// health).
	remaining := uint64(100)
	pb.cum = make([]uint32, len(prios))
	var acc uint64
	for i, v := range health {
		load := min(v, remaining)
		remaining -= load
		if sum > 0 && sum < 100 {
			load = v * 100 / sum
		}
		acc += load * 100
		pb.cum[i] = uint32(acc)
	}
	if sum == 0 {
		pb.cum[0] = 10000 // nothing available anywhere: P0 answers (and finds nothing)
	}
	pb.cum[len(pb.cum)-1] = 10000
	return pb
}

type emptyBalancer struct{}

func (emptyBalancer) Pick(*lb.Context) lb.Host { return nil }

// priorityBalancer chooses a priority level by load, then a host in it; when the
// chosen level has nothing to give, the other levels are tried in priority order.
type priorityBalancer struct {
	levels []lb.Balancer
	cum    []uint32 // cumulative load of levels, out of 10000
}

func (p *priorityBalancer) Pick(ctx *lb.Context) lb.Host {
	var r uint32
	if ctx != nil && ctx.HasHash {
		r = uint32(ctx.Hash % 10000)
	} else {
		r = rand.Uint32N(10000)
	}
	first := len(p.levels) - 1
	for i, c := range p.cum {
		if r < c {
			first = i
			break
		}
	}
	if h := p.levels[first].Pick(ctx); h != nil {
		return h
	}
	for i, b := range p.levels {
		if i == first {
			continue
		}
		if h := b.Pick(ctx); h != nil {
			return h
		}
	}
	return nil
}

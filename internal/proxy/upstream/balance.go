package upstream

import (
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
)

// buildBalancer builds the balancer of a host set with package lb: one level per
// priority (index = priority), the localities of a level in EDS order, the cluster's
// lb_policy underneath, overprovisioning_factor from the assignment and
// healthy_panic_threshold / locality_weighted_lb_config from common_lb_config.
func (c *Cluster) buildBalancer(hosts []*Host) *lb.PrioritySet {
	var levels [][]lb.Locality
	locIndex := map[[2]any]int{} // (priority, locality key) -> index in its level
	for _, h := range hosts {
		meta := h.meta.Load()
		p := int(meta.priority)
		for len(levels) <= p {
			levels = append(levels, nil)
		}
		k := [2]any{p, meta.locKey}
		i, ok := locIndex[k]
		if !ok {
			i = len(levels[p])
			locIndex[k] = i
			levels[p] = append(levels[p], lb.Locality{Name: meta.locKey, Weight: meta.locW})
		}
		levels[p][i].Hosts = append(levels[p][i].Hosts, h)
	}
	opts := c.cfg.lb.Priority
	opts.Overprovisioning = c.overprov
	return lb.NewPrioritySet(levels, c.cfg.lb.Policy.New, opts)
}

package lb

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	clusterprovidedv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/cluster_provided/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Settings is a cluster's load-balancing configuration, compiled once per CDS update.
// Build the cluster's balancer with
//
//	opts := s.Priority
//	opts.Overprovisioning = cla.GetPolicy().GetOverprovisioningFactor().GetValue()
//	ps := lb.NewPrioritySet(levels, s.Policy.New, opts)
type Settings struct {
	Policy   Config
	Priority PriorityOptions // Overprovisioning comes from the ClusterLoadAssignment
}

// FromCluster compiles lb_policy (or load_balancing_policy, which takes precedence when
// set), its *_lb_config and common_lb_config. Errors name the field relative to the
// cluster (the caller prefixes `cluster "name": `).
//
// Accepted but not implemented: slow_start_config, zone_aware_lb_config,
// hash_balance_factor (bounded loads), use_hostname_for_hashing, MURMUR_HASH_2 (xxHash
// is used, which changes only where keys land).
func FromCluster(c *clusterv3.Cluster) (Settings, error) {
	s := Settings{Policy: Config{ActiveRequestBias: DefaultActiveRequestBias}}
	var errs []error
	if cl := c.GetCommonLbConfig(); cl != nil {
		if t := cl.GetHealthyPanicThreshold(); t != nil {
			v := t.GetValue()
			switch {
			case v < 0 || v > 100:
				errs = append(errs, fmt.Errorf("common_lb_config.healthy_panic_threshold.value: %v is not within [0, 100]", v))
			case v == 0:
				s.Priority.PanicThreshold = -1
			default:
				s.Priority.PanicThreshold = v
			}
		}
		s.Priority.LocalityWeighted = cl.GetLocalityWeightedLbConfig() != nil
	}
	if lbp := c.GetLoadBalancingPolicy(); lbp != nil && len(lbp.GetPolicies()) > 0 {
		if err := s.fromPolicies(lbp, "load_balancing_policy"); err != nil {
			errs = append(errs, err)
		}
		return s, errors.Join(errs...)
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		s.Policy.Policy = RoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		s.Policy.Policy = LeastRequest
		lr := c.GetLeastRequestLbConfig()
		if err := s.leastRequest(lr.GetChoiceCount(), lr.GetActiveRequestBias().GetDefaultValue(), lr.GetActiveRequestBias() != nil, "least_request_lb_config"); err != nil {
			errs = append(errs, err)
		}
	case clusterv3.Cluster_RANDOM:
		s.Policy.Policy = Random
	case clusterv3.Cluster_RING_HASH:
		s.Policy.Policy = RingHash
		rh := c.GetRingHashLbConfig()
		if err := s.ringHash(rh.GetMinimumRingSize(), rh.GetMaximumRingSize(), "ring_hash_lb_config"); err != nil {
			errs = append(errs, err)
		}
	case clusterv3.Cluster_MAGLEV:
		s.Policy.Policy = Maglev
		if err := s.maglev(c.GetMaglevLbConfig().GetTableSize(), "maglev_lb_config"); err != nil {
			errs = append(errs, err)
		}
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		s.Policy.Policy = ClusterProvided
	default:
		errs = append(errs, fmt.Errorf("lb_policy: %v is not supported", c.GetLbPolicy()))
	}
	return s, errors.Join(errs...)
}

func (s *Settings) leastRequest(choice *wrapperspb.UInt32Value, bias float64, biasSet bool, path string) error {
	var errs []error
	if choice != nil {
		if choice.GetValue() < 2 {
			errs = append(errs, fmt.Errorf("%s.choice_count: %d is below 2", path, choice.GetValue()))
		}
		s.Policy.ChoiceCount = choice.GetValue()
	}
	if biasSet {
		if bias < 0 {
			errs = append(errs, fmt.Errorf("%s.active_request_bias.default_value: %v is negative", path, bias))
		}
		s.Policy.ActiveRequestBias = bias
	}
	return errors.Join(errs...)
}

func (s *Settings) ringHash(minSize, maxSize *wrapperspb.UInt64Value, path string) error {
	lo, hi := uint64(DefaultMinRingSize), uint64(DefaultMaxRingSize)
	if minSize != nil {
		lo = minSize.GetValue()
	}
	if maxSize != nil {
		hi = maxSize.GetValue()
	}
	var errs []error
	if lo > MaxRingSize {
		errs = append(errs, fmt.Errorf("%s.minimum_ring_size: %d exceeds %d", path, lo, MaxRingSize))
	}
	if hi > MaxRingSize {
		errs = append(errs, fmt.Errorf("%s.maximum_ring_size: %d exceeds %d", path, hi, MaxRingSize))
	}
	if lo > hi {
		errs = append(errs, fmt.Errorf("%s.minimum_ring_size: %d exceeds maximum_ring_size %d", path, lo, hi))
	}
	if lo == 0 {
		lo = 1
	}
	s.Policy.MinRingSize, s.Policy.MaxRingSize = lo, hi
	return errors.Join(errs...)
}

func (s *Settings) maglev(size *wrapperspb.UInt64Value, path string) error {
	if size == nil {
		return nil
	}
	v := size.GetValue()
	if v > MaxMaglevTableSize || !isPrime(v) {
		return fmt.Errorf("%s.table_size: %d must be a prime number no larger than %d", path, v, MaxMaglevTableSize)
	}
	s.Policy.TableSize = v
	return nil
}

// fromPolicies takes the first policy of the list this proxy supports, as Envoy does.
func (s *Settings) fromPolicies(lbp *clusterv3.LoadBalancingPolicy, path string) error {
	var names []string
	for i, p := range lbp.GetPolicies() {
		tec := p.GetTypedExtensionConfig()
		tc := tec.GetTypedConfig()
		if tc == nil {
			return fmt.Errorf("%s.policies[%d].typed_extension_config.typed_config: missing", path, i)
		}
		msg, err := tc.UnmarshalNew()
		if err != nil {
			names = append(names, tc.GetTypeUrl())
			continue // a type this binary does not link is simply unsupported
		}
		field := fmt.Sprintf("%s.policies[%d].typed_extension_config.typed_config", path, i)
		if ok, err := s.fromPolicy(msg, field); ok || err != nil {
			return err
		}
		names = append(names, tc.GetTypeUrl())
	}
	return fmt.Errorf("%s.policies: none is supported (%v)", path, names)
}

func (s *Settings) fromPolicy(msg proto.Message, path string) (bool, error) {
	locality := func(l *commonv3.LocalityLbConfig) {
		if l.GetLocalityWeightedLbConfig() != nil {
			s.Priority.LocalityWeighted = true
		}
	}
	switch m := msg.(type) {
	case *roundrobinv3.RoundRobin:
		s.Policy.Policy = RoundRobin
		locality(m.GetLocalityLbConfig())
	case *leastrequestv3.LeastRequest:
		s.Policy.Policy = LeastRequest
		locality(m.GetLocalityLbConfig())
		return true, s.leastRequest(m.GetChoiceCount(), m.GetActiveRequestBias().GetDefaultValue(), m.GetActiveRequestBias() != nil, path)
	case *randomv3.Random:
		s.Policy.Policy = Random
		locality(m.GetLocalityLbConfig())
	case *ringhashv3.RingHash:
		s.Policy.Policy = RingHash
		if m.GetLocalityWeightedLbConfig() != nil {
			s.Priority.LocalityWeighted = true
		}
		return true, s.ringHash(m.GetMinimumRingSize(), m.GetMaximumRingSize(), path)
	case *maglevv3.Maglev:
		s.Policy.Policy = Maglev
		if m.GetLocalityWeightedLbConfig() != nil {
			s.Priority.LocalityWeighted = true
		}
		return true, s.maglev(m.GetTableSize(), path)
	case *clusterprovidedv3.ClusterProvided:
		s.Policy.Policy = ClusterProvided
	case *wrrlocalityv3.WrrLocality:
		s.Priority.LocalityWeighted = true
		return true, s.fromPolicies(m.GetEndpointPickingPolicy(), path+".endpoint_picking_policy")
	default:
		return false, nil
	}
	return true, nil
}

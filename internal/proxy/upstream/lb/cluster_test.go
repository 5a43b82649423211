package lb

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func policyList(t *testing.T, msgs ...proto.Message) *clusterv3.LoadBalancingPolicy {
	t.Helper()
	lbp := &clusterv3.LoadBalancingPolicy{}
	for _, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		lbp.Policies = append(lbp.Policies, &clusterv3.LoadBalancingPolicy_Policy{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "p", TypedConfig: a},
		})
	}
	return lbp
}

func TestFromCluster(t *testing.T) {
	tests := []struct {
		name    string
		c       *clusterv3.Cluster
		want    Settings
		wantErr string
	}{
		{
			name: "default round robin",
			c:    &clusterv3.Cluster{Name: "a"},
			want: Settings{Policy: Config{Policy: RoundRobin, ActiveRequestBias: 1}},
		},
		{
			name: "least request as Istio sends it",
			c: &clusterv3.Cluster{
				LbPolicy: clusterv3.Cluster_LEAST_REQUEST,
				LbConfig: &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
					ChoiceCount:       wrapperspb.UInt32(3),
					ActiveRequestBias: &corev3.RuntimeDouble{DefaultValue: 0.5, RuntimeKey: "k"},
				}},
				CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{
					HealthyPanicThreshold:   &typev3.Percent{Value: 0},
					LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}},
				},
			},
			want: Settings{
				Policy:   Config{Policy: LeastRequest, ChoiceCount: 3, ActiveRequestBias: 0.5},
				Priority: PriorityOptions{PanicThreshold: -1, LocalityWeighted: true},
			},
		},
		{
			name: "ring hash",
			c: &clusterv3.Cluster{
				LbPolicy:       clusterv3.Cluster_RING_HASH,
				LbConfig:       &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(2048)}},
				CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 30}},
			},
			want: Settings{
				Policy:   Config{Policy: RingHash, MinRingSize: 2048, MaxRingSize: DefaultMaxRingSize, ActiveRequestBias: 1},
				Priority: PriorityOptions{PanicThreshold: 30},
			},
		},
		{
			name: "maglev",
			c: &clusterv3.Cluster{
				LbPolicy: clusterv3.Cluster_MAGLEV,
				LbConfig: &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(251)}},
			},
			want: Settings{Policy: Config{Policy: Maglev, TableSize: 251, ActiveRequestBias: 1}},
		},
		{
			name: "typed least request with locality config",
			c: &clusterv3.Cluster{LoadBalancingPolicy: policyList(t, &leastrequestv3.LeastRequest{
				ChoiceCount: wrapperspb.UInt32(4),
				LocalityLbConfig: &commonv3.LocalityLbConfig{LocalityConfigSpecifier: &commonv3.LocalityLbConfig_LocalityWeightedLbConfig_{
					LocalityWeightedLbConfig: &commonv3.LocalityLbConfig_LocalityWeightedLbConfig{}}},
			})},
			want: Settings{
				Policy:   Config{Policy: LeastRequest, ChoiceCount: 4, ActiveRequestBias: 1},
				Priority: PriorityOptions{LocalityWeighted: true},
			},
		},
		{
			name: "first supported policy wins; wrr_locality",
			c: &clusterv3.Cluster{LoadBalancingPolicy: policyList(t,
				&structpb.Struct{}, // not a balancer this proxy knows
				&wrrlocalityv3.WrrLocality{EndpointPickingPolicy: policyList(t, &roundrobinv3.RoundRobin{})},
			)},
			want: Settings{Policy: Config{Policy: RoundRobin, ActiveRequestBias: 1}, Priority: PriorityOptions{LocalityWeighted: true}},
		},
		{
			name:    "no supported policy",
			c:       &clusterv3.Cluster{LoadBalancingPolicy: policyList(t, &structpb.Struct{})},
			wantErr: "load_balancing_policy.policies: none is supported",
		},
		{
			name: "maglev table size not prime",
			c: &clusterv3.Cluster{
				LbPolicy: clusterv3.Cluster_MAGLEV,
				LbConfig: &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(1000)}},
			},
			wantErr: "maglev_lb_config.table_size: 1000 must be a prime",
		},
		{
			name: "every error at once",
			c: &clusterv3.Cluster{
				LbPolicy: clusterv3.Cluster_RING_HASH,
				LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
					MinimumRingSize: wrapperspb.UInt64(4096), MaximumRingSize: wrapperspb.UInt64(1024)}},
				CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 120}},
			},
			wantErr: "common_lb_config.healthy_panic_threshold.value: 120 is not within [0, 100]\nring_hash_lb_config.minimum_ring_size: 4096 exceeds maximum_ring_size 1024",
		},
		{
			name: "least request choice count",
			c: &clusterv3.Cluster{
				LbPolicy: clusterv3.Cluster_LEAST_REQUEST,
				LbConfig: &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(1)}},
			},
			wantErr: "least_request_lb_config.choice_count: 1 is below 2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromCluster(tt.c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
			// The settings build a working balancer.
			hs, _ := equalHosts(3)
			ps := NewPrioritySet([][]Locality{{{Weight: 1, Hosts: hs}}}, got.Policy.New, got.Priority)
			if ps.Pick(&Context{}) == nil {
				t.Fatal("nil pick")
			}
		})
	}
}

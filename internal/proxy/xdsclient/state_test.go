package xdsclient

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestResourceName(t *testing.T) {
	tests := []struct {
		name    string
		in      *anypb.Any
		want    string
		wantErr string
	}{
		{"cluster", mustAny(t, &clusterv3.Cluster{Name: "c1", ConnectTimeout: durationpb.New(time.Second)}), "c1", ""},
		{"listener", mustAny(t, &listenerv3.Listener{Name: "l1", StatPrefix: "x"}), "l1", ""},
		{"cla uses cluster_name", mustAny(t, &endpointv3.ClusterLoadAssignment{ClusterName: "c1"}), "c1", ""},
		{"secret", mustAny(t, &tlsv3.Secret{Name: "default"}), "default", ""},
		{"no name", mustAny(t, &clusterv3.Cluster{AltStatName: "x"}), "", "no name"},
		{"unknown type", &anypb.Any{TypeUrl: "type.googleapis.com/nope.Nope", Value: []byte{0x0a, 0x01, 'x'}}, "", "not known"},
		{"malformed", &anypb.Any{TypeUrl: ClusterType, Value: []byte{0x0a, 0x05, 'x'}}, "", "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resourceName(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDecodeSotW(t *testing.T) {
	c1 := mustAny(t, &clusterv3.Cluster{Name: "c1"})
	wrapped := mustAny(t, &discoveryv3.Resource{Name: "c2", Resource: mustAny(t, &clusterv3.Cluster{Name: "c2"})})
	tests := []struct {
		name    string
		in      []*anypb.Any
		want    []string
		wantErr string
	}{
		{"plain and wrapped", []*anypb.Any{c1, wrapped}, []string{"c1", "c2"}, ""},
		{"empty", nil, nil, ""},
		{"duplicate", []*anypb.Any{c1, c1}, nil, `resources[1]: duplicate resource "c1"`},
		{"wrong type", []*anypb.Any{mustAny(t, &listenerv3.Listener{Name: "l"})}, nil, "resources[0]: type type.googleapis.com/envoy.config.listener.v3.Listener in a"},
		{"wrapper without body", []*anypb.Any{mustAny(t, &discoveryv3.Resource{Name: "c3"})}, nil, "no body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeSotW(ClusterType, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != len(tt.want) {
				t.Fatalf("got %v, %v", got, err)
			}
			for _, n := range tt.want {
				if got[n] == nil || got[n].GetTypeUrl() != ClusterType {
					t.Errorf("missing or wrapped %q: %v", n, got[n])
				}
			}
		})
	}
}

func TestSameResources(t *testing.T) {
	a := mustAny(t, &clusterv3.Cluster{Name: "c1"})
	b := mustAny(t, &clusterv3.Cluster{Name: "c1", AltStatName: "x"})
	tests := []struct {
		name string
		x, y map[string]*anypb.Any
		want bool
	}{
		{"both empty", nil, map[string]*anypb.Any{}, true},
		{"equal bytes", map[string]*anypb.Any{"c1": a}, map[string]*anypb.Any{"c1": proto.Clone(a).(*anypb.Any)}, true},
		{"changed", map[string]*anypb.Any{"c1": a}, map[string]*anypb.Any{"c1": b}, false},
		{"renamed", map[string]*anypb.Any{"c1": a}, map[string]*anypb.Any{"c2": a}, false},
		{"extra", map[string]*anypb.Any{"c1": a}, map[string]*anypb.Any{"c1": a, "c2": b}, false},
	}
	for _, tt := range tests {
		if got := sameResources(tt.x, tt.y); got != tt.want {
			t.Errorf("%s: got %v", tt.name, got)
		}
	}
}

func TestBackoff(t *testing.T) {
	base, maxD := 100*time.Millisecond, time.Second
	tests := []struct {
		attempt int
		bound   time.Duration
	}{
		{0, 100 * time.Millisecond},
		{1, 200 * time.Millisecond},
		{3, 800 * time.Millisecond},
		{4, time.Second},
		{40, time.Second},
		{1 << 20, time.Second},
	}
	for _, tt := range tests {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := backoff(base, maxD, tt.attempt)
			if d < tt.bound/2 || d > tt.bound {
				t.Fatalf("attempt %d: %v outside [%v, %v]", tt.attempt, d, tt.bound/2, tt.bound)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("attempt %d: no jitter", tt.attempt)
		}
	}
}

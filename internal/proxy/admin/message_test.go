package admin

import (
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestClustersMessageMatchesEnvoyTypes: /clusters?format=json parses as
// envoy.admin.v3.Clusters with no unknown field and equals the message built with the
// generated types, including 64-bit counters, enums and their defaults.
func TestClustersMessageMatchesEnvoyTypes(t *testing.T) {
	list := []ClusterStatus{{
		Name: "c", ObservabilityName: "obs", EDSServiceName: "eds", AddedViaAPI: true,
		Hosts: []HostStatus{
			{Address: "10.0.0.1:9080", Hostname: "h", Weight: 3, Priority: 1, Region: "r", Zone: "z", SubZone: "s",
				Stats: []HostStat{{Name: "cx_active", Value: 2, Gauge: true}, {Name: "rq_total", Value: 1 << 40}}},
			{Address: "/tmp/sock", Health: HostHealth{FailedActiveHC: true, FailedOutlierCheck: true, PendingDynamicRemoval: true,
				PendingActiveHC: true, ActiveHCTimeout: true, EDS: "DRAINING"}},
			{Address: "10.0.0.3:80", Health: HostHealth{EDS: "UNKNOWN"}},
		},
	}}
	want := &adminv3.Clusters{ClusterStatuses: []*adminv3.ClusterStatus{{
		Name: "c", ObservabilityName: "obs", EdsServiceName: "eds", AddedViaApi: true,
		HostStatuses: []*adminv3.HostStatus{
			{Address: socketAddress("10.0.0.1:9080"), Hostname: "h", Weight: 3, Priority: 1,
				Locality:     &corev3.Locality{Region: "r", Zone: "z", SubZone: "s"},
				HealthStatus: &adminv3.HostHealthStatus{EdsHealthStatus: corev3.HealthStatus_HEALTHY},
				Stats: []*adminv3.SimpleMetric{
					{Name: "cx_active", Value: 2, Type: adminv3.SimpleMetric_GAUGE},
					{Name: "rq_total", Value: 1 << 40, Type: adminv3.SimpleMetric_COUNTER},
				}},
			{Address: socketAddress("/tmp/sock"), HealthStatus: &adminv3.HostHealthStatus{
				FailedActiveHealthCheck: true, FailedOutlierCheck: true, PendingDynamicRemoval: true, PendingActiveHc: true,
				ActiveHcTimeout: true, EdsHealthStatus: corev3.HealthStatus_DRAINING}},
			{Address: socketAddress("10.0.0.3:80"), HealthStatus: &adminv3.HostHealthStatus{}},
		},
	}}}
	b, err := clustersMessage(list).JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got adminv3.Clusters
	if err := protojson.Unmarshal(b, &got); err != nil {
		t.Fatalf("not an envoy.admin.v3.Clusters: %v\n%s", err, b)
	}
	if !proto.Equal(&got, want) {
		t.Errorf("clusters json differs:\ngot  %v\nwant %v\n%s", &got, want, b)
	}
}

func TestServerInfoMessageMatchesEnvoyTypes(t *testing.T) {
	for _, st := range []serverState{stateLive, stateDraining, statePreInitializing, stateInitializing} {
		if got := adminv3.ServerInfo_State(st).String(); got != st.String() {
			t.Errorf("state %d is %q, Envoy calls it %q", st, st.String(), got)
		}
		up := durationpb.New(90e9)
		m := &Message{Type: "envoy.admin.v3.ServerInfo", Fields: []Field{
			{"version", "weft"}, {"state", Enum{int32(st), st.String()}}, {"uptime_current_epoch", up}, {"uptime_all_epochs", up},
		}}
		b, err := m.JSON()
		if err != nil {
			t.Fatal(err)
		}
		var got adminv3.ServerInfo
		want := &adminv3.ServerInfo{Version: "weft", State: adminv3.ServerInfo_State(st), UptimeCurrentEpoch: up, UptimeAllEpochs: up}
		if err := protojson.Unmarshal(b, &got); err != nil || !proto.Equal(&got, want) {
			t.Errorf("state %v: %v\n%s", st, err, b)
		}
	}
}

func TestMessageJSON(t *testing.T) {
	tests := []struct {
		name string
		m    *Message
		want string // compact
	}{
		{"zero values omitted", &Message{Type: "x.Y", Fields: []Field{{"a_b", ""}, {"c", false}, {"d", uint32(0)}, {"e", uint64(0)},
			{"f", Enum{0, "ZERO"}}, {"g", (*Message)(nil)}, {"h", []*Message(nil)}, {"i", (*corev3.Locality)(nil)}}}, `{}`},
		{"kinds", &Message{Type: "x.Y", Fields: []Field{{"a_b_c", "s\"q"}, {"c", true}, {"d", uint32(7)}, {"e", uint64(1) << 63},
			{"f", Enum{2, "TWO"}}, {"g", &Message{Type: "x.Z", Fields: []Field{{"n", "v"}}}},
			{"h", []*Message{{Type: "x.Z"}, {Type: "x.Z", Fields: []Field{{"n", "w"}}}}}, {"i", &corev3.Locality{SubZone: "sz"}}}},
			`{"aBC":"s\"q","c":true,"d":7,"e":"9223372036854775808","f":"TWO","g":{"n":"v"},"h":[{},{"n":"w"}],"i":{"subZone":"sz"}}`},
		{"unsupported", &Message{Type: "x.Y", Fields: []Field{{"a", 3}}}, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.m.appendJSON(nil, false)
			if tt.want == "error" {
				if err == nil {
					t.Fatalf("no error for %s", b)
				}
				return
			}
			if err != nil || string(b) != tt.want {
				t.Errorf("got %s, %v; want %s", b, err, tt.want)
			}
		})
	}
}

func TestPickResource(t *testing.T) {
	d := &ConfigDump{Configs: []*Message{
		{Type: "envoy.admin.v3.ClustersConfigDump", Fields: []Field{
			{"version_info", "v1"},
			{"dynamic_active_clusters", []*Message{{Type: "envoy.admin.v3.ClustersConfigDump.DynamicCluster", Fields: []Field{{"version_info", "v1"}}}}},
			{"dynamic_warming_clusters", []*Message(nil)},
		}},
	}}
	if got, ok := pickResource(d, "dynamic_active_clusters"); !ok || len(got.Configs) != 1 {
		t.Errorf("dynamic_active_clusters: %v %v", got, ok)
	}
	if got, ok := pickResource(d, "dynamic_warming_clusters"); !ok || len(got.Configs) != 0 {
		t.Errorf("an empty repeated field is found, with nothing in it: %v %v", got, ok)
	}
	for _, r := range []string{"version_info", "nonsense"} {
		if _, ok := pickResource(d, r); ok {
			t.Errorf("%s: found, but it is no repeated message field", r)
		}
	}
	b, err := (&ConfigDump{Configs: d.Configs[0].Fields[1].Value.([]*Message)}).JSON()
	var got adminv3.ConfigDump
	if err != nil || protojson.Unmarshal(b, &got) != nil || got.Configs[0].MessageName() != "envoy.admin.v3.ClustersConfigDump.DynamicCluster" {
		t.Errorf("picked element not written as its own Any: %v\n%s", err, b)
	}
	if b, _ := (&ConfigDump{}).JSON(); strings.TrimSpace(string(b)) != "{}" {
		t.Errorf("empty dump: %s", b)
	}
}

package proxy

import (
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestConfigDumpMatchesEnvoyTypes checks the hand-assembled dump against the
// envoy.admin.v3 Go types it stands in for: its JSON must parse into adminv3.ConfigDump
// with no unknown field and equal the dump built with those types, for every kind of
// resource, static and dynamic, with and without an update error.
func TestConfigDumpMatchesEnvoyTypes(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.UTC)
	upd := start.Add(time.Minute)
	errAt := start.Add(2 * time.Minute)
	staticSecret := &tlsv3.Secret{Name: "static", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "chain"}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "KEY"}},
	}}}
	b := &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: "n"}, StaticResources: &bootstrapv3.Bootstrap_StaticResources{Secrets: []*tlsv3.Secret{staticSecret}}}
	p := &Proxy{opts: Options{Bootstrap: b}, startedAt: start}
	p.static.listeners = []*listenerv3.Listener{{Name: "sl"}}
	p.static.clusters = []*clusterv3.Cluster{{Name: "sc"}}
	p.agentSecrets = []*tlsv3.Secret{{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "AGENTKEY"}},
	}}}}
	p.agentUpdated = upd
	mustAny := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	set := func(typeURL, name string, m proto.Message, withErr bool) *resourceState {
		rs := p.state.get(typeURL)
		rs.version, rs.updated = "v7", upd
		rs.resources = map[string]*anypb.Any{name: mustAny(m)}
		if withErr {
			rs.lastError, rs.errorAt, rs.errorVer = "bad field", errAt, "v8"
		}
		return rs
	}
	lrs := set(TypeListener, "dl", &listenerv3.Listener{Name: "dl"}, true)
	crs := set(TypeCluster, "dc", &clusterv3.Cluster{Name: "dc"}, false)
	rrs := set(TypeRoute, "dr", &routev3.RouteConfiguration{Name: "dr"}, true)
	ers := set(TypeEndpoint, "de", &endpointv3.ClusterLoadAssignment{ClusterName: "de"}, false)
	srs := set(TypeSecret, "ds", &tlsv3.Secret{Name: "ds", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "DYNKEY"}},
	}}}, false)

	failure := &adminv3.UpdateFailureState{LastUpdateAttempt: timestamppb.New(errAt), Details: "bad field", VersionInfo: "v8"}
	redact := func(s *tlsv3.Secret) *anypb.Any {
		c := proto.Clone(s).(*tlsv3.Secret)
		c.GetTlsCertificate().PrivateKey = nil
		return mustAny(c)
	}
	want := &adminv3.ConfigDump{Configs: []*anypb.Any{
		mustAny(&adminv3.BootstrapConfigDump{Bootstrap: b, LastUpdated: timestamppb.New(start)}),
		mustAny(&adminv3.ListenersConfigDump{
			VersionInfo:     "v7",
			StaticListeners: []*adminv3.ListenersConfigDump_StaticListener{{Listener: mustAny(p.static.listeners[0]), LastUpdated: timestamppb.New(start)}},
			DynamicListeners: []*adminv3.ListenersConfigDump_DynamicListener{{Name: "dl", ErrorState: failure,
				ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: "v7", Listener: lrs.resources["dl"], LastUpdated: timestamppb.New(upd)}}},
		}),
		mustAny(&adminv3.ClustersConfigDump{
			VersionInfo:           "v7",
			StaticClusters:        []*adminv3.ClustersConfigDump_StaticCluster{{Cluster: mustAny(p.static.clusters[0]), LastUpdated: timestamppb.New(start)}},
			DynamicActiveClusters: []*adminv3.ClustersConfigDump_DynamicCluster{{VersionInfo: "v7", Cluster: crs.resources["dc"], LastUpdated: timestamppb.New(upd)}},
		}),
		mustAny(&adminv3.RoutesConfigDump{DynamicRouteConfigs: []*adminv3.RoutesConfigDump_DynamicRouteConfig{
			{VersionInfo: "v7", RouteConfig: rrs.resources["dr"], LastUpdated: timestamppb.New(upd), ErrorState: failure}}}),
		mustAny(&adminv3.EndpointsConfigDump{DynamicEndpointConfigs: []*adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			{VersionInfo: "v7", EndpointConfig: ers.resources["de"], LastUpdated: timestamppb.New(upd)}}}),
		mustAny(&adminv3.SecretsConfigDump{
			StaticSecrets: []*adminv3.SecretsConfigDump_StaticSecret{{Name: "static", Secret: redact(staticSecret), LastUpdated: timestamppb.New(start)}},
			DynamicActiveSecrets: []*adminv3.SecretsConfigDump_DynamicSecret{
				{Name: "default", VersionInfo: "ca-agent", Secret: redact(p.agentSecrets[0]), LastUpdated: timestamppb.New(upd)},
				{Name: "ds", VersionInfo: "v7", Secret: redact(mustUnpackSecret(t, srs.resources["ds"])), LastUpdated: timestamppb.New(upd)},
			},
		}),
	}}

	d, err := p.ConfigDump("")
	if err != nil {
		t.Fatal(err)
	}
	body, err := d.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got adminv3.ConfigDump
	if err := protojson.Unmarshal(body, &got); err != nil {
		t.Fatalf("dump does not parse as envoy.admin.v3.ConfigDump: %v\n%s", err, body)
	}
	// Compare the unpacked configs: Any bytes may differ in field order, not in content.
	if len(got.Configs) != len(want.Configs) {
		t.Fatalf("%d configs, want %d\n%s", len(got.Configs), len(want.Configs), body)
	}
	for i := range want.Configs {
		g, err1 := got.Configs[i].UnmarshalNew()
		w, err2 := want.Configs[i].UnmarshalNew()
		if err1 != nil || err2 != nil {
			t.Fatalf("config %d: %v %v", i, err1, err2)
		}
		if !proto.Equal(w, g) {
			t.Errorf("config %d (%s) differs:\nwant %v\ngot  %v", i, w.ProtoReflect().Descriptor().FullName(), w, g)
		}
	}

	// The kind filter keeps one config.
	if d, _ := p.ConfigDump("routes"); len(d.Configs) != 1 || d.Configs[0].Type != "envoy.admin.v3.RoutesConfigDump" {
		t.Errorf("ConfigDump(routes) = %+v", d)
	}
}

func mustUnpackSecret(t *testing.T, a *anypb.Any) *tlsv3.Secret {
	s := new(tlsv3.Secret)
	if err := a.UnmarshalTo(s); err != nil {
		t.Fatal(err)
	}
	return s
}

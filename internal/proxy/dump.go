package proxy

import (
	"sort"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ConfigDump is Envoy's /config_dump: bootstrap, then static and dynamic listeners,
// clusters, routes, endpoints and secrets (private keys redacted), each dynamic resource
// with the version it came with. resource, when not empty, keeps only the configs of
// that type ("listeners", "clusters", "routes", "endpoints", "secrets", "bootstrap").
func (p *Proxy) ConfigDump(resource string) (*adminv3.ConfigDump, error) {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	want := func(kind string) bool { return resource == "" || resource == kind }
	var out adminv3.ConfigDump
	add := func(m proto.Message) {
		a, err := anypb.New(m)
		if err == nil {
			out.Configs = append(out.Configs, a)
		}
	}
	if want("bootstrap") {
		add(&adminv3.BootstrapConfigDump{Bootstrap: p.opts.Bootstrap, LastUpdated: timestamppb.New(p.startedAt)})
	}
	if want("listeners") {
		d := &adminv3.ListenersConfigDump{}
		for _, l := range p.static.listeners {
			a, _ := anypb.New(l)
			d.StaticListeners = append(d.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{Listener: a, LastUpdated: timestamppb.New(p.startedAt)})
		}
		rs := p.state.get(TypeListener)
		d.VersionInfo = rs.version
		for _, name := range sortedKeys(rs.resources) {
			dl := &adminv3.ListenersConfigDump_DynamicListener{Name: name, ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{
				VersionInfo: rs.version, Listener: rs.resources[name], LastUpdated: timestamppb.New(rs.updated),
			}}
			dl.ErrorState = errorState(rs)
			d.DynamicListeners = append(d.DynamicListeners, dl)
		}
		add(d)
	}
	if want("clusters") {
		d := &adminv3.ClustersConfigDump{}
		for _, c := range p.static.clusters {
			a, _ := anypb.New(c)
			d.StaticClusters = append(d.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: a, LastUpdated: timestamppb.New(p.startedAt)})
		}
		rs := p.state.get(TypeCluster)
		d.VersionInfo = rs.version
		for _, name := range sortedKeys(rs.resources) {
			d.DynamicActiveClusters = append(d.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
				VersionInfo: rs.version, Cluster: rs.resources[name], LastUpdated: timestamppb.New(rs.updated), ErrorState: errorState(rs),
			})
		}
		add(d)
	}
	if want("routes") {
		d := &adminv3.RoutesConfigDump{}
		rs := p.state.get(TypeRoute)
		for _, name := range sortedKeys(rs.resources) {
			d.DynamicRouteConfigs = append(d.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
				VersionInfo: rs.version, RouteConfig: rs.resources[name], LastUpdated: timestamppb.New(rs.updated), ErrorState: errorState(rs),
			})
		}
		add(d)
	}
	if want("endpoints") {
		d := &adminv3.EndpointsConfigDump{}
		rs := p.state.get(TypeEndpoint)
		for _, name := range sortedKeys(rs.resources) {
			d.DynamicEndpointConfigs = append(d.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
				VersionInfo: rs.version, EndpointConfig: rs.resources[name], LastUpdated: timestamppb.New(rs.updated), ErrorState: errorState(rs),
			})
		}
		add(d)
	}
	if want("secrets") {
		d := &adminv3.SecretsConfigDump{}
		for _, s := range p.opts.Bootstrap.GetStaticResources().GetSecrets() {
			d.StaticSecrets = append(d.StaticSecrets, &adminv3.SecretsConfigDump_StaticSecret{
				Name: s.GetName(), Secret: redacted(s), LastUpdated: timestamppb.New(p.startedAt),
			})
		}
		for _, s := range p.agentSecrets {
			d.DynamicActiveSecrets = append(d.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
				Name: s.GetName(), VersionInfo: "ca-agent", Secret: redacted(s), LastUpdated: timestamppb.New(p.agentUpdated),
			})
		}
		rs := p.state.get(TypeSecret)
		for _, name := range sortedKeys(rs.resources) {
			s := new(tlsv3.Secret)
			if err := rs.resources[name].UnmarshalTo(s); err != nil {
				continue
			}
			d.DynamicActiveSecrets = append(d.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
				Name: name, VersionInfo: rs.version, Secret: redacted(s), LastUpdated: timestamppb.New(rs.updated),
			})
		}
		add(d)
	}
	return &out, nil
}

// redacted returns the secret as Any with private keys replaced, as Envoy's dump does.
func redacted(s *tlsv3.Secret) *anypb.Any {
	c := proto.Clone(s).(*tlsv3.Secret)
	if tc := c.GetTlsCertificate(); tc != nil && tc.GetPrivateKey() != nil {
		tc.PrivateKey = nil
	}
	a, _ := anypb.New(c)
	return a
}

func errorState(rs *resourceState) *adminv3.UpdateFailureState {
	if rs.lastError == "" {
		return nil
	}
	return &adminv3.UpdateFailureState{LastUpdateAttempt: timestamppb.New(rs.errorAt), Details: rs.lastError, VersionInfo: rs.errorVer}
}

func sortedKeys(m map[string]*anypb.Any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

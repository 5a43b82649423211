package proxy

import (
	"sort"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weft-mesh/weft/internal/proxy/admin"
)

// ConfigDump is Envoy's /config_dump: bootstrap, then static and dynamic listeners,
// clusters, routes, endpoints and secrets (private keys redacted), each dynamic resource
// with the version it came with. resource, when not empty, keeps only the configs of
// that type ("listeners", "clusters", "routes", "endpoints", "secrets", "bootstrap").
// The envoy.admin.v3 messages are assembled as admin.Message (see there why); every
// repeated field of each dump is listed, even when empty, so ?resource= finds it.
func (p *Proxy) ConfigDump(resource string) (*admin.ConfigDump, error) {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	want := func(kind string) bool { return resource == "" || resource == kind }
	out := &admin.ConfigDump{}
	if want("bootstrap") {
		out.Configs = append(out.Configs, dumpMsg("BootstrapConfigDump",
			admin.Field{Name: "bootstrap", Value: p.opts.Bootstrap},
			admin.Field{Name: "last_updated", Value: ts(p.startedAt)}))
	}
	if want("listeners") {
		static := make([]*admin.Message, 0, len(p.static.listeners))
		for _, l := range p.static.listeners {
			a, _ := anypb.New(l)
			static = append(static, dumpMsg("ListenersConfigDump.StaticListener",
				admin.Field{Name: "listener", Value: a},
				admin.Field{Name: "last_updated", Value: ts(p.startedAt)}))
		}
		rs := p.state.get(TypeListener)
		var dynamic []*admin.Message
		for _, name := range sortedKeys(rs.resources) {
			dynamic = append(dynamic, dumpMsg("ListenersConfigDump.DynamicListener",
				admin.Field{Name: "name", Value: name},
				admin.Field{Name: "active_state", Value: dumpMsg("ListenersConfigDump.DynamicListenerState",
					admin.Field{Name: "version_info", Value: rs.version},
					admin.Field{Name: "listener", Value: rs.resources[name]},
					admin.Field{Name: "last_updated", Value: ts(rs.updated)})},
				admin.Field{Name: "error_state", Value: errorState(rs)}))
		}
		out.Configs = append(out.Configs, dumpMsg("ListenersConfigDump",
			admin.Field{Name: "version_info", Value: rs.version},
			admin.Field{Name: "static_listeners", Value: static},
			admin.Field{Name: "dynamic_listeners", Value: dynamic}))
	}
	if want("clusters") {
		static := make([]*admin.Message, 0, len(p.static.clusters))
		for _, c := range p.static.clusters {
			a, _ := anypb.New(c)
			static = append(static, dumpMsg("ClustersConfigDump.StaticCluster",
				admin.Field{Name: "cluster", Value: a},
				admin.Field{Name: "last_updated", Value: ts(p.startedAt)}))
		}
		rs := p.state.get(TypeCluster)
		var dynamic []*admin.Message
		for _, name := range sortedKeys(rs.resources) {
			dynamic = append(dynamic, dynamicDump("ClustersConfigDump.DynamicCluster", "cluster", rs, name))
		}
		out.Configs = append(out.Configs, dumpMsg("ClustersConfigDump",
			admin.Field{Name: "version_info", Value: rs.version},
			admin.Field{Name: "static_clusters", Value: static},
			admin.Field{Name: "dynamic_active_clusters", Value: dynamic},
			admin.Field{Name: "dynamic_warming_clusters", Value: []*admin.Message(nil)}))
	}
	if want("routes") {
		rs := p.state.get(TypeRoute)
		var dynamic []*admin.Message
		for _, name := range sortedKeys(rs.resources) {
			dynamic = append(dynamic, dynamicDump("RoutesConfigDump.DynamicRouteConfig", "route_config", rs, name))
		}
		out.Configs = append(out.Configs, dumpMsg("RoutesConfigDump",
			admin.Field{Name: "static_route_configs", Value: []*admin.Message(nil)},
			admin.Field{Name: "dynamic_route_configs", Value: dynamic}))
	}
	if want("endpoints") {
		rs := p.state.get(TypeEndpoint)
		var dynamic []*admin.Message
		for _, name := range sortedKeys(rs.resources) {
			dynamic = append(dynamic, dynamicDump("EndpointsConfigDump.DynamicEndpointConfig", "endpoint_config", rs, name))
		}
		out.Configs = append(out.Configs, dumpMsg("EndpointsConfigDump",
			admin.Field{Name: "static_endpoint_configs", Value: []*admin.Message(nil)},
			admin.Field{Name: "dynamic_endpoint_configs", Value: dynamic}))
	}
	if want("secrets") {
		var static, dynamic []*admin.Message
		for _, s := range p.opts.Bootstrap.GetStaticResources().GetSecrets() {
			static = append(static, dumpMsg("SecretsConfigDump.StaticSecret",
				admin.Field{Name: "name", Value: s.GetName()},
				admin.Field{Name: "last_updated", Value: ts(p.startedAt)},
				admin.Field{Name: "secret", Value: redacted(s)}))
		}
		dynSecret := func(name, version string, updated time.Time, s *tlsv3.Secret) *admin.Message {
			return dumpMsg("SecretsConfigDump.DynamicSecret",
				admin.Field{Name: "name", Value: name},
				admin.Field{Name: "version_info", Value: version},
				admin.Field{Name: "last_updated", Value: ts(updated)},
				admin.Field{Name: "secret", Value: redacted(s)})
		}
		for _, s := range p.agentSecrets {
			dynamic = append(dynamic, dynSecret(s.GetName(), "ca-agent", p.agentUpdated, s))
		}
		rs := p.state.get(TypeSecret)
		for _, name := range sortedKeys(rs.resources) {
			s := new(tlsv3.Secret)
			if err := rs.resources[name].UnmarshalTo(s); err != nil {
				continue
			}
			dynamic = append(dynamic, dynSecret(name, rs.version, rs.updated, s))
		}
		out.Configs = append(out.Configs, dumpMsg("SecretsConfigDump",
			admin.Field{Name: "static_secrets", Value: static},
			admin.Field{Name: "dynamic_active_secrets", Value: dynamic},
			admin.Field{Name: "dynamic_warming_secrets", Value: []*admin.Message(nil)}))
	}
	return out, nil
}

// dumpMsg is the envoy.admin.v3 message of that name.
func dumpMsg(name string, fields ...admin.Field) *admin.Message {
	return &admin.Message{Type: "envoy.admin.v3." + name, Fields: fields}
}

// dynamicDump is a Dynamic{Cluster,RouteConfig,EndpointConfig}: they share field numbers
// 1-4 (version_info, the resource, last_updated, error_state).
func dynamicDump(typ, field string, rs *resourceState, name string) *admin.Message {
	return dumpMsg(typ,
		admin.Field{Name: "version_info", Value: rs.version},
		admin.Field{Name: field, Value: rs.resources[name]},
		admin.Field{Name: "last_updated", Value: ts(rs.updated)},
		admin.Field{Name: "error_state", Value: errorState(rs)})
}

func ts(t time.Time) proto.Message { return timestamppb.New(t) }

// redacted returns the secret as Any with private keys replaced, as Envoy's dump does.
func redacted(s *tlsv3.Secret) *anypb.Any {
	c := proto.Clone(s).(*tlsv3.Secret)
	if tc := c.GetTlsCertificate(); tc != nil && tc.GetPrivateKey() != nil {
		tc.PrivateKey = nil
	}
	a, _ := anypb.New(c)
	return a
}

// errorState is envoy.admin.v3.UpdateFailureState, nil when the last update was accepted.
func errorState(rs *resourceState) *admin.Message {
	if rs.lastError == "" {
		return nil
	}
	return dumpMsg("UpdateFailureState",
		admin.Field{Name: "last_update_attempt", Value: ts(rs.errorAt)},
		admin.Field{Name: "details", Value: rs.lastError},
		admin.Field{Name: "version_info", Value: rs.errorVer})
}

func sortedKeys(m map[string]*anypb.Any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

package proxy_test

import (
	"fmt"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weft-mesh/weft/internal/proxy"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
)

// TestStatsMatcher: with Istio's kind of inclusion list in the bootstrap, the proxy
// routes as before but keeps only the metrics the list names: cluster_manager.* stay,
// the per-cluster upstream metrics are not created.
func TestStatsMatcher(t *testing.T) {
	m := &mesh{cp: startControlPlane(t, "127.0.0.1:0"), a: startBackend(t, "a"), b: startBackend(t, "b"), c: client()}
	m.port = freePort(t)
	m.url = fmt.Sprintf("http://127.0.0.1:%d", m.port)
	m.clusters = []types.Resource{edsCluster("a"), edsCluster("b")}
	m.eps = []types.Resource{endpoints("a", m.a.addr), endpoints("b", m.b.addr)}
	b := bootstrap.FromFlags(bootstrap.Flags{NodeID: nodeID, Cluster: "test", XDSAddress: m.cp.addr, AdminAddress: "127.0.0.1:0"})
	b.StatsConfig = &metricsv3.StatsConfig{StatsMatcher: &metricsv3.StatsMatcher{
		StatsMatcher: &metricsv3.StatsMatcher_InclusionList{InclusionList: &matcherv3.ListStringMatcher{
			Patterns: []*matcherv3.StringMatcher{
				{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "cluster_manager"}},
				{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "server"}},
			},
		}},
	}}
	p := runProxyWith(t, b)
	m.routes(t, prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")

	// a, b and the bootstrap's xDS cluster.
	if n, ok := p.Stats().Value("cluster_manager.active_clusters"); !ok || n != 3 {
		t.Errorf("cluster_manager.active_clusters = %d (kept %v), want 3", n, ok)
	}
	if _, ok := p.Stats().Value("cluster.a.upstream_rq_total"); ok {
		t.Error("cluster.a.upstream_rq_total exists: the inclusion list does not name it")
	}
	for _, m := range p.Stats().Metrics(nil) {
		if !strings.HasPrefix(m.Name, "cluster_manager") && !strings.HasPrefix(m.Name, "server") {
			t.Errorf("/stats has %q", m.Name)
		}
	}
}

// TestStatsMatcherBadPattern: an invalid pattern is an error naming its field, and
// the proxy does not start.
func TestStatsMatcherBadPattern(t *testing.T) {
	b := &bootstrapv3.Bootstrap{StatsConfig: &metricsv3.StatsConfig{StatsMatcher: &metricsv3.StatsMatcher{
		StatsMatcher: &metricsv3.StatsMatcher_ExclusionList{ExclusionList: &matcherv3.ListStringMatcher{
			Patterns: []*matcherv3.StringMatcher{
				{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "ok"}},
				{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(unclosed"}}},
			},
		}},
	}}}
	_, err := proxy.New(proxy.Options{Bootstrap: b})
	if err == nil || !strings.Contains(err.Error(), "stats_config.stats_matcher.exclusion_list.patterns[1]") {
		t.Fatalf("err = %v, want one naming stats_config.stats_matcher.exclusion_list.patterns[1]", err)
	}
}

package proxy

import (
	"fmt"

	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weft-mesh/weft/internal/proxy/matcher"
)

// compileStatsMatcher turns the bootstrap's stats_config.stats_matcher into the
// store's filter, as Envoy reads it: reject_all keeps no metric, an inclusion list
// keeps those whose full name (tags included, "cluster.NAME.upstream_rq_total")
// matches a pattern, an exclusion list those that match none. Istio's bootstraps set
// an inclusion list (cluster_manager, listener_manager, server, cluster.xds-grpc, ...),
// which spares a sidecar the ~30 metrics of every cluster it is told about.
func compileStatsMatcher(sm *metricsv3.StatsMatcher) (func(string) bool, error) {
	switch m := sm.GetStatsMatcher().(type) {
	case nil:
		return nil, nil
	case *metricsv3.StatsMatcher_RejectAll:
		if !m.RejectAll {
			return nil, nil
		}
		return func(string) bool { return false }, nil
	case *metricsv3.StatsMatcher_InclusionList:
		ms, err := compilePatterns("inclusion_list", m.InclusionList.GetPatterns())
		if err != nil {
			return nil, err
		}
		return func(name string) bool { return anyMatch(ms, name) }, nil
	case *metricsv3.StatsMatcher_ExclusionList:
		ms, err := compilePatterns("exclusion_list", m.ExclusionList.GetPatterns())
		if err != nil {
			return nil, err
		}
		return func(name string) bool { return !anyMatch(ms, name) }, nil
	default:
		return nil, fmt.Errorf("unsupported matcher %T", m)
	}
}

func compilePatterns(field string, ps []*matcherv3.StringMatcher) ([]matcher.String, error) {
	ms := make([]matcher.String, len(ps))
	for i, p := range ps {
		m, err := matcher.CompileString(p)
		if err != nil {
			return nil, fmt.Errorf("%s.patterns[%d]: %w", field, i, err)
		}
		ms[i] = m
	}
	return ms, nil
}

func anyMatch(ms []matcher.String, name string) bool {
	for i := range ms {
		if ms[i].Match(name) {
			return true
		}
	}
	return false
}

package router

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Small proto builders shared by the tests.

func vhost(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

func prefixRoute(prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Name:   "to-" + cluster,
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: clusterAction(cluster),
	}
}

func routeWith(m *routev3.RouteMatch, cluster string) *routev3.Route {
	return &routev3.Route{Name: "to-" + cluster, Match: m, Action: clusterAction(cluster)}
}

func clusterAction(cluster string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: s} }

func hdrAdd(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: action}
}

func hdrAddAppend(key, value string, appendFlag bool) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, Append: wrapperspb.Bool(appendFlag)}
}

func mustCompile(t interface {
	Helper()
	Fatal(...any)
}, rc *routev3.RouteConfiguration) *Table {
	t.Helper()
	tb, err := Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

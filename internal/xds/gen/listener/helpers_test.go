package listener

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// hcmOf decodes the HTTP connection manager of a filter chain (nil if none).
func hcmOf(t *testing.T, fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	t.Helper()
	for _, f := range fc.GetFilters() {
		if f.GetName() == HTTPConnectionManager {
			h := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			return h
		}
	}
	return nil
}

// rdsNames lists the route configurations a listener's connection managers fetch.
func rdsNames(t *testing.T, l *listenerv3.Listener) []string {
	t.Helper()
	var out []string
	if api := l.GetApiListener(); api != nil {
		h := &hcmv3.HttpConnectionManager{}
		if err := api.GetApiListener().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		return []string{h.GetRds().GetRouteConfigName()}
	}
	chains := append([]*listenerv3.FilterChain{}, l.GetFilterChains()...)
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains, l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		if h := hcmOf(t, fc); h != nil && h.GetRds() != nil {
			out = append(out, h.GetRds().GetRouteConfigName())
		}
	}
	return out
}

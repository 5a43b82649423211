package all

import (
	"testing"

	"github.com/weft-mesh/weft/internal/proxy/filter"
)

func TestFiltersRegistered(t *testing.T) {
	have := map[string]bool{}
	for _, ty := range filter.Registered() {
		have[ty] = true
	}
	for _, want := range []string{
		"envoy.extensions.filters.http.cors.v3.Cors",
		"envoy.extensions.filters.http.fault.v3.HTTPFault",
		"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
	} {
		if !have[want] {
			t.Errorf("%s not registered", want)
		}
	}
}

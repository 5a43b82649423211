package route

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
)

// TestPassthroughDestinationHeader: an Explicit-mode sidecar's catch-all route hands
// PassthroughCluster (ORIGINAL_DST with use_http_header) the destination in
// x-envoy-original-dst-host, taken from the authority and overwriting the client's; a
// Redirect-mode sidecar has a real original destination and sets no header; the
// REGISTRY_ONLY catch-all stays a 502.
func TestPassthroughDestinationHeader(t *testing.T) {
	s := mesh("")
	for _, tc := range []struct {
		mode       node.Interception
		host       string
		wantHeader bool
	}{
		{node.Explicit, "10.1.2.3:8080", true},
		{node.Explicit, "example.com", true},
		{node.Redirect, "10.1.2.3:8080", false},
	} {
		p := simtest.SidecarProxy("productpage-v1", tc.mode)
		rcs := Outbound(s, p)
		validate(t, rcs)
		var found bool
		for _, rc := range rcs {
			if tc.mode == node.Redirect && rc.GetName() != names.OutboundRoute(9080) {
				continue
			}
			res, err := simtest.RunRoute(rc, simtest.Request{Host: tc.host, Path: "/x"})
			if err != nil {
				t.Fatalf("%v %s %s: %v", tc.mode, rc.GetName(), tc.host, err)
			}
			if res.Cluster != names.PassthroughCluster || res.VirtualHost != AllowAnyVirtualHost {
				t.Fatalf("%v %s: %s went to %s/%s, want the catch-all to PassthroughCluster", tc.mode, rc.GetName(), tc.host, res.VirtualHost, res.Cluster)
			}
			found = true
			adds := res.Route.GetRequestHeadersToAdd()
			if !tc.wantHeader {
				if len(adds) != 0 {
					t.Fatalf("%v: catch-all adds %v, want nothing", tc.mode, adds)
				}
				continue
			}
			if len(adds) != 1 {
				t.Fatalf("%v: catch-all adds %v, want the destination header", tc.mode, adds)
			}
			a := adds[0]
			if a.GetHeader().GetKey() != "x-envoy-original-dst-host" || a.GetHeader().GetValue() != "%REQ(:authority)%" ||
				a.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || a.GetAppend() != nil {
				t.Fatalf("%v: catch-all header %v, want x-envoy-original-dst-host: %%REQ(:authority)%% overwriting", tc.mode, a)
			}
		}
		if !found {
			t.Fatalf("%v: no outbound route configuration routed %s", tc.mode, tc.host)
		}
	}

	// A service's own routes carry no destination header: their clusters are not
	// ORIGINAL_DST.
	res := routeOf(t, s, pp(), simtest.Request{Host: "reviews:9080"})
	if len(res.Route.GetRequestHeadersToAdd()) != 0 {
		t.Fatalf("service route adds %v", res.Route.GetRequestHeadersToAdd())
	}

	// REGISTRY_ONLY: unknown hosts get a 502 in both modes, no passthrough.
	blocked := mesh(`
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`)
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		for _, rc := range Outbound(blocked, simtest.SidecarProxy("productpage-v1", mode)) {
			res, err := simtest.RunRoute(rc, simtest.Request{Host: "10.1.2.3:8080", Path: "/"})
			if err != nil {
				t.Fatal(err)
			}
			if res.VirtualHost != BlockAllVirtualHost || res.DirectResponse.GetStatus() != 502 {
				t.Fatalf("%v REGISTRY_ONLY %s: %s/%v, want block_all 502", mode, rc.GetName(), res.VirtualHost, res.DirectResponse)
			}
		}
	}
}

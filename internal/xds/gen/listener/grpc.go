package listener

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

// GRPC builds a proxyless gRPC client's listeners: for every HTTP service port in
// scope, an API listener named exactly as grpc-go asks for it — the dial target
// "host:port" (names.GRPCListener), in FQDN form and, for services in the client's
// namespace, the short "name:port" — whose HCM fetches the route configuration of the
// same name over ADS (route.GRPC builds it). Only filters grpc-go implements are
// listed (fault, router). Sorted by name.
func GRPC(s *snapshot.Snapshot, p *node.Proxy) []*listenerv3.Listener {
	if p.Type != node.GRPC {
		return nil
	}
	sc := route.NewScope(s, p)
	var out []*listenerv3.Listener
	for _, t := range sc.GRPCTargets() {
		fc := FilterContext{Snapshot: s, Proxy: p, Side: SideGRPC, Port: t.Port.Number}
		hcm := httpConnectionManager(fc, t.Name, t.Name)
		out = append(out, &listenerv3.Listener{
			Name:        t.Name,
			ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
		})
	}
	sortListeners(out)
	return out
}

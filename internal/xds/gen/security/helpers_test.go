package security

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/proxy/filter/rbac/engine"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/security/securitytest"
)

// SPIFFE IDs of Bookinfo's workloads.
const (
	productpageID = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
	ratingsID     = "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
	otherNSID     = "spiffe://cluster.local/ns/other/sa/client"
)

// bookinfo is the Bookinfo snapshot with the security resources of yamlText.
func bookinfo(yamlText string) *snapshot.Snapshot {
	in := simtest.BookinfoInput()
	securitytest.MustParse(yamlText).AddTo(&in)
	return snapshot.Build(in)
}

func reviews() *node.Proxy { return simtest.SidecarProxy("reviews-v1", node.Redirect) }

// req is a request (or, with tcp, a connection) reaching a workload.
type req struct {
	principal string // the peer's SPIFFE ID; "" for plaintext
	method    string
	host      string
	path      string
	headers   map[string]string
	src, dst  string // "ip:port"; defaults below
	xffSrc    string // remote_ip when a trusted X-Forwarded-For names another client
	sni       string
	meta      engine.Metadata
}

func (r req) attrs(tcp bool) *engine.Attrs {
	a := &engine.Attrs{
		DirectSource: netip.MustParseAddrPort(or(r.src, "10.0.0.7:40000")),
		Destination:  netip.MustParseAddrPort(or(r.dst, "127.2.0.3:9080")),
		TLS:          r.principal != "",
		Principal:    r.principal,
		SNI:          r.sni,
		Metadata:     r.meta,
	}
	a.Source = a.DirectSource
	if r.xffSrc != "" {
		a.Source = netip.MustParseAddrPort(r.xffSrc)
	}
	if tcp {
		return a
	}
	hr := httptest.NewRequest(or(r.method, http.MethodGet), "http://"+or(r.host, "reviews:9080")+or(r.path, "/"), nil)
	for k, v := range r.headers {
		hr.Header.Set(k, v)
	}
	a.Request = hr
	return a
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// allowed runs the workload's generated RBAC filters, in chain order, on the proxy's own
// engine: allowed when each one lets the request through. The configs must compile: a
// config the proxy would NACK fails the test.
func allowed(t *testing.T, s *snapshot.Snapshot, p *node.Proxy, r req, tcp bool) bool {
	t.Helper()
	ok := true
	for _, a := range Actions {
		var cfgRules, shadow any
		if tcp {
			cfg := NetworkRBAC(s, p, a)
			if cfg == nil {
				continue
			}
			validate(t, cfg)
			cfgRules, shadow = cfg.GetRules(), cfg.GetShadowRules()
		} else {
			cfg := HTTPRBAC(s, p, a)
			if cfg == nil {
				continue
			}
			validate(t, cfg)
			cfgRules, shadow = cfg.GetRules(), cfg.GetShadowRules()
		}
		for i, m := range []any{cfgRules, shadow} {
			rules := asRBAC(m)
			if rules == nil {
				continue
			}
			e, err := engine.Compile(rules, engine.Options{Network: tcp})
			if err != nil {
				t.Fatalf("%v rules do not compile in the proxy (tcp=%v): %v", a, tcp, err)
			}
			if i == 1 {
				continue // shadow rules compile but are never enforced
			}
			if pass, _ := e.Decide(r.attrs(tcp)); !pass {
				ok = false
			}
		}
	}
	return ok
}

// fakeMeta is dynamic metadata as the JWT filter would leave it: istio_authn keys.
type fakeMeta map[string]any

func (m fakeMeta) Lookup(filter string, path []string) (any, bool) {
	if filter != engine.IstioAuthn || len(path) == 0 {
		return nil, false
	}
	v, ok := m[path[0]]
	for _, k := range path[1:] {
		obj, isObj := v.(map[string]any)
		if !ok || !isObj {
			return nil, false
		}
		v, ok = obj[k]
	}
	return v, ok
}

type validator interface{ ValidateAll() error }

// validate runs the protoc-gen-validate rules Envoy applies to the config.
func validate(t *testing.T, m validator) {
	t.Helper()
	if err := m.ValidateAll(); err != nil {
		t.Fatalf("generated config is invalid: %v", err)
	}
}

func asRBAC(m any) *rbacv3.RBAC {
	r, _ := m.(*rbacv3.RBAC)
	return r
}

package listener

import (
	"fmt"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	accessfilev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/registry"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
	"github.com/weft-mesh/weft/internal/xds/gen/names"
	"github.com/weft-mesh/weft/internal/xds/gen/route"
)

// withSecurity generates a sidecar's listeners with an inbound TLS decision, as the
// security work will plug in.
func withSecurity(t *testing.T, s *snapshot.Snapshot, p *node.Proxy, mode TLSMode) *simtest.Sim {
	t.Helper()
	sec := func(*snapshot.Snapshot, *node.Proxy, uint32) InboundTLS {
		return InboundTLS{Mode: mode, TransportSocket: MeshTLSTransportSocket(true), ALPN: []string{"istio-peer-exchange", "istio"}}
	}
	ls := sidecar(s, p, sec)
	rcs := append(route.Outbound(s, p), route.Inbound(s, p)...)
	validateAll(t, ls, rcs)
	return simtest.New(ls, rcs)
}

func TestInboundSecurityHook(t *testing.T) {
	s := simtest.BookinfoFiles()
	mtls := simtest.Request{Port: 9080, Inbound: true, TLS: true, ALPN: []string{"istio"}, Host: "reviews:9080", Path: "/"}
	plain := simtest.Request{Port: 9080, Inbound: true, Host: "reviews:9080", Path: "/"}
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		p := simtest.SidecarProxy("reviews-v1", mode)
		mtls.Address, plain.Address = p.IP.String(), p.IP.String()
		for _, tc := range []struct {
			tls                TLSMode
			mtlsOK, plainOK    bool
			plainTerminatesTLS bool
			inspectorsInbound  []string
		}{
			{Plaintext, false, true, false, nil},
			{Permissive, true, true, false, []string{TLSInspector}},
			{Strict, true, false, false, []string{TLSInspector}},
		} {
			t.Run(fmt.Sprintf("%s/%d", mode, tc.tls), func(t *testing.T) {
				sim := withSecurity(t, s, p, tc.tls)
				res, err := sim.Run(mtls)
				switch {
				case tc.mtlsOK && (err != nil || !res.TerminatesTLS || res.Cluster != "inbound|9080||"):
					t.Fatalf("mTLS: %+v %v", res, err)
				case !tc.mtlsOK && err == nil && res.TerminatesTLS:
					t.Fatalf("mTLS terminated in plaintext mode: %+v", res)
				}
				res, err = sim.Run(plain)
				switch {
				case tc.plainOK && (err != nil || res.TerminatesTLS || res.Cluster != "inbound|9080||"):
					t.Fatalf("plaintext: %+v %v", res, err)
				case !tc.plainOK && err == nil:
					t.Fatalf("plaintext accepted on a STRICT port: %+v", res)
				}
				// The inbound listener carries the tls_inspector exactly when needed.
				for _, l := range sim.Listeners {
					if l.GetTrafficDirection().String() != "INBOUND" {
						continue
					}
					has := false
					for _, lf := range l.GetListenerFilters() {
						has = has || lf.GetName() == TLSInspector
					}
					if has != (tc.tls != Plaintext) {
						t.Fatalf("%s: tls_inspector %v for mode %d", l.GetName(), has, tc.tls)
					}
				}
			})
		}
	}
}

// TestInboundHCM: the inbound connection manager forwards the caller's identity; the
// outbound one does not; the HTTP proxy listener accepts absolute URLs.
func TestHCMSettings(t *testing.T) {
	s := simtest.BookinfoFiles()
	p := simtest.SidecarProxy("reviews-v1", node.Explicit)
	ls, _ := generate(t, s, p)
	in := hcmOf(t, ls[0].GetFilterChains()[0])
	if in.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_APPEND_FORWARD || !in.GetSetCurrentClientCertDetails().GetUri() {
		t.Fatalf("inbound XFCC: %v %v", in.GetForwardClientCertDetails(), in.GetSetCurrentClientCertDetails())
	}
	outHCM := hcmOf(t, ls[1].GetFilterChains()[0])
	if outHCM.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE || !outHCM.GetHttpProtocolOptions().GetAllowAbsoluteUrl().GetValue() {
		t.Fatalf("outbound: %v", outHCM)
	}
	for _, h := range []*hcmv3.HttpConnectionManager{in, outHCM} {
		if h.GetUseRemoteAddress().GetValue() || !h.GetNormalizePath().GetValue() || len(h.GetAccessLog()) != 0 ||
			len(h.GetUpgradeConfigs()) != 1 || h.GetUpgradeConfigs()[0].GetUpgradeType() != "websocket" {
			t.Fatalf("sidecar HCM settings: %v", h)
		}
		var filters []string
		for _, f := range h.GetHttpFilters() {
			filters = append(filters, f.GetName())
		}
		if strings.Join(filters, ",") != "envoy.filters.http.fault,envoy.filters.http.cors,envoy.filters.http.router" {
			t.Fatalf("filters %v", filters)
		}
	}
}

func TestAccessLog(t *testing.T) {
	in := simtest.BookinfoInput()
	in.Mesh.AccessLogFile = "/dev/stdout"
	s := snapshot.Build(in)
	for _, mode := range []node.Interception{node.Explicit, node.Redirect} {
		ls, _ := generate(t, s, simtest.SidecarProxy("details-v1", mode))
		n := 0
		for _, l := range ls {
			for _, fc := range append(l.GetFilterChains(), l.GetDefaultFilterChain()) {
				for _, f := range fc.GetFilters() {
					// HCM and tcp_proxy both carry access_log as field 2 or 8; decode by type.
					var logs []*accessLogHolder
					logs = append(logs, accessLogsOf(t, f)...)
					for _, al := range logs {
						if al.path != "/dev/stdout" || !strings.Contains(al.format, "%RESPONSE_CODE%") {
							t.Fatalf("%s: access log %+v", l.GetName(), al)
						}
						n++
					}
				}
			}
		}
		if n == 0 {
			t.Fatalf("%s: no access logs", mode)
		}
	}
}

type accessLogHolder struct{ path, format string }

func accessLogsOf(t *testing.T, f *listenerv3.Filter) []*accessLogHolder {
	t.Helper()
	var out []*accessLogHolder
	h := &hcmv3.HttpConnectionManager{}
	if f.GetName() != HTTPConnectionManager {
		return nil // tcp_proxy logs are checked through the HCM shape; same builder
	}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	for _, al := range h.GetAccessLog() {
		fl := &accessfilev3.FileAccessLog{}
		if err := al.GetTypedConfig().UnmarshalTo(fl); err != nil {
			t.Fatal(err)
		}
		out = append(out, &accessLogHolder{fl.GetPath(), fl.GetLogFormat().GetTextFormatSource().GetInlineString()})
	}
	return out
}

// TestRedirectTCPAndSniffing: TCP services with VIPs get "<vip>_<port>" listeners with
// the VirtualService's tcp routes; unknown protocols are sniffed.
func TestRedirectTCPAndSniffing(t *testing.T) {
	in := simtest.BookinfoInput(simtest.MustParse(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongo}
spec:
  hosts: [mongo]
  tcp:
  - match: [{port: 27017, destinationSubnets: [10.1.0.0/16]}]
    route: [{destination: {host: mongo, subset: near}}]
  - match: [{port: 27017, sourceLabels: {app: nobody}}]
    route: [{destination: {host: mongo, subset: never}}]
  - route:
    - {destination: {host: mongo, subset: v1}, weight: 70}
    - {destination: {host: mongo, subset: v2}, weight: 30}
`))
	in.Services = append(in.Services,
		&registry.Service{Hostname: "mongo.default.svc.cluster.local", Name: "mongo", Namespace: "default",
			Addresses: []string{"10.96.0.10"}, Ports: []registry.Port{{Name: "mongo", Number: 27017, Protocol: registry.TCP}}},
		&registry.Service{Hostname: "redis.default.svc.cluster.local", Name: "redis", Namespace: "default",
			Ports: []registry.Port{{Name: "redis", Number: 6379, Protocol: registry.TCP}}},
		&registry.Service{Hostname: "legacy.default.svc.cluster.local", Name: "legacy", Namespace: "default",
			Addresses: []string{"10.96.0.11"}, Ports: []registry.Port{{Name: "port", Number: 7000}}},
	)
	s := snapshot.Build(in)
	p := simtest.SidecarProxy("productpage-v1", node.Redirect)
	ls, rcs := generate(t, s, p)
	sim := simtest.New(ls, rcs)
	mongo := func(sub string) string {
		return names.Cluster(names.Outbound, 27017, sub, "mongo.default.svc.cluster.local")
	}
	for _, tc := range []struct {
		r        simtest.Request
		listener string
		cluster  string
		weights  string
	}{
		{simtest.Request{Address: "10.96.0.10", Port: 27017, TCP: true}, "10.96.0.10_27017", "", fmt.Sprint(map[string]uint32{mongo("v1"): 70, mongo("v2"): 30})},
		{simtest.Request{Address: "10.1.2.3", Port: 27017, TCP: true}, "virtualOutbound", names.PassthroughCluster, ""},
		{simtest.Request{Address: "10.96.0.11", Port: 7000, TCP: true}, "10.96.0.11_7000", names.Cluster(names.Outbound, 7000, "", "legacy.default.svc.cluster.local"), ""},
		{simtest.Request{Address: "10.96.0.11", Port: 7000, Host: "legacy:7000", Path: "/"}, "10.96.0.11_7000", names.Cluster(names.Outbound, 7000, "", "legacy.default.svc.cluster.local"), ""},
		{simtest.Request{Address: "10.2.0.5", Port: 6379, TCP: true}, "0.0.0.0_6379", names.Cluster(names.Outbound, 6379, "", "redis.default.svc.cluster.local"), ""},
	} {
		res, err := sim.Run(tc.r)
		if err != nil {
			t.Errorf("%+v: %v", tc.r, err)
			continue
		}
		got := res.Cluster
		want := tc.cluster
		if tc.weights != "" {
			got, want = fmt.Sprint(res.Weighted), tc.weights
		}
		if res.Listener != tc.listener || got != want {
			t.Errorf("%+v: %s %s, want %s %s", tc.r, res.Listener, got, tc.listener, want)
		}
	}
	// The destination subnet chain: a listener bound to the VIP only sees the VIP as
	// destination, so it is reachable when the VIP is in the subnet.
	var vip *listenerv3.Listener
	for _, l := range ls {
		if l.GetName() == "10.96.0.10_27017" {
			vip = l
		}
	}
	if len(vip.GetFilterChains()) != 2 || vip.GetFilterChains()[0].GetFilterChainMatch().GetPrefixRanges()[0].GetAddressPrefix() != "10.1.0.0" {
		t.Fatalf("mongo chains: %v", vip.GetFilterChains())
	}
	// The sniffed HTTP request went through route configuration "7000".
	if res, _ := sim.Run(simtest.Request{Address: "10.96.0.11", Port: 7000, Host: "legacy:7000", Path: "/"}); res.RouteConfig != "7000" {
		t.Fatalf("sniffed HTTP used route configuration %q", res.RouteConfig)
	}
}

func TestGatewayTLSAndTCP(t *testing.T) {
	s := simtest.Bookinfo(simtest.MustParse(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["bookinfo.example.com"]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert, minProtocolVersion: TLSV1_2}
  - port: {number: 443, name: https-mutual, protocol: HTTPS}
    hosts: ["secure.example.com"]
    tls: {mode: MUTUAL, credentialName: secure-cert}
  - port: {number: 443, name: https-files, protocol: HTTPS}
    hosts: ["files.example.com"]
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key}
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ["*.pass.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: mesh, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [bookinfo.example.com, secure.example.com, files.example.com, "*"]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: productpage, port: {number: 9080}}}]}]
  tls:
  - match: [{sniHosts: [a.pass.example.com], port: 8443}]
    route: [{destination: {host: details, port: {number: 9080}}}]
  - match: [{sniHosts: ["*.pass.example.com"]}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
`))
	p := simtest.GatewayProxy(node.Redirect)
	ls, rcs := generate(t, s, p)
	if got := strings.Join(listenerNames(ls), " "); got != "0.0.0.0_15443 0.0.0.0_31400 0.0.0.0_443 0.0.0.0_8443" {
		t.Fatalf("listeners %s", got)
	}
	sim := simtest.New(ls, rcs)
	https := func(sni string) simtest.Request {
		return simtest.Request{Address: "0.0.0.0", Port: 443, TLS: true, SNI: sni, ALPN: []string{"h2"}, Host: sni, Path: "/productpage"}
	}
	for _, tc := range []struct {
		r       simtest.Request
		cluster string
		tls     bool
	}{
		{https("bookinfo.example.com"), out("", product), true},
		{https("secure.example.com"), out("", product), true},
		{https("files.example.com"), out("", product), true},
		{simtest.Request{Address: "0.0.0.0", Port: 8443, TLS: true, SNI: "a.pass.example.com", TCP: true}, out("", details), false},
		{simtest.Request{Address: "0.0.0.0", Port: 8443, TLS: true, SNI: "b.pass.example.com", TCP: true}, out("", reviews), false},
		{simtest.Request{Address: "0.0.0.0", Port: 15443, TLS: true, SNI: "x", Host: "anything", Path: "/"}, out("", product), true},
		{simtest.Request{Address: "0.0.0.0", Port: 31400, TCP: true}, out("", ratings), false},
	} {
		res, err := sim.Run(tc.r)
		if err != nil || res.Cluster != tc.cluster || res.TerminatesTLS != tc.tls {
			t.Errorf("%s:%d sni %q: %q tls=%v %v, want %q tls=%v", tc.r.Address, tc.r.Port, tc.r.SNI, res.Cluster, res.TerminatesTLS, err, tc.cluster, tc.tls)
		}
	}
	if _, err := sim.Run(https("unknown.example.com")); err == nil {
		t.Errorf("an unknown SNI reached a chain")
	}
	if _, err := sim.Run(simtest.Request{Address: "0.0.0.0", Port: 8443, TLS: true, SNI: "pass.example.com", TCP: true}); err == nil {
		t.Errorf("SNI outside the server's hosts passed through")
	}
	// The TLS contexts: SDS names are the credential names.
	ctxs := map[string]*tlsv3.DownstreamTlsContext{}
	for _, l := range ls {
		for _, fc := range l.GetFilterChains() {
			if ts := fc.GetTransportSocket(); ts != nil {
				c := &tlsv3.DownstreamTlsContext{}
				if err := ts.GetTypedConfig().UnmarshalTo(c); err != nil {
					t.Fatal(err)
				}
				key := l.GetName()
				if sn := fc.GetFilterChainMatch().GetServerNames(); len(sn) > 0 {
					key = sn[0]
				}
				ctxs[key] = c
			}
		}
	}
	if c := ctxs["bookinfo.example.com"]; c.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName() != "bookinfo-cert" ||
		c.GetRequireClientCertificate().GetValue() || c.GetCommonTlsContext().GetTlsParams().GetTlsMinimumProtocolVersion() != tlsv3.TlsParameters_TLSv1_2 {
		t.Errorf("SIMPLE: %v", c)
	}
	if c := ctxs["secure.example.com"]; c.GetCommonTlsContext().GetValidationContextSdsSecretConfig().GetName() != "secure-cert"+CACertSuffix || !c.GetRequireClientCertificate().GetValue() {
		t.Errorf("MUTUAL: %v", c)
	}
	if c := ctxs["files.example.com"]; c.GetCommonTlsContext().GetTlsCertificates()[0].GetCertificateChain().GetFilename() != "/etc/certs/tls.crt" {
		t.Errorf("files: %v", c)
	}
	if c := ctxs["0.0.0.0_15443"]; c.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName() != names.WorkloadCert ||
		c.GetCommonTlsContext().GetValidationContextSdsSecretConfig().GetName() != names.RootCA || !c.GetRequireClientCertificate().GetValue() {
		t.Errorf("ISTIO_MUTUAL: %v", c)
	}
}

func TestGRPCListeners(t *testing.T) {
	s := simtest.BookinfoFiles("virtual-service-reviews-test-v2.yaml", "virtual-service-ratings-test-abort.yaml")
	p := simtest.GRPCProxy("default")
	ls, rcs := generate(t, s, p)
	if len(ls) != 8 {
		t.Fatalf("listeners %v", listenerNames(ls))
	}
	sim := simtest.New(ls, rcs)
	for _, l := range ls {
		h := &hcmv3.HttpConnectionManager{}
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		if h.GetRds().GetRouteConfigName() != l.GetName() || h.GetRds().GetConfigSource().GetAds() == nil {
			t.Fatalf("%s: rds %v", l.GetName(), h.GetRds())
		}
		var filters []string
		for _, f := range h.GetHttpFilters() {
			filters = append(filters, f.GetName())
		}
		if strings.Join(filters, ",") != "envoy.filters.http.fault,envoy.filters.http.router" {
			t.Fatalf("%s: filters %v", l.GetName(), filters)
		}
		// grpc-go rejects a non-zero xff_num_trusted_hops.
		if h.GetXffNumTrustedHops() != 0 || len(h.GetOriginalIpDetectionExtensions()) != 0 {
			t.Fatalf("%s: %v", l.GetName(), h)
		}
	}
	res, err := sim.Run(simtest.Request{Listener: "reviews:9080", Host: "reviews:9080", Path: "/reviews.Reviews/Get", Method: "POST", Headers: map[string]string{"end-user": "jason"}})
	if err != nil || res.Cluster != out("v2", reviews) {
		t.Fatalf("reviews:9080: %q %v", res.Cluster, err)
	}
	res, err = sim.Run(simtest.Request{Listener: "ratings.default.svc.cluster.local:9080", Host: "ratings.default.svc.cluster.local:9080", Path: "/x", Headers: map[string]string{"end-user": "jason"}})
	if err != nil || res.Fault.GetAbort().GetHttpStatus() != 500 {
		t.Fatalf("ratings: %v %v", res.Fault, err)
	}
	if len(GRPC(s, simtest.SidecarProxy("ratings-v1", node.Redirect))) != 0 || len(Sidecar(s, p)) != 0 || len(Gateway(s, p)) != 0 {
		t.Fatal("generators answered for the wrong proxy type")
	}
}

// TestSidecarEgressScopesListeners: a Sidecar's egress hosts limit the outbound
// listeners too, and REGISTRY_ONLY turns the passthrough into a black hole.
func TestSidecarEgressScopesListeners(t *testing.T) {
	in := simtest.BookinfoInput(simtest.MustParse(`
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./reviews.default.svc.cluster.local", "db/*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`))
	in.Services = append(in.Services,
		&registry.Service{Hostname: "pg.db.svc.cluster.local", Name: "pg", Namespace: "db", Addresses: []string{"10.96.1.1"},
			Ports: []registry.Port{{Name: "tcp", Number: 5432, Protocol: registry.TCP}}},
		&registry.Service{Hostname: "cache.other.svc.cluster.local", Name: "cache", Namespace: "other", Addresses: []string{"10.96.1.2"},
			Ports: []registry.Port{{Name: "tcp", Number: 6379, Protocol: registry.TCP}}})
	s := snapshot.Build(in)
	p := simtest.SidecarProxy("productpage-v1", node.Redirect)
	ls, rcs := generate(t, s, p)
	if got := strings.Join(listenerNames(ls), " "); got != "0.0.0.0_9080 10.96.1.1_5432 virtualInbound virtualOutbound" {
		t.Fatalf("listeners: %s", got)
	}
	sim := simtest.New(ls, rcs)
	if res, err := sim.Run(simtest.Request{Address: "10.96.1.2", Port: 6379, TCP: true}); err != nil || res.Cluster != names.BlackHoleCluster {
		t.Fatalf("out-of-scope service: %q %v, want the black hole", res.Cluster, err)
	}
	if res, err := sim.Run(simtest.Request{Address: "10.0.0.1", Port: 9080, Host: "ratings:9080", Path: "/"}); err != nil || res.DirectResponse.GetStatus() != 502 {
		t.Fatalf("out-of-scope HTTP host: %+v %v, want 502", res, err)
	}
	if res, err := sim.Run(simtest.Request{Address: "10.0.0.1", Port: 9080, Host: "reviews:9080", Path: "/"}); err != nil || res.Cluster != out("", reviews) {
		t.Fatalf("reviews: %q %v", res.Cluster, err)
	}
}

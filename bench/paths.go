package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// pathSpec is one data-plane path: fortio -> sidecar A -> sidecar B -> echo server, or
// fortio -> echo server for "direct".
type pathSpec struct {
	Name  string `json:"name"`
	Label string `json:"label"`
	Proxy string `json:"proxy,omitempty"` // "", "weft", "nginx", "haproxy", "goproxy"
	TLS   bool   `json:"tls"`             // mutual TLS between A and B
	H2    bool   `json:"h2"`              // HTTP/2 between A and B (and to a gRPC backend)
	GRPC  bool   `json:"grpc"`            // the client sends gRPC unary calls
	// GOMAXPROCS for weft and goproxy: 1 = one worker, as nginx and HAProxy get; 0 =
	// Go's default.
	GOMAXPROCS int `json:"gomaxprocs,omitempty"`
}

// allPaths in the order runs interleave them.
var allPaths = []pathSpec{
	{Name: "direct", Label: "no proxy"},
	{Name: "weft", Label: "weft plaintext", Proxy: "weft", GOMAXPROCS: 1},
	{Name: "weft-mtls", Label: "weft mTLS", Proxy: "weft", TLS: true, GOMAXPROCS: 1},
	{Name: "nginx", Label: "nginx plaintext", Proxy: "nginx"},
	{Name: "nginx-tls", Label: "nginx mTLS", Proxy: "nginx", TLS: true},
	{Name: "haproxy", Label: "HAProxy plaintext", Proxy: "haproxy"},
	{Name: "haproxy-tls", Label: "HAProxy mTLS", Proxy: "haproxy", TLS: true},
	{Name: "goproxy", Label: "Go httputil.ReverseProxy", Proxy: "goproxy", GOMAXPROCS: 1},
	{Name: "weft-mtls-h2", Label: "weft mTLS, HTTP/2 between sidecars", Proxy: "weft", TLS: true, H2: true, GOMAXPROCS: 1},
	{Name: "weft-allcpu", Label: "weft plaintext, GOMAXPROCS=all CPUs", Proxy: "weft"},
	{Name: "grpc-direct", Label: "gRPC unary, no proxy", GRPC: true, H2: true},
	{Name: "grpc-weft-mtls", Label: "gRPC unary, weft mTLS (HTTP/2 both hops)", Proxy: "weft", TLS: true, H2: true, GRPC: true, GOMAXPROCS: 1},
}

// coreConnsPaths also run at the other connection counts of -conns.
var coreConnsPaths = map[string]bool{"direct": true, "weft": true, "weft-mtls": true, "nginx-tls": true, "haproxy-tls": true}

func defaultPaths() []string { return allPathNames() }

func allPathNames() []string {
	var out []string
	for _, p := range allPaths {
		out = append(out, p.Name)
	}
	return out
}

func pathByName(n string) (pathSpec, bool) {
	for _, p := range allPaths {
		if p.Name == n {
			return p, true
		}
	}
	return pathSpec{}, false
}

// baseline is the direct path a path's added latency is measured against.
func (p pathSpec) baseline() string {
	if p.GRPC {
		return "grpc-direct"
	}
	return "direct"
}

// echoServer is the backend every path ends at: fortio's server, echoing the 1 KB body
// of each POST (HTTP) or ping (gRPC).
type echoServer struct {
	proc       *proc
	http, grpc int
}

func startEcho(ctx context.Context, t *tools, dir string) (*echoServer, error) {
	hp, err := freePort()
	if err != nil {
		return nil, err
	}
	gp, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := startProc("echo", filepath.Join(dir, "echo.log"), nil, t.Fortio, "server",
		"-http-port", fmt.Sprintf("127.0.0.1:%d", hp), "-grpc-port", fmt.Sprintf("127.0.0.1:%d", gp),
		"-redirect-port", "disabled", "-loglevel", "warning")
	if err != nil {
		return nil, err
	}
	e := &echoServer{proc: p, http: hp, grpc: gp}
	for _, port := range []int{hp, gp} {
		if err := waitListening(ctx, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second, p); err != nil {
			p.stop(2 * time.Second)
			return nil, err
		}
	}
	return e, nil
}

// sidecars are the two proxies of a path while it runs.
type sidecars struct {
	a, b   *proc
	listen int // A's port: where fortio sends
	// admin addresses of weft sidecars, for their stats.
	adminA, adminB string
}

func (s *sidecars) stop() {
	if s == nil {
		return
	}
	s.a.stop(3 * time.Second)
	s.b.stop(3 * time.Second)
}

// startSidecars starts B (server side, in front of the echo server) then A (client side,
// sending to B) for path p, with configs written under dir.
func startSidecars(ctx context.Context, t *tools, p pathSpec, dir string, echo *echoServer, certs *certFiles, binOverride string, env []string) (*sidecars, error) {
	pa, err := freePort()
	if err != nil {
		return nil, err
	}
	pb, err := freePort()
	if err != nil {
		return nil, err
	}
	backend := echo.http
	if p.GRPC {
		backend = echo.grpc
	}
	var argvA, argvB []string
	var envAB []string
	var adminA, adminB string
	switch p.Proxy {
	case "weft":
		bin := t.WeftProxy
		if binOverride != "" {
			bin = binOverride
		}
		if p.GOMAXPROCS > 0 {
			envAB = append(envAB, "GOMAXPROCS="+strconv.Itoa(p.GOMAXPROCS))
		}
		for _, side := range []struct {
			name           string
			listen, target int
			argv           *[]string
		}{{"a", pa, pb, &argvA}, {"b", pb, backend, &argvB}} {
			b := weftBootstrap(p, side.name == "a", side.listen, side.target, certs)
			file := filepath.Join(dir, "weft-"+side.name+".json")
			data, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(b)
			if err != nil {
				return nil, fmt.Errorf("bench: weft bootstrap: %w", err)
			}
			if err := os.WriteFile(file, data, 0o600); err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
			admin, err := freePort()
			if err != nil {
				return nil, err
			}
			if side.name == "a" {
				adminA = fmt.Sprintf("127.0.0.1:%d", admin)
			} else {
				adminB = fmt.Sprintf("127.0.0.1:%d", admin)
			}
			*side.argv = []string{bin, "-c", file, "--admin-address", fmt.Sprintf("127.0.0.1:%d", admin),
				"--health-address", "-", "--stats-address", "-", "--log-level", "warn", "--drain-timeout", "200ms"}
		}
	case "goproxy":
		if p.GOMAXPROCS > 0 {
			envAB = append(envAB, "GOMAXPROCS="+strconv.Itoa(p.GOMAXPROCS))
		}
		argvA = []string{t.GoProxy, "-listen", fmt.Sprintf("127.0.0.1:%d", pa), "-upstream", fmt.Sprintf("127.0.0.1:%d", pb)}
		argvB = []string{t.GoProxy, "-listen", fmt.Sprintf("127.0.0.1:%d", pb), "-upstream", fmt.Sprintf("127.0.0.1:%d", backend)}
	case "nginx":
		for _, side := range []struct {
			name           string
			listen, target int
			argv           *[]string
		}{{"a", pa, pb, &argvA}, {"b", pb, backend, &argvB}} {
			sub := filepath.Join(dir, "nginx-"+side.name)
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
			conf := filepath.Join(sub, "nginx.conf")
			if err := os.WriteFile(conf, []byte(nginxConf(p, side.name == "a", side.listen, side.target, sub, certs)), 0o644); err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
			*side.argv = []string{t.Nginx, "-p", sub, "-c", conf}
		}
	case "haproxy":
		for _, side := range []struct {
			name           string
			listen, target int
			argv           *[]string
		}{{"a", pa, pb, &argvA}, {"b", pb, backend, &argvB}} {
			conf := filepath.Join(dir, "haproxy-"+side.name+".cfg")
			if err := os.WriteFile(conf, []byte(haproxyConf(p, side.name == "a", side.listen, side.target, certs)), 0o644); err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
			*side.argv = []string{t.HAProxy, "-db", "-f", conf}
		}
	default:
		return nil, fmt.Errorf("bench: path %s: no proxy", p.Name)
	}
	s := &sidecars{listen: pa, adminA: adminA, adminB: adminB}
	envAB = append(envAB, env...)
	if s.b, err = startProc(p.Name+"-b", filepath.Join(dir, p.Name+"-b.log"), envAB, argvB...); err != nil {
		return nil, err
	}
	if err := waitListening(ctx, fmt.Sprintf("127.0.0.1:%d", pb), 15*time.Second, s.b); err != nil {
		s.b.stop(time.Second)
		return nil, err
	}
	if s.a, err = startProc(p.Name+"-a", filepath.Join(dir, p.Name+"-a.log"), envAB, argvA...); err != nil {
		s.b.stop(time.Second)
		return nil, err
	}
	if err := waitListening(ctx, fmt.Sprintf("127.0.0.1:%d", pa), 15*time.Second, s.a); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // only for the fixed message types of this file
	}
	return a
}

func sockAddr(port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

// weftBootstrap is a static Envoy v3 bootstrap for one sidecar of path p: a listener on
// listen routing everything to one cluster at target. Sidecar A (client side) originates
// TLS to B when p.TLS; B terminates it and requires A's certificate. HTTP/2 goes on A's
// cluster when p.H2, and on B's when the backend is gRPC. Access logs are off, as
// Istio's default.
func weftBootstrap(p pathSpec, clientSide bool, listen, target int, c *certFiles) *bootstrapv3.Bootstrap {
	name := "server"
	if clientSide {
		name = "client"
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name: name, Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "upstream"},
					}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
	}
	l := &listenerv3.Listener{
		Name:    name,
		Address: sockAddr(listen),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
			}},
		}},
	}
	cl := &clusterv3.Cluster{
		Name:                 "upstream",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: "upstream",
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(target)}},
			}}}},
		},
	}
	upH2 := (clientSide && p.H2) || (!clientSide && p.GRPC)
	if upH2 {
		cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
					ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
						ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
							Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
						},
					},
				},
			}),
		}
	}
	if p.TLS {
		validation := func(peer string) *tlsv3.CommonTlsContext_ValidationContext {
			return &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: c.caPEM}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: peer}},
				}},
			}}
		}
		cert := func(certPEM, keyPEM string) []*tlsv3.TlsCertificate {
			return []*tlsv3.TlsCertificate{{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: certPEM}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: keyPEM}},
			}}
		}
		if clientSide {
			alpn := []string{"http/1.1"}
			if p.H2 {
				alpn = []string{"h2"}
			}
			cl.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
					Sni: serverName,
					CommonTlsContext: &tlsv3.CommonTlsContext{
						TlsCertificates:       cert(c.clientCertPEM, c.clientKeyPEM),
						ValidationContextType: validation(serverSPIFFE),
						AlpnProtocols:         alpn,
					},
				})}}
		} else {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{
					RequireClientCertificate: wrapperspb.Bool(true),
					CommonTlsContext: &tlsv3.CommonTlsContext{
						TlsCertificates:       cert(c.serverCertPEM, c.serverKeyPEM),
						ValidationContextType: validation(clientSPIFFE),
						AlpnProtocols:         []string{"h2", "http/1.1"},
					},
				})}}
		}
	}
	return &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: "sidecar~127.0.0.1~" + name + "." + benchNS + "~" + benchNS + ".svc.cluster.local", Cluster: name},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{l},
			Clusters:  []*clusterv3.Cluster{cl},
		},
	}
}

// nginxConf is one nginx sidecar: one process (master_process off, the single worker of
// worker_processes 1), keep-alive both sides, no access log.
func nginxConf(p pathSpec, clientSide bool, listen, target int, dir string, c *certFiles) string {
	listenTLS, upstreamScheme, proxySSL := "", "http", ""
	if p.TLS && !clientSide {
		listenTLS = fmt.Sprintf(` ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_client_certificate %s;
        ssl_verify_client on`, c.ServerCert, c.ServerKey, c.CA)
	}
	if p.TLS && clientSide {
		upstreamScheme = "https"
		proxySSL = fmt.Sprintf(`
            proxy_ssl_certificate %s;
            proxy_ssl_certificate_key %s;
            proxy_ssl_trusted_certificate %s;
            proxy_ssl_verify on;
            proxy_ssl_name %s;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;`, c.ClientCert, c.ClientKey, c.CA, serverName)
	}
	return fmt.Sprintf(`# generated by bench: one nginx sidecar
worker_processes 1;
master_process off;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 100000;
    upstream next {
        server 127.0.0.1:%[2]d;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:%[3]d%[4]s;
        location / {
            proxy_pass %[5]s://next;
            proxy_http_version 1.1;
            proxy_set_header Connection "";%[6]s
        }
    }
}
`, dir, target, listen, listenTLS, upstreamScheme, proxySSL)
}

// haproxyConf is one HAProxy sidecar: nbthread 1, keep-alive and connection reuse.
func haproxyConf(p pathSpec, clientSide bool, listen, target int, c *certFiles) string {
	bindTLS, serverTLS := "", ""
	if p.TLS && !clientSide {
		bindTLS = fmt.Sprintf(" ssl crt %s ca-file %s verify required", c.ServerFull, c.CA)
	}
	if p.TLS && clientSide {
		serverTLS = fmt.Sprintf(" ssl crt %s ca-file %s verify required verifyhost %s sni str(%s)", c.ClientFull, c.CA, serverName, serverName)
	}
	return fmt.Sprintf(`# generated by bench: one HAProxy sidecar
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend in
    bind 127.0.0.1:%d%s
    default_backend next
backend next
    server s1 127.0.0.1:%d%s
`, listen, bindTLS, target, serverTLS)
}

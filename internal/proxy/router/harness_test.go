package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
	"github.com/weft-mesh/weft/internal/testnet"
)

// testUpstream is a real HTTP server on loopback. It stamps X-Upstream with its name.
type testUpstream struct {
	*httptest.Server
	name string
	addr string
	hits atomic.Int64
}

func startUpstream(t testing.TB, name string, h2c bool, handler http.HandlerFunc) *testUpstream {
	t.Helper()
	u := &testUpstream{name: name}
	s := httptest.NewUnstartedServer(nil)
	s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		w.Header().Set("X-Upstream", u.name)
		if handler != nil {
			handler(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok from "+u.name)
	})
	if h2c {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetHTTP1(true)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	s.Start()
	u.Server = s
	u.addr = s.Listener.Addr().String()
	t.Cleanup(s.Close)
	return u
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testnet.FreePort(t)))
}

func staticCluster(t testing.TB, name string, addrs ...string) *clusterv3.Cluster {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	lle := &endpointv3.LocalityLbEndpoints{}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
			}}},
		}}})
	}
	la.Endpoints = []*endpointv3.LocalityLbEndpoints{lle}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment:       la,
	}
}

func withHTTP2(t testing.TB, c *clusterv3.Cluster) *clusterv3.Cluster {
	opts := &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		},
	}}
	a, err := anypb.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": a}
	return c
}

// proxy is a tiny stand-in for the HTTP connection manager: it builds the Exchange the
// way httpconn does (Info, Route from Table.Match) and runs the router alone.
type proxy struct {
	t      testing.TB
	mgr    *upstream.Manager
	stats  *stats.Store
	table  atomic.Pointer[Table]
	router filter.Handler
	srv    *httptest.Server
	url    string
	infos  chan *stream.Info
	client *http.Client
}

type proxyOpt struct {
	h2c    bool
	cfg    *routerv3.Router
	random func() uint64
}

func newProxy(t testing.TB, rc *routev3.RouteConfiguration, clusters []*clusterv3.Cluster, o proxyOpt) *proxy {
	t.Helper()
	p := &proxy{t: t, stats: stats.New(), infos: make(chan *stream.Info, 16384)}
	p.mgr = upstream.NewManager(upstream.Options{Stats: p.stats})
	t.Cleanup(p.mgr.Close)
	if err := p.mgr.Update(clusters); err != nil {
		t.Fatal(err)
	}
	p.table.Store(mustCompile(t, rc))
	p.router = NewRouter(o.cfg, Options{Clusters: p.mgr, Stats: p.stats, Rand: o.random})
	s := httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	if o.h2c {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetHTTP1(true)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	s.Start()
	t.Cleanup(s.Close)
	p.srv = s
	p.url = s.URL
	tr := &http.Transport{MaxIdleConnsPerHost: 32, ResponseHeaderTimeout: 20 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	p.client = &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return p
}

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	info := &stream.Info{Start: time.Now(), Protocol: r.Proto, Method: r.Method, Authority: r.Host, Path: r.RequestURI}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		info.Downstream = ap
	}
	// The connection's local address, as httpconn fills it from the listener: an
	// ORIGINAL_DST cluster without use_http_header connects there.
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			info.DownstreamLocal = ap
		}
	}
	x := &filter.Exchange{W: w, R: r, Info: info}
	if rt, vh := p.table.Load().Match(r); rt != nil {
		x.Route = rt
		info.RouteName = rt.Name()
		info.VirtualHost = vh.Name()
	}
	defer func() {
		select {
		case p.infos <- info:
		default:
		}
	}()
	if err := p.router.Serve(x); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// lastInfo waits for the Info of the next finished exchange.
func (p *proxy) nextInfo() *stream.Info {
	p.t.Helper()
	select {
	case i := <-p.infos:
		return i
	case <-time.After(20 * time.Second):
		p.t.Fatal("no exchange finished")
		return nil
	}
}

func (p *proxy) drainInfos() {
	for {
		select {
		case <-p.infos:
		default:
			return
		}
	}
}

type reqOpt struct {
	method string
	host   string
	header map[string]string
	body   string
}

// do sends one request and returns the response with its body read.
func (p *proxy) do(path string, o reqOpt) (*http.Response, string) {
	p.t.Helper()
	method := o.method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if o.body != "" {
		body = strings.NewReader(o.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.url+path, body)
	if err != nil {
		p.t.Fatal(err)
	}
	if o.host != "" {
		req.Host = o.host
	}
	for k, v := range o.header {
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		p.t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, string(b)
}

func (p *proxy) counter(flat string) int64 {
	v, _ := p.stats.Value(flat)
	return v
}

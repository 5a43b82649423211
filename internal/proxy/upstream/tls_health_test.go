package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/tlsctx"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx/tlstest"
)

// tlsUpstream starts a TLS server on 127.0.0.1 with a certificate of ca for
// server.weft.test, offering h2 and http/1.1 by ALPN.
func tlsUpstream(t testing.TB, ca *tlstest.CA, clientCAs *tlstest.CA) (*upstreamServer, *atomic.Value) {
	t.Helper()
	leaf := ca.Issue(t, tlstest.Opts{DNS: []string{"server.weft.test"}, URIs: []string{"spiffe://weft.test/ns/default/sa/server"}})
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var peer atomic.Value // the client certificate's SPIFFE ID
	u := &upstreamServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.ln = &countingListener{Listener: ln}
	u.addr = ln.Addr().String()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if r.TLS != nil {
			peer.Store(tlsctx.PeerPrincipal(r.TLS))
		}
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Upstream", u.addr)
		io.WriteString(w, "secure")
	}))
	s.Listener.Close()
	s.Listener = u.ln
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	s.EnableHTTP2 = true
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		pool := clientCAs.Cert
		s.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		s.TLS.ClientCAs = newCertPool(pool)
	}
	s.StartTLS()
	u.Server = s
	t.Cleanup(s.Close)
	return u, &peer
}

func upstreamTLS(t testing.TB, c *clusterv3.Cluster, ctx *tlsv3.UpstreamTlsContext) *clusterv3.Cluster {
	a, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.TransportSocket = &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	return c
}

// mtlsContext trusts ca, presents client, and expects the server's SPIFFE ID.
func mtlsContext(ca *tlstest.CA, client *tlstest.Leaf) *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{
		Sni: "server.weft.test",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{client.TLSCertificate()},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: tlstest.Inline(ca.PEM),
			}},
		},
	}
}

func TestUpstreamTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "root")
	client := ca.Issue(t, tlstest.Opts{URIs: []string{"spiffe://weft.test/ns/default/sa/client"}})
	for _, tc := range []struct {
		name  string
		proto func(*clusterv3.Cluster) *clusterv3.Cluster
		want  string
	}{
		{"http1", func(c *clusterv3.Cluster) *clusterv3.Cluster { return c }, "HTTP/1.1"},
		{"http2 explicit", func(c *clusterv3.Cluster) *clusterv3.Cluster { return withHTTP2(t, c, 0) }, "HTTP/2.0"},
		{"auto_config ALPN", func(c *clusterv3.Cluster) *clusterv3.Cluster {
			return withProtocolOptions(t, c, &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{
				AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}})
		}, "HTTP/2.0"},
		{"deprecated http2_protocol_options", func(c *clusterv3.Cluster) *clusterv3.Cluster {
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
			return c
		}, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, peer := tlsUpstream(t, ca, ca)
			m, _ := newTestManager(t, Options{})
			mustUpdate(t, m, tc.proto(upstreamTLS(t, staticCluster(t, "tls", u.addr), mtlsContext(ca, client))))
			c := getCluster(t, m, "tls")
			for i := 0; i < 3; i++ {
				h, _ := c.Pick(nil, netipZero)
				resp, err := c.RoundTrip(newRequest(t, context.Background(), "GET"), h)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "secure" || resp.Header.Get("X-Proto") != tc.want {
					t.Fatalf("got %q over %s, want %s", body, resp.Header.Get("X-Proto"), tc.want)
				}
			}
			if got := peer.Load(); got != "spiffe://weft.test/ns/default/sa/client" {
				t.Fatalf("upstream saw client %v", got)
			}
			if n := u.ln.accepted.Load(); n != 1 {
				t.Fatalf("%d TLS connections for 3 sequential requests, want 1", n)
			}
		})
	}
}

func TestUpstreamTLSWrongCAIsConnectFailure(t *testing.T) {
	ca, other := tlstest.NewCA(t, "root"), tlstest.NewCA(t, "other")
	client := ca.Issue(t, tlstest.Opts{URIs: []string{"spiffe://weft.test/ns/default/sa/client"}})
	u, _ := tlsUpstream(t, ca, nil)
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, upstreamTLS(t, staticCluster(t, "badtls", u.addr), mtlsContext(other, client)))
	if _, err := do(t, getCluster(t, m, "badtls")); !errors.Is(err, ErrConnectFailure) {
		t.Fatalf("err = %v, want ErrConnectFailure", err)
	}
}

func TestTransportSocketMatches(t *testing.T) {
	ca := tlstest.NewCA(t, "root")
	client := ca.Issue(t, tlstest.Opts{URIs: []string{"spiffe://weft.test/ns/default/sa/client"}})
	secure, _ := tlsUpstream(t, ca, ca)
	plain := newUpstream(t, false, nil)
	tlsAny, err := anypb.New(mtlsContext(ca, client))
	if err != nil {
		t.Fatal(err)
	}
	// Istio's auto mTLS: endpoints labelled tlsMode=istio get TLS, others plaintext.
	cl := edsCluster("auto", "")
	cl.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{Name: "tlsMode-istio", Match: &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
			TransportSocket: &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsAny}}},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{},
			TransportSocket: &corev3.TransportSocket{Name: rawSocketName}},
	}
	m, _ := newTestManager(t, Options{})
	mustUpdate(t, m, cl)
	la := assignment(t, "auto", secure.addr, plain.addr)
	la.Endpoints[0].LbEndpoints[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		transportSocketMatchKey: {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
	}}
	if err := m.UpdateEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateEndpoints(append(nilCLA(), la)); err != nil {
		t.Fatal(err)
	}
	c := getCluster(t, m, "auto")
	got := map[string]int{}
	for i := 0; i < 4; i++ {
		u, err := do(t, c)
		if err != nil {
			t.Fatal(err)
		}
		got[u]++
	}
	if got[secure.addr] != 2 || got[plain.addr] != 2 {
		t.Fatalf("spread %v", got)
	}
}

func TestOutlierEjection(t *testing.T) {
	good := newUpstream(t, false, nil)
	bad := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	m, st := newTestManager(t, Options{})
	cl := staticCluster(t, "od", good.addr, bad.addr)
	cl.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(3),
		Interval:           durationpb.New(time.Hour),
		BaseEjectionTime:   durationpb.New(time.Hour),
		MaxEjectionTime:    durationpb.New(2 * time.Hour),
		MaxEjectionPercent: wrapperspb.UInt32(100),
	}
	mustUpdate(t, m, cl)
	c := getCluster(t, m, "od")
	// The router reports each outcome with Observe.
	for i := 0; i < 10; i++ {
		h, err := c.Pick(nil, netipZero)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.RoundTrip(newRequest(t, context.Background(), "GET"), h)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h.Observe(resp.StatusCode, false)
	}
	var badHost *Host
	for _, h := range c.Hosts() {
		if h.Addr() == bad.addr {
			badHost = h
		}
	}
	if badHost.Available() {
		t.Fatal("host answering 500 was not ejected")
	}
	for i := 0; i < 10; i++ {
		if u, err := do(t, c); err != nil || u != good.addr {
			t.Fatalf("request after ejection went to %q (%v)", u, err)
		}
	}
	snap := c.Status()
	for _, h := range snap.Hosts {
		if h.Address == bad.addr && (!h.FailedOutlierCheck || h.HealthFlags() != "/failed_outlier_check" || h.RqError != 3) {
			t.Fatalf("ejected host status %+v", h)
		}
	}
	if v := statValue(t, st, "cluster.od.membership_healthy"); v != 1 {
		t.Errorf("membership_healthy = %d, want 1", v)
	}
}

func TestActiveHealthCheck(t *testing.T) {
	var failing atomic.Bool
	check := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && failing.Load() {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "ok")
	}
	a, b := newUpstream(t, false, check), newUpstream(t, false, nil)
	m, st := newTestManager(t, Options{})
	cl := staticCluster(t, "hc", a.addr, b.addr)
	cl.HealthChecks = []*corev3.HealthCheck{{
		Timeout:            durationpb.New(2 * time.Second),
		Interval:           durationpb.New(20 * time.Millisecond),
		UnhealthyThreshold: wrapperspb.UInt32(1),
		HealthyThreshold:   wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
			Path: "/healthz",
		}},
	}}
	cl.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	mustUpdate(t, m, cl)
	c := getCluster(t, m, "hc")
	eventually(t, "both hosts pass their first check", func() bool {
		return statValue(t, st, "cluster.hc.membership_healthy") == 2
	})
	failing.Store(true)
	eventually(t, "failing host marked unhealthy", func() bool {
		return statValue(t, st, "cluster.hc.membership_healthy") == 1
	})
	for i := 0; i < 6; i++ {
		if u, err := do(t, c); err != nil || u != b.addr {
			t.Fatalf("request %d went to %q (%v), want the healthy host", i, u, err)
		}
	}
	for _, h := range c.Status().Hosts {
		if h.Address == a.addr && !h.FailedActiveHC {
			t.Fatalf("status %+v lacks failed_active_hc", h)
		}
	}
	failing.Store(false)
	eventually(t, "host healthy again", func() bool {
		return statValue(t, st, "cluster.hc.membership_healthy") == 2
	})
	// Removing the cluster stops its checks (the test's leak check is the race
	// detector plus the server closing without open check connections).
	mustUpdate(t, m)
}

func TestConnectTimeoutCoversTLSHandshake(t *testing.T) {
	// A listener that accepts and never answers: the TLS handshake hangs until
	// connect_timeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ca := tlstest.NewCA(t, "root")
	client := ca.Issue(t, tlstest.Opts{URIs: []string{"spiffe://weft.test/c"}})
	m, st := newTestManager(t, Options{})
	cl := upstreamTLS(t, staticCluster(t, "hang", ln.Addr().String()), mtlsContext(ca, client))
	cl.ConnectTimeout = durationpb.New(200 * time.Millisecond)
	mustUpdate(t, m, cl)
	start := time.Now()
	_, err = do(t, getCluster(t, m, "hang"))
	if !errors.Is(err, ErrConnectFailure) {
		t.Fatalf("err = %v, want ErrConnectFailure", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("connect_timeout 200ms took %v", d)
	}
	if v := statValue(t, st, "cluster.hang.upstream_cx_active"); v != 0 {
		t.Fatalf("upstream_cx_active = %d after a timed-out handshake", v)
	}
}

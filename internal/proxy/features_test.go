package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/tlsctx/tlstest"
)

// h2cUpstream serves srv (HTTP/2 without TLS, prior knowledge) on a loopback port and
// points the mesh's cluster "h2" at it, with "a" and "b" as usual.
func h2cUpstream(t *testing.T, m *mesh, srv *http.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	m.clusters = []types.Resource{h2Cluster(t, "h2"), edsCluster("a"), edsCluster("b")}
	m.eps = []types.Resource{endpoints("h2", ln.Addr().String()), endpoints("a", m.a.addr), endpoints("b", m.b.addr)}
}

// h2Cluster is an EDS cluster that speaks HTTP/2 (h2c) to its hosts.
func h2Cluster(t testing.TB, name string) *clusterv3.Cluster {
	c := edsCluster(name)
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(t, &upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		}),
	}
	return c
}

type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetResponseStatus().GetCode() != 0 {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("x-detail", "requested"))
		return nil, status.Error(codes.Code(req.GetResponseStatus().GetCode()), req.GetResponseStatus().GetMessage())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-seen-request-id", strings.Join(md.Get("x-request-id"), ",")))
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (testService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			stream.SetTrailer(metadata.Pairs("x-end", "done"))
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func TestGRPCThroughProxy(t *testing.T) {
	m := newMesh(t, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, testService{})
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	m.clusters = []types.Resource{h2Cluster(t, "grpc"), edsCluster("a"), edsCluster("b")}
	m.eps = []types.Resource{endpoints("grpc", ln.Addr().String()), endpoints("a", m.a.addr), endpoints("b", m.b.addr)}
	m.routes(t, prefixRoute("/grpc.testing.TestService/", "grpc"), prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")

	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", m.port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := testgrpc.NewTestServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var trailer metadata.MD
	var resp *testgrpc.SimpleResponse
	eventually(t, 10*time.Second, func() error {
		resp, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}}, grpc.Trailer(&trailer))
		return err
	})
	if string(resp.GetPayload().GetBody()) != "ping" {
		t.Fatalf("unary payload %q", resp.GetPayload().GetBody())
	}
	if got := trailer.Get("x-seen-request-id"); len(got) != 1 || got[0] == "" {
		t.Fatalf("the proxy did not add x-request-id or the trailer was lost: %v", trailer)
	}

	// Many calls at once, 1 KB each way: every response carries its message, and its
	// own trailer (the header maps of finished exchanges are reused by later ones).
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]bool{}
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				var tr metadata.MD
				resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: payload}}, grpc.Trailer(&tr))
				if err == nil && !bytes.Equal(resp.GetPayload().GetBody(), payload) {
					err = fmt.Errorf("%d bytes back, want %d", len(resp.GetPayload().GetBody()), len(payload))
				}
				if id := tr.Get("x-seen-request-id"); err == nil && (len(id) != 1 || id[0] == "") {
					err = fmt.Errorf("trailers %v, want one x-seen-request-id", tr)
				} else if err == nil {
					mu.Lock()
					if seen[id[0]] {
						err = fmt.Errorf("request id %s in the trailers of two calls", id[0])
					}
					seen[id[0]] = true
					mu.Unlock()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("unary call with a 1 KB payload: %v", err)
	}
	if len(seen) != 200 {
		t.Errorf("%d distinct request ids in 200 calls' trailers", len(seen))
	}

	// A gRPC error status and its trailers pass through.
	_, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such book"}}, grpc.Trailer(&trailer))
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != "no such book" {
		t.Fatalf("status = %v, want NotFound 'no such book'", err)
	}
	if trailer.Get("x-detail") == nil {
		t.Fatalf("error trailers lost: %v", trailer)
	}

	// Bidi streaming: each message echoes before the next is sent.
	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		msg := fmt.Sprintf("msg-%d", i)
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(msg)}}); err != nil {
			t.Fatal(err)
		}
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if string(got.GetPayload().GetBody()) != msg {
			t.Fatalf("echo %d = %q", i, got.GetPayload().GetBody())
		}
	}
	_ = stream.CloseSend()
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v, want EOF", err)
	}
	if stream.Trailer().Get("x-end") == nil {
		t.Fatalf("stream trailer lost: %v", stream.Trailer())
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	m := newMesh(t, false)
	m.a.serve = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Upgrade") != "websocket" {
			return false
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return true
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		// Echo raw bytes: enough to prove both directions flow after the upgrade.
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if err != nil {
				return true
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return true
			}
		}
	}
	m.routes(t, prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")

	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d", resp.StatusCode)
	}
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("frame-%d", i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if string(got) != msg {
			t.Fatalf("echo %d = %q", i, got)
		}
	}
}

func TestHTTP2MultiplexesToUpstream(t *testing.T) {
	m := newMesh(t, false)
	var conns atomic.Int64
	var inflight, peak atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := inflight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
			inflight.Add(-1)
			w.Header().Set("X-Backend", "h2")
			fmt.Fprintf(w, "proto=%s", r.Proto)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	h2cUpstream(t, m, srv)
	m.routes(t, prefixRoute("/", "h2"))
	m.waitBackend(t, "/", "h2")
	conns.Store(0)
	peak.Store(0)

	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, body := get(t, m.c, m.url+"/")
			if code != 200 || body != "proto=HTTP/2.0" {
				errs <- fmt.Sprintf("%d %s", code, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("request failed: %s", e)
	}
	t.Logf("50 concurrent requests: %d new upstream connections, %d streams at once at peak", conns.Load(), peak.Load())
	if conns.Load() > 1 {
		t.Fatalf("%d new upstream connections, want the existing HTTP/2 connection reused", conns.Load())
	}
	if peak.Load() < 2 {
		t.Fatalf("peak concurrency %d: requests were not multiplexed", peak.Load())
	}
}

// TestMutualTLSBetweenProxies: a client sidecar originates mTLS to a server sidecar with
// SPIFFE identities and SDS secrets over ADS; the server sees the caller's identity, and
// a wrong expected SAN fails the connection.
func TestMutualTLSBetweenProxies(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	ca := tlstest.NewCA(t, "mesh root")
	clientLeaf := ca.Issue(t, tlstest.Opts{URIs: []string{"spiffe://cluster.local/ns/default/sa/productpage"}})
	serverLeaf := ca.Issue(t, tlstest.Opts{URIs: []string{"spiffe://cluster.local/ns/default/sa/reviews"}})
	app := startBackend(t, "reviews")
	var xfcc atomic.Value
	app.serve = func(w http.ResponseWriter, r *http.Request) bool {
		xfcc.Store(r.Header.Get("X-Forwarded-Client-Cert"))
		return false
	}

	const serverNode = "sidecar~127.0.0.2~reviews.default~default.svc.cluster.local"
	inPort, outPort := freePort(t), freePort(t)
	sdsRef := func(name string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}
	}
	common := func(san string) *tlsv3.CommonTlsContext {
		c := &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsRef("default")},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sdsRef("ROOTCA")},
		}
		if san != "" {
			c.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}},
				}}},
				ValidationContextSdsSecretConfig: sdsRef("ROOTCA"),
			}}
		}
		return c
	}

	// The server sidecar: inbound mTLS listener in front of the app, XFCC with the URI.
	inbound := httpListener(t, "inbound", inPort, "inbound-routes")
	inHCM := new(hcmv3.HttpConnectionManager)
	if err := inbound.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(inHCM); err != nil {
		t.Fatal(err)
	}
	inHCM.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
	inHCM.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	inbound.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, inHCM)}
	inbound.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &tlsv3.DownstreamTlsContext{
		CommonTlsContext:         common(""),
		RequireClientCertificate: wrapBool(true),
	})}}
	cp.pushFor(serverNode, resources{
		listeners: []types.Resource{inbound},
		routes:    []types.Resource{routeConfig("inbound-routes", prefixRoute("/", "app"))},
		clusters:  []types.Resource{edsCluster("app")},
		endpoints: []types.Resource{endpoints("app", app.addr)},
		secrets:   []types.Resource{tlstest.CertSecret("default", serverLeaf), tlstest.CASecret("ROOTCA", ca)},
	})
	runProxyNode(t, cp, serverNode, false)

	// The client sidecar: outbound listener, cluster to the server sidecar with mTLS.
	pushClient := func(san string) {
		up := edsCluster("reviews")
		up.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{
			CommonTlsContext: common(san), Sni: "outbound_.9080_._.reviews.default.svc.cluster.local",
		})}}
		cp.push(resources{
			listeners: []types.Resource{httpListener(t, "outbound", outPort, "outbound-routes")},
			routes:    []types.Resource{routeConfig("outbound-routes", prefixRoute("/", "reviews"))},
			clusters:  []types.Resource{up},
			endpoints: []types.Resource{endpoints("reviews", fmt.Sprintf("127.0.0.1:%d", inPort))},
			secrets:   []types.Resource{tlstest.CertSecret("default", clientLeaf), tlstest.CASecret("ROOTCA", ca)},
		})
	}
	pushClient("spiffe://cluster.local/ns/default/sa/reviews")
	runProxy(t, cp, false)

	c := client()
	url := fmt.Sprintf("http://127.0.0.1:%d/reviews/0", outPort)
	eventually(t, 10*time.Second, func() error {
		code, from, body := get(t, c, url)
		if code != 200 || from != "reviews" {
			return fmt.Errorf("GET through two sidecars: %d from %q: %s", code, from, body)
		}
		return nil
	})
	got, _ := xfcc.Load().(string)
	if !strings.Contains(got, "URI=spiffe://cluster.local/ns/default/sa/productpage") {
		t.Fatalf("the server side saw x-forwarded-client-cert %q, want the caller's SPIFFE ID", got)
	}

	// A plaintext client is refused by the mTLS listener.
	if code, _, _ := get(t, client(), fmt.Sprintf("http://127.0.0.1:%d/", inPort)); code == 200 {
		t.Fatalf("plaintext request to the mTLS listener succeeded")
	}

	// Expecting another identity: the handshake fails and the client sidecar answers 503.
	pushClient("spiffe://cluster.local/ns/default/sa/someone-else")
	eventually(t, 10*time.Second, func() error {
		code, _, body := get(t, client(), url)
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("with a wrong SAN: %d %s, want 503", code, body)
		}
		return nil
	})
}

// TestH2UpstreamForwardStateReuse: with an HTTP/2 upstream, the router reuses a
// request's upstream state once the HTTP/2 client reports the request released, and
// only then. 16 clients interleave echoes (reused) with answers that come while the
// request body still flows (the client's body sender still reads it: not reused); each
// answer is checked against its own request. Under -race, state reused while the
// sender still read it shows as a race.
func TestH2UpstreamForwardStateReuse(t *testing.T) {
	m := newMesh(t, false)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			buf := make([]byte, 5)
			_, _ = io.ReadFull(r.Body, buf)
			fmt.Fprintf(w, "early %s", buf)
			return
		}
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})}
	h2cUpstream(t, m, srv)
	m.routes(t, prefixRoute("/", "h2"))
	eventually(t, 10*time.Second, func() error {
		if code, _, body := get(t, m.c, m.url+"/ready"); code != 200 || body != "" {
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	})

	interleave(t, 160, 16, func() *http.Client { return h1Client(t) }, func(c *http.Client, i int) error {
		sent := fmt.Sprintf("body %d", i)
		var body io.Reader = strings.NewReader(sent)
		path, want := "/echo", sent
		var late *lateBody
		if i%2 == 1 {
			late = newLateBody("first")
			body, path, want = late, "/early", "early first"
		}
		req, _ := http.NewRequest("POST", m.url+path, body)
		resp, b, err := do(c, req)
		late.finish()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || b != want {
			return fmt.Errorf("%s: %d %q, want %q", path, resp.StatusCode, b, want)
		}
		return nil
	})
}

package proxy_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy"
	"github.com/weft-mesh/weft/internal/proxy/bootstrap"
	"github.com/weft-mesh/weft/internal/proxy/tlsctx/tlstest"
)

// TestCertificateRotationUnderLoad: a client sidecar originates mTLS to a server sidecar
// (SDS secrets over ADS from go-control-plane's reference server, one proxy on SotW, the
// other on Delta) while ~500 requests a second flow through both; every 500 ms both
// proxies get new leaf certificates (new keys, new serials) and only SDS changes, as a
// CA's renewal does. The client's cluster closes each upstream connection after a few
// requests, so handshakes keep happening across every rotation. It runs with HTTP/1.1,
// and with HTTP/2 (ALPN h2, as Istio's inbound chains offer it) between the proxies
// while the mesh also moves to a new root CA; the two at once (the default -parallel on
// two cores).
//
// It proves: zero failed requests; the server side saw several of the client's
// certificates (each client generation has its own URI SAN below the SPIFFE ID the
// server requires, and the app reads it from x-forwarded-client-cert); and both
// proxies' admin /config_dump?resource=dynamic_active_secrets show the last pushed
// serials.
func TestCertificateRotationUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name         string
		h2, rollover bool
	}{{"http1", false, false}, {"http2-root-rollover", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rotationUnderLoad(t, tc.h2, tc.rollover)
		})
	}
}

// rotationUnderLoad runs the test; rollover moves the mesh to a new root CA on the way,
// as an operator replacing its CA does: both roots trusted, then leaves of the new
// one, then the old root dropped (each step applied by both proxies before the next).
func rotationUnderLoad(t *testing.T, h2, rollover bool) {
	const (
		loadFor   = 6 * time.Second
		rotate    = 500 * time.Millisecond
		workers   = 10
		perWorker = 20 * time.Millisecond // 10 workers x 50/s = ~500 requests a second
		serverID  = "spiffe://cluster.local/ns/default/sa/reviews"
		clientID  = "spiffe://cluster.local/ns/default/sa/productpage"
	)
	cp := startControlPlane(t, "127.0.0.1:0")
	ca := tlstest.NewCA(t, "rotation root")
	newCA := tlstest.NewCA(t, "rotation root 2")
	issuer, trusted := ca, []*tlstest.CA{ca}

	// The app records the client identities the server sidecar forwards.
	app := startBackend(t, "reviews")
	var seenMu sync.Mutex
	seen := map[string]int{}
	app.serve = func(w http.ResponseWriter, r *http.Request) bool {
		seenMu.Lock()
		seen[r.Header.Get("X-Forwarded-Client-Cert")]++
		seenMu.Unlock()
		return false
	}

	const serverNode = "sidecar~127.0.0.2~reviews.default~default.svc.cluster.local"
	inPort, outPort := freePort(t), freePort(t)
	sdsRef := func(name string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}
	}
	// common requires a peer URI SAN matching m, with ROOTCA over SDS.
	common := func(m *matcherv3.StringMatcher) *tlsv3.CommonTlsContext {
		return &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsRef("default")},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m}}},
				ValidationContextSdsSecretConfig: sdsRef("ROOTCA"),
			}},
		}
	}

	// The server sidecar: inbound mTLS in front of the app, XFCC with the caller's URI;
	// it accepts any client certificate of the CA whose URI is below clientID.
	inbound := httpListener(t, "inbound", inPort, "inbound-routes")
	inHCM := new(hcmv3.HttpConnectionManager)
	if err := inbound.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(inHCM); err != nil {
		t.Fatal(err)
	}
	inHCM.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
	inHCM.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	inbound.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, inHCM)}
	inbound.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &tlsv3.DownstreamTlsContext{
		CommonTlsContext:         common(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: clientID + "/"}}),
		RequireClientCertificate: wrapBool(true),
	})}}
	if h2 {
		var d tlsv3.DownstreamTlsContext
		if err := inbound.FilterChains[0].TransportSocket.GetTypedConfig().UnmarshalTo(&d); err != nil {
			t.Fatal(err)
		}
		d.CommonTlsContext.AlpnProtocols = []string{"h2", "http/1.1"}
		inbound.FilterChains[0].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &d)}
	}
	server := rotationNode{
		listeners: []types.Resource{inbound},
		routes:    []types.Resource{routeConfig("inbound-routes", prefixRoute("/", "app"))},
		clusters:  []types.Resource{edsCluster("app")},
		endpoints: []types.Resource{endpoints("app", app.addr)},
	}

	// The client sidecar: outbound plaintext listener, cluster to the server sidecar with
	// mTLS expecting serverID, and a new upstream connection (HTTP/2: a GOAWAY) every 20
	// requests.
	up := edsCluster("reviews")
	up.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{
		CommonTlsContext: common(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: serverID}}),
		Sni:              "outbound_.9080_._.reviews.default.svc.cluster.local",
	})}}
	explicit := &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
	}
	if h2 {
		explicit.ProtocolConfig = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	}
	up.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(t, &upstreamhttpv3.HttpProtocolOptions{
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(20)},
			UpstreamProtocolOptions:   &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit},
		}),
	}
	client := rotationNode{
		listeners: []types.Resource{httpListener(t, "outbound", outPort, "outbound-routes")},
		routes:    []types.Resource{routeConfig("outbound-routes", prefixRoute("/", "reviews"))},
		clusters:  []types.Resource{up},
		endpoints: []types.Resource{endpoints("reviews", fmt.Sprintf("127.0.0.1:%d", inPort))},
	}

	// gen issues generation n of both leaves and pushes them (SDS only).
	var lastServer, lastClient *tlstest.Leaf
	var serverAdmin, clientAdmin string
	gen := func(n int) {
		if rollover {
			switch n {
			case 3:
				trusted = []*tlstest.CA{ca, newCA}
			case 5:
				issuer = newCA
			case 7:
				trusted = []*tlstest.CA{newCA}
			}
		}
		lastServer = issuer.Issue(t, tlstest.Opts{URIs: []string{serverID}})
		lastClient = issuer.Issue(t, tlstest.Opts{URIs: []string{fmt.Sprintf("%s/rotation/%d", clientID, n)}})
		server.push(t, cp, serverNode, n, lastServer, trusted...)
		client.push(t, cp, nodeID, n, lastClient, trusted...)
		if n == 0 {
			return
		}
		for _, admin := range []string{serverAdmin, clientAdmin} {
			eventually(t, 5*time.Second, func() error { return secretsVersion(admin, fmt.Sprintf("sds-%d", n)) })
		}
	}
	gen(0)
	serverAdmin = runRotationProxy(t, cp, serverNode, false)
	clientAdmin = runRotationProxy(t, cp, nodeID, true)

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true, Proxy: nil}}
	url := fmt.Sprintf("http://127.0.0.1:%d/reviews/0", outPort)
	eventually(t, 15*time.Second, func() error {
		code, from, body := get(t, c, url)
		if code != 200 || from != "reviews" {
			return fmt.Errorf("GET through two sidecars: %d from %q: %s", code, from, body)
		}
		return nil
	})

	ctx, stop := context.WithTimeout(context.Background(), loadFor)
	defer stop()
	var ok, failed atomic.Int64
	var errMu sync.Mutex
	var firstErrs []string
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(perWorker)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				code, from, body := get(t, c, url)
				if code == 200 && from == "reviews" && body == "reviews /reviews/0" {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				errMu.Lock()
				if len(firstErrs) < 5 {
					firstErrs = append(firstErrs, fmt.Sprintf("%s: %d from %q: %.200s", time.Now().Format("15:04:05.000"), code, from, body))
				}
				errMu.Unlock()
			}
		}()
	}
	pushes := 0
	rot := time.NewTicker(rotate)
rotation:
	for {
		select {
		case <-ctx.Done():
			break rotation
		case <-rot.C:
			pushes++
			gen(pushes)
		}
	}
	rot.Stop()
	wg.Wait()

	seenMu.Lock()
	generations := 0
	var unexpected []string
	for xfcc, n := range seen {
		if strings.HasPrefix(xfcc, "URI="+clientID+"/rotation/") {
			generations++
		} else {
			unexpected = append(unexpected, fmt.Sprintf("%q x%d", xfcc, n))
		}
	}
	seenMu.Unlock()
	t.Logf("h2=%v rollover=%v: %d requests in %v (%.0f/s), %d failed; %d rotations; the server saw %d client certificates", h2, rollover,
		ok.Load()+failed.Load(), loadFor, float64(ok.Load()+failed.Load())/loadFor.Seconds(), failed.Load(), pushes, generations)
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed across %d certificate rotations; first: %q", failed.Load(), ok.Load()+failed.Load(), pushes, firstErrs)
	}
	// The rate depends on the machine; what matters is that requests ran throughout
	// the rotations, which the certificate count below checks.
	if ok.Load() < 100 {
		t.Fatalf("only %d requests ran: the load did not happen", ok.Load())
	}
	if len(unexpected) > 0 {
		t.Fatalf("the app saw other x-forwarded-client-cert values: %v", unexpected)
	}
	if generations < 3 {
		t.Fatalf("the server saw %d client certificates over %d rotations: new certificates are not used by new connections", generations, pushes)
	}

	// Both proxies hold the last generation.
	for _, p := range []struct {
		name, admin string
		want        *big.Int
	}{{"server", serverAdmin, lastServer.Cert.SerialNumber}, {"client", clientAdmin, lastClient.Cert.SerialNumber}} {
		eventually(t, 10*time.Second, func() error {
			got, err := dumpedSerial(p.admin, "default")
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			if got.Cmp(p.want) != 0 {
				return fmt.Errorf("%s proxy serves serial %v, want the last pushed %v", p.name, got, p.want)
			}
			return nil
		})
	}
}

// rotationNode is one proxy's resources; only its secrets change between pushes.
type rotationNode struct {
	listeners, routes, clusters, endpoints []types.Resource
}

// push sets the node's snapshot with the config at version "1" and the secrets at
// version "sds-n", so the server sends only SDS when n changes (what a CA renewal
// changes).
func (r rotationNode) push(t *testing.T, cp *controlPlane, node string, n int, leaf *tlstest.Leaf, roots ...*tlstest.CA) {
	t.Helper()
	snap := &cachev3.Snapshot{}
	snap.Resources[types.Listener] = cachev3.NewResources("1", r.listeners)
	snap.Resources[types.Route] = cachev3.NewResources("1", r.routes)
	snap.Resources[types.Cluster] = cachev3.NewResources("1", r.clusters)
	snap.Resources[types.Endpoint] = cachev3.NewResources("1", r.endpoints)
	snap.Resources[types.Secret] = cachev3.NewResources(fmt.Sprintf("sds-%d", n), []types.Resource{
		tlstest.CertSecret("default", leaf), tlstest.CASecret("ROOTCA", roots...),
	})
	if err := cp.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatalf("set snapshot: %v", err)
	}
}

// runRotationProxy runs a proxy for node with its admin on a known loopback port and
// returns the admin base URL.
func runRotationProxy(t *testing.T, cp *controlPlane, node string, delta bool) string {
	t.Helper()
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	b := bootstrap.FromFlags(bootstrap.Flags{NodeID: node, Cluster: "test", XDSAddress: cp.addr, Delta: delta, AdminAddress: admin})
	level := slog.LevelWarn
	if os.Getenv("WEFT_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	p, err := proxy.New(proxy.Options{
		Bootstrap:         b,
		AdminAddress:      admin,
		HealthAddress:     "127.0.0.1:0",
		PrometheusAddress: "127.0.0.1:0",
		DrainTimeout:      time.Second,
		Log:               slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("proxy.Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("proxy did not stop within 10s")
		}
	})
	return "http://" + admin
}

// secretsVersion checks that the proxy's admin shows every dynamic secret at version.
func secretsVersion(admin, version string) error {
	d, err := dumpSecrets(admin)
	if err != nil {
		return err
	}
	if len(d) == 0 {
		return fmt.Errorf("no dynamic secrets")
	}
	for _, s := range d {
		if s.GetVersionInfo() != version {
			return fmt.Errorf("secret %q at version %q, want %q", s.GetName(), s.GetVersionInfo(), version)
		}
	}
	return nil
}

// dumpSecrets reads the proxy's admin /config_dump?resource=dynamic_active_secrets.
func dumpSecrets(admin string) ([]*adminv3.SecretsConfigDump_DynamicSecret, error) {
	resp, err := http.Get(admin + "/config_dump?resource=dynamic_active_secrets")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("config_dump: %d %s", resp.StatusCode, body)
	}
	var d adminv3.ConfigDump
	if err := protojson.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("config_dump: %w", err)
	}
	var out []*adminv3.SecretsConfigDump_DynamicSecret
	for _, a := range d.GetConfigs() {
		ds := new(adminv3.SecretsConfigDump_DynamicSecret)
		if err := a.UnmarshalTo(ds); err != nil {
			return nil, fmt.Errorf("config_dump: %w", err)
		}
		out = append(out, ds)
	}
	return out, nil
}

// dumpedSerial reads the serial of the leaf in secret name from the proxy's admin
// /config_dump?resource=dynamic_active_secrets.
func dumpedSerial(admin, name string) (*big.Int, error) {
	secrets, err := dumpSecrets(admin)
	if err != nil {
		return nil, err
	}
	for _, ds := range secrets {
		if ds.GetName() != name {
			continue
		}
		var s tlsv3.Secret
		if err := ds.GetSecret().UnmarshalTo(&s); err != nil {
			return nil, err
		}
		if s.GetTlsCertificate().GetPrivateKey() != nil {
			return nil, fmt.Errorf("config_dump shows secret %q's private key", name)
		}
		blk, _ := pem.Decode(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
		if blk == nil {
			return nil, fmt.Errorf("secret %q: no PEM certificate chain in the dump", name)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.SerialNumber, nil
	}
	return nil, fmt.Errorf("config_dump has no dynamic secret %q", name)
}

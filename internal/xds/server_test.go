package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

func TestSotWConnectGetsAllTypesAndACKIsRecorded(t *testing.T) {
	h := newHarness(t, newFakeMesh(), Options{})
	ctx := t.Context()
	a, b := sidecarNode("productpage"), sidecarNode("reviews")
	_, gotA := connectSotW(t, h, a, ctx)
	_, gotB := connectSotW(t, h, b, ctx)

	// Scoping: each proxy gets the resources generated for it.
	for _, tc := range []struct {
		got      map[string]*discovery.DiscoveryResponse
		workload string
	}{{gotA, "productpage"}, {gotB, "reviews"}} {
		if n := names(t, tc.got[resource.ClusterType].GetResources()); len(n) != 1 || n[0] != "c-"+tc.workload {
			t.Errorf("%s: CDS names = %v", tc.workload, n)
		}
		if n := names(t, tc.got[resource.ListenerType].GetResources()); len(n) != 1 || n[0] != "l-"+tc.workload {
			t.Errorf("%s: LDS names = %v", tc.workload, n)
		}
		if n := names(t, tc.got[resource.EndpointType].GetResources()); len(n) != 1 || n[0] != "c-"+tc.workload {
			t.Errorf("%s: EDS names = %v", tc.workload, n)
		}
		if n := len(tc.got[resource.SecretType].GetResources()); n != 0 {
			t.Errorf("%s: SDS has %d resources, want an empty answer", tc.workload, n)
		}
	}

	waitFor(t, "both proxies ACKed every type", func() bool {
		for _, id := range []string{a.Id, b.Id} {
			ps, ok := statusOf(h.s, id)
			if !ok || !ps.Connected || ps.Streams != 1 || len(ps.PerType) != 5 {
				return false
			}
			for _, ts := range ps.PerType {
				if !ts.Synced() {
					return false
				}
			}
		}
		return true
	})
	ps, _ := statusOf(h.s, a.Id)
	if ps.Type != "sidecar" {
		t.Errorf("type = %q", ps.Type)
	}
	if got, want := ps.PerType["CDS"].Sent, gotA[resource.ClusterType].GetVersionInfo(); got != want || ps.Versions["CDS"] != want {
		t.Errorf("CDS sent %q, snapshot %q, want %q", got, ps.Versions["CDS"], want)
	}
	if st := h.s.Status(); len(st) != 2 || st[0].ID > st[1].ID {
		t.Errorf("Status not two proxies sorted by id: %+v", st)
	}
	if v := metricValue(t, h.s, "pilot_xds", nil); v != 2 {
		t.Errorf("pilot_xds = %v, want 2", v)
	}
	if v := metricValue(t, h.s, "pilot_xds_pushes", map[string]string{"type": "cds"}); v != 2 {
		t.Errorf("pilot_xds_pushes{type=cds} = %v, want 2", v)
	}
}

func TestSotWEndpointChangeSendsOnlyEDS(t *testing.T) {
	mesh := newFakeMesh()
	h := newHarness(t, mesh, Options{Debounce: 20 * time.Millisecond})
	n := sidecarNode("productpage")
	c, first := connectSotW(t, h, n, t.Context())

	mesh.setEndpointPort(9001)
	h.s.Push("registry")
	r, err := c.Recv(waitLong)
	if err != nil {
		t.Fatalf("no response after the push: %v", err)
	}
	if r.GetTypeUrl() != resource.EndpointType {
		t.Fatalf("first response after an endpoint change is %s, want EDS", ShortName(r.GetTypeUrl()))
	}
	if got := portOf(t, r.GetResources()[0]); got != 9001 {
		t.Errorf("EDS port = %d, want 9001", got)
	}
	if r.GetVersionInfo() == first[resource.EndpointType].GetVersionInfo() {
		t.Errorf("EDS version unchanged: %q", r.GetVersionInfo())
	}
	c.ACK(r)
	if more := c.RecvAll(quiet, 10); len(more) != 0 {
		t.Errorf("got %d more responses, first %s; want only EDS", len(more), ShortName(more[0].GetTypeUrl()))
	}
	ps, _ := statusOf(h.s, n.Id)
	if ps.PerType["CDS"].Sent != first[resource.ClusterType].GetVersionInfo() {
		t.Errorf("CDS version moved: %+v", ps.PerType["CDS"])
	}
	// A push without any change sends nothing at all.
	h.s.Push("config")
	if more := c.RecvAll(quiet, 10); len(more) != 0 {
		t.Errorf("unchanged push sent %d responses", len(more))
	}
}

func TestDeltaConnectEndpointChangeAndNACK(t *testing.T) {
	mesh := newFakeMesh()
	h := newHarness(t, mesh, Options{Debounce: 20 * time.Millisecond})
	n := sidecarNode("ratings")
	c, first := connectDelta(t, h, n, t.Context())
	if got := first[resource.ClusterType].GetResources(); len(got) != 1 || got[0].GetName() != "c-ratings" {
		t.Fatalf("delta CDS = %v", got)
	}
	waitFor(t, "delta ACKs recorded", func() bool {
		ps, _ := statusOf(h.s, n.Id)
		for _, typ := range []string{"CDS", "EDS", "LDS"} {
			if !ps.PerType[typ].Synced() {
				return false
			}
		}
		return true
	})

	mesh.setEndpointPort(9002)
	h.s.Push("registry")
	r, err := c.Recv(waitLong)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetTypeUrl() != resource.EndpointType || len(r.GetResources()) != 1 {
		t.Fatalf("got %s with %d resources, want EDS with the one changed CLA", ShortName(r.GetTypeUrl()), len(r.GetResources()))
	}
	if got := portOf(t, r.GetResources()[0].GetResource()); got != 9002 {
		t.Errorf("port = %d", got)
	}
	if more := c.RecvAll(quiet, 10); len(more) != 0 {
		t.Errorf("%d more responses, want only EDS", len(more))
	}
	if err := c.NACK(r, "endpoint rejected: port 9002 not allowed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delta NACK recorded", func() bool {
		ps, _ := statusOf(h.s, n.Id)
		e := ps.PerType["EDS"]
		return e.Nacked == r.GetSystemVersionInfo() && e.Error == "endpoint rejected: port 9002 not allowed"
	})
	if v := metricValue(t, h.s, "pilot_total_xds_rejects", map[string]string{"type": "eds"}); v != 1 {
		t.Errorf("pilot_total_xds_rejects{eds} = %v", v)
	}
	if more := c.RecvAll(quiet, 10); len(more) != 0 {
		t.Errorf("after the NACK the server sent %d more responses", len(more))
	}
}

// boundedGen records the most Generate calls in flight at once.
type boundedGen struct {
	mesh          *fakeMesh
	mu            sync.Mutex
	inFlight, max int
}

func (g *boundedGen) Generate(p *node.Proxy) (Resources, error) {
	g.mu.Lock()
	g.inFlight++
	g.max = max(g.max, g.inFlight)
	g.mu.Unlock()
	time.Sleep(30 * time.Millisecond)
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	return g.mesh.Generate(p)
}

func TestPushGenerationIsBounded(t *testing.T) {
	mesh := newFakeMesh()
	gen := &boundedGen{mesh: mesh}
	h := newHarness(t, mesh, Options{Generator: gen, Workers: 2, Debounce: 20 * time.Millisecond})
	var ids []string
	for i := range 6 {
		n := sidecarNode(fmt.Sprintf("w%d", i))
		ids = append(ids, n.Id)
		connectSotW(t, h, n, t.Context())
	}
	mesh.reset()
	gen.mu.Lock()
	gen.max = 0
	gen.mu.Unlock()
	h.s.Push("config")
	waitFor(t, "every proxy regenerated", func() bool {
		for _, id := range ids {
			if mesh.count(id) != 1 {
				return false
			}
		}
		return true
	})
	gen.mu.Lock()
	defer gen.mu.Unlock()
	if gen.max > 2 || gen.max < 1 {
		t.Errorf("max concurrent generations = %d, want 1..2 (Workers)", gen.max)
	}
}

func TestSotWNACKIsRecorded(t *testing.T) {
	mesh := newFakeMesh()
	h := newHarness(t, mesh, Options{Debounce: 20 * time.Millisecond})
	n := sidecarNode("details")
	c, err := xdstest.NewSotW(t.Context(), h.cc, n)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Subscribe(resource.ClusterType)
	r, err := c.Recv(waitLong)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.NACK(r, `cluster "c-details": unsupported lb_policy`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "NACK in status", func() bool {
		ps, _ := statusOf(h.s, n.Id)
		cds := ps.PerType["CDS"]
		return cds.Nacked == r.GetVersionInfo() && cds.Error == `cluster "c-details": unsupported lb_policy` && cds.Acked == ""
	})
	if v := metricValue(t, h.s, "pilot_total_xds_rejects", map[string]string{"type": "cds"}); v != 1 {
		t.Errorf("pilot_total_xds_rejects{cds} = %v", v)
	}
	// The rejected version is not sent again (the proxy would NACK it again, in a
	// loop); the next different version is.
	if more := c.RecvAll(quiet, 10); len(more) != 0 {
		t.Fatalf("after the NACK the server sent %d more responses (version %q)", len(more), more[0].GetVersionInfo())
	}
	mesh.mu.Lock()
	mesh.timeout = 5
	mesh.mu.Unlock()
	h.s.Push("config")
	r2, err := c.Recv(waitLong)
	if err != nil || r2.GetTypeUrl() != resource.ClusterType || r2.GetVersionInfo() == r.GetVersionInfo() {
		t.Fatalf("after a config change: %v %v", r2, err)
	}
	c.ACK(r2)
	waitFor(t, "ACK clears the NACK", func() bool {
		ps, _ := statusOf(h.s, n.Id)
		cds := ps.PerType["CDS"]
		return cds.Acked == r2.GetVersionInfo() && cds.Nacked == "" && cds.Error == ""
	})
}

func TestDebounceCoalescesPushes(t *testing.T) {
	mesh := newFakeMesh()
	h := newHarness(t, mesh, Options{Debounce: 200 * time.Millisecond})
	a, b := sidecarNode("a"), sidecarNode("b")
	connectSotW(t, h, a, t.Context())
	connectSotW(t, h, b, t.Context())
	mesh.reset()

	start := time.Now()
	for range 20 {
		h.s.Push("config")
		time.Sleep(2500 * time.Microsecond)
	}
	if el := time.Since(start); el > 150*time.Millisecond {
		t.Logf("pushing took %v on this machine", el)
	}
	waitFor(t, "one generation per proxy", func() bool { return mesh.count(a.Id) >= 1 && mesh.count(b.Id) >= 1 })
	time.Sleep(3 * 200 * time.Millisecond)
	if ga, gb := mesh.count(a.Id), mesh.count(b.Id); ga != 1 || gb != 1 {
		t.Errorf("generations after 20 pushes: a=%d b=%d, want 1 each", ga, gb)
	}
	if v := metricValue(t, h.s, "pilot_push_triggers", map[string]string{"type": "config"}); v != 20 {
		t.Errorf("pilot_push_triggers = %v", v)
	}
	if v := metricValue(t, h.s, "pilot_xds_push_time", nil); v != 1 {
		t.Errorf("pilot_xds_push_time count = %v, want 1 push", v)
	}
}

func TestDebounceMaxDelay(t *testing.T) {
	mesh := newFakeMesh()
	h := newHarness(t, mesh, Options{Debounce: 300 * time.Millisecond, DebounceMax: 600 * time.Millisecond})
	n := sidecarNode("a")
	connectSotW(t, h, n, t.Context())
	mesh.reset()
	// Pushes every 50ms for 2s never leave a 300ms quiet gap: only DebounceMax lets a
	// push through while they go on.
	var lastPush time.Time
	for range 40 {
		h.s.Push("registry")
		lastPush = time.Now()
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "a generation", func() bool { return mesh.count(n.Id) >= 1 })
	mesh.mu.Lock()
	first := mesh.firstGen
	mesh.mu.Unlock()
	if !first.Before(lastPush) {
		t.Errorf("first generation at %v, after the last push at %v: DebounceMax did not bound the delay", first, lastPush)
	}
}

func TestGeneratorErrorKeepsPreviousConfig(t *testing.T) {
	mesh := newFakeMesh()
	h := newHarness(t, mesh, Options{Debounce: 20 * time.Millisecond})
	bad, good := sidecarNode("bad"), sidecarNode("good")
	cb, firstBad := connectSotW(t, h, bad, t.Context())
	cg, _ := connectSotW(t, h, good, t.Context())

	mesh.setFail(bad.Id, errBoom)
	mesh.setEndpointPort(9100)
	h.s.Push("registry")
	// The good proxy is updated...
	r, err := cg.Recv(waitLong)
	if err != nil || r.GetTypeUrl() != resource.EndpointType {
		t.Fatalf("good proxy: %v %v", r.GetTypeUrl(), err)
	}
	// ... the bad one keeps its config and is sent nothing.
	waitFor(t, "the error in status", func() bool {
		ps, _ := statusOf(h.s, bad.Id)
		return ps.GenErrors == 1 && strings.Contains(ps.LastGenError, "boom")
	})
	if more := cb.RecvAll(quiet, 10); len(more) != 0 {
		t.Errorf("failing proxy was sent %d responses", len(more))
	}
	ps, _ := statusOf(h.s, bad.Id)
	if ps.Versions["EDS"] != firstBad[resource.EndpointType].GetVersionInfo() {
		t.Errorf("failing proxy's snapshot changed: %v", ps.Versions)
	}
	if v := metricValue(t, h.s, "pilot_xds_push_errors", nil); v != 1 {
		t.Errorf("pilot_xds_push_errors = %v", v)
	}
	// config_dump still shows the old config.
	if dump := getDump(t, h.s, bad.Id); !strings.Contains(dump, `"portValue": 9000`) && !strings.Contains(dump, `"portValue":9000`) {
		t.Errorf("config_dump lost the previous config: %s", dump)
	}

	// Fixed: the next push gets through and clears the error.
	mesh.setFail(bad.Id, nil)
	h.s.Push("registry")
	r, err = cb.Recv(waitLong)
	if err != nil || r.GetTypeUrl() != resource.EndpointType || portOf(t, r.GetResources()[0]) != 9100 {
		t.Fatalf("after the fix: %v %v", r, err)
	}
	ps, _ = statusOf(h.s, bad.Id)
	if ps.LastGenError != "" || ps.GenErrors != 1 {
		t.Errorf("after the fix: %+v", ps)
	}
}

func TestGeneratorPanicIsAnError(t *testing.T) {
	h := newHarness(t, nil, Options{Generator: GeneratorFunc(func(p *node.Proxy) (Resources, error) {
		panic("nil map")
	})})
	c, err := xdstest.NewSotW(t.Context(), h.cc, sidecarNode("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Subscribe(resource.ClusterType)
	_, err = c.Recv(waitLong)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "panic: nil map") {
		t.Fatalf("stream error = %v, want Unavailable with the panic", err)
	}
	if v := metricValue(t, h.s, "pilot_xds_push_errors", nil); v != 1 {
		t.Errorf("pilot_xds_push_errors = %v", v)
	}
}

func TestBadNodeRejectsStream(t *testing.T) {
	h := newHarness(t, newFakeMesh(), Options{})
	for _, tc := range []struct {
		name string
		node *core.Node
		want string
	}{
		{"no node", nil, "id is required"},
		{"bad type", &core.Node{Id: "mystery~127.0.0.1~a.default~default.svc.cluster.local"}, "must be sidecar or router"},
		{"bad ip", &core.Node{Id: "sidecar~not-an-ip~a.default~default.svc.cluster.local"}, "ip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, delta := range []bool{false, true} {
				var err error
				if delta {
					c, cerr := xdstest.NewDelta(t.Context(), h.cc, tc.node)
					if cerr != nil {
						t.Fatal(cerr)
					}
					c.Subscribe(resource.ClusterType)
					_, err = c.Recv(waitLong)
					c.Close()
				} else {
					c, cerr := xdstest.NewSotW(t.Context(), h.cc, tc.node)
					if cerr != nil {
						t.Fatal(cerr)
					}
					c.Subscribe(resource.ClusterType)
					_, err = c.Recv(waitLong)
					c.Close()
				}
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("delta=%v: err = %v, want InvalidArgument mentioning %q", delta, err, tc.want)
				}
			}
		})
	}
	if st := h.s.Status(); len(st) != 0 {
		t.Errorf("rejected streams left proxies: %+v", st)
	}
	waitFor(t, "streams closed", func() bool { return len(h.s.Connections()) == 0 })
}

func TestPerTypeServiceForNonADSEnvoy(t *testing.T) {
	h := newHarness(t, newFakeMesh(), Options{})
	n := sidecarNode("legacy")
	st, err := clusterservice.NewClusterDiscoveryServiceClient(h.cc).StreamClusters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Per-type streams may omit the type URL: the service implies it.
	if err := st.Send(&discovery.DiscoveryRequest{Node: n}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r.GetTypeUrl() != resource.ClusterType || len(r.GetResources()) != 1 {
		t.Fatalf("CDS stream answered %s with %d resources", r.GetTypeUrl(), len(r.GetResources()))
	}
	st.Send(&discovery.DiscoveryRequest{VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	waitFor(t, "CDS ACK", func() bool {
		ps, _ := statusOf(h.s, n.Id)
		return ps.PerType["CDS"].Synced()
	})
	conns := h.s.Connections()
	if len(conns) != 1 || conns[0].TypeURL != resource.ClusterType || conns[0].ProxyID != n.Id {
		t.Errorf("connections = %+v", conns)
	}
}

func getDump(t *testing.T, s *Server, id string) string {
	t.Helper()
	srv := httptest.NewServer(s.DebugHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/config_dump?proxyID=" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("config_dump: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

func TestDebugHandlers(t *testing.T) {
	h := newHarness(t, newFakeMesh(), Options{})
	a, b := sidecarNode("productpage"), sidecarNode("reviews")
	connectSotW(t, h, a, t.Context())
	connectDelta(t, h, b, t.Context())
	srv := httptest.NewServer(h.s.DebugHandler())
	defer srv.Close()
	get := func(path string) (int, []byte) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}

	code, body := get("/debug/syncz")
	var sync []ProxyStatus
	if err := json.Unmarshal(body, &sync); code != 200 || err != nil {
		t.Fatalf("syncz: %d %v %s", code, err, body)
	}
	if len(sync) != 2 || sync[0].ID != a.Id || sync[1].ID != b.Id || !sync[0].Connected || sync[0].PerType["CDS"].Sent == "" {
		t.Errorf("syncz = %s", body)
	}

	code, body = get("/debug/config_dump?proxyID=" + b.Id)
	var dump struct {
		ProxyID   string                       `json:"proxyID"`
		Versions  map[string]string            `json:"versions"`
		Resources map[string][]json.RawMessage `json:"resources"`
	}
	if err := json.Unmarshal(body, &dump); code != 200 || err != nil {
		t.Fatalf("config_dump: %d %v %s", code, err, body)
	}
	if dump.ProxyID != b.Id || len(dump.Resources[resource.ClusterType]) != 1 {
		t.Fatalf("config_dump = %s", body)
	}
	var c0 map[string]any
	if err := json.Unmarshal(dump.Resources[resource.ClusterType][0], &c0); err != nil {
		t.Fatal(err)
	}
	if c0["@type"] != resource.ClusterType || c0["name"] != "c-reviews" || c0["type"] != "EDS" {
		t.Errorf("config_dump cluster = %v", c0)
	}
	if dump.Versions[resource.EndpointType] == "" {
		t.Errorf("config_dump versions = %v", dump.Versions)
	}

	if code, _ := get("/debug/config_dump?proxyID=nobody"); code != 404 {
		t.Errorf("unknown proxy: %d", code)
	}
	if code, _ := get("/debug/config_dump"); code != 400 {
		t.Errorf("no proxyID: %d", code)
	}

	code, body = get("/debug/connections")
	var conns []Connection
	if err := json.Unmarshal(body, &conns); code != 200 || err != nil || len(conns) != 2 {
		t.Fatalf("connections: %d %v %s", code, err, body)
	}
	if conns[0].ProxyID != a.Id || conns[0].Delta || conns[1].ProxyID != b.Id || !conns[1].Delta {
		t.Errorf("connections = %s", body)
	}
}

func TestSameStateSameVersionsAcrossServers(t *testing.T) {
	n := sidecarNode("productpage")
	var versions [2]map[string]string
	for i := range versions {
		h := newHarness(t, newFakeMesh(), Options{})
		_, got := connectSotW(t, h, n, t.Context())
		versions[i] = map[string]string{}
		for typ, r := range got {
			versions[i][typ] = r.GetVersionInfo()
		}
	}
	for _, typ := range allTypes {
		if versions[0][typ] == "" || versions[0][typ] != versions[1][typ] {
			t.Errorf("%s: versions %q and %q", ShortName(typ), versions[0][typ], versions[1][typ])
		}
	}
	if versions[0][resource.ClusterType] == versions[0][resource.ListenerType] {
		t.Errorf("different types share a version")
	}
}

func TestDisconnectGraceThenClear(t *testing.T) {
	mesh := newFakeMesh()
	h := newHarness(t, mesh, Options{DisconnectGrace: 300 * time.Millisecond})
	n := sidecarNode("a")
	ctx, cancel := context.WithCancel(t.Context())
	c, _ := connectSotW(t, h, n, ctx)
	c.Close()
	cancel()
	waitFor(t, "disconnected status", func() bool {
		ps, ok := statusOf(h.s, n.Id)
		return ok && !ps.Connected && ps.Streams == 0
	})
	if _, err := h.s.cache.GetSnapshot(n.Id); err != nil {
		t.Errorf("snapshot dropped during the grace period: %v", err)
	}
	waitFor(t, "proxy forgotten", func() bool { _, ok := statusOf(h.s, n.Id); return !ok })
	if _, err := h.s.cache.GetSnapshot(n.Id); err == nil {
		t.Errorf("snapshot kept after the grace period")
	}
	if v := metricValue(t, h.s, "pilot_xds", nil); v != 0 {
		t.Errorf("pilot_xds = %v after disconnect", v)
	}
	// Reconnecting afterwards works from scratch.
	connectSotW(t, h, n, t.Context())
}

package admin

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/testnet"
)

type fakeSource struct {
	ready   atomic.Bool
	drained chan bool
	quit    chan struct{}
}

func newFake() *fakeSource {
	return &fakeSource{drained: make(chan bool, 4), quit: make(chan struct{}, 4)}
}

func (f *fakeSource) Ready() bool { return f.ready.Load() }
func (f *fakeSource) Quit()       { f.quit <- struct{}{} }
func (f *fakeSource) DrainListeners(ctx context.Context, inboundOnly bool) error {
	f.drained <- inboundOnly
	return nil
}

// ConfigDump filters by the glue's kinds ("listeners", "clusters"), as the proxy's does.
func (f *fakeSource) ConfigDump(resource string) (*ConfigDump, error) {
	var d ConfigDump
	if resource == "" || resource == "listeners" {
		l, _ := anypb.New(&listenerv3.Listener{Name: "virtualInbound"})
		d.Configs = append(d.Configs, &Message{Type: "envoy.admin.v3.ListenersConfigDump", Fields: []Field{
			{"version_info", "v1"},
			{"static_listeners", []*Message(nil)},
			{"dynamic_listeners", []*Message{{Type: "envoy.admin.v3.ListenersConfigDump.DynamicListener", Fields: []Field{
				{"name", "virtualInbound"},
				{"active_state", &Message{Type: "envoy.admin.v3.ListenersConfigDump.DynamicListenerState", Fields: []Field{
					{"version_info", "v1"}, {"listener", l},
				}}},
			}}}},
		}})
	}
	if resource == "" || resource == "clusters" {
		c, _ := anypb.New(&clusterv3.Cluster{Name: "outbound|9080||reviews.default.svc.cluster.local"})
		d.Configs = append(d.Configs, &Message{Type: "envoy.admin.v3.ClustersConfigDump", Fields: []Field{
			{"dynamic_active_clusters", []*Message{{Type: "envoy.admin.v3.ClustersConfigDump.DynamicCluster", Fields: []Field{
				{"version_info", "v1"}, {"cluster", c},
			}}}},
		}})
	}
	return &d, nil
}

func (f *fakeSource) Clusters() []ClusterStatus {
	return []ClusterStatus{{
		Name: "outbound|9080||reviews.default.svc.cluster.local", AddedViaAPI: true,
		EDSServiceName: "outbound|9080||reviews.default.svc.cluster.local",
		Hosts: []HostStatus{
			{Address: "10.0.0.1:9080", Weight: 1, Region: "r1", Zone: "z1",
				Stats: []HostStat{{Name: "cx_active", Value: 2, Gauge: true}, {Name: "rq_total", Value: 7}}},
			{Address: "10.0.0.2:9080", Weight: 1, Health: HostHealth{FailedOutlierCheck: true}},
		},
	}}
}

func start(t *testing.T, src Source, st *stats.Store) *Server {
	t.Helper()
	lv := new(slog.LevelVar)
	s, err := Start(Options{
		Address: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", PrometheusAddress: "127.0.0.1:0",
		Stats: st, Source: src, LogLevel: lv,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var client = &http.Client{Timeout: 10 * time.Second}

func do(t *testing.T, method, url string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestReadyAndHealth(t *testing.T) {
	src := newFake()
	s := start(t, src, nil)
	a, h := "http://"+s.Addrs().Admin, "http://"+s.Addrs().Health
	if code, body, _ := do(t, "GET", a+"/ready"); code != 503 || body != "INITIALIZING\n" {
		t.Errorf("/ready before ready: %d %q", code, body)
	}
	if code, _, _ := do(t, "GET", h+"/healthz/ready"); code != 503 {
		t.Errorf("/healthz/ready before ready: %d", code)
	}
	src.ready.Store(true)
	if code, body, _ := do(t, "GET", a+"/ready"); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready: %d %q", code, body)
	}
	if code, _, _ := do(t, "GET", h+"/healthz/ready"); code != 200 {
		t.Errorf("/healthz/ready: %d", code)
	}
	// The health listener serves only health.
	if code, _, _ := do(t, "GET", h+"/config_dump"); code != 404 {
		t.Errorf("config_dump on the health port: %d", code)
	}
}

func filledStore() *stats.Store {
	st := stats.New()
	tag := stats.Tag{Key: "envoy_cluster_name", Value: "outbound|9080||reviews.default.svc.cluster.local"}
	st.Counter("cluster.upstream_rq_total", tag).Add(42)
	st.Counter("cluster.upstream_rq_total", stats.Tag{Key: "envoy_cluster_name", Value: `odd"name`}).Add(1)
	st.Gauge("cluster.upstream_cx_active", tag).Set(3)
	h := st.Histogram("cluster.upstream_rq_time", tag)
	for _, v := range []float64{1, 3, 7, 120} {
		h.Record(v)
	}
	st.Counter("http.no_route", stats.Tag{Key: "envoy_http_conn_manager_prefix", Value: "inbound_0.0.0.0_9080"})
	return st
}

func TestPrometheusParses(t *testing.T) {
	src := newFake()
	src.ready.Store(true)
	s := start(t, src, filledStore())
	for _, url := range []string{
		"http://" + s.Addrs().Prometheus + "/stats/prometheus",
		"http://" + s.Addrs().Admin + "/stats/prometheus",
		"http://" + s.Addrs().Admin + "/stats?format=prometheus",
	} {
		code, body, hdr := do(t, "GET", url)
		if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain; version=0.0.4") {
			t.Fatalf("%s: %d %s", url, code, hdr.Get("Content-Type"))
		}
		p := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: prometheus output does not parse: %v\n%s", url, err, body)
		}
		rq := fams["envoy_cluster_upstream_rq_total"]
		if rq == nil || len(rq.GetMetric()) != 2 {
			t.Fatalf("envoy_cluster_upstream_rq_total: %v", rq)
		}
		found := false
		for _, m := range rq.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "envoy_cluster_name" && l.GetValue() == "outbound|9080||reviews.default.svc.cluster.local" && m.GetCounter().GetValue() == 42 {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("reviews counter missing: %v", rq)
		}
		if hist := fams["envoy_cluster_upstream_rq_time"]; hist.GetMetric()[0].GetHistogram().GetSampleCount() != 4 {
			t.Errorf("histogram: %v", hist)
		}
		if live := fams["envoy_server_live"]; live == nil || live.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Errorf("envoy_server_live: %v", live)
		}
		if mem := fams["envoy_server_memory_allocated"]; mem == nil || mem.GetMetric()[0].GetGauge().GetValue() <= 0 {
			t.Errorf("envoy_server_memory_allocated: %v", mem)
		}
	}
}

func TestStatsText(t *testing.T) {
	src := newFake()
	s := start(t, src, filledStore())
	a := "http://" + s.Addrs().Admin
	_, body, _ := do(t, "GET", a+"/stats")
	for _, want := range []string{
		"cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_total: 42\n",
		"cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_cx_active: 3\n",
		"server.state: 3\n", // INITIALIZING
		"listener_manager.workers_started: 0\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/stats lacks %q", want)
		}
	}
	_, body, _ = do(t, "GET", a+`/stats?filter=^cluster\..*\.upstream_rq_total$`)
	if got := strings.Count(body, "\n"); got != 2 || !strings.Contains(body, ": 42\n") {
		t.Errorf("filtered /stats:\n%s", body)
	}
	_, body, _ = do(t, "GET", a+"/stats?usedonly&filter=http")
	if strings.Contains(body, "http.inbound_0.0.0.0_9080.no_route") {
		t.Errorf("usedonly kept a zero counter:\n%s", body)
	}
	if code, _, _ := do(t, "GET", a+"/stats?filter=("); code != 400 {
		t.Errorf("bad regex: %d", code)
	}
	_, body, _ = do(t, "GET", a+"/stats?format=json&filter=upstream_rq")
	var js struct {
		Stats []struct {
			Name      string `json:"name"`
			Value     *int64 `json:"value"`
			Histogram string `json:"histogram"`
		} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(body), &js); err != nil {
		t.Fatalf("stats json: %v\n%s", err, body)
	}
	if len(js.Stats) != 3 {
		t.Errorf("json stats: %+v", js.Stats)
	}
	for _, st := range js.Stats {
		if strings.HasSuffix(st.Name, "upstream_rq_time") && !strings.Contains(st.Histogram, "count(4)") {
			t.Errorf("histogram entry %+v", st)
		}
	}
}

func TestConfigDump(t *testing.T) {
	s := start(t, newFake(), nil)
	a := "http://" + s.Addrs().Admin
	code, body, _ := do(t, "GET", a+"/config_dump")
	if code != 200 {
		t.Fatalf("config_dump: %d %s", code, body)
	}
	var generic map[string]any
	if err := json.Unmarshal([]byte(body), &generic); err != nil {
		t.Fatalf("config_dump is not JSON: %v", err)
	}
	var d adminv3.ConfigDump
	if err := protojson.Unmarshal([]byte(body), &d); err != nil || len(d.GetConfigs()) != 2 {
		t.Fatalf("config_dump: %v, %d configs", err, len(d.GetConfigs()))
	}
	// protojson varies its whitespace on purpose, so match the key and value, not the spacing.
	if !regexp.MustCompile(`"@type":\s*"type.googleapis.com/envoy.config.listener.v3.Listener"`).MatchString(body) {
		t.Error("nested Any not resolved")
	}

	// The glue's own kind filter.
	_, body, _ = do(t, "GET", a+"/config_dump?resource=clusters")
	if strings.Contains(body, "ListenersConfigDump") || !strings.Contains(body, "ClustersConfigDump") {
		t.Errorf("resource=clusters:\n%s", body)
	}
	// Envoy's field names.
	_, body, _ = do(t, "GET", a+"/config_dump?resource=dynamic_active_clusters")
	var picked adminv3.ConfigDump
	if err := protojson.Unmarshal([]byte(body), &picked); err != nil || len(picked.GetConfigs()) != 1 ||
		picked.GetConfigs()[0].MessageName() != "envoy.admin.v3.ClustersConfigDump.DynamicCluster" {
		t.Errorf("resource=dynamic_active_clusters: %v\n%s", err, body)
	}
	if code, _, _ := do(t, "GET", a+"/config_dump?resource=nonsense"); code != 404 {
		t.Errorf("unknown resource: %d", code)
	}
}

func TestClusters(t *testing.T) {
	s := start(t, newFake(), nil)
	a := "http://" + s.Addrs().Admin
	_, body, _ := do(t, "GET", a+"/clusters")
	c := "outbound|9080||reviews.default.svc.cluster.local"
	for _, want := range []string{
		c + "::observability_name::" + c,
		c + "::added_via_api::true",
		c + "::10.0.0.1:9080::cx_active::2",
		c + "::10.0.0.1:9080::rq_total::7",
		c + "::10.0.0.1:9080::health_flags::healthy",
		c + "::10.0.0.1:9080::region::r1",
		c + "::10.0.0.2:9080::health_flags::/failed_outlier_check",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/clusters lacks %q:\n%s", want, body)
		}
	}
	_, body, _ = do(t, "GET", a+"/clusters?format=json")
	var cl adminv3.Clusters
	if err := protojson.Unmarshal([]byte(body), &cl); err != nil {
		t.Fatalf("clusters json: %v\n%s", err, body)
	}
	hs := cl.GetClusterStatuses()[0].GetHostStatuses()
	if len(hs) != 2 || hs[0].GetAddress().GetSocketAddress().GetPortValue() != 9080 || !hs[1].GetHealthStatus().GetFailedOutlierCheck() {
		t.Errorf("clusters json: %v", hs)
	}
}

func TestDrainAndQuit(t *testing.T) {
	src := newFake()
	s := start(t, src, nil)
	a := "http://" + s.Addrs().Admin
	for _, p := range []string{"/drain_listeners", "/quitquitquit", "/logging"} {
		if code, _, hdr := do(t, "GET", a+p); code != 405 || hdr.Get("Allow") != "POST" {
			t.Errorf("GET %s: %d, want 405", p, code)
		}
	}
	if code, body, _ := do(t, "POST", a+"/drain_listeners?inboundonly"); code != 200 || body != "OK\n" {
		t.Errorf("drain: %d %q", code, body)
	}
	select {
	case in := <-src.drained:
		if !in {
			t.Error("inboundonly not passed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain never reached the source")
	}
	do(t, "POST", a+"/drain_listeners")
	if in := <-src.drained; in {
		t.Error("plain drain passed inboundonly")
	}
	if code, _, _ := do(t, "POST", a+"/quitquitquit"); code != 200 {
		t.Errorf("quit: %d", code)
	}
	select {
	case <-src.quit:
	case <-time.After(10 * time.Second):
		t.Fatal("quit never reached the source")
	}
}

func TestMemoryAndLogging(t *testing.T) {
	s := start(t, newFake(), nil)
	a := "http://" + s.Addrs().Admin
	_, body, _ := do(t, "GET", a+"/memory")
	var m struct {
		Allocated string `json:"allocated"`
		HeapSize  string `json:"heap_size"`
		RSS       string `json:"rss"`
		RSSPeak   string `json:"rss_peak"`
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil || m.Allocated == "0" || m.HeapSize == "" {
		t.Fatalf("memory: %v %s", err, body)
	}
	if runtime.GOOS == "linux" && (m.RSS == "0" || m.RSSPeak == "0") {
		t.Errorf("no RSS on linux: %s", body)
	}
	// The heap profile is gzipped pprof protobuf: its string table names the sample types.
	code, body, _ := do(t, "GET", a+"/heap_dump?gc=1")
	zr, err := gzip.NewReader(strings.NewReader(body))
	if code != 200 || err != nil {
		t.Fatalf("heap_dump: %d %v", code, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil || !bytes.Contains(raw, []byte("inuse_space")) || !bytes.Contains(raw, []byte("alloc_space")) {
		t.Errorf("heap_dump is not a heap profile: %v, %d bytes", err, len(raw))
	}
	if code, _, _ := do(t, "POST", a+"/heap_dump"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /heap_dump: %d", code)
	}
	if code, body, _ := do(t, "POST", a+"/logging?level=debug"); code != 200 || !strings.Contains(body, "weft: debug") {
		t.Errorf("logging: %d %q", code, body)
	}
	if code, _, _ := do(t, "POST", a+"/logging?level=loud"); code != 400 {
		t.Errorf("bad level: %d", code)
	}
	_, body, _ = do(t, "GET", a+"/server_info")
	var si adminv3.ServerInfo
	if err := protojson.Unmarshal([]byte(body), &si); err != nil || si.GetState() != adminv3.ServerInfo_INITIALIZING {
		t.Errorf("server_info: %v %s", err, body)
	}
	code, body, _ = do(t, "GET", a+"/nope")
	if code != 404 || !strings.Contains(body, "/config_dump") {
		t.Errorf("unknown path: %d %s", code, body)
	}
}

func TestParseStatus(t *testing.T) {
	rss, peak := parseStatus([]byte("Name:\tweft\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\nThreads: 4\n"))
	if rss != 1024*1024 || peak != 2048*1024 {
		t.Errorf("rss %d peak %d", rss, peak)
	}
}

func TestStartErrorsAndDisabled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The admin address binds, the health one is taken: Start fails and frees the admin one.
	freeAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testnet.FreePort(t)))
	_, err = Start(Options{Address: freeAddr, HealthAddress: ln.Addr().String(), PrometheusAddress: Disabled, Source: newFake()})
	if err == nil {
		t.Fatal("Start succeeded on a taken port")
	}
	s, err := Start(Options{Address: freeAddr, HealthAddress: Disabled, PrometheusAddress: Disabled, Source: newFake(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("admin port not released after a failed Start: %v", err)
	}
	defer s.Close()
	if ad := s.Addrs(); ad.Admin != freeAddr || ad.Health != "" || ad.Prometheus != "" {
		t.Errorf("addrs %+v", ad)
	}
	if _, err := Start(Options{Address: "127.0.0.1:0"}); err == nil {
		t.Error("Start without a Source succeeded")
	}
}

package stats

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const istioCluster = "outbound|9080||reviews.default.svc.cluster.local"

var (
	clusterTag = Tag{Key: "envoy_cluster_name", Value: istioCluster}
	code200    = Tag{Key: "envoy_response_code", Value: "200"}
	class2     = Tag{Key: "envoy_response_code_class", Value: "2"}
	hcmTag     = Tag{Key: "envoy_http_conn_manager_prefix", Value: "outbound_0.0.0.0_9080"}
)

func TestFlat(t *testing.T) {
	for _, tc := range []struct {
		name string
		tags []Tag
		want string
	}{
		{"server.live", nil, "server.live"},
		{"cluster.upstream_rq_total", []Tag{clusterTag}, "cluster." + istioCluster + ".upstream_rq_total"},
		{"cluster.outlier_detection.ejections_active", []Tag{{"envoy_cluster_name", "a"}}, "cluster.a.outlier_detection.ejections_active"},
		{"listener", []Tag{{"envoy_listener_address", "0.0.0.0_80"}}, "listener.0.0.0.0_80"},
		// Templates: the named tag goes where the template says, the others after the
		// first segment (whatever dots their values hold).
		{"cluster.upstream_rq_{envoy_response_code}", []Tag{clusterTag, code200}, "cluster." + istioCluster + ".upstream_rq_200"},
		{"cluster.upstream_rq_{envoy_response_code}", []Tag{code200, clusterTag}, "cluster." + istioCluster + ".upstream_rq_200"},
		{"cluster.{envoy_cluster_name}.upstream_rq_{envoy_response_code}", []Tag{clusterTag, code200}, "cluster." + istioCluster + ".upstream_rq_200"},
		{"cluster.upstream_rq_{envoy_response_code_class}xx", []Tag{clusterTag, class2}, "cluster." + istioCluster + ".upstream_rq_2xx"},
		{"http.downstream_rq_{envoy_response_code_class}xx", []Tag{hcmTag, class2}, "http.outbound_0.0.0.0_9080.downstream_rq_2xx"},
		{"{a}.x", []Tag{{"a", "v"}}, "v.x"},
		// A placeholder without its tag stays as written; an unterminated one too.
		{"cluster.upstream_rq_{missing}", []Tag{clusterTag}, "cluster." + istioCluster + ".upstream_rq_{missing}"},
		{"x.y_{open", []Tag{{"k", "v"}}, "x.v.y_{open"},
	} {
		if got := Flat(tc.name, tc.tags...); got != tc.want {
			t.Errorf("Flat(%q, %v) = %q, want %q", tc.name, tc.tags, got, tc.want)
		}
	}
}

func TestExtractedAndPromName(t *testing.T) {
	for _, tc := range []struct{ name, extracted, prom string }{
		{"cluster.upstream_rq_total", "cluster.upstream_rq_total", "envoy_cluster_upstream_rq_total"},
		{"cluster.upstream_rq_{envoy_response_code}", "cluster.upstream_rq", "envoy_cluster_upstream_rq"},
		{"cluster.{envoy_cluster_name}.upstream_rq_{envoy_response_code}", "cluster.upstream_rq", "envoy_cluster_upstream_rq"},
		{"cluster.upstream_rq_{envoy_response_code_class}xx", "cluster.upstream_rq_xx", "envoy_cluster_upstream_rq_xx"},
		{"http.downstream_rq_{envoy_response_code_class}xx", "http.downstream_rq_xx", "envoy_http_downstream_rq_xx"},
		{"{a}.x", "x", "envoy_x"},
		{"tcp.on-data:x", "tcp.on-data:x", "envoy_tcp_on_data_x"},
		{"odd.{k", "odd.{k", "envoy_odd__k"},
	} {
		if got := ExtractedName(tc.name); got != tc.extracted {
			t.Errorf("ExtractedName(%q) = %q, want %q", tc.name, got, tc.extracted)
		}
		if got := PromName(ExtractedName(tc.name)); got != tc.prom {
			t.Errorf("PromName(%q) = %q, want %q", tc.name, got, tc.prom)
		}
	}
}

// parseProm parses WritePrometheus output with the Prometheus text parser.
func parseProm(t *testing.T, s *Store) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("prometheus output does not parse: %v\n%s", err, buf.String())
	}
	return fams, buf.String()
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestPrometheusResponseCodeTags: per-status counters come out as Envoy's families with
// envoy_response_code / envoy_response_code_class labels, /stats keeps Envoy's flat
// names, and the output parses.
func TestPrometheusResponseCodeTags(t *testing.T) {
	s := New()
	a := Tag{Key: "envoy_cluster_name", Value: "a"}
	s.Counter("cluster.upstream_rq_{envoy_response_code}", clusterTag, code200).Add(7)
	s.Counter("cluster.upstream_rq_{envoy_response_code}", clusterTag, Tag{"envoy_response_code", "503"}).Add(2)
	s.Counter("cluster.upstream_rq_{envoy_response_code}", a, code200).Add(1)
	s.Counter("cluster.upstream_rq_{envoy_response_code_class}xx", clusterTag, class2).Add(7)
	s.Counter("cluster.upstream_rq_{envoy_response_code_class}xx", clusterTag, Tag{"envoy_response_code_class", "5"}).Add(2)
	s.Counter("http.downstream_rq_{envoy_response_code_class}xx", hcmTag, class2).Add(9)
	s.Counter("cluster.upstream_rq_total", clusterTag).Add(9)
	s.Gauge("server.live").Set(1)
	s.Histogram("cluster.upstream_rq_time", clusterTag).Record(3)

	// The same metric through its flat name and again through the template is one.
	if c := s.Counter("cluster.upstream_rq_{envoy_response_code}", code200, clusterTag); c.Value() != 7 {
		t.Fatalf("re-lookup with tags in another order: %d, want the same counter (7)", c.Value())
	}
	for flat, want := range map[string]int64{
		"cluster." + istioCluster + ".upstream_rq_200":   7,
		"cluster." + istioCluster + ".upstream_rq_503":   2,
		"cluster.a.upstream_rq_200":                      1,
		"cluster." + istioCluster + ".upstream_rq_2xx":   7,
		"http.outbound_0.0.0.0_9080.downstream_rq_2xx":   9,
		"cluster." + istioCluster + ".upstream_rq_total": 9,
		"server.live": 1,
		"cluster." + istioCluster + ".upstream_rq_5xx":     2,
		"cluster." + istioCluster + ".upstream_rq_per_try": -1,
	} {
		v, ok := s.Value(flat)
		if want < 0 {
			if ok {
				t.Errorf("Value(%q) exists", flat)
			}
			continue
		}
		if !ok || v != want {
			t.Errorf("Value(%q) = %d, %v; want %d", flat, v, ok, want)
		}
	}

	fams, text := parseProm(t, s)
	var names []string
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	wantNames := []string{
		"envoy_cluster_upstream_rq", "envoy_cluster_upstream_rq_time", "envoy_cluster_upstream_rq_total",
		"envoy_cluster_upstream_rq_xx", "envoy_http_downstream_rq_xx", "envoy_server_live",
	}
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Fatalf("families %v, want %v\n%s", names, wantNames, text)
	}

	rq := fams["envoy_cluster_upstream_rq"]
	if rq.GetType() != dto.MetricType_COUNTER || len(rq.GetMetric()) != 3 {
		t.Fatalf("envoy_cluster_upstream_rq: %v with %d series, want 3 counters\n%s", rq.GetType(), len(rq.GetMetric()), text)
	}
	got := map[string]float64{}
	for _, m := range rq.GetMetric() {
		l := labels(m)
		if len(l) != 2 {
			t.Fatalf("labels %v, want envoy_cluster_name and envoy_response_code only", l)
		}
		got[l["envoy_cluster_name"]+" "+l["envoy_response_code"]] = m.GetCounter().GetValue()
	}
	want := map[string]float64{istioCluster + " 200": 7, istioCluster + " 503": 2, "a 200": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("envoy_cluster_upstream_rq{%s} = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	xx := fams["envoy_cluster_upstream_rq_xx"]
	for _, m := range xx.GetMetric() {
		l := labels(m)
		if l["envoy_cluster_name"] != istioCluster || (l["envoy_response_code_class"] != "2" && l["envoy_response_code_class"] != "5") {
			t.Errorf("envoy_cluster_upstream_rq_xx labels %v", l)
		}
	}
	d := fams["envoy_http_downstream_rq_xx"].GetMetric()
	if len(d) != 1 || labels(d[0])["envoy_response_code_class"] != "2" || labels(d[0])["envoy_http_conn_manager_prefix"] != "outbound_0.0.0.0_9080" || d[0].GetCounter().GetValue() != 9 {
		t.Errorf("envoy_http_downstream_rq_xx = %v", d)
	}
	h := fams["envoy_cluster_upstream_rq_time"].GetMetric()
	if len(h) != 1 || h[0].GetHistogram().GetSampleCount() != 1 || math.Abs(h[0].GetHistogram().GetSampleSum()-3) > 1e-9 {
		t.Errorf("histogram = %v", h)
	}

	// /stats keeps Envoy's flat names.
	tb := statsText(s.Metrics(func(flat []byte) bool { return bytes.Contains(flat, []byte("upstream_rq_2")) }))
	wantText := "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200: 7\n" +
		"cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_2xx: 7\n" +
		"cluster.a.upstream_rq_200: 1\n"
	if lines := sortedLines(tb); lines != sortedLines(wantText) {
		t.Errorf("/stats:\n%s\nwant\n%s", tb, wantText)
	}
}

// statsText is metrics as /stats shows them: "name: value" lines.
func statsText(ms []Metric) string {
	var b strings.Builder
	for _, m := range ms {
		if m.Histogram != nil {
			fmt.Fprintf(&b, "%s: %s\n", m.Name, m.Histogram.Summary())
		} else {
			fmt.Fprintf(&b, "%s: %d\n", m.Name, m.Value)
		}
	}
	return b.String()
}

func sortedLines(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(l)
	return strings.Join(l, "\n")
}

// TestPrometheusFamiliesContiguous: names that differ only in characters Prometheus
// maps to '_' form one family, written together under one TYPE line.
func TestPrometheusFamiliesContiguous(t *testing.T) {
	s := New()
	s.Counter("a.b_c", Tag{"k", "1"}).Inc()
	s.Counter("a.b", Tag{"k", "z"}).Inc()
	s.Counter("a_b.c", Tag{"k", "2"}).Inc()
	fams, text := parseProm(t, s)
	if n := len(fams["envoy_a_b_c"].GetMetric()); n != 2 {
		t.Fatalf("envoy_a_b_c has %d series, want 2\n%s", n, text)
	}
	if strings.Count(text, "# TYPE envoy_a_b_c ") != 1 {
		t.Fatalf("one TYPE line per family:\n%s", text)
	}
}

// TestConcurrentLookups: lookups and updates from many goroutines meet on one metric.
func TestConcurrentLookups(t *testing.T) {
	s := New()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				s.Counter("cluster.upstream_rq_{envoy_response_code}", clusterTag, code200).Inc()
			}
		}()
	}
	wg.Wait()
	if v, _ := s.Value("cluster." + istioCluster + ".upstream_rq_200"); v != 800 {
		t.Fatalf("counter = %d, want 800", v)
	}
}

// TestFilter: a store with a filter keeps only the metrics the filter accepts, by flat
// name; refused ones still count for their user and are neither listed nor looked up.
func TestFilter(t *testing.T) {
	s := New()
	s.SetFilter(func(flat string) bool { return strings.HasPrefix(flat, "cluster_manager") })
	kept := s.Counter("cluster_manager.cluster_added")
	dropped := s.Counter("cluster.upstream_rq_total", Tag{Key: "envoy_cluster_name", Value: "a"})
	g := s.Gauge("cluster.upstream_cx_active", Tag{Key: "envoy_cluster_name", Value: "a"})
	kept.Inc()
	dropped.Add(3)
	g.Set(2)
	if dropped.Value() != 3 || g.Value() != 2 {
		t.Fatal("a refused metric does not count")
	}
	var prom strings.Builder
	if err := s.WritePrometheus(&prom); err != nil {
		t.Fatal(err)
	}
	if got := statsText(s.Metrics(nil)); got != "cluster_manager.cluster_added: 1\n" {
		t.Errorf("/stats = %q", got)
	}
	if strings.Contains(prom.String(), "envoy_cluster_upstream") || !strings.Contains(prom.String(), "envoy_cluster_manager_cluster_added 1") {
		t.Errorf("prometheus = %q", prom.String())
	}
	if _, ok := s.Value("cluster.a.upstream_rq_total"); ok {
		t.Error("a refused metric can be looked up")
	}
}

// TestHashCollision: two metrics whose flat names hash alike are two entries, each
// found by its own name. The index is by hash only, so the chain is what tells them
// apart; with a real hash a collision is too rare to meet, so the test forces one by
// filing the second metric under the first one's hash.
func TestHashCollision(t *testing.T) {
	s := New()
	a := s.Counter("cluster.upstream_rq_total", Tag{Key: "envoy_cluster_name", Value: "a"})
	ha := s.hash(kindCounter, []byte("cluster.a.upstream_rq_total"))
	// b, made by hand under a's hash, as get would have filed it on a collision.
	b := new(Counter)
	tags := []Tag{{Key: "envoy_cluster_name", Value: "b"}}
	s.entries[ha] = &entry{kind: kindCounter, names: &metricName{template: "cluster.upstream_rq_total",
		name: "cluster.upstream_rq_total", prom: "envoy_cluster_upstream_rq_total"}, tags: &tags, value: b, next: s.entries[ha]}
	s.n++
	a.Add(1)
	b.Add(2)
	for flat, want := range map[string]int64{"cluster.a.upstream_rq_total": 1, "cluster.b.upstream_rq_total": 2} {
		if e := s.lookup(kindCounter, []byte(flat), ha); e == nil || int64(e.value.(*Counter).Value()) != want {
			t.Errorf("lookup(%s) under the shared hash: %v, want the counter at %d", flat, e, want)
		}
	}
	if got := s.Counter("cluster.upstream_rq_total", Tag{Key: "envoy_cluster_name", Value: "a"}); got != a {
		t.Error("a looked up again is not the counter made first")
	}
	var names []string
	for _, m := range s.Metrics(nil) {
		names = append(names, m.Name)
	}
	if want := []string{"cluster.a.upstream_rq_total", "cluster.b.upstream_rq_total"}; !slices.Equal(names, want) {
		t.Errorf("listed %v, want %v", names, want)
	}
}

// countingWriter counts the writes a listing makes.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestLargeListings: a Prometheus listing larger than one buffer goes out in several
// writes and loses nothing at the seams: every series of 500 clusters parses from it;
// and /stats's listing has every metric once, in order.
func TestLargeListings(t *testing.T) {
	s := New()
	const clusters = 500
	for i := range clusters {
		tag := Tag{Key: "envoy_cluster_name", Value: fmt.Sprintf("outbound|9080||svc-%03d.bench.svc.cluster.local", i)}
		s.Counter("cluster.upstream_rq_total", tag).Add(uint64(i))
		s.Gauge("cluster.upstream_cx_active", tag).Set(int64(i))
		s.Histogram("cluster.upstream_rq_time", tag).Record(float64(i))
	}
	var prom countingWriter
	if err := s.WritePrometheus(&prom); err != nil {
		t.Fatal(err)
	}
	if prom.writes < 2 {
		t.Fatalf("%d bytes of Prometheus output in %d write: the test does not cross a buffer's end", prom.Len(), prom.writes)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(prom.Bytes()))
	if err != nil {
		t.Fatalf("Prometheus output in %d writes does not parse: %v", prom.writes, err)
	}
	for _, f := range []string{"envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_cx_active", "envoy_cluster_upstream_rq_time"} {
		if n := len(fams[f].GetMetric()); n != clusters {
			t.Errorf("%s: %d series, want %d", f, n, clusters)
		}
	}
	lines := strings.Split(strings.TrimSuffix(statsText(s.Metrics(nil)), "\n"), "\n")
	if len(lines) != 3*clusters || !slices.IsSorted(lines) {
		t.Errorf("/stats: %d lines (want %d, sorted)", len(lines), 3*clusters)
	}
	if want := "cluster.outbound|9080||svc-499.bench.svc.cluster.local.upstream_rq_total: 499"; !slices.Contains(lines, want) {
		t.Errorf("/stats text lacks %q", want)
	}
}

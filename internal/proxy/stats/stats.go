// Package stats is the proxy's metric store: counters, gauges and histograms named as
// Envoy names them, so /stats reads like Envoy's and /stats/prometheus like Envoy's
// Prometheus output (envoy_cluster_upstream_rq_total{envoy_cluster_name="..."}).
//
// A metric is looked up once, when config is compiled, and kept by its user; updating it
// on the request path is one atomic add. Metrics are never removed: a cluster that goes
// and comes back finds its old counters, as in Envoy.
//
// Names and tags. A metric has a name and tags (Prometheus labels). By default a tag's
// value goes into the flat Envoy name after the name's first segment
// ("cluster.upstream_rq_total" + envoy_cluster_name "a" = "cluster.a.upstream_rq_total",
// Prometheus envoy_cluster_upstream_rq_total{envoy_cluster_name="a"}). A name may also
// be a template that places a tag elsewhere: "{key}" stands for the value of the tag
// with that key, and disappears from the Prometheus name with one separator beside it,
// as Envoy's tag extractors strip what they capture. So
// "cluster.upstream_rq_{envoy_response_code}" with tags envoy_cluster_name "a" and
// envoy_response_code "200" is "cluster.a.upstream_rq_200" in /stats and
// envoy_cluster_upstream_rq{envoy_cluster_name="a",envoy_response_code="200"} in
// Prometheus; "http.downstream_rq_{envoy_response_code_class}xx" gives
// envoy_http_downstream_rq_xx{...,envoy_response_code_class="2"}. Tags a template does
// not name still go after the first segment.
package stats

import (
	"bytes"
	"cmp"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Tag is one dimension of a metric. Key is the Prometheus label (Envoy's tag name, e.g.
// envoy_cluster_name); Value is inserted into the flat Envoy name where the name's
// template says ("{Key}"), or else after its first segment.
type Tag struct{ Key, Value string }

// Counter only goes up.
type Counter struct{ v atomic.Uint64 }

func (c *Counter) Inc()          { c.v.Add(1) }
func (c *Counter) Add(n uint64)  { c.v.Add(n) }
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge goes up and down.
type Gauge struct{ v atomic.Int64 }

func (g *Gauge) Inc()         { g.v.Add(1) }
func (g *Gauge) Dec()         { g.v.Add(-1) }
func (g *Gauge) Add(n int64)  { g.v.Add(n) }
func (g *Gauge) Set(n int64)  { g.v.Store(n) }
func (g *Gauge) Value() int64 { return g.v.Load() }

// Bounds are Envoy's default histogram bucket bounds, in the unit recorded (milliseconds
// for the *_time histograms).
var Bounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Histogram counts values into fixed buckets.
type Histogram struct {
	counts [20]atomic.Uint64 // len(Bounds)+1, last is +Inf
	sum    atomic.Uint64     // float64 bits, updated by CAS
	n      atomic.Uint64
}

// Record adds one value.
func (h *Histogram) Record(v float64) {
	i := sort.SearchFloat64s(Bounds, v)
	h.counts[i].Add(1)
	h.n.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Quantile estimates the q-quantile (0..1) from the buckets, by linear interpolation.
func (h *Histogram) Quantile(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return math.NaN()
	}
	rank := q * float64(n)
	var seen float64
	lo := 0.0
	for i := range h.counts {
		c := float64(h.counts[i].Load())
		hi := math.Inf(1)
		if i < len(Bounds) {
			hi = Bounds[i]
		}
		if seen+c >= rank && c > 0 {
			if math.IsInf(hi, 1) {
				return lo
			}
			return lo + (hi-lo)*(rank-seen)/c
		}
		seen += c
		lo = hi
	}
	return lo
}

type kind uint8

const (
	kindCounter kind = iota
	kindGauge
	kindHistogram
)

// entry is one metric. It does not keep its flat name ("cluster.outbound|80||a.
// upstream_rq_total"): a sidecar told about a whole mesh holds some 30 metrics per
// cluster, and their flat names were a third of its metric memory; the name is made
// again where it is needed (a lookup's comparison, a listing).
type entry struct {
	kind  kind
	names *metricName
	tags  *[]Tag // shared with the entries made with the same tags just before
	value any    // *Counter, *Gauge or *Histogram
	next  *entry // the next entry whose flat name has the same hash
}

// metricName is a metric name (template) with the names derived from it, shared by
// every entry of that name.
type metricName struct {
	template string // as looked up, e.g. "cluster.upstream_rq_{envoy_response_code}"
	name     string // tag-extracted, e.g. "cluster.upstream_rq"
	prom     string // PromName(name)
}

// Store holds every metric of a proxy. The zero value is not usable; call New.
//
// A sidecar of a large mesh holds some 30 metrics for each of thousands of clusters,
// so an entry's memory counts: the names derived from a metric's name are shared by
// all entries of that name, consecutive lookups with the same tags (one cluster's
// metrics, looked up together) share one copy of the tags, and the index is by a hash
// of the flat name, which is not kept.
type Store struct {
	mu       sync.Mutex
	seed     maphash.Seed
	entries  map[uint64]*entry      // by hash of kind and flat name; collisions chained
	n        int                    // entries in all
	names    map[string]*metricName // by metric name (template)
	lastTags *[]Tag                 // the tags of the last entry created
	flat     []byte                 // scratch: the flat name looked up
	other    []byte                 // scratch: a candidate's flat name
	accept   func(flat string) bool // nil: every metric is kept
}

// New returns an empty store.
func New() *Store {
	return &Store{seed: maphash.MakeSeed(), entries: make(map[uint64]*entry), names: make(map[string]*metricName)}
}

// hash is the index key of a metric.
func (s *Store) hash(k kind, flat []byte) uint64 {
	return maphash.Bytes(s.seed, flat) ^ uint64(k)
}

// lookup finds the entry of that kind and flat name; s.mu is held. Each candidate's
// name is made in s.other.
func (s *Store) lookup(k kind, flat []byte, h uint64) *entry {
	for e := s.entries[h]; e != nil; e = e.next {
		if e.kind != k {
			continue
		}
		s.other = appendFlat(s.other[:0], e.names.template, *e.tags)
		if bytes.Equal(s.other, flat) {
			return e
		}
	}
	return nil
}

// SetFilter makes the store keep only the metrics whose flat name accept approves
// (Envoy's stats_config.stats_matcher). A metric it refuses still counts for its user
// but is not stored nor shown: it costs its user's pointer and 8 to 200 bytes instead
// of an entry. Call it before metrics are looked up; those already stored stay.
func (s *Store) SetFilter(accept func(flat string) bool) {
	s.mu.Lock()
	s.accept = accept
	s.mu.Unlock()
}

// Flat is Envoy's flat name of a metric: each "{key}" of a template name is replaced by
// the value of the tag with that key, and the values of the other tags go after the
// first dot-separated segment ("cluster.upstream_rq_total" + cluster "a" =
// "cluster.a.upstream_rq_total"; "cluster.upstream_rq_{envoy_response_code}" + cluster
// "a" + code "200" = "cluster.a.upstream_rq_200"). A "{key}" without its tag is left as
// written.
func Flat(name string, tags ...Tag) string {
	if len(tags) == 0 {
		return name
	}
	size := len(name)
	for _, t := range tags {
		size += len(t.Value) + 1
	}
	return string(appendFlat(make([]byte, 0, size), name, tags))
}

// appendFlat appends Flat(name, tags...) to b.
func appendFlat(b []byte, name string, tags []Tag) []byte {
	if len(tags) == 0 {
		return append(b, name...)
	}
	// The first segment is the template's, before any value (a value such as an
	// Istio cluster name holds dots of its own).
	head, rest, ok := strings.Cut(name, ".")
	templated := strings.IndexByte(name, '{') >= 0
	b = appendExpanded(b, head, tags)
	for _, t := range tags {
		if !templated || !templateNames(name, t.Key) {
			b = append(b, '.')
			b = append(b, t.Value...)
		}
	}
	if ok {
		b = append(b, '.')
		b = appendExpanded(b, rest, tags)
	}
	return b
}

// templateNames reports whether template s holds "{key}".
func templateNames(s, key string) bool {
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			return false
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return false
		}
		if s[i+1:i+j] == key {
			return true
		}
		s = s[i+j+1:]
	}
}

// appendExpanded appends template s with each "{key}" replaced by its tag's value.
func appendExpanded(b []byte, s string, tags []Tag) []byte {
	for {
		i := strings.IndexByte(s, '{')
		j := strings.IndexByte(s[max(i, 0):], '}')
		if i < 0 || j < 0 {
			return append(b, s...)
		}
		b = append(b, s[:i]...)
		key, v, found := s[i+1:i+j], "", false
		for _, t := range tags {
			if t.Key == key {
				v, found = t.Value, true
				break
			}
		}
		if found {
			b = append(b, v...)
		} else {
			b = append(b, s[i:i+j+1]...)
		}
		s = s[i+j+1:]
	}
}

// ExtractedName is the tag-extracted name of a metric name, the one its Prometheus
// family is named after: every "{key}" removed together with one separator ('.' or
// '_') beside it (the one before it when the placeholder ends a segment, else the one
// after it when it starts the name), as Envoy's tag extractors remove what they
// capture. "cluster.upstream_rq_{envoy_response_code}" -> "cluster.upstream_rq";
// "cluster.upstream_rq_{envoy_response_code_class}xx" -> "cluster.upstream_rq_xx".
// A name without placeholders is returned as is.
func ExtractedName(name string) string {
	if strings.IndexByte(name, '{') < 0 {
		return name
	}
	out := make([]byte, 0, len(name))
	for i := 0; i < len(name); {
		c := name[i]
		if c != '{' {
			out = append(out, c)
			i++
			continue
		}
		j := strings.IndexByte(name[i:], '}')
		if j < 0 {
			out = append(out, name[i:]...)
			break
		}
		end := i + j + 1
		atEnd := end == len(name) || isSep(name[end])
		switch {
		case atEnd && len(out) > 0 && isSep(out[len(out)-1]):
			out = out[:len(out)-1] // "x_{k}" or "x.{k}.y": drop the separator before
		case len(out) == 0 && end < len(name) && isSep(name[end]):
			end++ // "{k}.y": drop the separator after
		}
		i = end
	}
	return string(out)
}

func isSep(c byte) bool { return c == '.' || c == '_' }

func (s *Store) get(k kind, name string, tags []Tag, mk func() any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flat = appendFlat(s.flat[:0], name, tags)
	h := s.hash(k, s.flat)
	if e := s.lookup(k, s.flat, h); e != nil {
		return e.value
	}
	if s.accept != nil && !s.accept(string(s.flat)) {
		return mk() // refused by the stats matcher: counted, never shown
	}
	mn := s.names[name]
	if mn == nil {
		base := ExtractedName(name)
		mn = &metricName{template: name, name: base, prom: PromName(base)}
		s.names[name] = mn
	}
	if s.lastTags == nil || !slices.Equal(tags, *s.lastTags) {
		ts := slices.Clone(tags)
		s.lastTags = &ts
	}
	e := &entry{kind: k, names: mn, tags: s.lastTags, value: mk(), next: s.entries[h]}
	s.entries[h] = e
	s.n++
	return e.value
}

// Counter returns the counter of that name and tags, creating it on first use.
func (s *Store) Counter(name string, tags ...Tag) *Counter {
	return s.get(kindCounter, name, tags, func() any { return new(Counter) }).(*Counter)
}

// Gauge returns the gauge of that name and tags, creating it on first use.
func (s *Store) Gauge(name string, tags ...Tag) *Gauge {
	return s.get(kindGauge, name, tags, func() any { return new(Gauge) }).(*Gauge)
}

// Histogram returns the histogram of that name and tags, creating it on first use.
func (s *Store) Histogram(name string, tags ...Tag) *Histogram {
	return s.get(kindHistogram, name, tags, func() any { return new(Histogram) }).(*Histogram)
}

// Metric is one metric of a listing.
type Metric struct {
	Name      string     // the flat name
	Value     int64      // a counter's or gauge's value
	Histogram *Histogram // nil for a counter or gauge
	kind      kind
}

// Metrics lists the metrics whose flat name match accepts (every one when match is
// nil), sorted by flat name. Only the names of those listed are made: a filtered
// listing of a sidecar that holds a whole mesh's metrics allocates for what it shows.
func (s *Store) Metrics(match func(flat []byte) bool) []Metric {
	var out []Metric
	var scratch []byte
	s.mu.Lock()
	if match == nil {
		out = make([]Metric, 0, s.n)
	}
	for _, e := range s.entries {
		for ; e != nil; e = e.next {
			scratch = appendFlat(scratch[:0], e.names.template, *e.tags)
			if match != nil && !match(scratch) {
				continue
			}
			m := Metric{Name: string(scratch), kind: e.kind}
			switch v := e.value.(type) {
			case *Counter:
				m.Value = int64(v.Value())
			case *Gauge:
				m.Value = v.Value()
			case *Histogram:
				m.Histogram = v
			}
			out = append(out, m)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Metric) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.kind, b.kind))
	})
	return out
}

// Summary is a histogram as Envoy's /stats shows it.
func (h *Histogram) Summary() string {
	if h.Count() == 0 {
		return "No recorded values"
	}
	return fmt.Sprintf("P50(%g) P90(%g) P99(%g) count(%d)", h.Quantile(.5), h.Quantile(.9), h.Quantile(.99), h.Count())
}

// Value returns the current value of the counter or gauge with that flat name, for tests
// and the admin endpoint. ok is false when no such metric exists.
func (s *Store) Value(flat string) (v int64, ok bool) {
	b := []byte(flat)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.lookup(kindCounter, b, s.hash(kindCounter, b)); e != nil {
		return int64(e.value.(*Counter).Value()), true
	}
	if e := s.lookup(kindGauge, b, s.hash(kindGauge, b)); e != nil {
		return e.value.(*Gauge).Value(), true
	}
	return 0, false
}

// PromName is the Prometheus name of a tag-extracted metric name: "envoy_" + name, with
// every byte outside [a-zA-Z0-9_] (dots among them) as an underscore.
func PromName(name string) string {
	b := make([]byte, 0, len("envoy_")+len(name))
	b = append(b, "envoy_"...)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b = append(b, c)
		} else {
			b = append(b, '_')
		}
	}
	return string(b)
}

// WritePrometheus writes every metric in the Prometheus text exposition format, one
// family per tag-extracted name, with a TYPE line each; a family's series are in the
// order of their labels. It needs no flat names, and writes through one buffer: a
// sidecar told about a thousand clusters has some 40,000 series.
func (s *Store) WritePrometheus(w io.Writer) error {
	s.mu.Lock()
	entries := make([]*entry, 0, s.n)
	for _, e := range s.entries {
		for ; e != nil; e = e.next {
			entries = append(entries, e)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(entries, func(a, b *entry) int {
		if c := strings.Compare(a.names.prom, b.names.prom); c != 0 {
			return c
		}
		if c := slices.CompareFunc(*a.tags, *b.tags, func(x, y Tag) int {
			return cmp.Or(strings.Compare(x.Key, y.Key), strings.Compare(x.Value, y.Value))
		}); c != 0 {
			return c
		}
		return cmp.Compare(a.kind, b.kind)
	})
	buf := make([]byte, 0, 32<<10)
	var labels []byte // the current entry's labels, without braces
	last := ""
	for _, e := range entries {
		pn := e.names.prom
		if pn != last {
			buf = append(buf, "# TYPE "...)
			buf = append(buf, pn...)
			buf = append(buf, ' ')
			buf = append(buf, [...]string{kindCounter: "counter", kindGauge: "gauge", kindHistogram: "histogram"}[e.kind]...)
			buf = append(buf, '\n')
			last = pn
		}
		labels = appendLabels(labels[:0], *e.tags)
		switch v := e.value.(type) {
		case *Counter:
			buf = appendSample(buf, pn, "", labels, "")
			buf = strconv.AppendUint(buf, v.Value(), 10)
			buf = append(buf, '\n')
		case *Gauge:
			buf = appendSample(buf, pn, "", labels, "")
			buf = strconv.AppendInt(buf, v.Value(), 10)
			buf = append(buf, '\n')
		case *Histogram:
			var cum uint64
			for i := range v.counts {
				cum += v.counts[i].Load()
				le := "+Inf"
				if i < len(Bounds) {
					le = boundLabels[i]
				}
				buf = appendSample(buf, pn, "_bucket", labels, le)
				buf = strconv.AppendUint(buf, cum, 10)
				buf = append(buf, '\n')
			}
			buf = appendSample(buf, pn, "_sum", labels, "")
			buf = strconv.AppendFloat(buf, math.Float64frombits(v.sum.Load()), 'g', -1, 64)
			buf = append(buf, '\n')
			buf = appendSample(buf, pn, "_count", labels, "")
			buf = strconv.AppendUint(buf, v.Count(), 10)
			buf = append(buf, '\n')
		}
		if len(buf) >= 28<<10 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	_, err := w.Write(buf)
	return err
}

// boundLabels are the le label values of Bounds.
var boundLabels = func() []string {
	out := make([]string, len(Bounds))
	for i, b := range Bounds {
		out[i] = strconv.FormatFloat(b, 'g', -1, 64)
	}
	return out
}()

// appendSample appends a sample's name and labels, and the space before its value.
func appendSample(buf []byte, name, suffix string, labels []byte, le string) []byte {
	buf = append(buf, name...)
	buf = append(buf, suffix...)
	if len(labels) > 0 || le != "" {
		buf = append(buf, '{')
		buf = append(buf, labels...)
		if le != "" {
			if len(labels) > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, `le="`...)
			buf = append(buf, le...)
			buf = append(buf, '"')
		}
		buf = append(buf, '}')
	}
	return append(buf, ' ')
}

// appendLabels appends tags as Prometheus labels: k="v",k="v".
func appendLabels(buf []byte, tags []Tag) []byte {
	for i, t := range tags {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, t.Key...)
		buf = append(buf, `="`...)
		buf = append(buf, escapeLabel(t.Value)...)
		buf = append(buf, '"')
	}
	return buf
}

func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return r.Replace(s)
}

// Package stats is the proxy's metric store: counters, gauges and histograms named as
// Envoy names them, so /stats reads like Envoy's and /stats/prometheus like Envoy's
// Prometheus output (envoy_cluster_upstream_rq_total{envoy_cluster_name="..."}).
//
// A metric is looked up once, when config is compiled, and kept by its user; updating it
// on the request path is one atomic add. Metrics are never removed: a cluster that goes
// and comes back finds its old counters, as in Envoy.
package stats

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Tag is one dimension of a metric. Key is the Prometheus label (Envoy's tag name, e.g.
// envoy_cluster_name); Value is inserted into the flat Envoy name after its first segment.
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

type entry struct {
	kind  kind
	name  string // base name, e.g. "cluster.upstream_rq_total"
	tags  []Tag
	flat  string // Envoy's flat name, e.g. "cluster.outbound|80||a.upstream_rq_total"
	value any    // *Counter, *Gauge or *Histogram
}

// Store holds every metric of a proxy. The zero value is not usable; call New.
type Store struct {
	mu      sync.Mutex
	entries map[string]*entry // by flat name + kind
}

// New returns an empty store.
func New() *Store { return &Store{entries: make(map[string]*entry)} }

// Flat is Envoy's flat name of a metric: the tag values go after the first dot-separated
// segment of the base name ("cluster.upstream_rq_total" + cluster "a" =
// "cluster.a.upstream_rq_total").
func Flat(name string, tags ...Tag) string {
	if len(tags) == 0 {
		return name
	}
	head, rest, ok := strings.Cut(name, ".")
	var b strings.Builder
	b.WriteString(head)
	for _, t := range tags {
		b.WriteByte('.')
		b.WriteString(t.Value)
	}
	if ok {
		b.WriteByte('.')
		b.WriteString(rest)
	}
	return b.String()
}

func (s *Store) get(k kind, name string, tags []Tag, mk func() any) any {
	flat := Flat(name, tags...)
	key := flat + "\x00" + strconv.Itoa(int(k))
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[key]; ok {
		return e.value
	}
	e := &entry{kind: k, name: name, tags: append([]Tag(nil), tags...), flat: flat, value: mk()}
	s.entries[key] = e
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

func (s *Store) sorted() []*entry {
	s.mu.Lock()
	out := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].flat != out[j].flat {
			return out[i].flat < out[j].flat
		}
		return out[i].kind < out[j].kind
	})
	return out
}

// Value returns the current value of the counter or gauge with that flat name, for tests
// and the admin endpoint. ok is false when no such metric exists.
func (s *Store) Value(flat string) (v int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, found := s.entries[flat+"\x00"+strconv.Itoa(int(kindCounter))]; found {
		return int64(e.value.(*Counter).Value()), true
	}
	if e, found := s.entries[flat+"\x00"+strconv.Itoa(int(kindGauge))]; found {
		return e.value.(*Gauge).Value(), true
	}
	return 0, false
}

// WriteText writes every metric as Envoy's /stats does ("name: value"), sorted by name.
// filter, when not empty, keeps only names containing it.
func (s *Store) WriteText(w io.Writer, filter string) error {
	for _, e := range s.sorted() {
		if filter != "" && !strings.Contains(e.flat, filter) {
			continue
		}
		var err error
		switch v := e.value.(type) {
		case *Counter:
			_, err = fmt.Fprintf(w, "%s: %d\n", e.flat, v.Value())
		case *Gauge:
			_, err = fmt.Fprintf(w, "%s: %d\n", e.flat, v.Value())
		case *Histogram:
			if v.Count() == 0 {
				_, err = fmt.Fprintf(w, "%s: No recorded values\n", e.flat)
			} else {
				_, err = fmt.Fprintf(w, "%s: P50(%g) P90(%g) P99(%g) count(%d)\n", e.flat,
					v.Quantile(.5), v.Quantile(.9), v.Quantile(.99), v.Count())
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// PromName is the Prometheus name of a base metric name: "envoy_" + name, dots as underscores.
func PromName(name string) string {
	var b strings.Builder
	b.WriteString("envoy_")
	for _, r := range name {
		if r == '.' || r == '-' || r == ':' {
			b.WriteByte('_')
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// WritePrometheus writes every metric in the Prometheus text exposition format, one
// family per base name, with a TYPE line each.
func (s *Store) WritePrometheus(w io.Writer) error {
	entries := s.sorted()
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	last := ""
	for _, e := range entries {
		pn := PromName(e.name)
		if pn != last {
			typ := map[kind]string{kindCounter: "counter", kindGauge: "gauge", kindHistogram: "histogram"}[e.kind]
			if _, err := fmt.Fprintf(w, "# TYPE %s %s\n", pn, typ); err != nil {
				return err
			}
			last = pn
		}
		labels := promLabels(e.tags, "")
		var err error
		switch v := e.value.(type) {
		case *Counter:
			_, err = fmt.Fprintf(w, "%s%s %d\n", pn, labels, v.Value())
		case *Gauge:
			_, err = fmt.Fprintf(w, "%s%s %d\n", pn, labels, v.Value())
		case *Histogram:
			var cum uint64
			for i := range v.counts {
				cum += v.counts[i].Load()
				le := "+Inf"
				if i < len(Bounds) {
					le = strconv.FormatFloat(Bounds[i], 'g', -1, 64)
				}
				if _, err = fmt.Fprintf(w, "%s_bucket%s %d\n", pn, promLabels(e.tags, le), cum); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(w, "%s_sum%s %g\n%s_count%s %d\n", pn, labels,
				math.Float64frombits(v.sum.Load()), pn, labels, v.Count())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func promLabels(tags []Tag, le string) string {
	if len(tags) == 0 && le == "" {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, t := range tags {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(t.Key)
		b.WriteString(`="`)
		b.WriteString(escapeLabel(t.Value))
		b.WriteByte('"')
	}
	if le != "" {
		if len(tags) > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`le="`)
		b.WriteString(le)
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return r.Replace(s)
}

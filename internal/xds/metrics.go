package xds

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics, with Istio's (istiod's) names where it
// has one, in a registry of the server's own (two servers in one process don't clash).
type metrics struct {
	reg        *prometheus.Registry
	pushes     *prometheus.CounterVec
	pushTime   prometheus.Histogram
	rejects    *prometheus.CounterVec
	connected  prometheus.Gauge
	pushErrors prometheus.Counter
	triggers   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes",
			Help: "xDS responses sent to proxies, by type (cds, eds, lds, rds, sds).",
		}, []string{"type"}),
		pushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_xds_push_time",
			Help:    "Seconds a push takes, from the end of the debounce until every connected proxy's configuration is regenerated and handed to its streams.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30},
		}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_total_xds_rejects",
			Help: "xDS responses a proxy rejected (NACK), by type.",
		}, []string{"type"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pilot_xds",
			Help: "Open xDS streams (an ADS proxy has one).",
		}),
		pushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pilot_xds_push_errors",
			Help: "Proxy configurations that failed to generate; the proxy kept its previous one.",
		}),
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_push_triggers",
			Help: "Push requests, by reason.",
		}, []string{"type"}),
	}
	// No Go/process collectors: the binary registers those once, and gathers this
	// registry beside its own (prometheus.Gatherers).
	m.reg.MustRegister(m.pushes, m.pushTime, m.rejects, m.connected, m.pushErrors, m.triggers)
	return m
}

// metricType is the type label: Istio's lower-case short names.
func metricType(typeURL string) string {
	n := ShortName(typeURL)
	if n == typeURL {
		return "other"
	}
	return strings.ToLower(n)
}

package lb_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/upstream/health"
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
	"github.com/weft-mesh/weft/internal/proxy/upstream/outlier"
)

// host is how a cluster's host combines the three packages: active health from the
// checker's OnChange, ejection from its outlier HostState, both read by Available.
type host struct {
	key     string
	hcOK    atomic.Bool
	od      *outlier.HostState
	pending atomic.Int64
}

func (h *host) Key() string           { return h.key }
func (h *host) Weight() uint32        { return 1 }
func (h *host) Available() bool       { return h.hcOK.Load() && !h.od.Ejected() }
func (h *host) ActiveRequests() int64 { return h.pending.Load() }

// TestWiring runs the three packages together as the cluster wires them, against
// loopback servers: health check failures and outlier ejections take a host out of the
// picks, a passing active check returns an ejected host.
func TestWiring(t *testing.T) {
	var status [2]atomic.Int32
	var keys []string
	for i := range 2 {
		status[i].Store(200)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(int(status[i].Load()))
		}))
		t.Cleanup(srv.Close)
		keys = append(keys, srv.Listener.Addr().String())
	}

	var ps atomic.Pointer[lb.PrioritySet]
	refresh := func() {
		if p := ps.Load(); p != nil {
			p.Refresh()
		}
	}
	det, err := outlier.New(&clusterv3.OutlierDetection{
		MaxEjectionPercent: wrapperspb.UInt32(100),
		Interval:           durationpb.New(time.Hour), // only the active check returns hosts here
	}, outlier.Options{OnChange: refresh})
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]*host{}
	var lbHosts []lb.Host
	for _, k := range keys {
		h := &host{key: k, od: det.Track(k)} // hcOK false: pending the first check
		hosts[k] = h
		lbHosts = append(lbHosts, h)
	}
	settings, err := lb.FromCluster(&clusterv3.Cluster{LbPolicy: clusterv3.Cluster_ROUND_ROBIN})
	if err != nil {
		t.Fatal(err)
	}
	ps.Store(lb.NewPrioritySet([][]lb.Locality{{{Hosts: lbHosts}}}, settings.Policy.New, settings.Priority))

	changed := make(chan struct{}, 16)
	var uneject atomic.Bool // the test holds back un-ejection to observe the ejection
	checker, err := health.New([]*corev3.HealthCheck{{
		Timeout:            durationpb.New(2 * time.Second),
		Interval:           durationpb.New(20 * time.Millisecond),
		UnhealthyThreshold: wrapperspb.UInt32(1),
		HealthyThreshold:   wrapperspb.UInt32(1),
		HealthChecker:      &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/healthz"}},
	}}, health.Options{
		Cluster: "c",
		OnChange: func(key string, healthy bool) {
			if h := hosts[key]; h != nil {
				h.hcOK.Store(healthy)
				refresh()
				changed <- struct{}{}
			}
		},
		OnCheck: func(key string, passed bool) {
			if passed && uneject.Load() {
				hosts[key].od.ActiveCheckPassed()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	checker.SetHosts(keys)
	checker.Start(context.Background())
	t.Cleanup(checker.Stop)

	// eventually waits (bounded) until every pick over 50 lands in want.
	eventually := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ok := true
			seen := map[string]bool{}
			for range 50 {
				h := ps.Load().Pick(nil)
				if h == nil {
					ok = false
					break
				}
				seen[h.Key()] = true
			}
			if ok && len(seen) == len(want) {
				for _, k := range want {
					ok = ok && seen[k]
				}
				if ok {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("picks %v, want exactly %v", seen, want)
			}
			select {
			case <-changed:
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	eventually(keys[0], keys[1])

	// Host 1 fails its health check: only host 0 is picked.
	status[1].Store(500)
	eventually(keys[0])
	status[1].Store(200)
	eventually(keys[0], keys[1])

	// Host 0 answers five 503s to requests: ejected, only host 1 is picked ...
	for range 5 {
		hosts[keys[0]].od.Observe(503, false)
	}
	if !hosts[keys[0]].od.Ejected() {
		t.Fatal("not ejected")
	}
	eventually(keys[1])
	// ... until its next passing active check returns it
	// (successful_active_health_check_uneject_host).
	uneject.Store(true)
	eventually(keys[0], keys[1])
}

package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"testing"

	"github.com/weft-mesh/weft/internal/proxy/stats"
)

// benchRoundTrip sends b.N GETs through Pick + RoundTrip to one loopback upstream and
// reads each body, as the router does.
//
// The HTTP/1.1 upstream is a minimal responder that allocates nothing per request, so
// the allocations reported are the client side's (ReportAllocs counts the whole
// process); the HTTP/2 upstream is net/http's server, whose allocations are included.
func benchRoundTrip(b testing.TB, n int, h2 bool) {
	var addr string
	var accepted func() int64
	if h2 {
		u := newUpstream(b, true, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		addr, accepted = u.addr, u.ln.accepted.Load
	} else {
		addr, accepted = rawHTTP1Upstream(b)
	}
	m, _ := newTestManager(b, Options{})
	cl := staticCluster(b, "bench", addr)
	if h2 {
		cl = withHTTP2(b, cl, 0)
	}
	mustUpdate(b, m, cl)
	c := getCluster(b, m, "bench")
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://svc.test/", nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 512)
	if bb, ok := b.(*testing.B); ok {
		bb.ReportAllocs()
		bb.ResetTimer()
	}
	for i := 0; i < n; i++ {
		h, err := c.Pick(nil, netipZero)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := c.RoundTrip(req, h)
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := resp.Body.Read(buf)
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	if accepted() != 1 {
		b.Fatalf("%d connections, want 1", accepted())
	}
}

// rawHTTP1Upstream answers every request head on a keep-alive connection with a fixed
// 200 response of two bytes.
func rawHTTP1Upstream(b testing.TB) (string, func() int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	b.Cleanup(func() { ln.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
	go func() {
		for {
			conn, err := cl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					// Requests carry no body: a head ends with an empty line.
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := conn.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), cl.accepted.Load
}

func BenchmarkRoundTripHTTP1(b *testing.B) { benchRoundTrip(b, b.N, false) }
func BenchmarkRoundTripHTTP2(b *testing.B) { benchRoundTrip(b, b.N, true) }

// The benchmarks' size-1 twins keep them compiling and correct.
func TestBenchRoundTripHTTP1(t *testing.T) { benchRoundTrip(t, 1, false) }
func TestBenchRoundTripHTTP2(t *testing.T) { benchRoundTrip(t, 1, true) }

func BenchmarkPick(b *testing.B) {
	var addrs []string
	for i := 0; i < 8; i++ {
		addrs = append(addrs, "127.0.0.1:"+uitoa(uint32(10000+i)))
	}
	m, _ := newTestManager(b, Options{})
	mustUpdate(b, m, staticCluster(b, "pick", addrs...))
	c := getCluster(b, m, "pick")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Pick(nil, netipZero); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClusterStats is the metric memory of one cluster (bytes/op), which a
// sidecar pays for every cluster of the mesh it is told about.
// retained-B/cluster is what stays live (heap after a GC, divided by b.N).
func BenchmarkClusterStats(b *testing.B) {
	s := stats.New()
	keep := make([]*ClusterStats, 0, b.N)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		keep = append(keep, newClusterStats(s, "outbound|9080||svc-"+strconv.Itoa(i)+".bench.svc.cluster.local"))
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(keep)), "retained-B/cluster")
	runtime.KeepAlive(keep)
	runtime.KeepAlive(s)
}

// BenchmarkClusterStatsScrape is one Prometheus scrape (/stats/prometheus) of a
// sidecar that holds 1,000 clusters' metrics.
func BenchmarkClusterStatsScrape(b *testing.B) {
	s := stats.New()
	for i := range 1000 {
		newClusterStats(s, "outbound|9080||svc-"+strconv.Itoa(i)+".bench.svc.cluster.local")
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.WritePrometheus(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClusterStatsFiltered is a filtered /stats listing (Istio's agent asks for
// a couple of server metrics this way) of a sidecar that holds 1,000 clusters' metrics.
func BenchmarkClusterStatsFiltered(b *testing.B) {
	s := stats.New()
	for i := range 1000 {
		newClusterStats(s, "outbound|9080||svc-"+strconv.Itoa(i)+".bench.svc.cluster.local")
	}
	s.Gauge("server.state")
	re := regexp.MustCompile(`^server\.state$`)
	b.ReportAllocs()
	for b.Loop() {
		if got := s.Metrics(re.Match); len(got) != 1 {
			b.Fatalf("%d metrics listed, want 1", len(got))
		}
	}
}

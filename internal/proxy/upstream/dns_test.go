package upstream

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/protobuf/types/known/durationpb"
)

// dnsServer is a tiny authoritative DNS server on 127.0.0.1 (UDP) answering A queries
// from a table the test edits.
type dnsServer struct {
	pc      net.PacketConn
	mu      sync.Mutex
	records map[string][]netip.Addr // by lower-case FQDN with the trailing dot
	queries atomic.Int64
}

func newDNSServer(t testing.TB) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{pc: pc, records: map[string][]netip.Addr{}}
	t.Cleanup(func() { pc.Close() })
	go s.serve()
	return s
}

func (s *dnsServer) set(name string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []netip.Addr
	for _, a := range addrs {
		list = append(list, netip.MustParseAddr(a))
	}
	s.records[strings.ToLower(name)+"."] = list
}

func (s *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		hdr, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		s.queries.Add(1)
		name := strings.ToLower(q.Name.String())
		s.mu.Lock()
		addrs, known := s.records[name]
		s.mu.Unlock()
		rcode := dnsmessage.RCodeSuccess
		if !known {
			rcode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RCode: rcode})
		b.EnableCompression()
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if q.Type == dnsmessage.TypeA {
			for _, a := range addrs {
				if a.Is4() {
					b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1},
						dnsmessage.AResource{A: a.As4()})
				}
			}
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		s.pc.WriteTo(msg, from)
	}
}

// resolver sends every query to the test server.
func (s *dnsServer) resolver() *net.Resolver {
	addr := s.pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func dnsCluster(t testing.TB, name string, typ clusterv3.Cluster_DiscoveryType, addrs ...string) *clusterv3.Cluster {
	c := staticCluster(t, name)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
	c.DnsRefreshRate = durationpb.New(50 * time.Millisecond)
	c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	c.LoadAssignment = assignment(t, name)
	for _, a := range addrs {
		host, port, _ := strings.Cut(a, "|") // "name|port" since names are not IPs
		ep := lbEndpoint(t, "127.0.0.1:"+port)
		ep.GetEndpoint().GetAddress().GetSocketAddress().Address = host
		c.LoadAssignment.Endpoints[0].LbEndpoints = append(c.LoadAssignment.Endpoints[0].LbEndpoints, ep)
	}
	return c
}

func TestStrictDNS(t *testing.T) {
	a, b := newUpstream(t, false, nil), newUpstream(t, false, nil)
	_, pa := hostPort(t, a.addr)
	_, pb := hostPort(t, b.addr)
	dns := newDNSServer(t)
	dns.set("a.weft.test", "127.0.0.1")
	dns.set("b.weft.test") // no address yet
	m, st := newTestManager(t, Options{Resolver: dns.resolver()})
	mustUpdate(t, m, dnsCluster(t, "dns", clusterv3.Cluster_STRICT_DNS,
		"a.weft.test|"+uitoa(pa), "b.weft.test|"+uitoa(pb)))
	c := getCluster(t, m, "dns")
	select {
	case <-c.Warmed():
	case <-time.After(10 * time.Second):
		t.Fatal("STRICT_DNS cluster never warmed")
	}
	hs := c.Hosts()
	if len(hs) != 1 || hs[0].Addr() != a.addr || hs[0].Hostname() != "a.weft.test" {
		t.Fatalf("hosts after first resolution: %v", addrsOf(hs))
	}
	if u, err := do(t, c); err != nil || u != a.addr {
		t.Fatalf("request: %q %v", u, err)
	}
	// Re-resolution at dns_refresh_rate picks up the new record.
	dns.set("b.weft.test", "127.0.0.1")
	eventually(t, "second name resolved", func() bool { return len(c.Hosts()) == 2 })
	got := map[string]int{}
	for i := 0; i < 10; i++ {
		u, err := do(t, c)
		if err != nil {
			t.Fatal(err)
		}
		got[u]++
	}
	if got[a.addr] != 5 || got[b.addr] != 5 {
		t.Fatalf("spread over resolved hosts: %v", got)
	}
	// A failing name keeps its last addresses (Envoy keeps the last good resolution).
	dns.mu.Lock()
	delete(dns.records, "a.weft.test.")
	dns.mu.Unlock()
	before := statValue(t, st, "cluster.dns.update_failure")
	eventually(t, "a failed resolution", func() bool { return statValue(t, st, "cluster.dns.update_failure") > before })
	if n := len(c.Hosts()); n != 2 {
		t.Fatalf("%d hosts after a failed resolution, want 2", n)
	}
}

func TestExpandResolved(t *testing.T) {
	eps := []endpointSpec{{host: "svc.example", port: 8080, weight: 3}, {host: "other.example", port: 9090, weight: 1}}
	got := expandResolved(eps, map[int][]netip.Addr{
		0: {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")},
		1: {netip.MustParseAddr("10.0.1.1")},
	})
	var addrs []string
	for _, e := range got {
		addrs = append(addrs, e.addr()+"/"+e.hostname+"/"+uitoa(e.weight))
	}
	want := "10.0.0.1:8080/svc.example/3,10.0.0.2:8080/svc.example/3,10.0.1.1:9090/other.example/1"
	if strings.Join(addrs, ",") != want {
		t.Fatalf("each A record a host: got %v, want %s", addrs, want)
	}
}

func TestLogicalDNS(t *testing.T) {
	u := newUpstream(t, false, nil)
	_, port := hostPort(t, u.addr)
	dns := newDNSServer(t)
	dns.set("logical.weft.test", "127.0.0.1")
	m, st := newTestManager(t, Options{Resolver: dns.resolver()})
	// max_requests_per_connection 1: every request is a new connection, resolved anew.
	cl := dnsCluster(t, "logical", clusterv3.Cluster_LOGICAL_DNS, "logical.weft.test|"+uitoa(port))
	cl.MaxRequestsPerConnection = wrapUint32(1)
	mustUpdate(t, m, cl)
	c := getCluster(t, m, "logical")
	hs := c.Hosts()
	if len(hs) != 1 || hs[0].Addr() != "logical.weft.test:"+uitoa(port) {
		t.Fatalf("LOGICAL_DNS hosts: %v", addrsOf(hs))
	}
	for i := 0; i < 3; i++ {
		if got, err := do(t, c); err != nil || got != u.addr {
			t.Fatalf("request %d: %q %v", i, got, err)
		}
	}
	if v := statValue(t, st, "cluster.logical.update_success"); v != 3 {
		t.Errorf("resolutions = %d, want 3 (one per new connection)", v)
	}
	// The name stops resolving: new connections fail as connect failures.
	dns.mu.Lock()
	delete(dns.records, "logical.weft.test.")
	dns.mu.Unlock()
	if _, err := do(t, c); err == nil || !strings.Contains(err.Error(), "connect failure") {
		t.Fatalf("request with an unresolvable name: %v", err)
	}
}

func addrsOf(hs []*Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Addr())
	}
	return out
}

package listener

import (
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func cidr(s string) *corev3.CidrRange {
	a, bits, _ := strings.Cut(s, "/")
	r := &corev3.CidrRange{AddressPrefix: a}
	if bits != "" {
		n := 0
		for _, c := range bits {
			n = n*10 + int(c-'0')
		}
		r.PrefixLen = wrapperspb.UInt32(uint32(n))
	}
	return r
}

// buildTree compiles named matches in order, as filter_chains would be.
func buildTree(t *testing.T, chains []namedMatch) *matchNode {
	t.Helper()
	root := &matchNode{}
	for i, c := range chains {
		m, err := compileMatch(c.m)
		if err != nil {
			t.Fatalf("chain %s: %v", c.name, err)
		}
		if err := root.insert(0, m, &chain{name: c.name}, i); err != nil {
			t.Fatalf("chain %s: %v", c.name, err)
		}
	}
	return root
}

type namedMatch struct {
	name string
	m    *listenerv3.FilterChainMatch
}

func TestFilterChainMatchOrder(t *testing.T) {
	// Modelled on Istio's inbound listener (15006): per-port chains, TLS vs plaintext,
	// HTTP detected by ALPN, plus unrelated criteria to exercise every level.
	chains := []namedMatch{
		{"9080-tls-http", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "tls", ApplicationProtocols: []string{"istio-http/1.1", "istio-h2"}}},
		{"9080-tls-tcp", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "tls"}},
		{"9080-plain-http", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "h2c"}}},
		{"9080-plain-tcp", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "raw_buffer"}},
		{"443-sni-exact", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(443), ServerNames: []string{"api.example.com"}}},
		{"443-sni-wild", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(443), ServerNames: []string{"*.example.com"}}},
		{"443-sni-wild-deeper", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(443), ServerNames: []string{"*.eu.example.com"}}},
		{"10.0.0.0/8", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0/8")}}},
		{"10.1.0.0/16", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.1.0.0/16")}}},
		{"10.2/16-local", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.2.0.0/16")}, SourceType: listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK}},
		{"10.2/16-ext-src", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.2.0.0/16")}, SourceType: listenerv3.FilterChainMatch_EXTERNAL, SourcePrefixRanges: []*corev3.CidrRange{cidr("192.168.0.0/16")}}},
		{"10.2/16-ext-port", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.2.0.0/16")}, SourceType: listenerv3.FilterChainMatch_EXTERNAL, SourcePorts: []uint32{5555}}},
		{"v6", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("fd00::/8")}}},
		{"catch-all", nil},
	}
	root := buildTree(t, chains)
	in := func(dst, src, sni, transport string, alpn ...string) *matchInput {
		return &matchInput{dst: netip.MustParseAddrPort(dst), src: netip.MustParseAddrPort(src), sni: sni, transport: transport, alpn: alpn}
	}
	tests := []struct {
		name string
		in   *matchInput
		want string // "" no match
	}{
		{"tls http on 9080", in("10.1.2.3:9080", "10.4.4.4:1000", "", "tls", "istio-h2"), "9080-tls-http"},
		{"tls other alpn", in("10.1.2.3:9080", "10.4.4.4:1000", "", "tls", "istio-peer-exchange"), "9080-tls-tcp"},
		{"plain http", in("10.1.2.3:9080", "10.4.4.4:1000", "", "raw_buffer", "http/1.1"), "9080-plain-http"},
		{"plain tcp", in("10.1.2.3:9080", "10.4.4.4:1000", "", "raw_buffer"), "9080-plain-tcp"},
		// Port 9080 is specific: there is no backtracking to the port-less chains.
		{"no backtracking", in("10.1.2.3:9080", "10.4.4.4:1000", "", "quic"), ""},
		{"sni exact beats wildcard", in("1.2.3.4:443", "5.6.7.8:1", "api.example.com", "tls"), "443-sni-exact"},
		{"sni wildcard", in("1.2.3.4:443", "5.6.7.8:1", "www.example.com", "tls"), "443-sni-wild"},
		{"sni longest wildcard", in("1.2.3.4:443", "5.6.7.8:1", "a.eu.example.com", "tls"), "443-sni-wild-deeper"},
		{"sni wildcard several labels", in("1.2.3.4:443", "5.6.7.8:1", "a.b.c.example.com", "tls"), "443-sni-wild"},
		{"sni none on 443", in("1.2.3.4:443", "5.6.7.8:1", "other.org", "tls"), ""},
		{"longest prefix", in("10.1.9.9:80", "5.6.7.8:1", "", "raw_buffer"), "10.1.0.0/16"},
		{"shorter prefix", in("10.7.9.9:80", "5.6.7.8:1", "", "raw_buffer"), "10.0.0.0/8"},
		{"source type local", in("10.2.0.1:80", "127.0.0.1:1", "", "raw_buffer"), "10.2/16-local"},
		{"source type same ip", in("10.2.0.1:80", "10.2.0.1:1", "", "raw_buffer"), "10.2/16-local"},
		{"external by source prefix", in("10.2.0.1:80", "192.168.1.1:1", "", "raw_buffer"), "10.2/16-ext-src"},
		{"external by source port", in("10.2.0.1:80", "172.16.0.1:5555", "", "raw_buffer"), "10.2/16-ext-port"},
		{"external no source match", in("10.2.0.1:80", "172.16.0.1:6666", "", "raw_buffer"), ""},
		{"ipv6 prefix", in("[fd00::1]:80", "[fd00::2]:1", "", "raw_buffer"), "v6"},
		{"catch-all", in("192.0.2.1:80", "5.6.7.8:1", "", "raw_buffer"), "catch-all"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if ch := root.find(tc.in); ch != nil {
				got = ch.name
			}
			if got != tc.want {
				t.Fatalf("chain %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFilterChainMatchErrors(t *testing.T) {
	tests := []struct {
		name   string
		chains []namedMatch
		want   string
	}{
		{"duplicate empty", []namedMatch{{"a", nil}, {"b", &listenerv3.FilterChainMatch{}}}, "filter_chains[1]: filter_chain_match duplicates filter_chains[0]"},
		{"duplicate overlapping lists", []namedMatch{
			{"a", &listenerv3.FilterChainMatch{ServerNames: []string{"a.com", "b.com"}}},
			{"b", &listenerv3.FilterChainMatch{ServerNames: []string{"B.com"}}}}, "duplicates filter_chains[0]"},
		{"bad cidr", []namedMatch{{"a", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0/40")}}}}, "prefix_ranges[0].prefix_len"},
		{"bad server name", []namedMatch{{"a", &listenerv3.FilterChainMatch{ServerNames: []string{"a.*.com"}}}}, "server_names[0]"},
		{"bare star", []namedMatch{{"a", &listenerv3.FilterChainMatch{ServerNames: []string{"*"}}}}, "server_names[0]"},
		{"suffix", []namedMatch{{"a", &listenerv3.FilterChainMatch{AddressSuffix: "x"}}}, "address_suffix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := &matchNode{}
			var err error
			for i, c := range tc.chains {
				var m *compiledMatch
				if m, err = compileMatch(c.m); err != nil {
					break
				}
				if err = root.insert(0, m, &chain{name: c.name}, i); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func BenchmarkFilterChainFind(b *testing.B) {
	b.ReportAllocs()
	benchFind(b, b.N)
}

// TestBenchFindSize1 keeps the benchmark compiling and running.
func TestBenchFindSize1(t *testing.T) { benchFind(t, 1) }

func benchFind(tb testing.TB, n int) {
	var chains []namedMatch
	for p := uint32(8000); p < 8050; p++ {
		chains = append(chains,
			namedMatch{"tls", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p), TransportProtocol: "tls", ApplicationProtocols: []string{"istio-h2"}}},
			namedMatch{"raw", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p), TransportProtocol: "raw_buffer"}})
	}
	root := &matchNode{}
	for i, c := range chains {
		m, _ := compileMatch(c.m)
		if err := root.insert(0, m, &chain{name: c.name}, i); err != nil {
			tb.Fatal(err)
		}
	}
	in := &matchInput{dst: netip.MustParseAddrPort("10.0.0.1:8025"), src: netip.MustParseAddrPort("10.0.0.2:4000"), transport: "tls", alpn: []string{"istio-h2"}}
	if b, ok := tb.(*testing.B); ok {
		b.ResetTimer()
	}
	for i := 0; i < n; i++ {
		if ch := root.find(in); ch == nil || ch.name != "tls" {
			tb.Fatal("wrong chain")
		}
	}
}

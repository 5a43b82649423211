package listener

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

// Filter chain selection follows Envoy's filter_chain_match rules: the criteria are
// applied in a fixed order (destination port, destination IP, server name, transport
// protocol, application protocols, direct source IP, source type, source IP, source
// port). At each step the most specific value configured by any chain wins, and a chain
// that leaves the criterion empty is considered only when no specific value matches;
// there is no backtracking to a less specific branch when a later step fails. The rules
// are compiled once into a tree with one level per criterion.

const (
	lvlDstPort = iota
	lvlDstIP
	lvlServerName
	lvlTransport
	lvlALPN
	lvlDirectSrcIP
	lvlSourceType
	lvlSrcIP
	lvlSrcPort
	numLevels
)

// matchNode is one level of the tree; only the fields of its level are used.
type matchNode struct {
	ports map[uint32]*matchNode // destination or source port
	cidrs []cidrNode            // IP levels, longest prefix first
	names map[string]*matchNode // exact server names, transport protocol, ALPN
	wild  map[string]*matchNode // server names "*.example.com" keyed ".example.com"
	types [3]*matchNode         // source type: LOCAL, EXTERNAL (index 0 unused)
	any   *matchNode            // chains with the criterion empty
	leaf  *chain
	// leafIndex is the filter_chains index of leaf, for duplicate errors.
	leafIndex int
}

type cidrNode struct {
	prefix netip.Prefix
	node   *matchNode
}

// matchInput is what a connection offers to the matcher.
type matchInput struct {
	dst, src  netip.AddrPort
	sni       string
	transport string
	alpn      []string
}

// compiledMatch is one chain's filter_chain_match with its values parsed.
type compiledMatch struct {
	dstPort    []uint32
	dstIP      []netip.Prefix
	names      []string
	transport  []string
	alpn       []string
	directSrc  []netip.Prefix
	sourceType int // 0 any, 1 local, 2 external
	srcIP      []netip.Prefix
	srcPorts   []uint32
}

func compileMatch(m *listenerv3.FilterChainMatch) (*compiledMatch, error) {
	cm := &compiledMatch{}
	if m == nil {
		return cm, nil
	}
	if m.GetAddressSuffix() != "" || m.GetSuffixLen() != nil {
		return nil, fmt.Errorf("address_suffix/suffix_len: not supported")
	}
	if p := m.GetDestinationPort(); p != nil {
		if p.GetValue() == 0 || p.GetValue() > 65535 {
			return nil, fmt.Errorf("destination_port: %d out of range 1..65535", p.GetValue())
		}
		cm.dstPort = []uint32{p.GetValue()}
	}
	var err error
	if cm.dstIP, err = cidrs("prefix_ranges", m.GetPrefixRanges()); err != nil {
		return nil, err
	}
	for i, n := range m.GetServerNames() {
		n = strings.ToLower(n)
		if n == "" || n == "*" || strings.Contains(n[1:], "*") || (n[0] == '*' && !strings.HasPrefix(n, "*.")) {
			return nil, fmt.Errorf("server_names[%d]: %q is not a name or a \"*.\" wildcard", i, n)
		}
		cm.names = append(cm.names, n)
	}
	if t := m.GetTransportProtocol(); t != "" {
		cm.transport = []string{t}
	}
	cm.alpn = m.GetApplicationProtocols()
	if cm.directSrc, err = cidrs("direct_source_prefix_ranges", m.GetDirectSourcePrefixRanges()); err != nil {
		return nil, err
	}
	switch m.GetSourceType() {
	case listenerv3.FilterChainMatch_ANY:
	case listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK:
		cm.sourceType = 1
	case listenerv3.FilterChainMatch_EXTERNAL:
		cm.sourceType = 2
	default:
		return nil, fmt.Errorf("source_type: unknown %v", m.GetSourceType())
	}
	if cm.srcIP, err = cidrs("source_prefix_ranges", m.GetSourcePrefixRanges()); err != nil {
		return nil, err
	}
	for i, p := range m.GetSourcePorts() {
		if p == 0 || p > 65535 {
			return nil, fmt.Errorf("source_ports[%d]: %d out of range 1..65535", i, p)
		}
		cm.srcPorts = append(cm.srcPorts, p)
	}
	return cm, nil
}

func cidrs(field string, rs []*corev3.CidrRange) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range rs {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("%s[%d].address_prefix: %w", field, i, err)
		}
		a = a.Unmap()
		bits := a.BitLen()
		if r.GetPrefixLen() != nil {
			bits = int(r.GetPrefixLen().GetValue())
		}
		p, err := a.Prefix(bits)
		if err != nil {
			return nil, fmt.Errorf("%s[%d].prefix_len: %w", field, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// insert adds ch under every combination of its match values. A leaf already taken
// means two chains have the same rules, which Envoy rejects.
func (n *matchNode) insert(lvl int, m *compiledMatch, ch *chain, idx int) error {
	if lvl == numLevels {
		if n.leaf != nil {
			return fmt.Errorf("filter_chains[%d]: filter_chain_match duplicates filter_chains[%d]", idx, n.leafIndex)
		}
		n.leaf, n.leafIndex = ch, idx
		return nil
	}
	next := func(child **matchNode) error {
		if *child == nil {
			*child = &matchNode{}
		}
		return (*child).insert(lvl+1, m, ch, idx)
	}
	portLevel := func(ports []uint32) error {
		if len(ports) == 0 {
			return next(&n.any)
		}
		for _, p := range ports {
			if n.ports == nil {
				n.ports = map[uint32]*matchNode{}
			}
			c := n.ports[p]
			if err := next(&c); err != nil {
				return err
			}
			n.ports[p] = c
		}
		return nil
	}
	nameLevel := func(names []string) error {
		if len(names) == 0 {
			return next(&n.any)
		}
		for _, s := range names {
			tbl := &n.names
			key := s
			if strings.HasPrefix(s, "*.") {
				tbl, key = &n.wild, s[1:]
			}
			if *tbl == nil {
				*tbl = map[string]*matchNode{}
			}
			c := (*tbl)[key]
			if err := next(&c); err != nil {
				return err
			}
			(*tbl)[key] = c
		}
		return nil
	}
	cidrLevel := func(ps []netip.Prefix) error {
		if len(ps) == 0 {
			return next(&n.any)
		}
		for _, p := range ps {
			found := false
			for j := range n.cidrs {
				if n.cidrs[j].prefix == p {
					found = true
					if err := next(&n.cidrs[j].node); err != nil {
						return err
					}
				}
			}
			if found {
				continue
			}
			var c *matchNode
			if err := next(&c); err != nil {
				return err
			}
			n.cidrs = append(n.cidrs, cidrNode{prefix: p, node: c})
			// Longest prefix first; IPv4 and IPv6 never contain each other's addresses.
			sort.SliceStable(n.cidrs, func(a, b int) bool { return n.cidrs[a].prefix.Bits() > n.cidrs[b].prefix.Bits() })
		}
		return nil
	}
	switch lvl {
	case lvlDstPort:
		return portLevel(m.dstPort)
	case lvlDstIP:
		return cidrLevel(m.dstIP)
	case lvlServerName:
		return nameLevel(m.names)
	case lvlTransport:
		return nameLevel(m.transport)
	case lvlALPN:
		return nameLevel(m.alpn)
	case lvlDirectSrcIP:
		return cidrLevel(m.directSrc)
	case lvlSourceType:
		if m.sourceType == 0 {
			return next(&n.any)
		}
		return next(&n.types[m.sourceType])
	case lvlSrcIP:
		return cidrLevel(m.srcIP)
	default:
		return portLevel(m.srcPorts)
	}
}

// find walks the tree for one connection; nil when no chain matches.
func (n *matchNode) find(in *matchInput) *chain {
	for lvl := 0; n != nil; lvl++ {
		if lvl == numLevels {
			return n.leaf
		}
		var c *matchNode
		switch lvl {
		case lvlDstPort:
			c = n.ports[uint32(in.dst.Port())]
		case lvlDstIP:
			c = n.cidr(in.dst.Addr())
		case lvlServerName:
			c = n.serverName(in.sni)
		case lvlTransport:
			c = n.names[in.transport]
		case lvlALPN:
			for _, p := range in.alpn {
				if c = n.names[p]; c != nil {
					break
				}
			}
		case lvlDirectSrcIP, lvlSrcIP:
			c = n.cidr(in.src.Addr())
		case lvlSourceType:
			// SAME_IP_OR_LOOPBACK: the source is a loopback address or the
			// destination's own address.
			src := in.src.Addr()
			if src.IsLoopback() || src == in.dst.Addr() {
				c = n.types[1]
			} else {
				c = n.types[2]
			}
		case lvlSrcPort:
			c = n.ports[uint32(in.src.Port())]
		}
		if c == nil {
			c = n.any
		}
		n = c
	}
	return nil
}

func (n *matchNode) cidr(a netip.Addr) *matchNode {
	for _, c := range n.cidrs {
		if c.prefix.Contains(a) {
			return c.node
		}
	}
	return nil
}

// serverName tries the exact name, then each wildcard suffix from the longest:
// "a.b.example.com" -> "*.b.example.com", "*.example.com", "*.com".
func (n *matchNode) serverName(sni string) *matchNode {
	if sni == "" {
		return nil
	}
	if c := n.names[sni]; c != nil {
		return c
	}
	if n.wild == nil {
		return nil
	}
	for i := 0; i < len(sni); i++ {
		if sni[i] == '.' {
			if c := n.wild[sni[i:]]; c != nil {
				return c
			}
		}
	}
	return nil
}

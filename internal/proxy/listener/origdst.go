package listener

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Linux's SO_ORIGINAL_DST (netfilter, level SOL_IP) and IP6T_SO_ORIGINAL_DST (level
// SOL_IPV6) share the option number 80; they return the destination the connection had
// before an iptables REDIRECT/DNAT as a sockaddr_in or sockaddr_in6.
const soOriginalDst = 80

const (
	afInet  = 2
	afInet6 = 10
)

// parseSockaddr decodes a sockaddr_in (16 bytes) or sockaddr_in6 (28 bytes) as the
// kernel writes it: family in host byte order (little-endian on every platform weft
// builds for), port and address in network byte order.
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, fmt.Errorf("listener: sockaddr: %d bytes", len(b))
	}
	switch fam := binary.LittleEndian.Uint16(b); fam {
	case afInet:
		if len(b) < 8 {
			return netip.AddrPort{}, fmt.Errorf("listener: sockaddr_in: %d bytes", len(b))
		}
		port := binary.BigEndian.Uint16(b[2:])
		addr := netip.AddrFrom4([4]byte(b[4:8]))
		return netip.AddrPortFrom(addr, port), nil
	case afInet6:
		if len(b) < 24 {
			return netip.AddrPort{}, fmt.Errorf("listener: sockaddr_in6: %d bytes", len(b))
		}
		port := binary.BigEndian.Uint16(b[2:])
		// b[4:8] is the flow info; the address follows.
		addr := netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		return netip.AddrPortFrom(addr, port), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("listener: sockaddr: unknown family %d", fam)
	}
}

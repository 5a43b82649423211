package upstream

import (
	"net/http"
	"net/netip"
	"time"
)

// OriginalDst returns the destination an ORIGINAL_DST cluster should use for a
// request: with original_dst_lb_config.use_http_header, the address in the
// OriginalDstHeader header when present (an invalid value yields an invalid AddrPort,
// so Pick fails with ErrNoHealthyUpstream); otherwise connDst, the downstream
// connection's original destination.
func (c *Cluster) OriginalDst(h http.Header, connDst netip.AddrPort) netip.AddrPort {
	if c.cfg.origDstHeader == "" {
		return connDst
	}
	v := h.Get(c.cfg.origDstHeader)
	if v == "" {
		return connDst
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil {
		return netip.AddrPort{}
	}
	return ap
}

// pickOriginalDst returns the host for dst, creating it on first use. Lookups of known
// hosts take no lock.
func (c *Cluster) pickOriginalDst(dst netip.AddrPort) (*Host, error) {
	if !dst.IsValid() || dst.Port() == 0 && c.cfg.origDstPort == 0 {
		return nil, ErrNoHealthyUpstream
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if c.cfg.origDstPort != 0 {
		// original_dst_lb_config.upstream_port_override
		dst = netip.AddrPortFrom(dst.Addr(), uint16(c.cfg.origDstPort))
	}
	if h := (*c.origDst.Load())[dst]; h != nil {
		if !h.used.Load() {
			h.used.Store(true)
		}
		return h, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrNoHealthyUpstream
	}
	old := *c.origDst.Load()
	if h := old[dst]; h != nil {
		h.used.Store(true)
		return h, nil
	}
	h := c.newHost(dst.String(), dst, &hostMeta{weight: 1})
	h.used.Store(true)
	next := make(map[netip.AddrPort]*Host, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[dst] = h
	c.origDst.Store(&next)
	c.stats.MembershipChange.Inc()
	c.rebuildLocked()
	return h, nil
}

// runOriginalDstCleanup removes, every cleanup_interval, the hosts not picked since
// the previous round; their connections drain.
func (c *Cluster) runOriginalDstCleanup() {
	t := time.NewTicker(c.cfg.cleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.cleanupOriginalDst()
	}
}

func (c *Cluster) cleanupOriginalDst() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	old := *c.origDst.Load()
	next := make(map[netip.AddrPort]*Host, len(old))
	var gone []*Host
	for k, h := range old {
		if h.used.Swap(false) || h.ActiveRequests() > 0 {
			next[k] = h
			continue
		}
		gone = append(gone, h)
	}
	if len(gone) == 0 {
		return
	}
	c.origDst.Store(&next)
	for _, h := range gone {
		h.drain()
		c.detector.Forget(h.addr)
	}
	c.stats.OriginalDstCleanup.Add(uint64(len(gone)))
	c.stats.MembershipChange.Inc()
	c.rebuildLocked()
}

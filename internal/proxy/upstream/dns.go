package upstream

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// lookup resolves name by the cluster's dns_lookup_family: V4_ONLY, V6_ONLY,
// V4_PREFERRED (v4, else v6), AUTO (v6, else v4) or ALL.
func (c *Cluster) lookup(ctx context.Context, name string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	r := c.m.resolver()
	one := func(network string) ([]netip.Addr, error) {
		ips, err := r.LookupNetIP(ctx, network, name)
		for i := range ips {
			ips[i] = ips[i].Unmap()
		}
		return ips, err
	}
	switch c.cfg.dnsFamily {
	case clusterv3.Cluster_V4_ONLY:
		return one("ip4")
	case clusterv3.Cluster_V6_ONLY:
		return one("ip6")
	case clusterv3.Cluster_ALL:
		return one("ip")
	case clusterv3.Cluster_V4_PREFERRED:
		if ips, err := one("ip4"); err == nil && len(ips) > 0 {
			return ips, nil
		}
		return one("ip6")
	default: // AUTO
		if ips, err := one("ip6"); err == nil && len(ips) > 0 {
			return ips, nil
		}
		return one("ip4")
	}
}

// resolveLogical is the dial-time resolution of a LOGICAL_DNS host: the first address
// the name resolves to now, so each new connection follows DNS while the cluster keeps
// one logical host.
func (c *Cluster) resolveLogical(ctx context.Context, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	ips, err := c.lookup(ctx, host)
	if err != nil {
		c.stats.DNSFailure.Inc()
		return "", fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		c.stats.DNSFailure.Inc()
		return "", fmt.Errorf("resolve %s: no address", host)
	}
	c.stats.DNSSuccess.Inc()
	return net.JoinHostPort(ips[0].String(), port), nil
}

// runStrictDNS resolves every endpoint of load_assignment at dns_refresh_rate; each
// address a name resolves to is a host (with the endpoint's port, weight, priority and
// locality). A name that fails to resolve keeps its previous addresses.
func (c *Cluster) runStrictDNS() {
	last := make(map[int][]netip.Addr) // by endpoint index
	for {
		c.resolveStrictOnce(last)
		select {
		case <-c.done:
			return
		case <-time.After(c.cfg.dnsRefresh):
		}
	}
}

func (c *Cluster) resolveStrictOnce(last map[int][]netip.Addr) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.dnsRefresh+5*time.Second)
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	cache := map[string][]netip.Addr{}
	failed := false
	for i, e := range c.cfg.endpoints {
		ips, ok := cache[e.host]
		if !ok {
			var err error
			ips, err = c.lookup(ctx, e.host)
			if err != nil {
				if c.isDone() {
					return
				}
				failed = true
				c.logger().Warn("dns resolution failed", "name", e.host, "err", err)
				ips = last[i]
			}
			cache[e.host] = ips
		}
		last[i] = ips
	}
	if failed {
		c.stats.DNSFailure.Inc()
	} else {
		c.stats.DNSSuccess.Inc()
	}
	eps := expandResolved(c.cfg.endpoints, last)
	c.setHosts(eps)
	c.markWarm()
}

func (c *Cluster) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// expandResolved turns each resolved address of each endpoint into one host spec with
// the endpoint's port, weight, priority and locality, and the DNS name as hostname.
func expandResolved(endpoints []endpointSpec, addrs map[int][]netip.Addr) []endpointSpec {
	var eps []endpointSpec
	for i, e := range endpoints {
		for _, ip := range addrs[i] {
			r := e
			if r.hostname == "" {
				r.hostname = e.host
			}
			r.host = ip.String()
			eps = append(eps, r)
		}
	}
	return eps
}

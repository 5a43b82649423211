package upstream

import (
	"context"
	"net"
	"strconv"

	"github.com/weft-mesh/weft/internal/proxy/stats"
	"github.com/weft-mesh/weft/internal/proxy/upstream/health"
	"github.com/weft-mesh/weft/internal/proxy/upstream/outlier"
	"github.com/weft-mesh/weft/internal/proxy/upstream/pool"
)

// Wiring to package outlier (passive ejection, cluster.outlier_detection) and package
// health (active checks, cluster.health_checks). Both report changes through
// callbacks; the cluster turns them into Host.Available and refreshes the priority
// loads of its balancer.

// initChecks builds the cluster's outlier detector and health checker (not started).
func (c *Cluster) initChecks() error {
	tags := []stats.Tag{pool.ClusterTag(c.name)}
	det, err := outlier.New(c.cfg.outlier, outlier.Options{
		OnChange: c.refresh,
		Stats:    c.m.opts.Stats,
		Tags:     tags,
	})
	if err != nil {
		return err
	}
	chk, err := health.New(c.cfg.healthChecks, health.Options{
		Cluster:  c.name,
		Dial:     c.healthDial,
		OnChange: c.onHealthChange,
		OnCheck:  c.onHealthCheck,
		Stats:    c.m.opts.Stats,
		Tags:     tags,
		Log:      c.logger(),
	})
	if err != nil {
		return err
	}
	c.detector, c.checker = det, chk
	return nil
}

// startChecks runs the detector's interval sweep and the health checks. A cluster
// with neither (most of a mesh's) starts nothing: no goroutine waits for its end.
func (c *Cluster) startChecks() {
	if c.detector == nil && c.checker == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-c.done
		cancel()
	}()
	c.detector.Start(ctx)
	c.checker.Start(ctx)
}

// stopChecks ends both for good.
func (c *Cluster) stopChecks() {
	c.checker.Stop()
	c.detector.Close()
}

// hostByKey finds a current host by address without a lock.
func (c *Cluster) hostByKey(key string) *Host {
	return (*c.byKey.Load())[key]
}

func (c *Cluster) onHealthChange(key string, healthy bool) {
	h := c.hostByKey(key)
	if h == nil {
		return // removed meanwhile
	}
	if h.hcFailed.Swap(!healthy) != !healthy {
		c.refresh()
	}
}

func (c *Cluster) onHealthCheck(key string, passed bool) {
	if !passed {
		return
	}
	if h := c.hostByKey(key); h != nil {
		// successful_active_health_check_uneject_host
		h.od.ActiveCheckPassed()
	}
}

// healthDial opens a health check connection with the host's transport socket,
// to the endpoint's health_check_config.port_value when set. Health checks do not
// count against the circuit breakers, as in Envoy.
func (c *Cluster) healthDial(ctx context.Context, addr string) (net.Conn, error) {
	socket := 0
	if h := c.hostByKey(addr); h != nil {
		meta := h.meta.Load()
		socket = meta.socket
		if meta.hcPort != 0 {
			if ip, _, err := net.SplitHostPort(addr); err == nil {
				addr = net.JoinHostPort(ip, strconv.Itoa(int(meta.hcPort)))
			}
		}
	}
	return c.poolCfgs[socket][0].DialDirect(ctx, addr)
}

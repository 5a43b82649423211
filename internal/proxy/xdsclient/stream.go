package xdsclient

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
)

// session is one ADS stream. Only the Run goroutine sends on it.
type session struct {
	delta bool
	sotw  grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	dstr  grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
}

// MaxResponseBytes bounds one xDS response the client accepts (256 MiB).
const MaxResponseBytes = 256 << 20

// runStream dials, opens one ADS stream and serves it until it fails or ctx ends.
// healthy reports whether the server answered at least once (resets the backoff).
func (c *Client) runStream(ctx context.Context) (healthy bool, err error) {
	// A fresh ClientConn per attempt: the reconnect pace is this client's backoff, not
	// grpc's own (whose default grows to 120s), and DNS is resolved again each time.
	// gRPC's default 4 MB receive limit is smaller than a full CDS response in a large
	// mesh (8.3 MB for 10,000 services): the proxy would retry forever. Envoy's own limit
	// for xDS is effectively unbounded; the caller's options can still lower it.
	opts := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes))}, c.cfg.DialOpts...)
	conn, err := grpc.NewClient(c.cfg.Target, opts...)
	if err != nil {
		return false, err
	}
	defer conn.Close()

	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	sess := &session{delta: c.cfg.Delta}
	errc := make(chan error, 1)
	var (
		sotwCh  chan *discoveryv3.DiscoveryResponse
		deltaCh chan *discoveryv3.DeltaDiscoveryResponse
	)
	if c.cfg.Delta {
		s, err := ads.DeltaAggregatedResources(sctx)
		if err != nil {
			return false, fmt.Errorf("xdsclient: open delta ADS stream: %w", err)
		}
		sess.dstr = s
		deltaCh = make(chan *discoveryv3.DeltaDiscoveryResponse)
		wg.Add(1)
		go func() { defer wg.Done(); recvLoop(sctx, s.Recv, deltaCh, errc) }()
	} else {
		s, err := ads.StreamAggregatedResources(sctx)
		if err != nil {
			return false, fmt.Errorf("xdsclient: open ADS stream: %w", err)
		}
		sess.sotw = s
		sotwCh = make(chan *discoveryv3.DiscoveryResponse)
		wg.Add(1)
		go func() { defer wg.Done(); recvLoop(sctx, s.Recv, sotwCh, errc) }()
	}
	c.setConnected(true, nil)
	c.log.Info("xds stream open", "delta", c.cfg.Delta)

	for _, st := range c.types {
		st.nonce, st.started = "", false
		st.pendingErr, st.pendingDue = nil, time.Time{}
	}
	if err := c.syncSubscriptions(nil); err != nil {
		return false, err
	}
	for _, u := range c.requestOrder() {
		if err := c.sendInitial(sess, c.types[u]); err != nil {
			return false, fmt.Errorf("xdsclient: send: %w", err)
		}
	}

	for {
		var (
			due   <-chan time.Time
			timer *time.Timer
		)
		if at, ok := c.nextPendingNACK(); ok {
			timer = time.NewTimer(time.Until(at))
			due = timer.C
		}
		var err error
		select {
		case <-ctx.Done():
			return healthy, ctx.Err()
		case err := <-errc:
			return healthy, fmt.Errorf("xdsclient: stream: %w", err)
		case r := <-sotwCh:
			healthy = true
			err = c.handleSotW(sess, r)
		case r := <-deltaCh:
			healthy = true
			err = c.handleDelta(sess, r)
		case <-c.wake:
			err = c.syncSubscriptions(sess)
		case <-due:
			err = c.flushPendingNACKs(sess)
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return healthy, fmt.Errorf("xdsclient: send: %w", err)
		}
	}
}

func recvLoop[T any](ctx context.Context, recv func() (*T, error), out chan<- *T, errc chan<- error) {
	for {
		m, err := recv()
		if err != nil {
			errc <- err // buffered; the only sender
			return
		}
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
	}
}

// sendInitial sends the first request of a type on a new stream: wildcard types always,
// named types only when something is subscribed (an empty first request would mean
// wildcard under the xDS legacy rule).
func (c *Client) sendInitial(sess *session, st *typeState) error {
	if !st.wildcard && len(st.names) == 0 {
		return nil
	}
	if sess.delta {
		return c.sendDeltaInitial(sess, st)
	}
	return c.sendSotW(sess, st)
}

// sendSotW sends the type's current request: the last ACKed version, the last nonce,
// the subscribed names, and the pending NACK's error_detail if any.
func (c *Client) sendSotW(sess *session, st *typeState) error {
	req := &discoveryv3.DiscoveryRequest{
		TypeUrl:       st.url,
		VersionInfo:   st.version,
		ResponseNonce: st.nonce,
	}
	if !st.wildcard {
		req.ResourceNames = st.sortedNames()
	}
	if !st.started {
		req.Node = c.cfg.Node
	}
	req.ErrorDetail = st.takePendingNACK()
	st.started = true
	return sess.sotw.Send(req)
}

func (c *Client) sendDeltaInitial(sess *session, st *typeState) error {
	req := &discoveryv3.DeltaDiscoveryRequest{
		Node:                    c.cfg.Node,
		TypeUrl:                 st.url,
		InitialResourceVersions: maps.Clone(st.vers),
	}
	if !st.wildcard {
		req.ResourceNamesSubscribe = st.sortedNames()
	}
	st.started = true
	return sess.dstr.Send(req)
}

// sendDeltaAck ACKs (or, with a pending NACK, NACKs) the last response of the type.
func (c *Client) sendDeltaAck(sess *session, st *typeState) error {
	return sess.dstr.Send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl:       st.url,
		ResponseNonce: st.nonce,
		ErrorDetail:   st.takePendingNACK(),
	})
}

func (st *typeState) takePendingNACK() *statuspb.Status {
	if st.pendingErr == nil {
		return nil
	}
	s := &statuspb.Status{Code: int32(codes.InvalidArgument), Message: st.pendingErr.Error()}
	st.pendingErr, st.pendingDue = nil, time.Time{}
	return s
}

func (c *Client) handleSotW(sess *session, resp *discoveryv3.DiscoveryResponse) error {
	st := c.types[resp.GetTypeUrl()]
	if st == nil || !st.started {
		c.log.Warn("xds response for a type not requested, ignored", "type", resp.GetTypeUrl(), "nonce", resp.GetNonce())
		return nil
	}
	st.nonce = resp.GetNonce()
	version := resp.GetVersionInfo()
	decoded, err := decodeSotW(st.url, resp.GetResources())
	if err == nil {
		next := decoded
		if !st.wildcard {
			// A named type's response may carry only some of the subscribed resources:
			// merge. Names not (or no longer) subscribed are ignored.
			next = cloneMap(st.res)
			for n, a := range decoded {
				if st.subscribed(n) {
					next[n] = a
				}
			}
		}
		if version != st.version || !sameResources(next, st.res) {
			err = c.h.Apply(st.url, version, next)
		}
		if err == nil {
			st.accept(version, next, nil)
			c.publish(st)
			c.log.Debug("xds ACK", "type", shortType(st.url), "version", version, "nonce", st.nonce, "resources", len(next))
			return c.sendSotW(sess, st)
		}
	}
	return c.nack(sess, st, version, err)
}

func (c *Client) handleDelta(sess *session, resp *discoveryv3.DeltaDiscoveryResponse) error {
	st := c.types[resp.GetTypeUrl()]
	if st == nil || !st.started {
		c.log.Warn("xds delta response for a type not requested, ignored", "type", resp.GetTypeUrl(), "nonce", resp.GetNonce())
		return nil
	}
	st.nonce = resp.GetNonce()
	version := resp.GetSystemVersionInfo()
	next, nextVers := cloneMap(st.res), maps.Clone(st.vers)
	if nextVers == nil {
		nextVers = map[string]string{}
	}
	err := func() error {
		for i, r := range resp.GetResources() {
			name := r.GetName()
			if name == "" {
				name = r.GetResourceName().GetName()
			}
			switch {
			case name == "":
				return fmt.Errorf("resources[%d]: no name", i)
			case !st.subscribed(name):
				continue // not asked for (or unsubscribed meanwhile)
			case r.GetResource() == nil:
				continue // a TTL refresh carries no body: keep what we have
			case r.GetResource().GetTypeUrl() != st.url:
				return fmt.Errorf("resources[%d] %q: type %s in a %s response", i, name, r.GetResource().GetTypeUrl(), st.url)
			}
			next[name] = r.GetResource()
			nextVers[name] = r.GetVersion()
		}
		return nil
	}()
	if err == nil {
		for _, n := range resp.GetRemovedResources() {
			delete(next, n)
			delete(nextVers, n)
		}
		for _, rn := range resp.GetRemovedResourceNames() {
			delete(next, rn.GetName())
			delete(nextVers, rn.GetName())
		}
		if version != st.version || !sameResources(next, st.res) {
			err = c.h.Apply(st.url, version, next)
		}
		if err == nil {
			st.accept(version, next, nextVers)
			c.publish(st)
			c.log.Debug("xds ACK", "type", shortType(st.url), "version", version, "nonce", st.nonce, "resources", len(next))
			return c.sendDeltaAck(sess, st)
		}
	}
	return c.nack(sess, st, version, err)
}

// nack records a rejected update and sends the NACK: the previous good version (SotW),
// the response's nonce, and error_detail.
func (c *Client) nack(sess *session, st *typeState, version string, err error) error {
	st.nacks++
	st.lastNACK = err.Error()
	if st.nackStreak > 0 && version == st.nackVersion {
		st.nackStreak++
	} else {
		st.nackVersion, st.nackStreak = version, 1
	}
	st.pendingErr = err
	c.publish(st)
	c.log.Warn("xds NACK", "type", shortType(st.url), "version", version, "nonce", st.nonce, "error", err)
	if sess.delta {
		return c.sendDeltaAck(sess, st)
	}
	if st.nackStreak > 1 {
		// A SotW server answers a NACK by resending its current version (go-control-plane's
		// snapshot cache does), so NACKing the same version at once again would spin both
		// sides. Repeat NACKs of one version are paced like reconnects; a Subscribe in the
		// meantime sends the pending NACK with its request.
		st.pendingDue = time.Now().Add(backoff(c.cfg.BackoffBase, c.cfg.BackoffMax, st.nackStreak-2))
		return nil
	}
	return c.sendSotW(sess, st)
}

func (c *Client) nextPendingNACK() (time.Time, bool) {
	var at time.Time
	for _, st := range c.types {
		if st.pendingErr != nil && !st.pendingDue.IsZero() && (at.IsZero() || st.pendingDue.Before(at)) {
			at = st.pendingDue
		}
	}
	return at, !at.IsZero()
}

func (c *Client) flushPendingNACKs(sess *session) error {
	now := time.Now()
	for _, u := range c.requestOrder() {
		st := c.types[u]
		if st.pendingErr != nil && !st.pendingDue.IsZero() && !now.Before(st.pendingDue) {
			if err := c.sendSotW(sess, st); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncSubscriptions applies the names set by Subscribe since the last call: names no
// longer wanted leave the state (the Handler gets the reduced state), and on a live
// stream (sess != nil) the change is sent.
func (c *Client) syncSubscriptions(sess *session) error {
	c.mu.Lock()
	changes := c.desired
	c.desired = map[string][]string{}
	c.mu.Unlock()
	for _, url := range slices.Sorted(maps.Keys(changes)) {
		names := changes[url]
		st := c.typeState(url)
		want := make(map[string]struct{}, len(names))
		var added, removed []string
		for _, n := range names {
			want[n] = struct{}{}
			if _, ok := st.names[n]; !ok {
				added = append(added, n)
			}
		}
		for n := range st.names {
			if _, ok := want[n]; !ok {
				removed = append(removed, n)
			}
		}
		if len(added) == 0 && len(removed) == 0 {
			continue
		}
		slices.Sort(removed)
		st.names = want
		c.dropUnsubscribed(st, removed)
		c.publish(st)
		c.log.Debug("xds subscribe", "type", shortType(url), "add", added, "remove", removed)
		if sess == nil {
			continue
		}
		var err error
		switch {
		case !st.started:
			err = c.sendInitial(sess, st)
		case sess.delta:
			err = sess.dstr.Send(&discoveryv3.DeltaDiscoveryRequest{
				TypeUrl:                  st.url,
				ResourceNamesSubscribe:   added,
				ResourceNamesUnsubscribe: removed,
			})
		default:
			err = c.sendSotW(sess, st)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dropUnsubscribed removes unsubscribed names from the state and gives the Handler the
// reduced state. The names are gone whatever the Handler says: nothing can be NACKed.
func (c *Client) dropUnsubscribed(st *typeState, removed []string) {
	var next map[string]*anypb.Any
	var nextVers map[string]string
	for _, n := range removed {
		if _, ok := st.res[n]; !ok {
			continue
		}
		if next == nil {
			next, nextVers = cloneMap(st.res), maps.Clone(st.vers)
		}
		delete(next, n)
		delete(nextVers, n)
	}
	if next == nil {
		return
	}
	if err := c.h.Apply(st.url, st.version, next); err != nil {
		c.log.Warn("xds handler failed on the state left after unsubscribing", "type", shortType(st.url), "error", err)
	}
	st.res, st.vers = next, nextVers
}

func cloneMap(m map[string]*anypb.Any) map[string]*anypb.Any {
	out := make(map[string]*anypb.Any, len(m)+1)
	maps.Copy(out, m)
	return out
}

func shortType(u string) string {
	return u[strings.LastIndexByte(u, '/')+1:]
}

// backoff returns the delay before retry number attempt (0-based): the exponential
// bound min(base*2^attempt, max), jittered uniformly over its upper half so that many
// proxies restarted together do not reconnect in step.
func backoff(base, max time.Duration, attempt int) time.Duration {
	d := max
	if attempt < 32 {
		if e := base << attempt; e > 0 && e < max {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

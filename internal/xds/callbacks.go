package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/server/config"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/internal/node"
)

// streamKey names a stream: go-control-plane numbers SotW and Delta streams separately.
type streamKey struct {
	delta bool
	id    int64
}

// streamState is one open xDS stream.
type streamState struct {
	key      streamKey
	typeURL  string // the service's type; "" for ADS
	openedAt time.Time
	ps       *proxyState // nil until the first request names the node
	// last response sent per type URL: a request carrying its nonce ACKs or NACKs it.
	last map[string]sentResponse
}

type sentResponse struct {
	nonce, version string
}

// callbacks adapts go-control-plane's server callbacks to the Server; they run on the
// stream's goroutine, synchronously with its request/response processing.
type callbacks struct{ s *Server }

var _ serverv3.Callbacks = (*callbacks)(nil)

func (c *callbacks) OnStreamOpen(_ context.Context, id int64, typeURL string) error {
	return c.s.openStream(streamKey{id: id}, typeURL)
}

func (c *callbacks) OnDeltaStreamOpen(_ context.Context, id int64, typeURL string) error {
	return c.s.openStream(streamKey{delta: true, id: id}, typeURL)
}

func (c *callbacks) OnStreamClosed(id int64, _ *core.Node) {
	c.s.closeStream(streamKey{id: id})
}

func (c *callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) {
	c.s.closeStream(streamKey{delta: true, id: id})
}

func (c *callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	nacked, err := c.s.request(streamKey{id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail() != nil, req.GetErrorDetail().GetMessage())
	if nacked != "" {
		// A SotW NACK carries the last version the proxy accepted; the cache would
		// answer it at once with the current version, the one just rejected, which
		// the proxy rejects again, in a tight loop. Telling the cache the proxy has the
		// rejected version makes it wait for the next one (Istio does not resend on a
		// NACK either). The server hands this same request to the cache next.
		req.VersionInfo = nacked
	}
	return err
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	// Delta needs no such rewrite: the stream's subscription already records the
	// rejected resources as sent, so the cache finds nothing new to send.
	key := streamKey{delta: true, id: id}
	_, err := c.s.request(key, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail() != nil, req.GetErrorDetail().GetMessage())
	if err == nil && req.GetResponseNonce() == "" && len(req.GetInitialResourceVersions()) > 0 {
		c.s.resumed(key, req)
	}
	return err
}

// resumed records a Delta subscription that starts with resources the proxy already
// holds (it reconnected): when they are the current snapshot's, the cache sends nothing
// for them, and the proxy is in sync at the current version without a response.
func (s *Server) resumed(key streamKey, req *discovery.DeltaDiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[key]
	if !ok || st.ps == nil {
		return
	}
	typeURL := req.GetTypeUrl()
	if typeURL == "" {
		typeURL = st.typeURL
	}
	snap, err := s.cache.GetSnapshot(st.ps.id)
	if err != nil {
		return
	}
	// The per-resource versions the cache's Delta answers carry. Computed here rather
	// than with snap.ConstructVersionMap, which writes the shared snapshot unlocked.
	want := map[string]string{}
	for name, r := range snap.GetResources(typeURL) {
		b, err := cache.MarshalResource(r)
		if err != nil {
			return
		}
		want[name] = cache.HashResource(b)
	}
	have := req.GetInitialResourceVersions()
	names := req.GetResourceNamesSubscribe()
	wildcard := len(names) == 0 || slices.Contains(names, "*")
	if wildcard && !maps.Equal(want, have) {
		return
	}
	for _, n := range names {
		if n != "*" && (want[n] == "" || have[n] != want[n]) {
			return
		}
	}
	v := snap.GetVersion(typeURL)
	ts := st.ps.typeStatus(typeURL)
	ts.Sent, ts.Acked, ts.SentAt = v, v, time.Now()
	ts.Nacked, ts.Error = "", ""
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	c.s.response(streamKey{id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

func (c *callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.s.response(streamKey{delta: true, id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// REST fetches are not served: proxies use streams.
func (c *callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "xds: REST fetch is not supported; use a stream")
}

func (c *callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

func (s *Server) openStream(key streamKey, typeURL string) error {
	if s.ctx.Err() != nil {
		return status.Error(codes.Unavailable, "xds: server is shutting down")
	}
	s.mu.Lock()
	s.streams[key] = &streamState{key: key, typeURL: typeURL, openedAt: time.Now(), last: map[string]sentResponse{}}
	s.mu.Unlock()
	s.metrics.connected.Inc()
	return nil
}

func (s *Server) closeStream(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[key]
	if !ok {
		return
	}
	delete(s.streams, key)
	s.metrics.connected.Dec()
	ps := st.ps
	if ps == nil {
		return
	}
	ps.streams--
	if ps.streams > 0 {
		return
	}
	s.log.Info("xds: proxy disconnected", "proxy", ps.id)
	if s.ctx.Err() != nil {
		return // closed: nothing will expire or serve it any more
	}
	ps.expiry = time.AfterFunc(s.opts.DisconnectGrace, func() { s.expire(ps) })
}

// expire forgets a proxy whose last stream closed DisconnectGrace ago, unless it came
// back meanwhile.
func (s *Server) expire(ps *proxyState) {
	ps.genMu.Lock() // no generation for ps may be between its check and SetSnapshot
	defer ps.genMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proxies[ps.id] != ps || ps.streams > 0 {
		return
	}
	delete(s.proxies, ps.id)
	// Under s.mu, so a new stream of this node (which takes s.mu to register) sets its
	// fresh snapshot after this.
	s.cache.ClearSnapshot(ps.id)
}

// request handles a request before the cache sees it: the first on a stream binds the
// stream to its proxy and makes sure the proxy's snapshot exists, so the cache answers
// at once; later ones ACK or NACK what the stream was sent.
func (s *Server) request(key streamKey, n *core.Node, typeURL, nonce string, nack bool, nackMsg string) (nacked string, err error) {
	s.mu.Lock()
	st, ok := s.streams[key]
	if !ok {
		s.mu.Unlock()
		return "", status.Error(codes.Internal, "xds: unknown stream")
	}
	if st.ps == nil {
		s.mu.Unlock()
		return "", s.bind(st, n)
	}
	defer s.mu.Unlock()
	if typeURL == "" {
		typeURL = st.typeURL // Delta per-type streams fill it in after this callback.
	}
	last, ok := st.last[typeURL]
	if nonce == "" || !ok || nonce != last.nonce {
		return "", nil // initial or new subscription, or a stale nonce the server ignores
	}
	ts := st.ps.typeStatus(typeURL)
	if nack {
		ts.Nacked = last.version
		ts.Error = nackMsg
		s.metrics.rejects.WithLabelValues(metricType(typeURL)).Inc()
		s.log.Warn("xds: proxy rejected config", "proxy", st.ps.id, "type", ShortName(typeURL),
			"version", last.version, "error", ts.Error)
		return last.version, nil
	}
	ts.Acked = last.version
	ts.Nacked, ts.Error = "", ""
	return "", nil
}

// bind parses the node of a stream's first request and generates the proxy's
// configuration if this is the proxy's first stream (or it reconnected after its
// identity changed).
func (s *Server) bind(st *streamState, n *core.Node) error {
	p, err := node.Parse(n)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "xds: bad node in the stream's first request: %v", err)
	}
	s.mu.Lock()
	if st.ps != nil { // cannot happen: a stream's requests are handled in order
		s.mu.Unlock()
		return nil
	}
	ps := s.proxies[p.ID]
	if ps == nil {
		ps = &proxyState{id: p.ID, perType: map[string]*TypeStatus{}}
		s.proxies[p.ID] = ps
	}
	if ps.expiry != nil {
		ps.expiry.Stop()
		ps.expiry = nil
	}
	if ps.streams == 0 {
		ps.connectedAt = time.Now()
		s.log.Info("xds: proxy connected", "proxy", p.ID, "type", p.Type, "namespace", p.Namespace)
	}
	ps.streams++
	// Generate on the proxy's first stream (it may have missed pushes while it was
	// away), or when its identity changed. Further streams of a connected proxy (an
	// Envoy without ADS opens one per type) find its snapshot current: pushes keep it so.
	need := ps.streams == 1 || ps.versions == nil || !reflect.DeepEqual(ps.proxy, p)
	ps.proxy = p
	st.ps = ps
	s.mu.Unlock()
	if !need {
		return nil
	}
	if err := s.generate(ps); err != nil {
		s.mu.Lock()
		has := ps.versions != nil
		s.mu.Unlock()
		if !has {
			// No configuration at all: fail the stream so the proxy logs why and
			// retries with backoff, rather than wait silently.
			return status.Errorf(codes.Unavailable, "xds: no configuration for proxy %q: %v", p.ID, err)
		}
	}
	return nil
}

func (s *Server) response(key streamKey, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[key]
	if !ok || st.ps == nil {
		return
	}
	st.last[typeURL] = sentResponse{nonce: nonce, version: version}
	ts := st.ps.typeStatus(typeURL)
	ts.Sent = version
	ts.SentAt = time.Now()
	s.metrics.pushes.WithLabelValues(metricType(typeURL)).Inc()
}

func (ps *proxyState) typeStatus(typeURL string) *TypeStatus {
	name := ShortName(typeURL)
	ts := ps.perType[name]
	if ts == nil {
		ts = &TypeStatus{}
		ps.perType[name] = ts
	}
	return ts
}

// gcpLogger sends go-control-plane's logs to slog. Its Info lines are per watch, so
// they go to Debug.
type gcpLogger struct{ l *slog.Logger }

var _ gcplog.Logger = gcpLogger{}

func (g gcpLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gcpLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gcpLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...)) }
func (g gcpLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...)) }

func withLogger(l gcplog.Logger) config.XDSOption { return sotw.WithLogger(l) }

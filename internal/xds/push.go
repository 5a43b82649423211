package xds

import (
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/weft-mesh/weft/internal/node"
)

// pendingPush collects Push calls until the debounce fires.
type pendingPush struct {
	first, last time.Time
	reasons     map[string]int
}

// Push tells the server that config or registry state changed: after the debounce,
// every connected proxy's configuration is regenerated, and each proxy is sent the
// types whose content changed. reason is a short fixed word ("config", "registry",
// "secret"): it labels the pilot_push_triggers metric and the push log line.
func (s *Server) Push(reason string) {
	now := time.Now()
	s.pushMu.Lock()
	if s.pending.first.IsZero() {
		s.pending.first = now
		s.pending.reasons = map[string]int{}
	}
	s.pending.last = now
	s.pending.reasons[reason]++
	s.pushMu.Unlock()
	s.metrics.triggers.WithLabelValues(reason).Inc()
	select {
	case s.pushNotify <- struct{}{}:
	default: // a wake-up is already queued; the loop reads pending when it runs.
	}
}

// pushLoop debounces Push calls: a push runs Debounce after the last call, and at most
// DebounceMax after the first one, so a steady stream of changes still gets out.
func (s *Server) pushLoop() {
	defer close(s.loopDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.pushNotify:
		}
		for {
			s.pushMu.Lock()
			p := s.pending
			s.pushMu.Unlock()
			if p.first.IsZero() {
				break // a stale wake-up: the push it asked for already ran.
			}
			deadline := p.last.Add(s.opts.Debounce)
			if maxAt := p.first.Add(s.opts.DebounceMax); maxAt.Before(deadline) {
				deadline = maxAt
			}
			if wait := time.Until(deadline); wait > 0 {
				timer.Reset(wait)
				select {
				case <-s.ctx.Done():
					timer.Stop()
					return
				case <-timer.C:
				}
				continue // Push calls may have moved the deadline while we slept.
			}
			s.pushMu.Lock()
			p = s.pending
			s.pending = pendingPush{}
			s.pushMu.Unlock()
			s.pushAll(p)
			break
		}
	}
}

// pushAll regenerates every connected proxy, GOMAXPROCS (Workers) at a time.
func (s *Server) pushAll(p pendingPush) {
	start := time.Now()
	s.encodings.rotate()
	s.mu.Lock()
	list := make([]*proxyState, 0, len(s.proxies))
	for _, ps := range s.proxies {
		if ps.streams > 0 {
			list = append(list, ps)
		}
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })

	var wg sync.WaitGroup
	var errMu sync.Mutex
	failed := 0
	for _, ps := range list {
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.sem }()
			if err := s.regenerate(ps); err != nil {
				errMu.Lock()
				failed++
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	s.metrics.pushTime.Observe(d.Seconds())
	s.log.Debug("xds push", "reasons", reasonList(p.reasons), "proxies", len(list),
		"failed", failed, "debounced", start.Sub(p.first).Round(time.Millisecond), "took", d.Round(time.Microsecond))
}

func reasonList(r map[string]int) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(r)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d", k, r[k])
	}
	return b.String()
}

// generate runs one proxy's generation on the worker pool.
func (s *Server) generate(ps *proxyState) error {
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		return fmt.Errorf("xds: server closed")
	}
	defer func() { <-s.sem }()
	return s.regenerate(ps)
}

// regenerate computes ps's configuration and, when some type's version changed, hands
// the new snapshot to the cache. On a generator error the proxy keeps its previous
// snapshot: a proxy is never sent a half configuration. The caller holds a sem slot.
func (s *Server) regenerate(ps *proxyState) error {
	ps.genMu.Lock()
	defer ps.genMu.Unlock()
	s.mu.Lock()
	current := s.proxies[ps.id] == ps
	p := ps.proxy
	s.mu.Unlock()
	if !current {
		return nil // expired while queued
	}
	err := s.generateAndSet(ps, p)
	if err != nil {
		s.metrics.pushErrors.Inc()
		s.mu.Lock()
		ps.genErrors++
		ps.lastGenErr = err.Error()
		s.mu.Unlock()
		s.log.Error("xds: generating config; proxy keeps its previous config", "proxy", ps.id, "error", err)
	}
	return err
}

func (s *Server) generateAndSet(ps *proxyState, p *node.Proxy) error {
	res, err := s.callGenerator(p)
	if err != nil {
		return fmt.Errorf("xds: proxy %q: generate: %w", ps.id, err)
	}
	// genMu is held: ps.resources and ps.snap are only written under it, so reading them
	// here needs no Server.mu.
	snap, versions, err := buildSnapshotFrom(res, s.encodings, ps.resources, ps.snap)
	if err != nil {
		return fmt.Errorf("xds: proxy %q: generated config: %w", ps.id, err)
	}
	s.mu.Lock()
	changed := !maps.Equal(ps.versions, versions)
	ps.resources, ps.versions, ps.snap = res, versions, snap
	ps.lastGenErr = ""
	s.mu.Unlock()
	if !changed {
		return nil
	}
	if err := s.cache.SetSnapshot(s.ctx, ps.id, snap); err != nil {
		// Only a closed server (context canceled) gets here.
		s.log.Warn("xds: set snapshot", "proxy", ps.id, "error", err)
	}
	return nil
}

// callGenerator turns a generator panic into an error: one proxy's bad input must not
// take the control plane down, with every other proxy's stream.
func (s *Server) callGenerator(p *node.Proxy) (res Resources, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return s.opts.Generator.Generate(p)
}

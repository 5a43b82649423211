package config

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Store holds the current configuration, fed by sources and read by the snapshot builder.
// Kubernetes can be another implementation or another source behind the same interface.
type Store interface {
	// List returns the resources of a kind in one namespace ("" for all), ordered by
	// (namespace, name). The slice is the caller's; the resources are shared and immutable.
	List(kind Kind, namespace string) []*Resource
	Get(kind Kind, namespace, name string) (*Resource, bool)
	// Apply replaces everything source contributed before with rs (an empty rs removes
	// the source's resources). rs must already be validated.
	Apply(source string, rs []*Resource) error
	// Delete removes some of a source's resources.
	Delete(source string, keys ...Key) error
	// Subscribe registers fn for change events. fn first receives an Added event for every
	// existing resource, then changes in order. Calls never overlap for one subscriber.
	// A subscriber that falls more than the queue bound behind gets its backlog replaced by
	// one Resync event: it must then List what it needs again.
	Subscribe(fn func(Event)) (cancel func())
	// Version increases on every change.
	Version() uint64
}

// EventType says what happened to a resource.
type EventType uint8

// Event types.
const (
	EventAdded EventType = iota + 1
	EventUpdated
	EventDeleted
	// EventResync replaces events a slow subscriber missed: re-read the store.
	EventResync
)

func (t EventType) String() string {
	switch t {
	case EventAdded:
		return "Added"
	case EventUpdated:
		return "Updated"
	case EventDeleted:
		return "Deleted"
	case EventResync:
		return "Resync"
	}
	return "Unknown"
}

// Event is one change.
type Event struct {
	Type EventType
	// Resource is the new state (the last state for Deleted); nil for Resync.
	Resource *Resource
	// Old is the previous state for Updated.
	Old *Resource
	// Version is the store version after the change.
	Version uint64
	// Dropped counts the events a Resync replaces.
	Dropped uint64
}

// DefaultQueueSize bounds each subscriber's backlog.
const DefaultQueueSize = 4096

// StoreOption configures NewMemoryStore.
type StoreOption func(*MemoryStore)

// WithLogger sets the logger for conflict warnings.
func WithLogger(l *slog.Logger) StoreOption { return func(s *MemoryStore) { s.log = l } }

// WithQueueSize sets the per-subscriber backlog bound (at least 1).
func WithQueueSize(n int) StoreOption {
	return func(s *MemoryStore) { s.queueSize = max(n, 1) }
}

// MemoryStore is the in-process Store.
type MemoryStore struct {
	log       *slog.Logger
	queueSize int

	mu      sync.RWMutex
	version uint64
	seq     uint64
	// sources maps a source to what it contributed.
	sources map[string]map[Key]*entry
	// holders maps a key to the sources that define it.
	holders   map[Key][]string
	effective [kindCount]map[Key]*Resource
	sorted    [kindCount][]*Resource // List cache, nil when stale
	subs      []*subscriber

	overflows atomic.Uint64
}

type entry struct {
	r *Resource
	// seq is when this source last changed the definition: the latest wins a conflict.
	seq uint64
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty in-memory store (as a Store; assert *MemoryStore for
// Overflows and Conflicts).
func NewMemoryStore(opts ...StoreOption) Store {
	s := &MemoryStore{
		log:       slog.Default(),
		queueSize: DefaultQueueSize,
		sources:   map[string]map[Key]*entry{},
		holders:   map[Key][]string{},
	}
	for k := range s.effective {
		s.effective[k] = map[Key]*Resource{}
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// List implements Store.
func (s *MemoryStore) List(kind Kind, namespace string) []*Resource {
	if kind == KindUnknown || kind >= kindCount {
		return nil
	}
	s.mu.RLock()
	all := s.sorted[kind]
	s.mu.RUnlock()
	if all == nil {
		s.mu.Lock()
		all = s.sortedLocked(kind)
		s.mu.Unlock()
	}
	if namespace == "" {
		return slices.Clone(all)
	}
	lo, _ := slices.BinarySearchFunc(all, namespace, func(r *Resource, ns string) int { return strings.Compare(r.Namespace, ns) })
	var out []*Resource
	for _, r := range all[lo:] {
		if r.Namespace != namespace {
			break
		}
		out = append(out, r)
	}
	return out
}

func (s *MemoryStore) sortedLocked(kind Kind) []*Resource {
	if s.sorted[kind] != nil {
		return s.sorted[kind]
	}
	out := make([]*Resource, 0, len(s.effective[kind]))
	for _, r := range s.effective[kind] {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Resource) int { return a.Key().Compare(b.Key()) })
	s.sorted[kind] = out
	return out
}

// Get implements Store.
func (s *MemoryStore) Get(kind Kind, namespace, name string) (*Resource, bool) {
	if kind == KindUnknown || kind >= kindCount {
		return nil, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.effective[kind][Key{Kind: kind, Namespace: namespace, Name: name}]
	return r, ok
}

// Version implements Store.
func (s *MemoryStore) Version() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.version
}

// Overflows counts events dropped (and replaced by Resync) across all subscribers.
func (s *MemoryStore) Overflows() uint64 { return s.overflows.Load() }

// Conflicts lists the keys defined by more than one source, with those sources (the
// winner, the most recently applied, first).
func (s *MemoryStore) Conflicts() map[Key][]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[Key][]string{}
	for k, srcs := range s.holders {
		if len(srcs) > 1 {
			out[k] = s.rankedLocked(k, srcs)
		}
	}
	return out
}

func (s *MemoryStore) rankedLocked(k Key, srcs []string) []string {
	out := slices.Clone(srcs)
	slices.SortFunc(out, func(a, b string) int {
		sa, sb := s.sources[a][k].seq, s.sources[b][k].seq
		if sa != sb {
			if sa > sb {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// Apply implements Store.
func (s *MemoryStore) Apply(source string, rs []*Resource) error {
	if source == "" {
		return errors.New("config: store: empty source name")
	}
	next := make(map[Key]*Resource, len(rs))
	for i, r := range rs {
		if r == nil {
			return fmt.Errorf("config: store: source %q: resource %d is nil", source, i)
		}
		if r.Kind == KindUnknown || r.Kind >= kindCount || r.Name == "" || r.Namespace == "" || r.Spec == nil {
			return fmt.Errorf("config: store: source %q: resource %d (%s) needs a kind, name, namespace and spec", source, i, r)
		}
		if _, dup := next[r.Key()]; dup {
			return fmt.Errorf("config: store: source %q: %s appears twice", source, r)
		}
		next[r.Key()] = r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	prev := s.sources[source]
	cur := make(map[Key]*entry, len(next))
	for k, r := range next {
		if old, ok := prev[k]; ok && old.r.SameContent(r) {
			// Unchanged definition: keep its place in conflict order and its bookkeeping,
			// but record where it now lives in the file.
			kept := *old.r
			kept.Source = r.Source
			cur[k] = &entry{r: &kept, seq: old.seq}
			continue
		}
		cur[k] = &entry{r: r, seq: s.seq}
	}
	affected := make([]Key, 0, len(cur)+len(prev))
	for k := range cur {
		affected = append(affected, k)
	}
	for k := range prev {
		if _, ok := cur[k]; !ok {
			affected = append(affected, k)
		}
	}
	if len(cur) == 0 {
		delete(s.sources, source)
	} else {
		s.sources[source] = cur
	}
	for _, k := range affected {
		_, had := prev[k]
		_, has := cur[k]
		switch {
		case has && !had:
			s.holders[k] = append(s.holders[k], source)
			if len(s.holders[k]) > 1 {
				ranked := s.rankedLocked(k, s.holders[k])
				s.log.Warn("config: conflicting definitions, the last applied wins",
					"resource", k.String(), "winner", ranked[0], "sources", ranked)
			}
		case had && !has:
			s.dropHolderLocked(k, source)
		}
	}
	s.reconcileLocked(affected)
	return nil
}

// Delete implements Store.
func (s *MemoryStore) Delete(source string, keys ...Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.sources[source]
	var affected []Key
	for _, k := range keys {
		if _, ok := set[k]; !ok {
			continue
		}
		delete(set, k)
		s.dropHolderLocked(k, source)
		affected = append(affected, k)
	}
	if set != nil && len(set) == 0 {
		delete(s.sources, source)
	}
	s.reconcileLocked(affected)
	return nil
}

func (s *MemoryStore) dropHolderLocked(k Key, source string) {
	h := slices.DeleteFunc(s.holders[k], func(x string) bool { return x == source })
	if len(h) == 0 {
		delete(s.holders, k)
	} else {
		s.holders[k] = h
	}
}

// reconcileLocked recomputes the winner of each affected key and emits events in key order.
func (s *MemoryStore) reconcileLocked(affected []Key) {
	slices.SortFunc(affected, Key.Compare)
	for _, k := range slices.Compact(affected) {
		before := s.effective[k.Kind][k]
		var win *entry
		for _, src := range s.holders[k] {
			if e := s.sources[src][k]; win == nil || e.seq > win.seq {
				win = e
			}
		}
		switch {
		case win == nil && before == nil:
		case win == nil:
			delete(s.effective[k.Kind], k)
			s.sorted[k.Kind] = nil
			s.version++
			s.publishLocked(Event{Type: EventDeleted, Resource: before, Version: s.version})
		case before == nil:
			r := *win.r
			s.version++
			r.ResourceVersion, r.Generation = int64(s.version), 1
			s.setLocked(k, win, &r)
			s.publishLocked(Event{Type: EventAdded, Resource: &r, Version: s.version})
		case before.SameContent(win.r):
			// Same configuration (perhaps from another source or line): no event.
			if before != win.r {
				r := *win.r
				r.ResourceVersion, r.Generation = before.ResourceVersion, before.Generation
				s.setLocked(k, win, &r)
			}
		default:
			r := *win.r
			s.version++
			r.ResourceVersion, r.Generation = int64(s.version), before.Generation+1
			s.setLocked(k, win, &r)
			s.publishLocked(Event{Type: EventUpdated, Resource: &r, Old: before, Version: s.version})
		}
	}
}

// setLocked stores r as the effective resource and as the winning entry's resource, so
// that the entry and the effective view share the bookkept copy.
func (s *MemoryStore) setLocked(k Key, win *entry, r *Resource) {
	win.r = r
	s.effective[k.Kind][k] = r
	s.sorted[k.Kind] = nil
}

// Subscribe implements Store.
func (s *MemoryStore) Subscribe(fn func(Event)) (cancel func()) {
	sub := &subscriber{fn: fn, max: s.queueSize, wake: make(chan struct{}, 1), done: make(chan struct{}), store: s}
	s.mu.Lock()
	for k := KindUnknown + 1; k < kindCount; k++ {
		for _, r := range s.sortedLocked(k) {
			sub.enqueue(Event{Type: EventAdded, Resource: r, Version: s.version})
		}
	}
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	go sub.run()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.subs = slices.DeleteFunc(s.subs, func(x *subscriber) bool { return x == sub })
			s.mu.Unlock()
			close(sub.done)
		})
	}
}

func (s *MemoryStore) publishLocked(ev Event) {
	for _, sub := range s.subs {
		sub.enqueue(ev)
	}
}

// subscriber delivers events to one callback from its own goroutine, in order.
type subscriber struct {
	fn    func(Event)
	max   int
	wake  chan struct{}
	done  chan struct{}
	store *MemoryStore

	mu      sync.Mutex
	queue   []Event
	resync  bool
	dropped uint64
	// lastVersion is the version of the newest dropped event, reported by the Resync.
	lastVersion uint64
}

func (sub *subscriber) enqueue(ev Event) {
	sub.mu.Lock()
	switch {
	case sub.resync:
		sub.dropped++
		sub.lastVersion = ev.Version
		sub.store.overflows.Add(1)
	case len(sub.queue) >= sub.max:
		// Coalesce: the backlog is worthless to a subscriber this far behind; one Resync
		// tells it to re-read the store.
		n := uint64(len(sub.queue)) + 1
		sub.dropped += n
		sub.store.overflows.Add(n)
		sub.queue = sub.queue[:0]
		sub.resync = true
		sub.lastVersion = ev.Version
	default:
		sub.queue = append(sub.queue, ev)
	}
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

func (sub *subscriber) next() (Event, bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.queue) > 0 {
		ev := sub.queue[0]
		sub.queue[0] = Event{}
		sub.queue = sub.queue[1:]
		if len(sub.queue) == 0 {
			sub.queue = nil // release the backing array
		}
		return ev, true
	}
	if sub.resync {
		ev := Event{Type: EventResync, Dropped: sub.dropped, Version: sub.lastVersion}
		sub.resync, sub.dropped = false, 0
		return ev, true
	}
	return Event{}, false
}

func (sub *subscriber) run() {
	for {
		select {
		case <-sub.done:
			return
		default:
		}
		if ev, ok := sub.next(); ok {
			sub.fn(ev)
			continue
		}
		select {
		case <-sub.done:
			return
		case <-sub.wake:
		}
	}
}

package router

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// Store holds the route tables received over RDS, by route configuration name. Readers
// (Get) never lock: the whole set is swapped atomically, so a request keeps the table it
// started with while an update lands. The zero value is ready to use.
type Store struct {
	mu     sync.Mutex // serialises writers
	tables atomic.Pointer[map[string]*Table]
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{} }

// Get returns the table of that name, or nil.
func (s *Store) Get(name string) *Table {
	m := s.tables.Load()
	if m == nil {
		return nil
	}
	return (*m)[name]
}

// Names lists the route configuration names held, sorted.
func (s *Store) Names() []string {
	m := s.tables.Load()
	if m == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(*m))
}

// Update replaces the whole set (state of the world). It compiles every configuration
// first and changes nothing when one is invalid; the error names each bad one. A
// configuration equal to the one held keeps its compiled table.
func (s *Store) Update(configs []*routev3.RouteConfiguration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := s.compile(configs, nil)
	if err != nil {
		return err
	}
	s.tables.Store(&next)
	return nil
}

// Upsert adds or replaces the given configurations and removes the named ones, keeping
// the rest (incremental xDS). Nothing changes when one is invalid.
func (s *Store) Upsert(configs []*routev3.RouteConfiguration, remove []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := s.compile(configs, s.current())
	if err != nil {
		return err
	}
	for _, n := range remove {
		delete(next, n)
	}
	s.tables.Store(&next)
	return nil
}

func (s *Store) current() map[string]*Table {
	if m := s.tables.Load(); m != nil {
		return *m
	}
	return nil
}

func (s *Store) compile(configs []*routev3.RouteConfiguration, base map[string]*Table) (map[string]*Table, error) {
	old := s.current()
	next := make(map[string]*Table, len(configs)+len(base))
	maps.Copy(next, base)
	var errs []error
	seen := map[string]bool{}
	for i, rc := range configs {
		if rc == nil || rc.GetName() == "" {
			errs = append(errs, fmt.Errorf("router: route configs[%d]: name is required", i))
			continue
		}
		if seen[rc.GetName()] {
			errs = append(errs, fmt.Errorf("router: route config %q: duplicate", rc.GetName()))
			continue
		}
		seen[rc.GetName()] = true
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
		if err != nil {
			errs = append(errs, fmt.Errorf("router: route config %q: %w", rc.GetName(), err))
			continue
		}
		d := sha256.Sum256(b)
		if t, ok := old[rc.GetName()]; ok && t.digest == d {
			next[rc.GetName()] = t
			continue
		}
		t, err := Compile(rc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t.digest = d
		next[rc.GetName()] = t
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return next, nil
}

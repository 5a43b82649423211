// Package file is a configuration source: it watches a directory tree of YAML/JSON files
// and keeps a config.Store in step with it, one store source per file.
//
// It polls (every 200ms by default) rather than using inotify: it is portable, needs no
// dependency, and works on network and container-mounted volumes (Kubernetes ConfigMap
// symlink swaps) where change notifications are unreliable. A file is re-read when its size
// or modification time changes, or while its mtime is recent enough that a same-second
// rewrite could hide behind coarse timestamps; it is re-parsed only when its content hash
// changes.
//
// A changed file is parsed and validated whole. If any document is invalid, the file's
// previous resources stay in the store (the old config keeps serving) and the errors are
// logged and kept for Errors. A removed file removes its resources.
package file

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weft-mesh/weft/internal/config"
)

// DefaultInterval is the polling period.
const DefaultInterval = 200 * time.Millisecond

// recentWindow: a file modified this recently is always re-read, because filesystems with
// one-second (or coarser) timestamps cannot tell two writes in the same second apart.
const recentWindow = 3 * time.Second

// Options configures a Watcher.
type Options struct {
	// Dir is the directory to watch, recursively.
	Dir string
	// Store receives each file's resources under the source name "file:<path>".
	Store config.Store
	// Interval between scans (DefaultInterval when zero).
	Interval time.Duration
	// Logger (slog.Default when nil).
	Logger *slog.Logger
}

// Watcher keeps a Store in step with a directory.
type Watcher struct {
	dir      string
	store    config.Store
	interval time.Duration
	log      *slog.Logger

	mu    sync.Mutex
	files map[string]*fileState
	scans int
}

type fileState struct {
	size    int64
	modTime time.Time
	// hash of the content last seen (applied or rejected).
	hash [sha256.Size]byte
	// applied is true once some version of the file is in the store.
	applied  bool
	errs     []error
	warnings []error
}

// SourceName is the store source a file's resources are applied under.
func SourceName(path string) string { return "file:" + path }

// New checks the directory and returns a Watcher; call Run (or Sync) to load it.
func New(o Options) (*Watcher, error) {
	if o.Store == nil {
		return nil, errors.New("config/file: no store")
	}
	st, err := os.Stat(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("config/file: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("config/file: %s is not a directory", o.Dir)
	}
	w := &Watcher{dir: o.Dir, store: o.Store, interval: o.Interval, log: o.Logger, files: map[string]*fileState{}}
	if w.interval <= 0 {
		w.interval = DefaultInterval
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	return w, nil
}

// Run loads the directory, then rescans it every interval until ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	w.Sync()
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.Sync()
		}
	}
}

// Errors returns the current errors per file (files whose latest content was rejected).
func (w *Watcher) Errors() map[string][]error {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]error{}
	for p, f := range w.files {
		if len(f.errs) > 0 {
			out[p] = slices.Clone(f.errs)
		}
	}
	return out
}

// Warnings returns the current validation warnings per file.
func (w *Watcher) Warnings() map[string][]error {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]error{}
	for p, f := range w.files {
		if len(f.warnings) > 0 {
			out[p] = slices.Clone(f.warnings)
		}
	}
	return out
}

// Scans counts completed scans (for readiness checks and tests).
func (w *Watcher) Scans() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.scans
}

// IsConfigFile reports whether a name has a config extension (.yaml, .yml, .json).
func IsConfigFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// list finds the config files under dir. Hidden names (".swp" files, Kubernetes' "..data")
// are skipped; symlinks to files are followed, symlinks to directories are not (no loops).
func (w *Watcher) list() (map[string]os.FileInfo, error) {
	found := map[string]os.FileInfo{}
	err := filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == w.dir {
				return err
			}
			return nil // a file vanished mid-walk; the next scan sees the new state
		}
		if p != w.dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !IsConfigFile(d.Name()) {
			return nil
		}
		info, err := os.Stat(p) // follows symlinks
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		found[p] = info
		return nil
	})
	return found, err
}

// Sync scans the directory once and applies what changed.
func (w *Watcher) Sync() {
	found, err := w.list()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scans++
	if err != nil {
		// The directory itself is unreadable: keep serving what we have.
		w.log.Error("config/file: cannot scan directory", "dir", w.dir, "err", err)
		return
	}
	paths := make([]string, 0, len(found))
	for p := range found {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	now := time.Now()
	for _, p := range paths {
		w.syncFile(p, found[p], now)
	}
	var gone []string
	for p := range w.files {
		if _, ok := found[p]; !ok {
			gone = append(gone, p)
		}
	}
	slices.Sort(gone)
	for _, p := range gone {
		if err := w.store.Apply(SourceName(p), nil); err != nil {
			w.log.Error("config/file: removing resources", "file", p, "err", err)
			continue
		}
		w.log.Info("config/file: file removed, its resources are deleted", "file", p)
		delete(w.files, p)
	}
}

func (w *Watcher) syncFile(p string, info os.FileInfo, now time.Time) {
	st := w.files[p]
	if st != nil && st.size == info.Size() && st.modTime.Equal(info.ModTime()) && now.Sub(info.ModTime()) > recentWindow {
		return
	}
	data, err := os.ReadFile(p)
	if err != nil {
		w.log.Error("config/file: cannot read file; keeping its previous resources", "file", p, "err", err)
		return // retried next scan
	}
	sum := sha256.Sum256(data)
	if st == nil {
		st = &fileState{}
		w.files[p] = st
	}
	st.size, st.modTime = info.Size(), info.ModTime()
	if st.hash == sum && (st.applied || len(st.errs) > 0) {
		return
	}
	st.hash = sum
	fr := config.ParseFile(p, data)
	st.warnings = st.warnings[:0]
	for _, e := range fr.Warnings {
		st.warnings = append(st.warnings, e)
	}
	if !fr.OK() {
		st.errs = st.errs[:0]
		for _, e := range fr.Errors {
			st.errs = append(st.errs, e)
			w.log.Error("config/file: invalid configuration; the file's previous resources stay in effect", "err", e.Error())
		}
		return
	}
	if err := w.store.Apply(SourceName(p), fr.Resources); err != nil {
		st.errs = []error{err}
		w.log.Error("config/file: store rejected file", "file", p, "err", err)
		return
	}
	st.errs = nil
	st.applied = true
	for _, e := range fr.Warnings {
		w.log.Warn("config/file: configuration warning", "warning", e.Error())
	}
	w.log.Info("config/file: applied", "file", p, "resources", len(fr.Resources), "ignored", len(fr.Ignored))
}

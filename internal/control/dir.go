package control

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/weft-mesh/weft/internal/config"
	"github.com/weft-mesh/weft/internal/config/source/file"
)

// dirSource is the watched config directory.
type dirSource struct {
	dir   string
	store config.Store
	log   *slog.Logger
	w     *file.Watcher
}

func newDirSource(dir string, store config.Store, log *slog.Logger) *dirSource {
	return &dirSource{dir: dir, store: store, log: log}
}

// start loads the directory once (so the first snapshot has it) and keeps watching.
func (d *dirSource) start(ctx context.Context) error {
	w, err := file.New(file.Options{Dir: d.dir, Store: d.store, Logger: d.log})
	if err != nil {
		return fmt.Errorf("control: config dir: %w", err)
	}
	d.w = w
	w.Sync()
	go func() { _ = w.Run(ctx) }()
	return nil
}

// errors lists the files whose latest content is rejected.
func (d *dirSource) errors() map[string][]string {
	out := map[string][]string{}
	if d == nil || d.w == nil {
		return out
	}
	for f, errs := range d.w.Errors() {
		for _, e := range errs {
			out[f] = append(out[f], e.Error())
		}
	}
	return out
}

package local

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is one supervised child: started, restarted with backoff when it exits on its
// own, stopped (SIGTERM, then SIGKILL) when the context ends.
type process struct {
	name string
	argv []string
	env  []string
	log  io.Writer // the child's stdout and stderr
	lg   *slog.Logger

	mu       sync.Mutex
	pid      int
	restarts int
	started  time.Time
	exited   string // last exit, for status
}

// stopGrace is how long a child gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// run supervises the process until ctx ends. Restart delays grow from 500 ms to 30 s and
// reset once the process has stayed up for a minute.
func (p *process) run(ctx context.Context) {
	delay := 500 * time.Millisecond
	for {
		start := time.Now()
		err := p.once(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			delay = 500 * time.Millisecond
		}
		p.mu.Lock()
		p.restarts++
		p.exited = fmt.Sprint(err)
		p.mu.Unlock()
		p.lg.Warn("process exited; restarting", "name", p.name, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

func (p *process) once(ctx context.Context) error {
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Env = p.env
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	// Its own process group, so a stop reaches whatever the child started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.mu.Lock()
	p.pid = cmd.Process.Pid
	p.started = time.Now()
	p.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		pgid := -cmd.Process.Pid
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(stopGrace):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
			return <-done
		}
	}
}

func (p *process) status() (pid, restarts int, since time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid, p.restarts, p.started
}

// logFile opens (appending) the log file of a child.
func logFile(dir, name string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(dir+"/"+name+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

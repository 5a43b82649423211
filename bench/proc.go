package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. Linux fixes it at
// 100 on every architecture the harness runs on.
const clockTicks = 100

// proc is a child process the harness started and owns: it is killed by its pid, never by
// name, and its output goes to a log file beside the run's other files.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc starts argv with env added to the harness's environment.
func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so that a stop reaches nothing but this child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// guardRSS kills the process when its resident set passes limitMB: the machine is
// shared, and a component that balloons must fail its case, not the machine. The
// returned function reports whether it fired.
func (p *proc) guardRSS(limitMB int) func() bool {
	var fired atomic.Bool
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				u, err := readUsage(p.pid())
				if err == nil && u.RSSKiB > int64(limitMB)*1024 {
					fired.Store(true)
					_ = p.cmd.Process.Kill()
					return
				}
			}
		}
	}()
	return fired.Load
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

// procUsage is what /proc says about one process.
type procUsage struct {
	CPUSeconds float64 // utime + stime
	HWMKiB     int64   // VmHWM: peak resident set
	RSSKiB     int64   // VmRSS: current resident set
	AnonKiB    int64   // RssAnon: heap, stacks, runtime (private)
	FileKiB    int64   // RssFile: the binary's and libraries' pages (shared between processes of one binary)
}

// readUsage reads /proc/PID/stat and /proc/PID/status.
func readUsage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("bench: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after its ')' are fixed.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("bench: /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	// After ')': state is field 3 of stat(5), so utime (14) and stime (15) are f[11], f[12].
	if len(f) < 13 {
		return u, fmt.Errorf("bench: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
	}
	u.CPUSeconds = float64(ut+st) / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("bench: %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "VmHWM":
			u.HWMKiB = parseKiB(v)
		case "VmRSS":
			u.RSSKiB = parseKiB(v)
		case "RssAnon":
			u.AnonKiB = parseKiB(v)
		case "RssFile":
			u.FileKiB = parseKiB(v)
		}
	}
	return u, nil
}

func parseKiB(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
	return n
}

// cpuTimes is the machine-wide "cpu" line of /proc/stat, in ticks.
type cpuTimes struct {
	total, idle, steal int64
}

func readCPUTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	// user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
	for i := 1; i <= 8 && i < len(f); i++ {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		t.total += n
		switch i {
		case 4, 5:
			t.idle += n
		case 8:
			t.steal = n
		}
	}
	return t
}

// machineShare is how the machine's CPU time was spent between two readings: steal is
// the share the hypervisor gave to other guests, busy the share spent running anything
// in this guest (the harness's processes and whatever else runs here).
func machineShare(a, b cpuTimes) (stealPct, busyPct float64) {
	d := b.total - a.total
	if d <= 0 {
		return 0, 0
	}
	stealPct = 100 * float64(b.steal-a.steal) / float64(d)
	busyPct = 100 * float64(d-(b.idle-a.idle)-(b.steal-a.steal)) / float64(d)
	return stealPct, busyPct
}

// busySeconds is the CPU time spent running anything on the machine between two
// readings (all CPUs together).
func busySeconds(a, b cpuTimes) float64 {
	return float64((b.total-a.total)-(b.idle-a.idle)-(b.steal-a.steal)) / clockTicks
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitListening polls addr until it accepts a TCP connection or ctx/timeout ends; it
// fails early when p exits.
func waitListening(ctx context.Context, addr string, timeout time.Duration, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("bench: %s exited before listening on %s: %s", p.name, addr, p.tail())
		}
		select {
		case <-ctx.Done():
			name := "process"
			if p != nil {
				name = p.name
			}
			return fmt.Errorf("bench: %s not listening on %s after %v", name, addr, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

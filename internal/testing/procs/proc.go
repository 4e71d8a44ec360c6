// Package procs is the one way atomfed's harnesses start real processes:
// it turns a ServerConfig into a running `atomfed server` (an AgentConfig
// into an `atomfed agent`), each with its output in its own log file,
// starts clusters of them with throwaway security (a CA, a gossip key, the
// bootstrap token, signing keys), waits for an established leader, and
// injects process faults (kill -9, SIGTERM, SIGSTOP/SIGCONT, restart with
// the same flags, data dir and ports). The multi-process tests of
// internal/e2e, the bench tool (internal/testing/bench) and the chaos suite
// (internal/testing/chaos, which places each server behind its fault
// proxies through ClusterOptions.Configure) all start their clusters
// here; testcluster is its in-process counterpart. It sits on testutil.
//
// Nothing here imports package testing: tests pass a TB, the tools do not
// need one.
//
// Environment of the tests: ATOMFED_BIN runs a prebuilt binary instead of
// building cmd/atomfed once in TestMain; ATOMFED_E2E_LOG_DIR keeps every
// server's log under that directory (by default logs live in the test's
// temporary directory, and a failing test prints each log's path and tail).
// Children get SIGKILL from the kernel if the harness dies, so a crashed or
// timed-out run leaves no atomfed behind.
package procs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one child process. Its stdout and stderr go to LogPath, appended
// across restarts with a header line per start.
type Proc struct {
	// Name labels the process in errors and logs.
	Name string
	// Bin and Args are the command line; Env is added to os.Environ().
	Bin  string
	Args []string
	Env  []string
	// LogPath receives the process's stdout and stderr.
	LogPath string

	mu     sync.Mutex
	cur    *run
	starts int
}

// run is one start of a Proc.
type run struct {
	cmd   *exec.Cmd
	start time.Time
	done  chan struct{} // closed once the process has been reaped
	state *os.ProcessState
	err   error
}

// ErrNotRunning is returned when a signal is sent to a process that is not
// running.
var ErrNotRunning = errors.New("process is not running")

// NewProc returns a Proc that is not started yet.
func NewProc(name, bin, logPath string, args ...string) *Proc {
	return &Proc{Name: name, Bin: bin, Args: args, LogPath: logPath}
}

// Start starts the process. It fails if the process is running.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && !p.cur.exited() {
		return fmt.Errorf("%s is already running (pid %d)", p.Name, p.cur.cmd.Process.Pid)
	}
	if err := os.MkdirAll(filepath.Dir(p.LogPath), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", p.Name, err)
	}
	// The child writes to the file itself; the parent's copy is closed
	// right after the start.
	defer f.Close()
	fmt.Fprintf(f, "=== %s start #%d: %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), p.starts+1, p.Bin, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	r := &run{cmd: cmd, start: time.Now(), done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		r.state, r.err = cmd.ProcessState, err
		p.mu.Unlock()
		close(r.done)
	}()
	p.cur = r
	p.starts++
	return nil
}

func (r *run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (p *Proc) current() *run {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// Running reports whether the process has been started and not yet exited.
func (p *Proc) Running() bool {
	r := p.current()
	return r != nil && !r.exited()
}

// PID returns the process id of the current or last run, or 0.
func (p *Proc) PID() int {
	if r := p.current(); r != nil {
		return r.cmd.Process.Pid
	}
	return 0
}

// Starts returns how many times the process was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Signal sends sig to the running process.
func (p *Proc) Signal(sig syscall.Signal) error {
	r := p.current()
	if r == nil || r.exited() {
		return fmt.Errorf("signal %s to %s: %w", sig, p.Name, ErrNotRunning)
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Kill9 sends SIGKILL and returns once the process has been reaped, so that
// its ports and files are released when Kill9 returns.
func (p *Proc) Kill9() error {
	r := p.current()
	if r == nil || r.exited() {
		return fmt.Errorf("kill -9 %s: %w", p.Name, ErrNotRunning)
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil && !r.exited() {
		return fmt.Errorf("kill -9 %s: %w", p.Name, err)
	}
	<-r.done
	return nil
}

// Term sends SIGTERM (a graceful stop) and returns at once; Wait for the
// exit.
func (p *Proc) Term() error { return p.Signal(syscall.SIGTERM) }

// Stop pauses the process with SIGSTOP.
func (p *Proc) Stop() error { return p.Signal(syscall.SIGSTOP) }

// Cont resumes a paused process with SIGCONT.
func (p *Proc) Cont() error { return p.Signal(syscall.SIGCONT) }

// Restart starts the process again with the same command line. The
// previous run must have exited (use Kill9 or Term and Wait first).
func (p *Proc) Restart() error {
	if p.Running() {
		return fmt.Errorf("restart %s: still running (pid %d)", p.Name, p.PID())
	}
	return p.Start()
}

// Wait waits up to timeout for the process to exit and returns its exit
// code: -1 when a signal ended it (see ExitStatus).
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	r := p.current()
	if r == nil {
		return 0, fmt.Errorf("wait for %s: never started", p.Name)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		return 0, fmt.Errorf("%s (pid %d) did not exit within %s", p.Name, r.cmd.Process.Pid, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.state.ExitCode(), nil
}

// Done returns a channel closed when the current run exits.
func (p *Proc) Done() <-chan struct{} {
	if r := p.current(); r != nil {
		return r.done
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

// ExitStatus describes how the last run ended ("exit status 0", "signal:
// killed"), or "running".
func (p *Proc) ExitStatus() string {
	r := p.current()
	if r == nil {
		return "not started"
	}
	if !r.exited() {
		return "running"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.state.String()
}

// Close kills the process if it runs and waits for it. It is safe to call
// at any time, any number of times.
func (p *Proc) Close() {
	r := p.current()
	if r == nil || r.exited() {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies on SIGKILL too; this is belt and braces
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// LogTail returns the last n lines of the log.
func (p *Proc) LogTail(n int) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	lines := make([]string, 0, n)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(lines) == n {
			lines = lines[1:]
		}
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines, "\n")
}

// LogContains reports whether the log contains s.
func (p *Proc) LogContains(s string) bool {
	b, err := os.ReadFile(p.LogPath)
	return err == nil && strings.Contains(string(b), s)
}

package testutil

import (
	"fmt"
	"os"
	"sync"
)

// TB is the part of testing.TB that the harnesses use (testcluster,
// procs, the helpers here). Taking it instead of testing.TB keeps package
// testing out of the tools that run a harness outside `go test`;
// *testing.T and *testing.B satisfy it, and RunTB provides one for tools.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	TempDir() string
}

// RunTB calls fn with a TB for a harness run outside `go test` (the bench
// tool's in-process scale test) and returns what failed: the message of
// the first Fatalf, or else fn's error.
//
// As with testing, Fatalf ends fn and must be called on fn's goroutine: it
// panics with a value that RunTB recovers. Cleanup functions run last in,
// first out once fn has returned (a Fatalf in one is reported like fn's);
// TempDir makes directories under dir (os.TempDir() when empty) that are
// removed after the cleanups; Logf goes to logf, or nowhere when nil.
func RunTB(dir string, logf func(format string, args ...any), fn func(t TB) error) (err error) {
	t := &toolTB{dir: dir, logf: logf}
	defer func() {
		if cerr := t.finish(); err == nil {
			err = cerr
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = f.err
		}
	}()
	return fn(t)
}

// fatal is the panic value of toolTB.Fatalf.
type fatal struct{ err error }

// toolTB is RunTB's TB.
type toolTB struct {
	dir  string
	logf func(format string, args ...any)

	mu       sync.Mutex
	cleanups []func()
	dirs     []string
}

func (t *toolTB) Helper() {}

func (t *toolTB) Cleanup(fn func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, fn)
}

func (t *toolTB) Fatalf(format string, args ...any) {
	panic(fatal{err: fmt.Errorf(format, args...)})
}

func (t *toolTB) Logf(format string, args ...any) {
	if t.logf != nil {
		t.logf(format, args...)
	}
}

func (t *toolTB) TempDir() string {
	d, err := os.MkdirTemp(t.dir, "harness-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.mu.Lock()
	t.dirs = append(t.dirs, d)
	t.mu.Unlock()
	return d
}

// finish runs the cleanups, last first, then removes the temp dirs; it
// returns the first Fatalf of a cleanup.
func (t *toolTB) finish() (err error) {
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		fn := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		if cerr := t.runCleanup(fn); err == nil {
			err = cerr
		}
	}
	for _, d := range t.dirs {
		_ = os.RemoveAll(d)
	}
	return err
}

func (t *toolTB) runCleanup(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = f.err
		}
	}()
	fn()
	return nil
}

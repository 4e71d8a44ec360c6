package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func entry(idx, term uint64) *raft.Log {
	return &raft.Log{
		Index:      idx,
		Term:       term,
		Type:       raft.LogCommand,
		Data:       []byte(fmt.Sprintf("cmd-%d-%d", idx, term)),
		AppendedAt: time.Unix(1700000000, int64(idx)),
	}
}

func entries(from, to, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, entry(i, term))
	}
	return out
}

func open(t *testing.T, dir string, seg int64) *Store {
	t.Helper()
	s, err := Open(dir, Options{SegmentSize: seg})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

// check asserts the store holds exactly want (consecutive entries).
func check(t *testing.T, s *Store, want []*raft.Log) {
	t.Helper()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if len(want) == 0 {
		if first != 0 || last != 0 {
			t.Fatalf("first/last = %d/%d, want empty", first, last)
		}
		return
	}
	if first != want[0].Index || last != want[len(want)-1].Index {
		t.Fatalf("first/last = %d/%d, want %d/%d", first, last, want[0].Index, want[len(want)-1].Index)
	}
	for _, w := range want {
		var got raft.Log
		if err := s.GetLog(w.Index, &got); err != nil {
			t.Fatalf("get %d: %v", w.Index, err)
		}
		if got.Index != w.Index || got.Term != w.Term || got.Type != w.Type || !bytes.Equal(got.Data, w.Data) ||
			!bytes.Equal(got.Extensions, w.Extensions) || !got.AppendedAt.Equal(w.AppendedAt) {
			t.Fatalf("get %d = %+v, want %+v", w.Index, got, *w)
		}
	}
	var l raft.Log
	if err := s.GetLog(first-1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("get before first: %v, want ErrLogNotFound", err)
	}
	if err := s.GetLog(last+1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("get after last: %v, want ErrLogNotFound", err)
	}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	check(t, s, nil)
	want := entries(1, 10, 1)
	want[3].Extensions = []byte("ext")
	want[4].Data = nil
	want[5].AppendedAt = time.Time{}
	want[6].Type = raft.LogConfiguration
	if err := s.StoreLogs(want[:4]); err != nil {
		t.Fatal(err)
	}
	for _, l := range want[4:] {
		if err := s.StoreLog(l); err != nil {
			t.Fatal(err)
		}
	}
	check(t, s, want)
	s.Close()
	s = open(t, dir, 0)
	defer s.Close()
	check(t, s, want)
}

func TestBadAppendsChangeNothing(t *testing.T) {
	s := open(t, t.TempDir(), 0)
	defer s.Close()
	if err := s.StoreLogs(entries(5, 7, 1)); err != nil {
		t.Fatal(err)
	}
	for name, logs := range map[string][]*raft.Log{
		"gap":             entries(9, 9, 1),
		"overlap":         entries(7, 8, 1),
		"not consecutive": {entry(8, 1), entry(10, 1)},
	} {
		if err := s.StoreLogs(logs); err == nil {
			t.Errorf("%s: append accepted", name)
		}
	}
	check(t, s, entries(5, 7, 1))
	if err := s.DeleteRange(6, 6); err == nil || !strings.Contains(err.Error(), "middle") {
		t.Fatalf("delete from the middle: %v", err)
	}
	check(t, s, entries(5, 7, 1))
}

func TestSegmentsRotateAndDelete(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 256) // a few records a segment
	want := entries(1, 100, 1)
	for i := 0; i < len(want); i += 7 {
		if err := s.StoreLogs(want[i:min(i+7, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	nseg := len(segFiles(t, dir))
	if nseg < 5 {
		t.Fatalf("%d segments, want rotation", nseg)
	}
	check(t, s, want)

	// A prefix ending inside a segment: older segments go, "first" keeps
	// the exact index across a restart.
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	want = want[40:]
	check(t, s, want)
	if n := len(segFiles(t, dir)); n >= nseg {
		t.Fatalf("%d segments after deleting a prefix, had %d", n, nseg)
	}
	s.Close()
	s = open(t, dir, 256)
	check(t, s, want)

	// A suffix starting inside an older segment.
	if err := s.DeleteRange(70, 100); err != nil {
		t.Fatal(err)
	}
	want = want[:70-41]
	check(t, s, want)
	more := entries(70, 80, 2)
	if err := s.StoreLogs(more); err != nil {
		t.Fatal(err)
	}
	want = append(want, more...)
	check(t, s, want)
	s.Close()
	s = open(t, dir, 256)
	check(t, s, want)

	// Everything, then a log that starts elsewhere (a snapshot install).
	if err := s.DeleteRange(41, 80); err != nil {
		t.Fatal(err)
	}
	check(t, s, nil)
	if n := len(segFiles(t, dir)); n != 0 {
		t.Fatalf("%d segments after deleting everything", n)
	}
	if _, err := os.Stat(filepath.Join(dir, firstFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("first file after deleting everything: %v", err)
	}
	want = entries(20, 30, 3)
	if err := s.StoreLogs(want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, 256)
	defer s.Close()
	check(t, s, want)
}

// TestTornTailIsCut: whatever a crash leaves after the last whole record of
// the newest segment is cut off when the store opens, and appends go on from
// there.
func TestTornTailIsCut(t *testing.T) {
	for name, tail := range map[string]func(rec []byte) []byte{
		"half a record": func(rec []byte) []byte { return rec[:len(rec)/2] },
		"header only":   func(rec []byte) []byte { return rec[:headerLen] },
		"zeros":         func(rec []byte) []byte { return make([]byte, 4096) },
		"bad crc": func(rec []byte) []byte {
			b := append([]byte(nil), rec...)
			b[len(b)-1] ^= 0xff
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, 0)
			if err := s.StoreLogs(entries(1, 5, 1)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			seg := segFiles(t, dir)[0]
			before, _ := os.ReadFile(seg)
			f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(tail(appendRecord(nil, entry(6, 1))))
			f.Close()

			s = open(t, dir, 0)
			check(t, s, entries(1, 5, 1))
			after, _ := os.ReadFile(seg)
			if !bytes.Equal(after, before) {
				t.Fatalf("segment is %d bytes after open, want the %d before the tear", len(after), len(before))
			}
			if err := s.StoreLogs(entries(6, 8, 2)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s = open(t, dir, 0)
			defer s.Close()
			check(t, s, append(entries(1, 5, 1), entries(6, 8, 2)...))
		})
	}
}

// TestCorruptionIsRefused: damage outside the newest segment's tail is not
// a torn append, and the store refuses to open rather than lose entries.
func TestCorruptionIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 256)
	if err := s.StoreLogs(entries(1, 30, 1)); err != nil {
		t.Fatal(err)
	}
	for i := uint64(31); i <= 60; i++ {
		if err := s.StoreLog(entry(i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs := segFiles(t, dir)
	if len(segs) < 2 {
		t.Fatalf("%d segments", len(segs))
	}
	b, _ := os.ReadFile(segs[0])
	b[20] ^= 0x01
	os.WriteFile(segs[0], b, 0o600)
	_, err := Open(dir, Options{SegmentSize: 256})
	if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), filepath.Base(segs[0])) {
		t.Fatalf("open of a corrupt older segment: %v", err)
	}

	// A whole, valid record that is not the next index was never written
	// by an append: it is not a tear either.
	b[20] ^= 0x01
	os.WriteFile(segs[0], b, 0o600)
	last := segs[len(segs)-1]
	lb, _ := os.ReadFile(last)
	os.WriteFile(last, appendRecord(append([]byte(nil), lb...), entry(99, 1)), 0o600)
	_, err = Open(dir, Options{SegmentSize: 256})
	if err == nil || !strings.Contains(err.Error(), "has index 99") {
		t.Fatalf("open with a misplaced record: %v", err)
	}
	os.WriteFile(last, lb, 0o600)
	s = open(t, dir, 256)
	check(t, s, entries(1, 60, 1))
	s.Close()

	// A missing segment in the middle is a gap.
	os.Remove(segs[1])
	_, err = Open(dir, Options{SegmentSize: 256})
	if err == nil || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("open with a missing segment: %v", err)
	}
}

func TestOneProcessAtATime(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	_, err := Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open: %v", err)
	}
	s.Close()
	s = open(t, dir, 0)
	s.Close()
}

// TestMatchesModel runs random appends, prefix, suffix and whole deletions
// and reopens against raft's in-memory store, with segments small enough
// that every operation crosses segment boundaries.
func TestMatchesModel(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	s := open(t, dir, 512)
	defer func() { s.Close() }()
	model := raft.NewInmemStore()
	var want []*raft.Log
	term := uint64(1)
	for step := 0; step < 2000; step++ {
		first, _ := model.FirstIndex()
		last, _ := model.LastIndex()
		switch op := rng.Intn(20); {
		case op < 12:
			next := last + 1
			if last == 0 {
				next = uint64(rng.Intn(50) + 1)
			}
			n := uint64(rng.Intn(8) + 1)
			logs := entries(next, next+n-1, term)
			if err := s.StoreLogs(logs); err != nil {
				t.Fatalf("step %d (seed %d): append: %v", step, seed, err)
			}
			model.StoreLogs(logs)
			want = append(want, logs...)
		case op < 14 && last > 0: // prefix
			max := first + uint64(rng.Intn(int(last-first+1)))
			if max == last {
				max--
			}
			if max < first {
				continue
			}
			if err := s.DeleteRange(first, max); err != nil {
				t.Fatalf("step %d (seed %d): delete prefix: %v", step, seed, err)
			}
			model.DeleteRange(first, max)
			want = want[max-first+1:]
		case op < 17 && last > first: // suffix (a conflict)
			min := first + 1 + uint64(rng.Intn(int(last-first)))
			if err := s.DeleteRange(min, last); err != nil {
				t.Fatalf("step %d (seed %d): delete suffix: %v", step, seed, err)
			}
			model.DeleteRange(min, last)
			want = want[:min-first]
			term++
		case op == 17 && last > 0:
			if err := s.DeleteRange(first, last); err != nil {
				t.Fatalf("step %d (seed %d): delete all: %v", step, seed, err)
			}
			model.DeleteRange(first, last)
			want = nil
		default:
			s.Close()
			s = open(t, dir, 512)
		}
		if step%50 == 0 || step == 1999 {
			check(t, s, want)
		}
	}
}

// TestFullDisk runs the store on a tiny tmpfs: an append that does not fit
// fails and changes nothing, truncations still work on the full disk, and
// appends succeed again once space is freed.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	dir := filepath.Join(mnt, "log")
	s := open(t, dir, 64<<10)
	defer func() { s.Close() }()
	big := func(idx, term uint64) *raft.Log {
		l := entry(idx, term)
		l.Data = bytes.Repeat([]byte{byte(idx)}, 8<<10)
		return l
	}
	var want []*raft.Log
	var err error
	for i := uint64(1); ; i++ {
		l := big(i, 1)
		if err = s.StoreLog(l); err != nil {
			break
		}
		want = append(want, l)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v, want ENOSPC", err)
	}
	check(t, s, want)
	// A conflict on a full disk: the suffix goes without needing space.
	last := want[len(want)-1].Index
	if err := s.DeleteRange(last-2, last); err != nil {
		t.Fatalf("truncate on a full disk: %v", err)
	}
	want = want[:len(want)-3]
	check(t, s, want)
	if err := s.StoreLogs([]*raft.Log{big(last-2, 2), big(last-1, 2)}); err != nil {
		t.Fatalf("append after freeing space: %v", err)
	}
	want = append(want, big(last-2, 2), big(last-1, 2))
	// A prefix, after a snapshot, frees segments.
	if err := s.DeleteRange(1, 20); err != nil {
		t.Fatalf("delete prefix on a full disk: %v", err)
	}
	want = want[20:]
	check(t, s, want)
	s.Close()
	s = open(t, dir, 64<<10)
	check(t, s, want)
}

// TestReadsDuringAppendsAndCompaction: raft reads entries from its
// replication goroutines while the main loop appends and the snapshot
// goroutine deletes a prefix. Every read of an index in the log returns
// that entry (run with -race).
func TestReadsDuringAppendsAndCompaction(t *testing.T) {
	s := open(t, t.TempDir(), 4096)
	defer s.Close()
	if err := s.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 3)
	go func() { // appender
		for i := uint64(11); i <= 3000; i += 5 {
			if err := s.StoreLogs(entries(i, i+4, 1)); err != nil {
				errs <- err
				return
			}
		}
		close(stop)
		errs <- nil
	}()
	go func() { // compactor
		for {
			select {
			case <-stop:
				errs <- nil
				return
			default:
			}
			first, _ := s.FirstIndex()
			last, _ := s.LastIndex()
			if last > first+200 {
				if err := s.DeleteRange(first, last-100); err != nil {
					errs <- err
					return
				}
			}
			runtime.Gosched() // let the appender and the reader run between checks
		}
	}()
	go func() { // reader
		rng := rand.New(rand.NewSource(1))
		var l raft.Log
		for {
			select {
			case <-stop:
				errs <- nil
				return
			default:
			}
			last, _ := s.LastIndex()
			idx := last - uint64(rng.Intn(150))
			err := s.GetLog(idx, &l)
			if errors.Is(err, raft.ErrLogNotFound) {
				continue // compacted meanwhile
			}
			if err != nil {
				errs <- fmt.Errorf("get %d: %v", idx, err)
				return
			}
			if l.Index != idx || string(l.Data) != fmt.Sprintf("cmd-%d-1", idx) {
				errs <- fmt.Errorf("get %d returned %d %q", idx, l.Index, l.Data)
				return
			}
		}
	}()
	for i := 0; i < 3; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	last, _ := s.LastIndex()
	if last != 3000 {
		t.Fatalf("last %d, want 3000", last)
	}
}

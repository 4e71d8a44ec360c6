// Package raftlog is atomfed's raft log store: an append-only log of
// segment files that costs one fdatasync per append.
//
// raft-boltdb, the store atomfed used before, costs two fdatasyncs per
// append (bolt writes its pages, syncs, writes its meta page, syncs again),
// and hashicorp/raft writes the leader's log before it replicates, so every
// write waited for four syncs in a row. Here an append is one write(2) of all
// the batch's records at the end of the newest segment and one fdatasync.
//
// Layout of the directory:
//
//	00000000000000000001.seg   records from index 1 on
//	00000000000000004711.seg   records from index 4711 on (newest: appends go here)
//	first                      the first index still in the log, when older
//	                           records were deleted from the front of a segment
//
// Records carry a CRC-32C (record.go). When the store opens it reads every
// segment, and a torn record at the end of the newest segment (a crash
// during an append that was never acknowledged) is cut off. A bad record
// anywhere else is corruption, and Open refuses the directory with the file
// and offset.
//
// Deletion follows raft's two uses. After a snapshot raft deletes a prefix:
// the store writes the new first index to "first" (atomically, by rename)
// and then removes segments that lie wholly before it. When a follower's log
// conflicts with the leader's, raft deletes a suffix: the store truncates
// the segment that holds the new end and removes the segments after it.
// Neither needs free disk space. The store is a raft.MonotonicLogStore: it
// refuses appends that leave a gap, and raft deletes the whole log after a
// snapshot restore instead of relying on gaps.
//
// A failed write is cut off again and reported; the next append starts at
// the same offset. A failed fdatasync leaves the store failed for good (the
// kernel may have dropped the unwritten pages, so what is on disk is
// unknown): every later append reports it until the server restarts and the
// store is read again from disk.
package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// DefaultSegmentSize is the size after which appends start a new segment.
const DefaultSegmentSize = 64 << 20

const (
	segSuffix = ".seg"
	firstFile = "first"
)

// Options tune a Store.
type Options struct {
	// SegmentSize is the size after which appends go to a new segment file;
	// 0 means DefaultSegmentSize.
	SegmentSize int64
	// NoZeroFill turns off writing zeros ahead of the appends (see
	// zeroAhead).
	NoZeroFill bool
	// ObserveSync, when set, is called with the duration of every
	// fdatasync of an append (for a latency histogram).
	ObserveSync func(time.Duration)
}

// zeroAhead is how far past the last record the newest segment is kept
// filled with zeros. An fdatasync that must also record a larger file size
// commits the filesystem's journal; one that only overwrites blocks the
// file already has does not, and costs about half as much. So appends
// overwrite zeros written earlier, and every zeroAhead bytes one append
// writes the next stretch of zeros (synced with its records). A store that
// opens cuts the zeros off, like a torn tail; a full disk only stops the
// zero-filling.
const zeroAhead = 1 << 20

// Store is a raft.LogStore over segment files in one directory. It is safe
// for concurrent use: raft's replication goroutines read while the main
// loop appends.
type Store struct {
	dir      string
	segSize  int64
	noZero   bool // Options.NoZeroFill
	observe  func(time.Duration)
	zeroFill bool // zero-fill the newest segment (off after a full disk, until the next segment)
	lock     *os.File

	// wmu serialises the writers (StoreLogs, DeleteRange, Close; raft
	// appends from its main loop and compacts from its snapshot goroutine).
	// mu guards what readers see: the segment list, each segment's
	// offsets and size, first and last. A writer holding wmu may read all
	// of it without mu, and changes it under mu; an append writes and syncs
	// without mu, past the end readers know, so GetLog never waits for an
	// fdatasync.
	wmu     sync.Mutex
	mu      sync.RWMutex
	segs    []*segment // in index order; the last one takes appends
	first   uint64     // first index in the log, 0 when empty
	last    uint64     // last index in the log, 0 when empty
	failed  error      // set for good by a failed fdatasync (writers read it under wmu)
	failedV atomic.Pointer[error]
	closed  bool
	buf     []byte // append buffer, reused under mu
}

// segment is one open segment file.
type segment struct {
	base   uint64 // index of the file's first record
	f      *os.File
	offs   []int64 // offs[i] is where the record for index base+i starts
	size   int64   // end of the last whole record
	zeroed int64   // the file holds zeros from size up to here
}

func (g *segment) lastIndex() uint64 { return g.base + uint64(len(g.offs)) - 1 }

func segName(base uint64) string { return fmt.Sprintf("%020d%s", base, segSuffix) }

var (
	_ raft.LogStore          = (*Store)(nil)
	_ raft.MonotonicLogStore = (*Store)(nil)
)

// Open opens (creating it when missing) the log in dir, reading and checking
// every segment.
func Open(dir string, opts Options) (*Store, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft log dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open raft log lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("raft log %s is locked by another process (is another atomfed server using this data dir?)", dir)
	}
	s := &Store{dir: dir, segSize: opts.SegmentSize, noZero: opts.NoZeroFill, zeroFill: !opts.NoZeroFill, observe: opts.ObserveSync, lock: lock}
	if err := s.load(); err != nil {
		s.closeFiles()
		lock.Close()
		return nil, err
	}
	return s, nil
}

// load reads the directory into s.
func (s *Store) load() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read raft log dir: %w", err)
	}
	var bases []uint64
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			// A "first" file a crash left half written; the rename never
			// happened, so it never counted.
			os.Remove(filepath.Join(s.dir, name))
			continue
		}
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		base, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil || base == 0 {
			return fmt.Errorf("raft log dir %s: %s is not a segment name", s.dir, name)
		}
		bases = append(bases, base)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	first, err := s.readFirst()
	if err != nil {
		return err
	}
	for i, base := range bases {
		newest := i == len(bases)-1
		g, err := s.openSegment(base, newest)
		if err != nil {
			return err
		}
		if len(s.segs) > 0 {
			prev := s.segs[len(s.segs)-1]
			if len(prev.offs) == 0 || prev.lastIndex()+1 != base {
				g.f.Close()
				return fmt.Errorf("raft log dir %s: %s does not follow %s (a gap or overlap in the log)", s.dir, segName(base), segName(prev.base))
			}
		}
		s.segs = append(s.segs, g)
	}
	// The newest segment may be empty: a crash between creating it and the
	// first append's sync, or a tail truncation that cut it to nothing.
	if n := len(s.segs); n > 0 && len(s.segs[n-1].offs) == 0 {
		g := s.segs[n-1]
		s.segs = s.segs[:n-1]
		g.f.Close()
		if err := os.Remove(filepath.Join(s.dir, segName(g.base))); err != nil {
			return fmt.Errorf("remove empty segment: %w", err)
		}
	}
	if len(s.segs) == 0 {
		// An empty log has no "first" file (DeleteRange of everything
		// removes it last).
		if first != 0 {
			if err := s.removeFirst(); err != nil {
				return err
			}
		}
		return nil
	}
	s.first = s.segs[0].base
	s.last = s.segs[len(s.segs)-1].lastIndex()
	if first > s.first {
		if first > s.last {
			// A crash in the middle of deleting the whole log.
			return s.deleteAll()
		}
		s.first = first
		return s.dropBefore(first)
	}
	return nil
}

// openSegment opens and scans one segment. In the newest segment a torn
// tail is cut off; anywhere else it is corruption.
func (s *Store) openSegment(base uint64, newest bool) (*segment, error) {
	path := filepath.Join(s.dir, segName(base))
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open raft log segment: %w", err)
	}
	g := &segment{base: base, f: f}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read raft log segment %s: %w", path, err)
	}
	var off int64
	var l raft.Log
	for off < int64(len(data)) {
		n, err := recordLen(data[off:])
		if err == nil && off+int64(n) > int64(len(data)) {
			err = errTorn
		}
		if err == nil {
			err = decodeRecord(data[off:off+int64(n)], &l)
		}
		if err == nil && l.Index != base+uint64(len(g.offs)) {
			err = fmt.Errorf("record at offset %d has index %d, want %d", off, l.Index, base+uint64(len(g.offs)))
		}
		if err != nil {
			if !newest || !errors.Is(err, errTorn) {
				f.Close()
				return nil, fmt.Errorf("raft log segment %s is corrupt at offset %d: %v", path, off, err)
			}
			break
		}
		g.offs = append(g.offs, off)
		off += int64(n)
	}
	g.size = off
	if off < int64(len(data)) {
		// Cut the torn tail so the next append does not follow garbage.
		if err := f.Truncate(off); err != nil {
			f.Close()
			return nil, fmt.Errorf("cut torn tail of %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("sync %s: %w", path, err)
		}
	}
	return g, nil
}

// readFirst reads the "first" file; 0 when there is none.
func (s *Store) readFirst() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, firstFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read raft log first index: %w", err)
	}
	if len(b) != 12 || crc32.Checksum(b[:8], crcTable) != binary.BigEndian.Uint32(b[8:]) {
		return 0, fmt.Errorf("raft log %s is corrupt", filepath.Join(s.dir, firstFile))
	}
	return binary.BigEndian.Uint64(b), nil
}

// writeFirst records idx as the log's first index: written to a temporary
// file, synced, renamed over "first", directory synced.
func (s *Store) writeFirst(idx uint64) error {
	b := binary.BigEndian.AppendUint64(nil, idx)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	tmp := filepath.Join(s.dir, firstFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write raft log first index: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, firstFile))
	}
	if err == nil {
		err = s.syncDir()
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write raft log first index: %w", err)
	}
	return nil
}

func (s *Store) removeFirst() error {
	err := os.Remove(filepath.Join(s.dir, firstFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove raft log first index: %w", err)
	}
	return s.syncDir()
}

func (s *Store) syncDir() error { return SyncDir(s.dir) }

// SyncDir fsyncs a directory, so that files created, renamed or removed in
// it stay so after a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// FirstIndex implements raft.LogStore.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.first, nil
}

// LastIndex implements raft.LogStore.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.last, nil
}

// IsMonotonic implements raft.MonotonicLogStore: the log has no gaps.
func (s *Store) IsMonotonic() bool { return true }

// GetLog implements raft.LogStore.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errors.New("raft log store is closed")
	}
	if index == 0 || index < s.first || index > s.last {
		return raft.ErrLogNotFound
	}
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].base > index }) - 1
	g := s.segs[i]
	k := index - g.base
	start := g.offs[k]
	end := g.size
	if k+1 < uint64(len(g.offs)) {
		end = g.offs[k+1]
	}
	rec := make([]byte, end-start)
	if _, err := g.f.ReadAt(rec, start); err != nil {
		return fmt.Errorf("read raft log index %d: %w", index, err)
	}
	if err := decodeRecord(rec, l); err != nil {
		return fmt.Errorf("raft log index %d in %s: %w", index, segName(g.base), err)
	}
	if l.Index != index {
		return fmt.Errorf("raft log index %d in %s holds index %d", index, segName(g.base), l.Index)
	}
	return nil
}

// StoreLog implements raft.LogStore.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore: the entries must follow the last one
// (any index when the log is empty) and be consecutive. They are durable
// when it returns nil.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return errors.New("raft log store is closed")
	}
	if s.failed != nil {
		return s.failed
	}
	next := logs[0].Index
	if s.last != 0 && next != s.last+1 {
		return fmt.Errorf("raft log append at index %d does not follow the last index %d", next, s.last)
	}
	if next == 0 {
		return errors.New("raft log append at index 0")
	}
	for i, l := range logs {
		if l.Index != next+uint64(i) {
			return fmt.Errorf("raft log append is not consecutive: index %d after %d", l.Index, next+uint64(i)-1)
		}
	}
	s.mu.Lock()
	g, err := s.segmentFor(next)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	buf := s.buf[:0]
	offs := make([]int64, len(logs))
	for i, l := range logs {
		offs[i] = g.size + int64(len(buf))
		buf = appendRecord(buf, l)
	}
	if cap(buf) <= 4<<20 {
		s.buf = buf
	}
	if _, err := g.f.WriteAt(buf, g.size); err != nil {
		// Cut what did get written, so a later open does not see it and
		// the next append starts clean.
		g.zeroed = g.size
		if terr := g.f.Truncate(g.size); terr != nil {
			// Records of this failed append would stay on disk after
			// the end the store knows.
			s.setFailed(fmt.Errorf("raft log store failed: append at index %d: %v, and cutting it off: %v; restart the server", next, err, terr))
		}
		return fmt.Errorf("raft log append at index %d: %w", next, err)
	}
	end := g.size + int64(len(buf))
	if s.zeroFill && end > g.zeroed-zeroAhead/4 && end < s.segSize {
		if err := s.fillZeros(g, end); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := unix.Fdatasync(int(g.f.Fd())); err != nil {
		return s.fail(g, err)
	}
	if s.observe != nil {
		s.observe(time.Since(start))
	}
	s.mu.Lock()
	g.offs = append(g.offs, offs...)
	g.size += int64(len(buf))
	if s.first == 0 {
		s.first = next
	}
	s.last = logs[len(logs)-1].Index
	s.mu.Unlock()
	return nil
}

// fillZeros writes zeros from the end of the records being appended (end)
// to zeroAhead past it. When the disk is full it cuts the file back to end
// and zero-fills no more; the append goes on without.
func (s *Store) fillZeros(g *segment, end int64) error {
	from := max(g.zeroed, end)
	to := end + zeroAhead
	if _, err := g.f.WriteAt(make([]byte, to-from), from); err != nil {
		s.zeroFill = false
		if terr := g.f.Truncate(end); terr != nil {
			s.setFailed(fmt.Errorf("raft log store failed: zero-filling %s: %v, and cutting it off: %v; restart the server", segName(g.base), err, terr))
			return s.failed
		}
		g.zeroed = end
		return nil
	}
	g.zeroed = to
	return nil
}

// segmentFor returns the segment an append at index next goes to, starting
// a new one when there is none or the newest is full.
func (s *Store) segmentFor(next uint64) (*segment, error) {
	if n := len(s.segs); n > 0 {
		g := s.segs[n-1]
		if len(g.offs) == 0 && g.base != next {
			// A segment whose first append failed, now asked for
			// another index.
			if err := s.popSegment(); err != nil {
				return nil, err
			}
		} else if g.size < s.segSize {
			return g, nil
		} else if err := s.trim(g); err != nil {
			// Only the newest segment may end in zeros.
			return nil, err
		}
	}
	path := filepath.Join(s.dir, segName(next))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create raft log segment: %w", err)
	}
	if err := s.syncDir(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create raft log segment: sync dir: %w", err)
	}
	g := &segment{base: next, f: f}
	s.segs = append(s.segs, g)
	s.zeroFill = !s.noZero
	return g, nil
}

// trim cuts the zeros after a segment's last record.
func (s *Store) trim(g *segment) error {
	if g.zeroed <= g.size {
		return nil
	}
	if err := g.f.Truncate(g.size); err != nil {
		return fmt.Errorf("raft log: cut zeros off %s: %w", segName(g.base), err)
	}
	g.zeroed = g.size
	if err := unix.Fdatasync(int(g.f.Fd())); err != nil {
		return s.fail(g, err)
	}
	return nil
}

// DeleteRange implements raft.LogStore. raft deletes a prefix (after a
// snapshot), a suffix (a follower's conflicting entries) or everything
// (after installing or restoring a snapshot); a range in the middle is
// refused.
func (s *Store) DeleteRange(min, max uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("raft log store is closed")
	}
	if min > max || s.last == 0 || max < s.first || min > s.last {
		return nil
	}
	switch {
	case min <= s.first && max >= s.last:
		return s.deleteAll()
	case min <= s.first:
		if err := s.writeFirst(max + 1); err != nil {
			return err
		}
		s.first = max + 1
		return s.dropBefore(max + 1)
	case max >= s.last:
		return s.truncateFrom(min)
	default:
		return fmt.Errorf("raft log: cannot delete %d-%d from the middle of %d-%d", min, max, s.first, s.last)
	}
}

// dropBefore closes and removes the segments that hold only indexes before
// idx. "first" already says idx, so a crash part way is harmless.
func (s *Store) dropBefore(idx uint64) error {
	n := 0
	for n+1 < len(s.segs) && s.segs[n+1].base <= idx {
		n++
	}
	for _, g := range s.segs[:n] {
		g.f.Close()
		if err := os.Remove(filepath.Join(s.dir, segName(g.base))); err != nil {
			return fmt.Errorf("remove raft log segment: %w", err)
		}
	}
	s.segs = append(s.segs[:0:0], s.segs[n:]...)
	return nil
}

// truncateFrom deletes index idx and everything after it. Segments after
// the one holding idx go first, newest first, so a crash part way leaves
// a log that is a prefix of the old one.
func (s *Store) truncateFrom(idx uint64) error {
	for len(s.segs) > 0 && s.segs[len(s.segs)-1].base >= idx {
		if err := s.popSegment(); err != nil {
			return err
		}
	}
	if err := s.syncDir(); err != nil {
		return fmt.Errorf("raft log truncate: sync dir: %w", err)
	}
	if len(s.segs) == 0 {
		return s.removeFirst()
	}
	g := s.segs[len(s.segs)-1]
	k := idx - g.base
	if k >= uint64(len(g.offs)) {
		return nil
	}
	size := g.offs[k]
	g.zeroed = min(g.zeroed, size)
	if err := g.f.Truncate(size); err != nil {
		return fmt.Errorf("raft log truncate %s: %w", segName(g.base), err)
	}
	if err := unix.Fdatasync(int(g.f.Fd())); err != nil {
		return s.fail(g, err)
	}
	g.offs = g.offs[:k]
	g.size, g.zeroed = size, size
	s.last = idx - 1
	return nil
}

// popSegment closes and removes the newest segment.
func (s *Store) popSegment() error {
	g := s.segs[len(s.segs)-1]
	g.f.Close()
	s.segs = s.segs[:len(s.segs)-1]
	if n := len(s.segs); n > 0 && len(s.segs[n-1].offs) > 0 {
		s.last = s.segs[n-1].lastIndex()
	} else {
		s.first, s.last = 0, 0
	}
	if err := os.Remove(filepath.Join(s.dir, segName(g.base))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove raft log segment: %w", err)
	}
	return nil
}

// fail leaves the store failed for good after a failed fdatasync.
func (s *Store) fail(g *segment, err error) error {
	s.setFailed(fmt.Errorf("raft log store failed: fdatasync of %s: %v; restart the server to read the log again from disk", segName(g.base), err))
	return s.failed
}

// deleteAll removes every segment, newest first, and then "first".
func (s *Store) deleteAll() error {
	for len(s.segs) > 0 {
		if err := s.popSegment(); err != nil {
			return err
		}
	}
	return s.removeFirst()
}

// Failed returns the error that left the store failed for good (a failed
// fdatasync), or nil. It does not wait for an append in progress.
func (s *Store) Failed() error {
	if p := s.failedV.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Store) setFailed(err error) {
	s.failed = err
	s.failedV.Store(&err)
}

// Segments returns how many segment files the log has and their size in
// bytes (records only).
func (s *Store) Segments() (n int, bytes int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, g := range s.segs {
		bytes += g.size
	}
	return len(s.segs), bytes
}

// Close closes the segment files and releases the directory.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if n := len(s.segs); n > 0 && s.failed == nil {
		s.trim(s.segs[n-1]) // tidiness only: Open cuts zeros too
	}
	s.closeFiles()
	return s.lock.Close()
}

func (s *Store) closeFiles() {
	for _, g := range s.segs {
		g.f.Close()
	}
	s.segs = nil
}

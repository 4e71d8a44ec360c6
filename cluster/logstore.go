package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/atomcloud/atomfed/internal/raftlog"
)

// logStore is the raft log store and what closes it.
type logStore interface {
	raft.LogStore
	Close() error
}

// openLogStore opens the configured raft log store in dir. bolt is the
// stable store (raft.db), which also holds the log when the configured
// store is LogStoreBolt.
//
// A data dir whose log is still in raft.db (written before segments, or
// with LogStoreBolt) moves to segments: the entries are copied into
// "log.migrating", synced, and the directory renamed to "log"; only then
// are they deleted from raft.db. A crash before the rename leaves raft.db
// as it was and the copy is made again; a crash after it finishes the
// deletion on the next start.
func (s *Server) openLogStore(dir string, bolt *raftboltdb.BoltStore) (logStore, error) {
	segDir := filepath.Join(dir, "log")
	_, statErr := os.Stat(segDir)
	hasSegments := statErr == nil
	if statErr != nil && !errors.Is(statErr, os.ErrNotExist) {
		return nil, fmt.Errorf("raft log dir: %w", statErr)
	}
	if s.cfg.LogStore == LogStoreBolt {
		if hasSegments {
			return nil, fmt.Errorf("the raft log in %s is in segment files (%s); a data dir cannot go back to the boltdb log store: start with --raft-log-store=%s", dir, segDir, LogStoreSegment)
		}
		return bolt, nil
	}
	first, err1 := bolt.FirstIndex()
	last, err2 := bolt.LastIndex()
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("read raft.db log: %w", err)
	}
	if !hasSegments {
		if err := s.migrateBoltLog(dir, bolt, first, last); err != nil {
			return nil, err
		}
	}
	store, err := raftlog.Open(segDir, raftlog.Options{ObserveSync: func(d time.Duration) { s.logSync.Observe(d.Seconds()) }})
	if err != nil {
		return nil, err
	}
	// The entries in raft.db are in the segments now: just copied, or
	// copied by a start that crashed before it deleted them here.
	if last > 0 {
		if err := bolt.DeleteRange(first, last); err != nil {
			store.Close()
			return nil, fmt.Errorf("delete migrated entries from raft.db: %w", err)
		}
	}
	return store, nil
}

// migrateBoltLog copies entries first to last of the log in raft.db (none
// when last is 0) into a new segment log directory "log".
func (s *Server) migrateBoltLog(dir string, bolt *raftboltdb.BoltStore, first, last uint64) error {
	tmp := filepath.Join(dir, "log.migrating")
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove unfinished log migration: %w", err)
	}
	if last == 0 {
		return nil // nothing to move: the store starts empty
	}
	s.logger.Info("moving the raft log from raft.db to segment files", "first", first, "last", last)
	store, err := raftlog.Open(tmp, raftlog.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	const batch = 256
	logs := make([]*raft.Log, 0, batch)
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := bolt.GetLog(i, l); err != nil {
			return fmt.Errorf("read raft.db log index %d: %w", i, err)
		}
		logs = append(logs, l)
		if len(logs) == batch || i == last {
			if err := store.StoreLogs(logs); err != nil {
				return fmt.Errorf("copy raft log: %w", err)
			}
			logs = logs[:0]
		}
	}
	if err := store.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "log")); err != nil {
		return fmt.Errorf("finish log migration: %w", err)
	}
	if err := raftlog.SyncDir(dir); err != nil {
		return fmt.Errorf("finish log migration: sync %s: %w", dir, err)
	}
	s.logger.Info("raft log moved to segment files", "entries", last-first+1)
	return nil
}

package fsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// ApplyResult is what Apply returns for a command entry. Err is a business
// rejection (an *Error); the state is unchanged when it is set.
type ApplyResult struct {
	Index uint64 // raft index of the entry
	Value any    // the stored object, when the command stores one
	Err   error
}

// Entry is the log entry a command is applied from.
type Entry struct {
	Index   uint64 // raft index
	Term    uint64 // raft term of the leader that appended it
	Version byte   // body codec version
	Body    []byte
	// Approved is set when the command is applied by the approval that
	// gated it, in the entry that recorded the last approval.
	Approved bool
	// approval is that approval (with the votes that approved it), when
	// Approved.
	approval *Approval

	// body is the command's body as applyOne decoded it before applying
	// (nil for a command an approval carries).
	body any
}

// body returns the entry's command body: the one applyOne decoded already
// (C is the command's registered body type), or, for the command an
// approval carries, decoded here. That command was decoded when the
// approval was created, so a failure here means the code changed under a
// pending approval; it panics with the index.
func body[C any](e *Entry) *C {
	if e.body != nil {
		return e.body.(*C)
	}
	out := new(C)
	if err := decodeBody(e.Version, e.Body, out); err != nil {
		panic(fmt.Sprintf("fsm: cannot decode %T at index %d: %v", out, e.Index, err))
	}
	return out
}

// FSM implements raft.FSM and raft.BatchingFSM over a State.
type FSM struct {
	logger  hclog.Logger
	metrics *metrics

	mu    sync.RWMutex
	state *State

	watchMu sync.Mutex
	watchCh chan struct{}
	// tableWatches are the open watches on sets of tables, by watchKey:
	// each is closed (and dropped) when a command changes one of its
	// tables, or at a restore. Only the watchers of what changed wake.
	tableWatches map[string]*tableWatch
	// watchesOn indexes tableWatches by table, so that a change visits
	// only the watches on what it touched.
	watchesOn map[string]map[*tableWatch]struct{}

	// applied is the raft index of the last entry handed to the FSM
	// (commands and configuration entries, changing or not); appliedCh is
	// closed and replaced every time it moves. Followers serve linearizable
	// reads once applied reaches the leader's (ReadIndex).
	applied   atomic.Uint64
	appliedMu sync.Mutex
	appliedCh chan struct{}

	// bootstrapRetired mirrors State.Trust.BootstrapRetired for the API's
	// token check, which runs on every request of the bootstrap token and
	// should not take the state's lock for it.
	bootstrapRetired atomic.Bool
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// New returns an empty FSM whose metrics are registered on reg (nil: none).
func New(logger hclog.Logger, reg prometheus.Registerer) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{
		logger:    logger.Named("fsm"),
		metrics:   newMetrics(reg),
		state:     newState(),
		watchCh:   make(chan struct{}),
		appliedCh: make(chan struct{}),

		tableWatches: map[string]*tableWatch{},
		watchesOn:    map[string]map[*tableWatch]struct{}{},
	}
}

// Apply applies one committed log entry.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in order under one lock and wakes
// blocked readers once for the whole batch.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	changed := false
	f.mu.Lock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		if len(l.Data) >= 2 && MessageType(l.Data[0]) == BatchType {
			r := f.applyBatchEntry(l.Index, l.Term, l.Data)
			if b, ok := r.(*BatchResult); ok {
				for _, r := range b.Results {
					changed = changed || r.Err == nil
				}
			}
			out[i] = r
			continue
		}
		res := f.applyOne(l.Index, l.Term, l.Data)
		if res == nil {
			continue // an ignored command: no response, no change
		}
		if res.Err == nil {
			changed = true
		}
		out[i] = res
	}
	touched := f.state.takeTouched()
	f.bootstrapRetired.Store(f.state.Trust.BootstrapRetired)
	f.mu.Unlock()
	if changed {
		f.notify()
	}
	if len(touched) > 0 {
		f.notifyTables(touched)
	}
	if n := len(logs); n > 0 {
		f.setApplied(logs[n-1].Index)
	}
	return out
}

func (f *FSM) setApplied(index uint64) {
	f.applied.Store(index)
	f.appliedMu.Lock()
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	f.appliedMu.Unlock()
}

// BootstrapRetired reports whether the bootstrap token was retired, as of
// the last entry applied, without taking the state's lock.
func (f *FSM) BootstrapRetired() bool { return f.bootstrapRetired.Load() }

// AppliedIndex returns the raft index of the last entry the FSM applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// WaitApplied blocks until the FSM has applied index, or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.appliedMu.Lock()
		ch := f.appliedCh
		f.appliedMu.Unlock()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// applyOne applies a command entry with f.mu held.
//
// An entry of a known type whose body does not decode is refused the same
// way on every server (the same bytes fail the same decoder): it changes
// nothing but the audit chain, which records the refusal, and the FSM
// keeps running. A leader never logs such an entry (it encodes its own
// commands and decodes forwarded ones first); only a misbehaving one
// could, and it must not stop every server for good.
//
// An entry of a type this server does not know, without
// IgnoreUnknownTypeFlag, stops it: a newer server applies it, so refusing
// it here would make this replica diverge silently. Leaders log a new type
// only once every server speaks its protocol (cluster/protocol.go).
func (f *FSM) applyOne(index, term uint64, data []byte) *ApplyResult {
	if len(data) < 2 {
		return f.refuse(index, data, fmt.Errorf("%d bytes, too short for a command", len(data)))
	}
	t := MessageType(data[0])
	c, ok := commands[t]
	if !ok {
		if t&IgnoreUnknownTypeFlag != 0 {
			f.logger.Warn("ignoring unknown command type", "type", uint8(t), "index", index)
			return nil
		}
		panic(fmt.Sprintf("fsm: unknown command type %d at index %d: the leader that logged it is newer than this server; upgrade this server (docs/operations.md, Upgrades)", t, index))
	}
	body := c.body()
	if err := decodeBody(data[1], data[2:], body); err != nil {
		return f.refuse(index, data, fmt.Errorf("the body of %s does not decode: %w", t, err))
	}
	start := time.Now()
	val, err := c.apply(f.state, &Entry{Index: index, Term: term, Version: data[1], Body: data[2:], body: body})
	f.metrics.observe(t, err, start)
	if err != nil {
		var ferr *Error
		if !errors.As(err, &ferr) {
			panic(fmt.Sprintf("fsm: %s at index %d returned a non-business error: %v", t, index, err))
		}
		f.state.auditNote = ""
		return &ApplyResult{Index: index, Err: err}
	}
	f.extendAudit(index, t, data[1:], atOf(val))
	return &ApplyResult{Index: index, Value: val}
}

// refuse records an undecodable entry: the same result on every server,
// and the audit chain says so (an entry of type "refused:<type>" whose
// hash covers the raw bytes).
func (f *FSM) refuse(index uint64, data []byte, why error) *ApplyResult {
	var t MessageType
	if len(data) > 0 {
		t = MessageType(data[0])
	}
	f.logger.Error("refused a committed entry that does not decode", "index", index, "type", t.String(), "error", why)
	f.metrics.refused.Inc()
	var body []byte
	if len(data) > 1 {
		body = data[1:]
	}
	f.chain(index, t, body, "refused:"+t.String(), 0)
	return &ApplyResult{Index: index, Err: invalidf("undecodable_command", "entry %d was refused: %v", index, why)}
}

// extendAudit links the applied command into the hash chain.
func (f *FSM) extendAudit(index uint64, t MessageType, body []byte, at int64) {
	f.chain(index, t, body, t.String(), at)
}

// chain extends the hash chain with an entry named name.
func (f *FSM) chain(index uint64, t MessageType, body []byte, name string, at int64) {
	s := f.state
	s.AuditHead = chainHash(s.AuditHead, index, t, body)
	s.Index = index
	e := AuditEntry{Index: index, Type: name, Hash: s.AuditHead, At: at, Note: s.auditNote}
	s.auditNote = ""
	// Append, and only every auditRingSize entries move the newest ring
	// to the front: amortised O(1) rather than shifting the whole ring on
	// every apply.
	if len(s.Audit) >= 2*auditRingSize {
		s.Audit = s.Audit[:copy(s.Audit, s.Audit[len(s.Audit)-auditRingSize+1:])]
	}
	s.Audit = append(s.Audit, e)
}

// Read calls fn with the current state under the read lock. fn must not
// keep or modify anything it is given.
func (f *FSM) Read(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Index returns the raft index of the last command that changed the state.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Index
}

// AuditHead returns the audit chain head and the index it covers.
func (f *FSM) AuditHead() (string, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.AuditHead, f.state.Index
}

// WatchCh returns a channel that is closed at the next state change or
// restore. Take it before reading, so no change can be missed.
func (f *FSM) WatchCh() <-chan struct{} {
	f.watchMu.Lock()
	defer f.watchMu.Unlock()
	return f.watchCh
}

func (f *FSM) notify() {
	f.watchMu.Lock()
	close(f.watchCh)
	f.watchCh = make(chan struct{})
	f.watchMu.Unlock()
}

// tableWatch is one open watch on a set of tables, shared by every watcher
// of the same set.
type tableWatch struct {
	key    string
	tables []string
	ch     chan struct{}
	refs   int
}

func watchKey(tables []string) string { return strings.Join(tables, "\x00") }

// WatchTables returns a channel that is closed when a command changes one
// of tables (moves its TableIndex) or the state is restored, and a release
// function the caller must call once it stops waiting. Take it before
// reading, so no change can be missed. Unlike WatchCh, a change to another
// table does not close it: a blocking query on the tasks of one agent does
// not wake for a token created elsewhere. tables must not be empty.
func (f *FSM) WatchTables(tables ...string) (<-chan struct{}, func()) {
	key := watchKey(tables)
	f.watchMu.Lock()
	w := f.tableWatches[key]
	if w == nil {
		w = &tableWatch{key: key, tables: slices.Clone(tables), ch: make(chan struct{})}
		f.tableWatches[key] = w
		for _, t := range w.tables {
			m := f.watchesOn[t]
			if m == nil {
				m = map[*tableWatch]struct{}{}
				f.watchesOn[t] = m
			}
			m[w] = struct{}{}
		}
	}
	w.refs++
	f.watchMu.Unlock()
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			f.watchMu.Lock()
			defer f.watchMu.Unlock()
			w.refs--
			// Dropped when its last watcher leaves, so that watches on
			// tables nobody writes (an agent that never registered) do
			// not pile up.
			if w.refs == 0 && f.tableWatches[key] == w {
				f.dropWatch(w)
			}
		})
	}
}

// dropWatch forgets w, with f.watchMu held.
func (f *FSM) dropWatch(w *tableWatch) {
	delete(f.tableWatches, w.key)
	for _, t := range w.tables {
		if m := f.watchesOn[t]; m != nil {
			delete(m, w)
			if len(m) == 0 {
				delete(f.watchesOn, t)
			}
		}
	}
}

// notifyTables wakes the watches on any of the touched tables (nil: all).
func (f *FSM) notifyTables(touched map[string]struct{}) {
	f.watchMu.Lock()
	defer f.watchMu.Unlock()
	var hit []*tableWatch
	if touched == nil {
		for _, w := range f.tableWatches {
			hit = append(hit, w)
		}
	}
	for t := range touched {
		for w := range f.watchesOn[t] {
			hit = append(hit, w)
		}
	}
	for _, w := range hit {
		if f.tableWatches[w.key] == w { // a watch on two touched tables is hit twice
			close(w.ch)
			f.dropWatch(w)
		}
	}
}

// Snapshot captures an immutable copy of the state. Persist writes it out
// while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	s := f.state.clone()
	f.mu.RUnlock()
	s.applied = f.applied.Load()
	return &fsmSnapshot{state: s, metrics: f.metrics}, nil
}

// Restore replaces the state with one read from r, then wakes every blocked
// reader. The new state is decoded and checked before the swap, so a bad
// snapshot leaves the old state in place.
func (f *FSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	start := time.Now()
	s, err := ReadSnapshot(r)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.bootstrapRetired.Store(s.Trust.BootstrapRetired)
	f.mu.Unlock()
	f.notify()
	f.notifyTables(nil)
	f.setApplied(s.applied)
	f.metrics.restore.Observe(time.Since(start).Seconds())
	f.logger.Info("restored state from snapshot", "index", s.Index, "audit_head", s.AuditHead,
		"regions", len(s.Regions), "tenants", len(s.Tenants))
	return nil
}

// atOf returns the leader timestamp carried by a stored object, for audit.
func atOf(v any) int64 {
	switch o := v.(type) {
	case *Region:
		return o.UpdatedAt
	case *Tenant:
		return o.UpdatedAt
	case *Agent:
		return o.LastContact
	case *RegionDatabase:
		return o.UpdatedAt
	case *TenantSyncState:
		return o.At
	case *GlobalTable:
		return o.UpdatedAt
	case stamped:
		return o.at()
	}
	return 0
}

// stamped is implemented by apply results that carry a leader time but are
// not stored objects (deletions).
type stamped interface{ at() int64 }

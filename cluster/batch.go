package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/fsm"
)

// The leader's group commit. Raft already writes every entry waiting when
// its previous write finishes in one fsync; on top of that, commands of
// different objects that arrive while earlier entries are still being
// committed travel together as one batch entry (fsm.BatchType). On this
// class of machine an fdatasync costs as much CPU as decoding, validating
// and applying a dozen commands, so under load fewer, fuller raft rounds
// are what make writes cheap. An idle leader sends a command on its own at
// once: batching never delays a lone write.
const (
	// batchInflight is how many entries the batcher keeps in raft at once:
	// two let the leader write the next batch while the followers write
	// the previous one.
	batchInflight = 2
	// batchMaxBytes bounds the commands of one batch entry.
	batchMaxBytes = 1 << 20
)

type batcher struct {
	s        *Server
	mu       sync.Mutex
	queue    []*queuedCmd
	inflight int
}

type queuedCmd struct {
	data []byte
	key  string
	sent bool
	done chan cmdAnswer // buffered: the committer never blocks on it
}

type cmdAnswer struct {
	res *fsm.ApplyResult
	err error
}

// applyKeyed commits an encoded command. A command with a key (see
// fsm.BatchKey) may share a batch entry with commands of other keys.
func (s *Server) applyKeyed(ctx context.Context, data []byte, key string) (*fsm.ApplyResult, error) {
	if key == "" || !s.batchesOK() {
		return s.ApplyRaw(ctx, data)
	}
	if s.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := s.batch
	q := &queuedCmd{data: data, key: key, done: make(chan cmdAnswer, 1)}
	b.mu.Lock()
	b.queue = append(b.queue, q)
	b.flushLocked()
	b.mu.Unlock()
	select {
	case a := <-q.done:
		return a.res, a.err
	case <-ctx.Done():
		b.mu.Lock()
		if !q.sent {
			b.removeLocked(q)
			b.mu.Unlock()
			return nil, ctx.Err() // never reached raft
		}
		b.mu.Unlock()
		a := <-q.done // in raft: its outcome is coming
		return a.res, a.err
	}
}

// batchesOK reports whether every server can apply batch entries.
func (s *Server) batchesOK() bool {
	min, _ := s.protocols()
	return min >= protocolBatch
}

func (b *batcher) removeLocked(q *queuedCmd) {
	for i, x := range b.queue {
		if x == q {
			b.queue = append(b.queue[:i], b.queue[i+1:]...)
			return
		}
	}
}

// flushLocked sends queued commands to raft while fewer than
// batchInflight entries are in flight: at most one command per key and
// fsm.MaxBatchCommands per entry; the rest wait for the next one. Entries
// are handed to raft here, under the lock, so that they enter the log in
// the order they left the queue.
func (b *batcher) flushLocked() {
	for b.inflight < batchInflight && len(b.queue) > 0 {
		var take, keep []*queuedCmd
		keys := map[string]bool{}
		size := 0
		for _, q := range b.queue {
			if keys[q.key] || len(take) == fsm.MaxBatchCommands || (len(take) > 0 && size+len(q.data) > batchMaxBytes) {
				keep = append(keep, q)
				continue
			}
			keys[q.key] = true
			size += len(q.data)
			take = append(take, q)
		}
		b.queue = keep
		data := take[0].data
		if len(take) > 1 {
			cmds := make([][]byte, len(take))
			for i, q := range take {
				cmds[i] = q.data
			}
			data = fsm.EncodeBatch(cmds)
		}
		for _, q := range take {
			q.sent = true
		}
		b.inflight++
		start := time.Now()
		b.s.applyGate.RLock()
		f := b.s.raft.Apply(data, enqueueTimeout)
		b.s.applyGate.RUnlock()
		go b.await(f, take, start)
	}
}

// await hands each command of an entry its result.
func (b *batcher) await(f raft.ApplyFuture, take []*queuedCmd, start time.Time) {
	err := f.Error()
	b.s.metrics.observeApply(start, err)
	b.s.metrics.observeBatch(len(take))
	var results []*fsm.ApplyResult
	if err == nil {
		switch r := f.Response().(type) {
		case *fsm.ApplyResult:
			results = []*fsm.ApplyResult{r}
		case *fsm.BatchResult:
			results = r.Results
		}
		if len(results) != len(take) {
			err = fmt.Errorf("%w: the FSM answered %d results for %d commands", ErrOutcomeUnknown, len(results), len(take))
		}
	} else {
		err = classifyApplyError(err)
	}
	for i, q := range take {
		if err != nil {
			q.done <- cmdAnswer{err: err}
		} else {
			q.done <- cmdAnswer{res: results[i]}
		}
	}
	b.mu.Lock()
	b.inflight--
	if b.s.raft.State() == raft.Leader {
		b.flushLocked()
	} else {
		// Lost leadership: nothing queued reached raft; the callers go
		// to the new leader.
		for _, q := range b.queue {
			q.done <- cmdAnswer{err: ErrNotLeader}
		}
		b.queue = nil
	}
	b.mu.Unlock()
}

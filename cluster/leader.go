package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// LeaderRoutine is work that runs only on the leader: it starts when
// leadership is established and its context is cancelled when leadership
// is revoked. A routine that returns an error is restarted after a pause
// while leadership lasts.
type LeaderRoutine struct {
	Name string
	Run  func(ctx context.Context) error
}

type leaderRoutine struct {
	name string
	fn   func(ctx context.Context) error
}

const (
	barrierTimeout      = 30 * time.Second
	routineRestartPause = time.Second
)

// monitorLeadership is the one goroutine that watches raft's NotifyCh. It
// starts the leader loop on gaining leadership and stops it on losing it.
// NotifyCh (unlike LeaderCh) never drops a transition, so a quick "lost and
// regained" is seen as two events.
func (s *Server) monitorLeadership(ctx context.Context) {
	var stop chan struct{}
	var loop sync.WaitGroup
	stopLoop := func() {
		if stop == nil {
			return
		}
		close(stop)
		loop.Wait()
		stop = nil
	}
	for {
		select {
		case <-ctx.Done():
			stopLoop()
			return
		case isLeader := <-s.raftNotifyCh:
			if !isLeader {
				stopLoop()
				s.logger.Info("lost leadership")
				continue
			}
			if stop != nil {
				s.logger.Error("leader loop already running")
				continue
			}
			s.logger.Info("gained leadership")
			stop = make(chan struct{})
			loop.Add(1)
			go func(stop chan struct{}) {
				defer loop.Done()
				s.leaderLoop(stop)
			}(stop)
		}
	}
}

// leaderLoop runs while this server is leader: Barrier so the FSM holds
// every committed entry, establish leadership, then wait to be stopped.
// When establishing fails the server gives leadership away rather than
// staying a leader that does no leader work.
func (s *Server) leaderLoop(stop chan struct{}) {
	for attempt := 0; ; attempt++ {
		err := s.raft.Barrier(barrierTimeout).Error()
		if err == nil {
			err = s.establishLeadership()
			if err == nil {
				break
			}
			s.revokeLeadership()
		}
		s.logger.Error("failed to establish leadership", "error", err, "attempt", attempt)
		if attempt >= 2 {
			if err := s.raft.LeadershipTransfer().Error(); err != nil {
				s.logger.Error("leadership transfer failed", "error", err)
			}
		}
		select {
		case <-stop:
			return
		case <-time.After(time.Second):
		}
	}
	<-stop
	s.revokeLeadership()
}

// establishLeadership starts the leader routines and, last, marks the server
// ready to answer consistent reads.
func (s *Server) establishLeadership() error {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	if s.raft.State() != raft.Leader {
		return errors.New("no longer leader")
	}
	ctx, cancel := context.WithCancel(s.shutdownCtx)
	s.routinesCancel = cancel
	s.failedSince = map[string]time.Time{}
	for _, r := range s.routines {
		s.routinesWG.Add(1)
		go s.runRoutine(ctx, r)
	}
	s.established.Store(s.raft.CurrentTerm())
	s.readyForReads.Store(true)
	s.logger.Info("leadership established", "term", s.raft.CurrentTerm(), "routines", len(s.routines))
	return nil
}

// revokeLeadership stops consistent reads first, then the routines.
func (s *Server) revokeLeadership() {
	s.readyForReads.Store(false)
	s.leaderMu.Lock()
	cancel := s.routinesCancel
	s.routinesCancel = nil
	s.leaderMu.Unlock()
	if cancel != nil {
		cancel()
		s.routinesWG.Wait()
	}
	s.logger.Info("leadership revoked")
}

func (s *Server) runRoutine(ctx context.Context, r leaderRoutine) {
	defer s.routinesWG.Done()
	log := s.logger.With("routine", r.name)
	for {
		err := r.fn(ctx)
		if ctx.Err() != nil {
			return
		}
		log.Error("leader routine stopped; restarting", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(routineRestartPause):
		}
	}
}

// IsLeader reports whether this server is the leader and has established
// leadership (its routines run and it serves consistent reads).
func (s *Server) IsLeader() bool {
	return s.readyForReads.Load() && s.raft.State() == raft.Leader
}

// Leader returns the current leader's server id and raft address, if known.
func (s *Server) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// LeaderHTTP returns the HTTP base URL of the current leader.
func (s *Server) LeaderHTTP() (string, error) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return "", ErrNoLeader
	}
	u, ok := s.ServerHTTP(string(id))
	if !ok {
		return "", ErrNoLeader
	}
	return u, nil
}

// LeaderChangeCh returns a channel closed at the next leader change.
func (s *Server) LeaderChangeCh() <-chan struct{} { return s.leaderCh.ch() }

// observeLeaders turns raft leader observations into wake-ups for requests
// waiting for a leader, and marks the server as part of a cluster once it
// has seen one.
func (s *Server) observeLeaders(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-s.observationCh:
			lo, ok := o.Data.(raft.LeaderObservation)
			if !ok {
				continue
			}
			s.leaderChanges.Add(1)
			if lo.LeaderID != "" {
				s.markBootstrapped()
			}
			s.leaderCh.notify()
		}
	}
}

// verifyLeader confirms with a quorum that this server is still leader.
func (s *Server) verifyLeader() error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	if err := s.raft.VerifyLeader().Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return ErrShuttingDown
		}
		return ErrNotLeader
	}
	if !s.readyForReads.Load() {
		return ErrNotLeader
	}
	return nil
}

// ConsistentRead blocks until a quorum has confirmed this server's
// leadership after the call began. Concurrent callers share one round trip.
// ErrNotLeader means the read must go to the leader.
//
// On a follower it is a ReadIndex: the leader confirms its leadership and
// answers its applied index (concurrent callers on the follower share one
// request), and the follower waits until it has applied as far, so the read
// can be served from its own state. A leader that has not established its
// leadership yet answers ErrNotLeader.
func (s *Server) ConsistentRead(ctx context.Context) error {
	if s.IsLeader() {
		_, err := s.readBarrier.wait(ctx)
		return err
	}
	if s.raft.State() == raft.Leader {
		return ErrNotLeader
	}
	if s.protocol() < protocolForwardRPC || !s.leaderServesRPC() {
		return ErrFollowerBehind // an older leader: it answers the read itself
	}
	idx, err := s.followerReads.wait(ctx)
	if err != nil {
		return err
	}
	if s.fsm.AppliedIndex() >= idx {
		return nil
	}
	// Under write load the next replication round brings the commit within
	// a millisecond or two. Idle, raft sends it only after its commit
	// timeout (50-100 ms): rather than hold the read that long, let the
	// leader answer it.
	wctx, cancel := context.WithTimeout(ctx, followerReadWait)
	defer cancel()
	if err := s.fsm.WaitApplied(wctx, idx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrFollowerBehind
	}
	return nil
}

// followerReadWait is how long a follower waits to apply the leader's read
// index before it hands a linearizable read to the leader.
const followerReadWait = 5 * time.Millisecond

// broadcast is a channel that is closed and replaced on every notify.
type broadcast struct {
	mu sync.Mutex
	c  chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{c: make(chan struct{})} }

func (b *broadcast) ch() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.c
}

func (b *broadcast) notify() {
	b.mu.Lock()
	close(b.c)
	b.c = make(chan struct{})
	b.mu.Unlock()
}

// readBarrier coalesces leadership checks: a caller joins the next round,
// and a round starts only after the caller joined, so every caller is
// covered by a check that began after it arrived (ReadIndex semantics).
type readBarrier struct {
	verify  func() (uint64, error)
	mu      sync.Mutex
	next    *barrierRound
	running bool
}

type barrierRound struct {
	done chan struct{}
	idx  uint64
	err  error
}

func newReadBarrier(verify func() (uint64, error)) *readBarrier {
	return &readBarrier{verify: verify}
}

// wait joins the next round and returns its result (an index, for a
// follower's read-index round).
func (b *readBarrier) wait(ctx context.Context) (uint64, error) {
	b.mu.Lock()
	if b.next == nil {
		b.next = &barrierRound{done: make(chan struct{})}
	}
	r := b.next
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.idx, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (b *readBarrier) run() {
	for {
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		r.idx, r.err = b.verify()
		close(r.done)
	}
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// enqueueTimeout bounds how long Apply waits for Raft to accept a command.
const enqueueTimeout = 5 * time.Second

// Apply encodes a command, commits it through Raft and returns the FSM's
// result. It must run on the leader: elsewhere it returns ErrNotLeader
// without side effects, and the caller forwards the request.
//
// Errors say whether the command can have been applied: ErrNotLeader and
// ErrBusy mean it was not; ErrOutcomeUnknown means it may have been. A
// business rejection comes back as the *fsm.Error inside the result's Err,
// with the state unchanged.
func (s *Server) Apply(ctx context.Context, t fsm.MessageType, body any) (*fsm.ApplyResult, error) {
	data, err := s.encode(t, body)
	if err != nil {
		return nil, err
	}
	return s.applyKeyed(ctx, data, fsm.BatchKey(t, body))
}

// ApplyRaw commits an already encoded command.
func (s *Server) ApplyRaw(ctx context.Context, data []byte) (*fsm.ApplyResult, error) {
	if s.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	s.applyGate.RLock()
	f := s.raft.Apply(data, enqueueTimeout)
	s.applyGate.RUnlock()
	err := f.Error()
	s.metrics.observeApply(start, err)
	if err != nil {
		return nil, classifyApplyError(err)
	}
	res, ok := f.Response().(*fsm.ApplyResult)
	if !ok || res == nil {
		return nil, fmt.Errorf("apply: unexpected FSM response %T", f.Response())
	}
	return res, nil
}

// classifyApplyError maps raft's apply errors onto ours. Only errors that
// raft returns before the entry is in the log are definite failures.
func classifyApplyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrBusy
	case errors.Is(err, raft.ErrAbortedByRestore):
		// raft documents that the effects are gone after the restore.
		return fmt.Errorf("%w: a snapshot restore aborted the write; it was not applied", ErrBusy)
	default: // ErrLeadershipLost, ErrRaftShutdown after enqueue, and anything new
		return fmt.Errorf("%w (%v)", ErrOutcomeUnknown, err)
	}
}

// Configuration returns the Raft configuration as this server knows it,
// with the index it was committed at.
func (s *Server) Configuration() ([]structs.Peer, uint64, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, 0, err
	}
	members := map[string]serverMember{}
	for _, sm := range s.serverMembers() {
		members[sm.ID] = sm
	}
	_, leaderID := s.raft.LeaderWithID()
	var out []structs.Peer
	for _, srv := range f.Configuration().Servers {
		p := structs.Peer{
			ID:       string(srv.ID),
			Address:  string(srv.Address),
			Voter:    srv.Suffrage == raft.Voter,
			Leader:   srv.ID == leaderID,
			Suffrage: srv.Suffrage.String(),
		}
		if sm, ok := members[p.ID]; ok {
			p.Region, p.HTTP, p.Status, p.Protocol = sm.Region, sm.HTTP, sm.Status.String(), sm.Protocol
		}
		out = append(out, p)
	}
	return out, f.Index(), nil
}

// RemovePeer removes a server from the Raft configuration by id. It must
// run on the leader.
func (s *Server) RemovePeer(ctx context.Context, id string) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	found := false
	peers, _, err := s.Configuration()
	if err != nil {
		return err
	}
	for _, p := range peers {
		if p.ID == id {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: %q is not in the raft configuration", fsm.ErrNotFound, id)
	}
	if id == s.cfg.NodeID {
		return fmt.Errorf("%w: the leader cannot remove itself; transfer leadership or stop it first", fsm.ErrFailedPrecondition)
	}
	if err := s.raft.RemoveServer(raft.ServerID(id), 0, configChangeTimeout).Error(); err != nil {
		return classifyApplyError(err)
	}
	return nil
}

// Stats returns raft's statistics for status endpoints.
func (s *Server) Stats() map[string]string { return s.raft.Stats() }

// State returns the raft state name (Leader, Follower, Candidate, Shutdown).
func (s *Server) State() string { return s.raft.State().String() }

package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/atomcloud/atomfed/internal/node"
)

const configChangeTimeout = 10 * time.Second

// reconcileRoutine turns Serf membership into the Raft configuration: a full
// pass at start (so events missed during an election are not lost) and on
// every ReconcileInterval, and one member at a time as Serf reports changes.
func (s *Server) reconcileRoutine(ctx context.Context) error {
	interval := s.cfg.ReconcileInterval
	if interval <= 0 {
		interval = time.Minute
	}
	if err := s.reconcileAll(); err != nil {
		s.logger.Warn("full reconcile failed", "error", err)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := s.reconcileAll(); err != nil {
				s.logger.Warn("full reconcile failed", "error", err)
			}
		case ev := <-s.reconcileCh:
			if err := s.reconcileMember(ev.Member, ev.reaped); err != nil {
				s.logger.Warn("reconcile member failed", "member", ev.Name, "error", err)
			}
		}
	}
}

func (s *Server) reconcileAll() error {
	var firstErr error
	members := s.serf.Members()
	known := make(map[string]bool, len(members))
	for _, m := range members {
		known[m.Name] = true
		if err := s.reconcileMember(m, false); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if err := s.forgetReapedAgents(known); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// reconcileMember applies one Serf member's state: a server's to the Raft
// configuration, an agent's to the agent registry in the FSM.
func (s *Server) reconcileMember(m serf.Member, reaped bool) error {
	if m.Tags[node.TagRole] == node.RoleAgent {
		return s.reconcileAgent(m, reaped)
	}
	sm, ok := parseServer(m)
	if !ok || sm.ID == s.cfg.NodeID {
		return nil
	}
	if reaped {
		s.clearFailed(sm.ID)
		s.admit(sm.ID)
		return s.removeServer(sm.ID, "reaped by serf")
	}
	switch m.Status {
	case serf.StatusAlive:
		s.clearFailed(sm.ID)
		return s.addServer(sm)
	case serf.StatusFailed:
		s.markFailed(sm.ID)
		return nil
	case serf.StatusLeft:
		s.clearFailed(sm.ID)
		return s.removeServer(sm.ID, "left the cluster")
	}
	return nil
}

// addServer adds an alive server to the configuration, or fixes its address
// or suffrage when they changed.
func (s *Server) addServer(sm serverMember) error {
	if sm.RaftAddr == "" {
		return fmt.Errorf("server %s gossips no raft address", sm.ID)
	}
	cfgF := s.raft.GetConfiguration()
	if err := cfgF.Error(); err != nil {
		return err
	}
	for _, srv := range cfgF.Configuration().Servers {
		if srv.ID != raft.ServerID(sm.ID) {
			continue
		}
		wantVoter := !sm.NonVoter
		if string(srv.Address) == sm.RaftAddr && (srv.Suffrage == raft.Voter) == wantVoter {
			return nil
		}
		break
	}
	// A role=server tag is not authority: only a member that proves a
	// server identity under its own name joins the configuration.
	if err := s.verifyServer(sm); err != nil {
		s.refuse(sm.ID, refusedServerIdentity, err.Error())
		return nil
	}
	s.admit(sm.ID)
	var f raft.IndexFuture
	if sm.NonVoter {
		s.logger.Info("adding non-voter", "server", sm.ID, "addr", sm.RaftAddr)
		f = s.raft.AddNonvoter(raft.ServerID(sm.ID), raft.ServerAddress(sm.RaftAddr), 0, configChangeTimeout)
	} else {
		s.logger.Info("adding voter", "server", sm.ID, "addr", sm.RaftAddr)
		f = s.raft.AddVoter(raft.ServerID(sm.ID), raft.ServerAddress(sm.RaftAddr), 0, configChangeTimeout)
	}
	if err := f.Error(); err != nil {
		return fmt.Errorf("add %s: %w", sm.ID, err)
	}
	return nil
}

// removeServer removes a server from the configuration if it is in it.
func (s *Server) removeServer(id, why string) error {
	cfgF := s.raft.GetConfiguration()
	if err := cfgF.Error(); err != nil {
		return err
	}
	for _, srv := range cfgF.Configuration().Servers {
		if srv.ID == raft.ServerID(id) {
			s.logger.Info("removing server", "server", id, "reason", why)
			if err := s.raft.RemoveServer(srv.ID, 0, configChangeTimeout).Error(); err != nil {
				return fmt.Errorf("remove %s: %w", id, err)
			}
			return nil
		}
	}
	return nil
}

func (s *Server) markFailed(id string) {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	if _, ok := s.failedSince[id]; !ok {
		s.failedSince[id] = time.Now()
		s.logger.Warn("server failed", "server", id)
	}
}

func (s *Server) clearFailed(id string) {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	delete(s.failedSince, id)
}

// deadServerCleanupRoutine removes servers that Serf has reported failed for
// longer than DeadServerCleanupAfter, one at a time, and only while a healthy
// majority of voters remains and the cluster keeps at least MinQuorum voters
// (autopilot's CleanupDeadServers).
func (s *Server) deadServerCleanupRoutine(ctx context.Context) error {
	after := s.cfg.DeadServerCleanupAfter
	if after <= 0 {
		<-ctx.Done()
		return nil
	}
	period := after / 4
	if period > time.Second {
		period = time.Second
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s.cleanupDeadServers(after)
		}
	}
}

func (s *Server) cleanupDeadServers(after time.Duration) {
	// Refresh failure marks from Serf: an event may have been dropped.
	for _, sm := range s.serverMembers() {
		if sm.Status == serf.StatusFailed {
			s.markFailed(sm.ID)
		} else if sm.Status == serf.StatusAlive {
			s.clearFailed(sm.ID)
		}
	}
	cfgF := s.raft.GetConfiguration()
	if cfgF.Error() != nil {
		return
	}
	servers := cfgF.Configuration().Servers
	s.leaderMu.Lock()
	failed := make(map[string]time.Time, len(s.failedSince))
	for k, v := range s.failedSince {
		failed[k] = v
	}
	s.leaderMu.Unlock()

	voters, failedVoters := 0, 0
	for _, srv := range servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if _, ok := failed[string(srv.ID)]; ok {
			failedVoters++
		}
	}
	for _, srv := range servers {
		since, ok := failed[string(srv.ID)]
		if !ok || time.Since(since) < after {
			continue
		}
		if srv.Suffrage == raft.Voter {
			// Removing is safe only while the healthy voters are a majority,
			// and never below MinQuorum voters.
			if failedVoters >= (voters+1)/2 || voters-1 < s.cfg.MinQuorum {
				s.logger.Warn("not removing failed server: too few healthy voters would remain",
					"server", srv.ID, "voters", voters, "failed", failedVoters, "min_quorum", s.cfg.MinQuorum)
				return
			}
		}
		if err := s.removeServer(string(srv.ID), fmt.Sprintf("failed for %s", time.Since(since).Round(time.Second))); err != nil {
			s.logger.Warn("dead server cleanup failed", "server", srv.ID, "error", err)
			return
		}
		s.clearFailed(string(srv.ID))
		return // one at a time; the next tick re-evaluates
	}
}

package cluster

import (
	"context"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// failoverTick is how often the leader looks at the automatic failover
// policies even when nothing changed: a detection window passes without
// a state change.
const failoverTick = 250 * time.Millisecond

func (s *Server) failoverDetectMS() int64 {
	if s.cfg.FailoverDetect > 0 {
		return s.cfg.FailoverDetect.Milliseconds()
	}
	return fsm.DefaultFailoverDetectMS
}

// AutoFailovers returns the automatic failovers the leader starts now
// (fsm.AutoFailoverDecisions that say start), as commands.
func AutoFailovers(s *fsm.State, now, detectMS int64) []fsm.FailoverAutoStart {
	var out []fsm.FailoverAutoStart
	for _, d := range fsm.AutoFailoverDecisions(s, now, detectMS) {
		if d.Start {
			out = append(out, fsm.FailoverAutoStart{Tenant: d.Tenant, To: d.To, DownForMS: d.DownForMS, Detail: d.Reason})
		}
	}
	return out
}

// failoverRoutine is the leader routine of the automatic failover policy.
// Only a leader runs it, and a leader holds a quorum of the servers: the
// region is declared down by the majority's view of Serf, never by one
// server cut off from the rest. A tenant that waits (home up, detection
// window not over, best mirror over its RPO budget, drill not passed) is
// logged once per reason here; every server exports the reason
// (atomfed_tenant_failover_blocked) and answers it in GET
// /v1/tenants/{id}/failover.
func (s *Server) failoverRoutine(ctx context.Context) error {
	tick := time.NewTicker(failoverTick)
	defer tick.Stop()
	for {
		watch := s.fsm.WatchCh()
		now := time.Now().UnixNano()
		var starts []fsm.FailoverAutoStart
		var holds []fsm.FailoverHold
		s.fsm.Read(func(st *fsm.State) {
			starts = AutoFailovers(st, now, s.failoverDetectMS())
			holds = fsm.FailoverHoldChanges(st, fsm.AutoFailoverDecisions(st, now, s.failoverDetectMS()))
		})
		// Why a tenant waits goes to the audit chain once per reason.
		for _, h := range holds {
			h.At = time.Now().UnixNano()
			if res, err := s.Apply(ctx, fsm.FailoverHoldType, h); err == nil && res.Err == nil && h.Wait != "" {
				s.logger.Warn("failover: automatic policy waits", "tenant", h.Tenant, "reason", h.Wait, "detail", h.Reason)
			}
		}
		for _, a := range starts {
			a.At = time.Now().UnixNano()
			res, err := s.Apply(ctx, fsm.FailoverAutoType, a)
			switch {
			case err != nil:
				s.logger.Warn("failover: automatic failover not applied", "tenant", a.Tenant, "error", err)
			case res.Err != nil:
				s.logger.Warn("failover: automatic failover refused", "tenant", a.Tenant, "reason", res.Err)
			default:
				s.logger.Warn("failover: automatic failover started", "tenant", a.Tenant, "to", a.To, "index", res.Index, "detail", a.Detail)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-tick.C:
		}
	}
}

// FailoverDetectMS is the detection window of the automatic failover
// policy, in ms (the API answers with it).
func (s *Server) FailoverDetectMS() int64 { return s.failoverDetectMS() }

package cluster

import (
	"context"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// rebuildRoutine is the leader routine that records the results of
// finished region-rebuild tasks (RebuildRecord), on every change of the
// state and at least every backupTick.
func (s *Server) rebuildRoutine(ctx context.Context) error {
	tick := time.NewTicker(backupTick)
	defer tick.Stop()
	for {
		watch := s.fsm.WatchCh()
		var records []fsm.RebuildRecord
		s.fsm.Read(func(st *fsm.State) { records = RebuildRecords(st) })
		for _, r := range records {
			r.At = time.Now().UnixNano()
			if err := s.applyQuiet(ctx, fsm.RebuildRecordType, r); err != nil {
				s.logger.Debug("rebuild result not recorded; retrying", "rebuild", r.Rebuild, "error", err)
				continue
			}
			s.logger.Info("rebuild recorded", "rebuild", r.Rebuild, "region", r.Region, "failed", r.Failed, "phase", r.Result.Phase)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-tick.C:
		}
	}
}

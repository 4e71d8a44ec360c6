package cluster

import (
	"context"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// backupTick bounds how late a scheduled backup is asked for.
const backupTick = 2 * time.Second

// backupRoutine is the leader routine of the backup schedule: it asks for
// the backups and restore drills regions are due (BackupRequest,
// DrillRequest) and records the results of finished backup and drill
// tasks in the catalogs (BackupRecord, DrillRecord), on every change of
// the state and at least every backupTick.
func (s *Server) backupRoutine(ctx context.Context) error {
	tick := time.NewTicker(backupTick)
	defer tick.Stop()
	for {
		watch := s.fsm.WatchCh()
		var due []fsm.BackupRequest
		var records []fsm.BackupRecord
		var drills []fsm.DrillRequest
		var drillRecords []fsm.DrillRecord
		now := time.Now().UnixNano()
		s.fsm.Read(func(st *fsm.State) {
			records, drillRecords = BackupRecords(st), DrillRecords(st)
			due, drills = BackupsDue(st, now), DrillsDue(st, now)
		})
		for _, r := range drillRecords {
			r.At = time.Now().UnixNano()
			if err := s.applyQuiet(ctx, fsm.DrillRecordType, r); err != nil {
				s.logger.Debug("drill result not recorded; retrying", "drill", r.Drill, "error", err)
				continue
			}
			s.logger.Info("restore drill recorded", "drill", r.Drill, "region", r.Region, "verdict", r.Result.Verdict)
		}
		for _, r := range records {
			r.At = time.Now().UnixNano()
			if err := s.applyQuiet(ctx, fsm.BackupRecordType, r); err != nil {
				s.logger.Debug("backup result not recorded; retrying", "backup", r.Backup, "error", err)
				continue
			}
			s.logger.Info("backup recorded", "backup", r.Backup, "region", r.Region, "failed", r.Failed, "label", r.Result.Label)
		}
		for _, r := range due {
			r.At = time.Now().UnixNano()
			if err := s.applyQuiet(ctx, fsm.BackupRequestType, r); err != nil {
				s.logger.Debug("scheduled backup not asked for; retrying", "region", r.Region, "error", err)
				continue
			}
			s.logger.Info("scheduled backup asked for", "region", r.Region, "type", r.Type)
		}
		if len(due) > 0 {
			drills = nil // a backup goes first; the drill then restores it
		}
		for _, r := range drills {
			r.At = time.Now().UnixNano()
			if err := s.applyQuiet(ctx, fsm.DrillRequestType, r); err != nil {
				s.logger.Debug("scheduled drill not asked for; retrying", "region", r.Region, "error", err)
				continue
			}
			s.logger.Info("scheduled restore drill asked for", "region", r.Region)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
			select { // debounce: reports come in bursts
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		case <-tick.C:
		}
	}
}

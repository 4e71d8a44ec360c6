package cluster

import (
	"context"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// backupTick bounds how late a scheduled backup is asked for.
const backupTick = 2 * time.Second

// backupRoutine is the leader routine of the backup schedule: it asks for
// the backups regions are due (BackupRequest) and records the results of
// finished backup tasks in the catalog (BackupRecord), on every change of
// the tasks and at least every backupTick.
func (s *Server) backupRoutine(ctx context.Context) error {
	tick := time.NewTicker(backupTick)
	defer tick.Stop()
	for {
		watch := s.fsm.WatchCh()
		var due []fsm.BackupRequest
		var records []fsm.BackupRecord
		now := time.Now().UnixNano()
		s.fsm.Read(func(st *fsm.State) {
			records = BackupRecords(st)
			due = BackupsDue(st, now)
		})
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

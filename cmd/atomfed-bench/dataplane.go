package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/bench"
	"github.com/atomcloud/atomfed/internal/testing/machine"
)

// dataPlaneOptions are the flags of the data-plane phase (-only dataplane).
type dataPlaneOptions struct {
	switchoverRounds int
	failoverRounds   int
	writeEvery       time.Duration
	backupMB         int
	backupRounds     int
	rebuild          bool
}

func addDataPlaneFlags(fs interface {
	IntVar(*int, string, int, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	BoolVar(*bool, string, bool, string)
}, o *dataPlaneOptions) {
	fs.IntVar(&o.switchoverRounds, "dp-switchover-rounds", 5, "data plane: planned switchover rounds, alternating direction (0 skips them)")
	fs.IntVar(&o.failoverRounds, "dp-failover-rounds", 5, "data plane: unplanned failover rounds with the automatic policy, a fresh tenant each (0 skips them)")
	fs.BoolVar(&o.rebuild, "dp-rebuild", true, "data plane: after the backup rounds, lose the backed-up region's PostgreSQL and time `atomfed dr rebuild`")
	fs.DurationVar(&o.writeEvery, "dp-write-every", 10*time.Millisecond, "data plane: the edge writer's pause between writes")
	fs.IntVar(&o.backupMB, "dp-backup-mb", 2048, "data plane: size of the backed-up region database in MiB (0 skips the backup rounds)")
	fs.IntVar(&o.backupRounds, "dp-backup-rounds", 3, "data plane: backup/restore rounds, atomfed and by hand in each")
}

// runDataPlane runs the data-plane benchmark on its own federation and
// writes its section of the report ("dataplane" in o.out).
func runDataPlane(ctx context.Context, o *options, bin string) error {
	d := o.dataPlane
	rep := &bench.DataPlaneReport{Date: time.Now(), Machine: machine.Detect(), Version: machine.GitDescribe(), Command: command(),
		Setup: "3 `atomfed server` processes (TLS, default flags), regions us-east, eu-west and ap-south each with its own PostgreSQL 15 " +
			"(fsync on), one `atomfed agent` process with pgBackRest and an application (one connection, INSERT ... RETURNING id), " +
			"`atomfed edge` in front; tenant acme at home in us-east, mirrored to eu-west and ap-south; all on loopback."}
	logf("data plane: starting the federation (%s)", bin)
	f, err := bench.StartDataPlaneFed(ctx, bin, logf)
	if err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	keep := o.keepLogs
	defer func() { f.Close(keep) }()
	if d.switchoverRounds > 0 && ctx.Err() == nil {
		rep.Switchover, rep.SwitchoverErr = bench.MeasureSwitchover(ctx, f, d.switchoverRounds, d.writeEvery)
		if rep.SwitchoverErr != nil {
			keep = true
			logf("switchover: %v", rep.SwitchoverErr)
		}
	}
	if d.failoverRounds > 0 && ctx.Err() == nil {
		rep.Failover, rep.FailoverErr = bench.MeasureTenantFailover(ctx, f, d.failoverRounds, d.writeEvery)
		if rep.FailoverErr != nil {
			keep = true
			logf("failover: %v", rep.FailoverErr)
		}
	}
	if d.backupMB > 0 && d.backupRounds > 0 && ctx.Err() == nil {
		rep.Backup, rep.BackupErr = bench.MeasureBackup(ctx, f, d.backupMB, d.backupRounds)
		if rep.BackupErr != nil {
			keep = true
			logf("backup: %v", rep.BackupErr)
		}
		if d.rebuild && rep.BackupErr == nil && ctx.Err() == nil {
			rep.Rebuild, rep.RebuildErr = bench.MeasureRebuild(ctx, f)
			if rep.RebuildErr != nil {
				keep = true
				logf("rebuild: %v", rep.RebuildErr)
			} else {
				logf("rebuild: %s (restore %s, recovery %s), wipe to first query %s", rep.Rebuild.Total, rep.Rebuild.Restore, rep.Rebuild.Recovery, rep.Rebuild.WipeToQuery)
			}
		}
	}
	rep.LoadAvgEnd = machine.LoadAvg()
	if err := ctx.Err(); err != nil {
		return err
	}
	md := rep.Markdown()
	fmt.Println()
	fmt.Print(md)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := bench.SpliceSection(o.out, "dataplane", md); err != nil {
			return err
		}
		logf("wrote %s", o.out)
	}
	return errors.Join(rep.SwitchoverErr, rep.FailoverErr, rep.BackupErr, rep.RebuildErr)
}

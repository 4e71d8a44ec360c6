package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
)

// RebuildSlack is how much longer than a restore the issue lets a region
// rebuild take.
const RebuildSlack = 10 * time.Second

// RebuildResult is the region rebuild measurement.
type RebuildResult struct {
	Region, Label string
	Size          int64
	// Total: from the request (POST /v1/regions/{r}/rebuild) to the
	// rebuild recorded done (leader clock); Restore and Recovery the
	// agent's pgbackrest restore and the server's start, recovery and
	// promotion; WipeToQuery from the data directory's removal to the
	// first query the rebuilt server answered.
	Total, Restore, Recovery, WipeToQuery time.Duration
}

// MeasureRebuild loses the backup region's PostgreSQL (SIGKILL, data
// directory removed) and rebuilds it with `atomfed dr rebuild` (the API
// it calls) from the newest verified backup to the end of the archived
// WAL. When the newest backup in the repository is not one atomfed
// recorded (a by-hand round ran last), it first takes one.
func MeasureRebuild(ctx context.Context, f *DataPlaneFed) (*RebuildResult, error) {
	region := BackupRegion
	res := &RebuildResult{Region: region}
	api, err := f.API()
	if err != nil {
		return res, err
	}
	newest, err := newestInRepo(ctx, f, region)
	if err != nil {
		return res, err
	}
	l, _, err := api.Backups(ctx, region, nil)
	if err != nil {
		return res, err
	}
	var latest *fsm.Backup
	for _, b := range l.Backups {
		if b.Status == fsm.BackupSucceeded && b.BackupResult != nil && b.Verified {
			latest = b
			break
		}
	}
	if latest == nil || latest.Label != newest {
		f.Log("rebuild: the newest backup in the repository (%s) is not atomfed's; taking one", newest)
		var r BackupRound
		if err := atomfedBackup(ctx, f, region, &r); err != nil {
			return res, err
		}
	}
	pg := f.PG[region]
	if err := pg.Kill(); err != nil {
		return res, err
	}
	if err := os.RemoveAll(pg.DataDir); err != nil {
		return res, err
	}
	wiped := time.Now()
	f.Log("rebuild: %s's PostgreSQL killed and its data directory removed; rebuilding", region)
	req, err := api.RunRebuild(ctx, region, &wire.RebuildRunRequest{})
	if err != nil {
		return res, err
	}
	res.Label = req.Label
	res.Size = req.BytesTotal
	if err := eventually(ctx, 30*time.Minute, func() error {
		api, err := f.API()
		if err != nil {
			return err
		}
		st, _, err := api.Rebuild(ctx, region, nil)
		if err != nil {
			return err
		}
		switch {
		case st.Rebuild == nil || st.ID != req.ID || st.Status == fsm.RebuildPending:
			return fmt.Errorf("rebuild %s not done", req.ID)
		case st.Status != fsm.RebuildDone || st.RebuildResult == nil:
			msg := st.TaskError
			if st.RebuildResult != nil {
				msg = st.RebuildResult.Phase + ": " + st.RebuildResult.Error
			}
			return retryNot{fmt.Errorf("rebuild %s %s: %s", st.ID, st.Status, msg)}
		}
		res.Total = time.Duration(st.RecordedAt - st.RequestedAt)
		res.Restore = time.Duration(st.RestoreMS) * time.Millisecond
		res.Recovery = time.Duration(st.RecoveryMS) * time.Millisecond
		return nil
	}); err != nil {
		return res, err
	}
	if err := eventually(ctx, time.Minute, func() error {
		conn, err := pg.Connect(ctx, pglocal.Database)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var n int
		return conn.QueryRow(ctx, `SELECT count(*) FROM fill_1 WHERE id < 10`).Scan(&n)
	}); err != nil {
		return res, fmt.Errorf("the rebuilt server: %w", err)
	}
	res.WipeToQuery = time.Since(wiped)
	return res, nil
}

// newestInRepo is the label of the newest backup pgBackRest holds for
// region.
func newestInRepo(ctx context.Context, f *DataPlaneFed, region string) (string, error) {
	var r BackupRound
	out, err := handRun(ctx, f, region, &r.HandInfo, "info", "--output=json")
	if err != nil {
		return "", err
	}
	var info []struct {
		Backup []struct {
			Label string `json:"label"`
		} `json:"backup"`
	}
	if err := json.Unmarshal(out, &info); err != nil || len(info) != 1 || len(info[0].Backup) == 0 {
		return "", fmt.Errorf("pgbackrest info: %v: %.300s", err, out)
	}
	var labels []string
	for _, b := range info[0].Backup {
		labels = append(labels, b.Label)
	}
	sort.Strings(labels)
	return labels[len(labels)-1], nil
}

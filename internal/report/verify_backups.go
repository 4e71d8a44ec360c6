package report

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
)

// verifyBackups checks the DR coordinator on the live federation: it asks
// for a full backup of the first region with an agent, follows it until
// its agent has taken and verified it with pgBackRest (a label, a size, a
// WAL range, verified), and finds it in the catalog with the region's
// health naming it as the newest verified backup. With backups simulated
// it only reads the catalog (a pass_simulated at best).
func verifyBackups(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	v := &Verification{OK: true}
	if env.timeout < backupWait {
		e := *env
		e.timeout = backupWait
		env = &e
	}
	if len(simulatedParts(env.fed, []string{"backups"})) > 0 {
		list, _, err := env.c.Backups(ctx, "", nil)
		if err != nil {
			return v.fail(Step{Call: "GET /v1/backups", Status: client.StatusOf(err)}, "%v", err), nil
		}
		v.ok(Step{Call: "GET /v1/backups"}, "%d backups in the catalog; none was taken: backups run simulated", len(list.Backups))
		verifyShipped(ctx, env, v)
		return v, nil
	}
	regions, err := regionsWithAgents(ctx, env)
	if err != nil || len(regions) == 0 {
		return v.fail(Step{Call: "GET /v1/regions"}, "no region with an agent to back up (%v)", err), nil
	}
	region := regions[0]
	step := Step{Call: "POST /v1/regions/" + region + "/backups {\"type\":\"full\"}"}
	var b *fsm.Backup
	err = waitFor(ctx, env, func() error {
		b, err = env.c.RunBackup(ctx, region, fsm.BackupFull)
		if client.StatusOf(err) == http.StatusConflict {
			return fmt.Errorf("a backup of %s is already running: %w", region, err)
		}
		return nil
	})
	if err == nil && b == nil {
		err = fmt.Errorf("no answer")
	}
	if err != nil {
		step.Status = client.StatusOf(err)
		return v.fail(step, "%v", err), nil
	}
	if b.ID == "" {
		return v.fail(step, "answered a backup without an id"), nil
	}
	step.Status, step.Index = http.StatusAccepted, b.CreateIndex
	v.ok(step, "backup %s %s at index %d", b.ID, b.Status, b.CreateIndex)
	refs := []AuditRef{{Index: b.CreateIndex, What: "POST /v1/regions/" + region + "/backups (" + b.ID + ")"}}

	call := "GET /v1/backups/" + b.ID + " until it is taken and verified"
	var done *fsm.Backup
	var last string
	err = waitFor(ctx, env, func() error {
		st, _, err := env.c.Backup(ctx, b.ID, nil)
		if err != nil {
			return err
		}
		last = st.Status
		if st.Progress != nil {
			last = fmt.Sprintf("%s (%s, %.0f%%)", st.Status, st.Progress.Phase, st.Progress.Percent)
		}
		switch st.Status {
		case fsm.BackupSucceeded:
			done = st.Backup
			return nil
		case fsm.BackupFailed:
			return nil
		}
		return fmt.Errorf("backup %s is %s", b.ID, last)
	})
	if err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	if done == nil {
		return v.fail(Step{Call: call}, "backup %s failed: %s", b.ID, last), refs
	}
	r := done.BackupResult
	switch {
	case r == nil || r.Label == "" || r.Size <= 0 || r.WALStart == "" || r.WALStop == "":
		return v.fail(Step{Call: call}, "taken, but the catalog lacks its label, size or WAL range: %+v", r), refs
	case !r.Verified:
		return v.fail(Step{Call: call}, "taken by %s, but pgBackRest verify did not pass: %s", done.Agent, r.VerifyError), refs
	}
	v.ok(Step{Call: call, Index: done.ModifyIndex}, "taken by %s: label %s, %d bytes (%d in the repository), WAL %s..%s, verified",
		done.Agent, r.Label, r.Size, r.RepoSize, r.WALStart, r.WALStop)
	refs = append(refs, AuditRef{Index: done.ModifyIndex, What: "backup " + b.ID + " recorded"})

	call = "GET /v1/backups?region=" + region
	err = waitFor(ctx, env, func() error {
		list, _, err := env.c.Backups(ctx, region, nil)
		if err != nil {
			return err
		}
		found := false
		for _, c := range list.Backups {
			found = found || c.ID == b.ID
		}
		if !found {
			return fmt.Errorf("backup %s is not in the catalog", b.ID)
		}
		for _, h := range list.Regions {
			if h.Region == region && h.LastVerified != nil && h.LastVerified.ID == b.ID {
				return nil
			}
		}
		return fmt.Errorf("the region's backup health does not name %s as its newest verified backup", b.ID)
	})
	if err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "in the catalog; %s's newest verified backup", region)
	verifyShipped(ctx, env, v)
	return v, refs
}

// verifyShipped ships a control-plane snapshot now and finds it in the
// catalog, the schedule kept.
func verifyShipped(ctx context.Context, env *verifyEnv, v *Verification) {
	step := Step{Call: "POST /v1/snapshots"}
	sn, err := env.c.ShipSnapshot(ctx)
	if err != nil {
		step.Status = client.StatusOf(err)
		v.fail(step, "%v", err)
		return
	}
	v.ok(step, "control-plane snapshot %s shipped: state index %d, %d bytes, sha256 %s, to %s", sn.ID, sn.Index, sn.Size, sn.Digest, sn.Location)
	call := "GET /v1/snapshots"
	list, _, err := env.c.ShippedSnapshots(ctx, nil)
	if err != nil {
		v.fail(Step{Call: call, Status: client.StatusOf(err)}, "%v", err)
		return
	}
	if len(list.Snapshots) == 0 || list.Snapshots[0].ID != sn.ID || list.Health.Stale {
		v.fail(Step{Call: call}, "the catalog does not list %s as the newest shipped snapshot, or is stale: %+v", sn.ID, list.Health)
		return
	}
	v.ok(Step{Call: call}, "%s is the newest of %d shipped snapshots (every %ds, keep %d; %d removed by retention)",
		sn.ID, len(list.Snapshots), list.Policy.IntervalSeconds, list.Policy.Keep, list.Removed)
}

// backupWait is the least time the backup verification waits: a backup
// takes longer than a replication round.
const backupWait = 2 * time.Minute

package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// fakeBackup reports every backup it is given taken and verified.
type fakeBackup struct{}

func (fakeBackup) Type() string { return fsm.TaskTypeBackup }

func (fakeBackup) Run(ctx context.Context, t *fsm.Task, report func(agent.TaskStatus)) error {
	var spec fsm.BackupSpec
	_ = json.Unmarshal(t.Spec, &spec)
	report(agent.TaskStatus{Status: fsm.TaskSucceeded, Result: fsm.BackupProgress{Backup: spec.Backup, Phase: "verify", Done: true,
		Result: &fsm.BackupResult{Label: "20261208-000000F", Stop: time.Now().Add(-time.Minute).Unix(), Size: 4 << 20, Verified: true}}})
	<-ctx.Done()
	return nil
}

// fakeRebuild reports restore progress until its gate opens, then done.
type fakeRebuild struct{ open atomic.Bool }

func (*fakeRebuild) Type() string { return fsm.TaskTypeRebuild }

func (f *fakeRebuild) Run(ctx context.Context, t *fsm.Task, report func(agent.TaskStatus)) error {
	var spec fsm.RebuildSpec
	_ = json.Unmarshal(t.Spec, &spec)
	for !f.open.Load() {
		report(agent.TaskStatus{Status: fsm.TaskRunning, Result: fsm.RebuildProgress{Rebuild: spec.Rebuild, Phase: fsm.RebuildPhaseRestoring,
			Bytes: spec.BytesTotal / 2, BytesTotal: spec.BytesTotal, Files: 7, Percent: 50, ETASeconds: 3}})
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	report(agent.TaskStatus{Status: fsm.TaskSucceeded, Result: fsm.RebuildProgress{Rebuild: spec.Rebuild, Phase: fsm.RebuildPhaseDone, Done: true,
		Result: &fsm.RebuildResult{Phase: fsm.RebuildPhaseDone, DataDir: "/srv/pg", Bytes: spec.BytesTotal, Files: 14, Timeline: 2}}})
	<-ctx.Done()
	return nil
}

// TestRebuildAPI: bad requests (unknown region, bad time, no verified
// backup, a target in the future, a concurrent rebuild) are refused with
// their codes and start nothing; a rebuild asked for through a follower
// is placed on the region's agent, its status object shows the phase and
// the restore progress, and ends done with the agent's result.
func TestRebuildAPI(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	for _, r := range []string{"us-east", "eu-west"} {
		mustWrite(t, l, http.MethodPost, "/region/register", regionJSON(r), http.StatusCreated)
	}
	refused := func(region, body string, status int, code, says string) {
		t.Helper()
		r := do(t, f, http.MethodPost, "/v1/regions/"+region+"/rebuild", json.RawMessage(body), nil)
		d, _ := r.ErrorDetail()
		if r.Status != status || d.Code != code || !strings.Contains(d.Message, says) {
			t.Fatalf("POST rebuild %s %s: %d %s, want %d %s saying %q", region, body, r.Status, r.Body, status, code, says)
		}
	}
	refused("mars", `{}`, 404, "region_not_found", `"mars" is not registered`)
	refused("us-east", `{"to_time":"yesterday"}`, 400, fsm.CodeInvalidTargetTime, "RFC 3339")
	refused("us-east", `{"bogus":1}`, 400, "unknown_field", "bogus")
	refused("us-east", `{}`, 409, fsm.CodeNoVerifiedBackup, "no verified backup")
	r := do(t, f, http.MethodGet, "/v1/regions/us-east/rebuild", nil, nil)
	if d, _ := r.ErrorDetail(); r.Status != 404 || d.Code != "rebuild_not_found" {
		t.Fatalf("GET rebuild before any: %d %s", r.Status, r.Body)
	}
	if r := do(t, f, http.MethodGet, "/v1/regions/mars/rebuild", nil, nil); r.Status != 404 {
		t.Fatalf("GET rebuild of an unknown region: %d %s", r.Status, r.Body)
	}

	rb := &fakeRebuild{}
	c.AddAgentWith("us-east-a1", "us-east", testcluster.AgentOptions{
		Executors: func(prometheus.Registerer) ([]agent.Executor, error) { return []agent.Executor{fakeBackup{}, rb}, nil },
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		if r := do(t, f, http.MethodPost, "/v1/regions/us-east/backups", nil, nil); r.Status != http.StatusAccepted {
			return fmt.Errorf("backup: %d %s", r.Status, r.Body)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		var l wire.BackupList
		do(t, f, http.MethodGet, "/v1/backups?region=us-east", nil, nil).JSON(t, &l)
		if len(l.Backups) == 0 || !l.Backups[0].Verified {
			return fmt.Errorf("no verified backup yet: %+v", l)
		}
		return nil
	})
	refused("us-east", `{"to_time":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`, 400, fsm.CodeInvalidTargetTime, "in the future")
	refused("us-east", `{"to_time":"`+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)+`"}`, 400, fsm.CodeInvalidTargetTime, "before every verified backup")
	if r := do(t, f, http.MethodGet, "/v1/regions/us-east/rebuild", nil, nil); r.Status != 404 {
		t.Fatalf("a refused request started a rebuild: %d %s", r.Status, r.Body)
	}

	r = do(t, f, http.MethodPost, "/v1/regions/us-east/rebuild", map[string]any{}, nil)
	var started fsm.Rebuild
	if r.Status != http.StatusAccepted {
		t.Fatalf("rebuild: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &started)
	if started.Status != fsm.RebuildPending || started.Label != "20261208-000000F" || started.BytesTotal != 4<<20 || started.TargetTime != 0 {
		t.Fatalf("started: %+v", started)
	}
	refused("us-east", `{}`, 409, fsm.CodeRebuildInProgress, "already running")
	testutil.Eventually(t, 30*time.Second, func() error {
		var st wire.RebuildStatus
		do(t, f, http.MethodGet, "/v1/regions/us-east/rebuild", nil, nil).JSON(t, &st)
		if st.Phase != fsm.RebuildPhaseRestoring || st.Agent != "us-east-a1" || st.Progress == nil || st.Progress.Bytes != 2<<20 || st.Progress.Files != 7 || st.Progress.ETASeconds != 3 {
			return fmt.Errorf("status while restoring: %+v %+v", st, st.Progress)
		}
		return nil
	})
	rb.open.Store(true)
	testutil.Eventually(t, 30*time.Second, func() error {
		var st wire.RebuildStatus
		do(t, f, http.MethodGet, "/v1/regions/us-east/rebuild", nil, nil).JSON(t, &st)
		if st.Phase != fsm.RebuildPhaseDone || st.Status != fsm.RebuildDone || st.RebuildResult == nil || st.Files != 14 || st.Timeline != 2 || st.ID != started.ID {
			return fmt.Errorf("status after the agent's result: %+v", st)
		}
		return nil
	})
	// The task goes with the record, and another rebuild may be asked for.
	testutil.Eventually(t, 30*time.Second, func() error {
		var tasks struct{ Tasks []fsm.Task }
		do(t, f, http.MethodGet, "/v1/tasks", nil, nil).JSON(t, &tasks)
		for _, tk := range tasks.Tasks {
			if tk.ID == fsm.RebuildTaskID("us-east") {
				return fmt.Errorf("the rebuild task is still there: %+v", tk)
			}
		}
		return nil
	})
}

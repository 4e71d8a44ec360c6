package e2e_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestShippedSnapshots runs three server processes (TLS) that share a
// snapshot repository directory: the leader ships the state archive on a
// short schedule and keeps only the newest K; `atomfed snapshot list`
// matches the repository; a snapshot shipped before a region was
// registered is restored with `snapshot restore --from-repo latest`
// through two approvals and the region is gone on every server; a
// corrupted object is refused for its digest, changing nothing; a
// repository that went away makes shipments fail with a clear error
// recorded in the catalog, and `atomfed dr status` exits 2 once the
// shipments are stale.
func TestShippedSnapshots(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	c := procs.StartTestCluster(t, procs.ClusterOptions{
		Bin:   atomfedBin,
		Port:  func() (int, error) { return testutil.FreePort(t), nil },
		Extra: []string{"--snapshot-repo", repo},
	})
	l := waitLeader(t, c)
	cx := ctx(t, 3*time.Minute)
	for _, a := range []string{"alice", "bob"} {
		if _, err := c.Sec.MustSigningClient(l.URL, a).RegisterMember(cx, a, fsm.MemberApprover); err != nil {
			t.Fatalf("approver %s: %v", a, err)
		}
	}
	registerRegion(t, c, l, "us-east")
	cl := newCLI(t, c).with("ATOMFED_ADDR=" + c.Others(l)[0].URL) // through a follower
	list := func() wire.ShippedSnapshots {
		t.Helper()
		var out wire.ShippedSnapshots
		decodeJSON(t, "snapshot list", cl.ok("snapshot", "list", "-o", "json"), &out)
		return out
	}
	repoFiles := func() []string {
		t.Helper()
		ents, err := os.ReadDir(repo)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}

	t.Run("shipped on schedule with retention", func(t *testing.T) {
		cl.ok("snapshot", "policy", "set", "--every", "1s", "--keep", "3")
		deadline := time.Now().Add(60 * time.Second)
		for l := list(); l.Removed < 2; l = list() {
			if time.Now().After(deadline) {
				t.Fatalf("no retention within 60 s: %+v", l)
			}
			time.Sleep(500 * time.Millisecond)
		}
		// Stop the schedule (the last shipment is seconds old), let a
		// shipment in flight finish, then the catalog is the repository.
		cl.ok("snapshot", "policy", "set", "--every", "1h", "--keep", "3")
		time.Sleep(2 * time.Second)
		got := list()
		var want []string
		for _, s := range got.Snapshots {
			want = append(want, s.ID+".snap")
			if fi, err := os.Stat(s.Location); err != nil || fi.Size() != s.Size || len(s.Digest) != 64 || s.Index == 0 {
				t.Errorf("shipped %+v: file %v %v", s, fi, err)
			}
		}
		sort.Strings(want)
		if files := repoFiles(); len(got.Snapshots) != 3 || !slices.Equal(files, want) {
			t.Fatalf("catalog %v, repository %v: want the same 3", want, files)
		}
		if got.Health.Stale || got.Policy.IntervalSeconds != 3600 || got.Policy.Keep != 3 {
			t.Fatalf("health/policy after shipping: %+v %+v", got.Health, got.Policy)
		}
		out := cl.ok("snapshot", "list")
		mustContain(t, "snapshot list", out, "every 1h0m0s, keep 3", got.Snapshots[0].ID, got.Snapshots[2].ID)
		// The servers export the last success.
		var m bytes.Buffer
		if _, err := l.Client.Do(cx, http.MethodGet, "/metrics", nil, nil, &m); err != nil {
			t.Fatal(err)
		}
		mustContain(t, "metrics", m.String(), "atomfed_controlplane_snapshot_last_success_timestamp_seconds ", "atomfed_controlplane_snapshot_size_bytes ")
	})

	var shipped fsm.ShippedSnapshot
	decodeJSON(t, "snapshot ship", cl.ok("snapshot", "ship", "-o", "json"), &shipped)
	if l := list(); l.Snapshots[0].ID != shipped.ID || len(l.Snapshots) != 3 {
		t.Fatalf("after snapshot ship: %+v, want %s newest of 3", l.Snapshots, shipped.ID)
	}
	registerRegion(t, c, l, "eu-west") // after the snapshot: the restore removes it

	t.Run("bad input and other roles are refused", func(t *testing.T) {
		tok, err := l.Client.CreateToken(cx, fsm.RoleReader, "snapship reader")
		if err != nil {
			t.Fatal(err)
		}
		reader, err := c.Sec.Client(c.Others(l)[0].URL, client.WithToken(tok.Secret))
		if err != nil {
			t.Fatal(err)
		}
		head := settled(t, c)
		want := trustView(t, l.Client)
		before := list()
		if _, err := l.Client.PutSnapshotPolicy(cx, &fsm.SnapshotPolicy{IntervalSeconds: 0, Keep: 3}); !client.IsCode(err, "invalid_snapshot_policy") {
			t.Fatalf("policy with no interval: %v", err)
		}
		if _, err := l.Client.PutSnapshotPolicy(cx, &fsm.SnapshotPolicy{IntervalSeconds: 60, Keep: 5000}); !client.IsCode(err, "invalid_snapshot_policy") {
			t.Fatalf("policy keeping 5000: %v", err)
		}
		mustContain(t, "policy set --every 0s", cl.fails("snapshot", "policy", "set", "--every", "0s"), "must be a positive whole number of seconds")
		if _, _, err := l.Client.RestoreFromRepo(cx, ""); !client.IsCode(err, "missing_from") {
			t.Fatalf("restore without from: %v", err)
		}
		if _, err := reader.ShipSnapshot(cx); client.StatusOf(err) != http.StatusForbidden {
			t.Fatalf("a reader ships: %v, want 403", err)
		}
		if _, _, err := reader.RestoreFromRepo(cx, "latest"); client.StatusOf(err) != http.StatusForbidden {
			t.Fatalf("a reader restores: %v, want 403", err)
		}
		if _, err := reader.PutSnapshotPolicy(cx, &fsm.SnapshotPolicy{IntervalSeconds: 1, Keep: 1}); client.StatusOf(err) != http.StatusForbidden {
			t.Fatalf("a reader sets the policy: %v, want 403", err)
		}
		if l, _, err := reader.ShippedSnapshots(cx, nil); err != nil || len(l.Snapshots) != 3 {
			t.Fatalf("a reader lists: %+v %v", l, err)
		}
		unchangedEverywhere(t, c, want, head)
		if after := list(); after.Policy.IntervalSeconds != before.Policy.IntervalSeconds || after.Policy.Keep != before.Policy.Keep || after.Snapshots[0].ID != before.Snapshots[0].ID {
			t.Fatalf("refused requests changed the catalog: %+v -> %+v", before, after)
		}
	})

	t.Run("a corrupted object is refused", func(t *testing.T) {
		older := list().Snapshots[1]
		b, err := os.ReadFile(older.Location)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(older.Location, b, 0o600); err != nil {
			t.Fatal(err)
		}
		head := settled(t, c)
		want := trustView(t, l.Client)
		errOut := cl.fails("snapshot", "restore", "--from-repo", older.ID)
		mustContain(t, "restore of a corrupted object", errOut, "snapshot_digest_mismatch", "was changed or damaged", "nothing was restored")
		_, _, err = l.Client.RestoreFromRepo(cx, older.ID)
		if !client.IsCode(err, "snapshot_digest_mismatch") {
			t.Fatalf("API restore of a corrupted object: %v", err)
		}
		unknown := cl.fails("snapshot", "restore", "--from-repo", "nope")
		mustContain(t, "restore of an unknown id", unknown, `no shipped snapshot "nope"`)
		if _, _, err := l.Client.RestoreFromRepo(cx, "../etc"); !client.IsCode(err, "invalid_snapshot_id") {
			t.Fatalf("API restore of a path: %v", err)
		}
		unchangedEverywhere(t, c, want, head)
	})

	t.Run("restore from the repository through two approvals", func(t *testing.T) {
		r := cli(t, cl.env, "snapshot", "restore", "--from-repo", "latest")
		if r.code != 0 {
			t.Fatalf("restore --from-repo latest: %d %s %s", r.code, r.stdout, r.stderr)
		}
		mustContain(t, "restore output", r.stderr, "restoring shipped snapshot "+shipped.ID, shipped.Digest, "once approved, run: atomfed snapshot restore --from-repo "+shipped.ID)
		mustContain(t, "restore output", r.stdout, "pending approval", "shipped snapshot "+shipped.ID, shipped.StateDigest)
		var pending *fsm.Approval
		aps, err := l.Client.Approvals(cx, fsm.ApprovalPending)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range aps {
			if a.Action == fsm.ActionRestoreSnapshot && a.Status == fsm.ApprovalPending {
				pending = a
			}
		}
		if pending == nil || pending.Required != 2 {
			t.Fatalf("pending restore approval: %+v", pending)
		}
		for _, v := range []string{"alice", "bob"} {
			if _, err := c.Sec.MustSigningClient(l.URL, v).Approve(cx, pending.ID); err != nil {
				t.Fatalf("%s approves: %v", v, err)
			}
		}
		out := cl.ok("snapshot", "restore", "--from-repo", shipped.ID)
		mustContain(t, "restore output", out, "restored shipped snapshot "+shipped.ID)
		settled(t, c)
		for _, s := range c.Running() {
			view := trustView(t, s.Client)
			if strings.Contains(view, "eu-west") || !strings.Contains(view, "us-east=") {
				t.Fatalf("%s after the restore: %s", s.ID(), view)
			}
		}
		if got := list(); len(got.Snapshots) != 3 || got.Snapshots[0].ID != shipped.ID {
			t.Fatalf("the restore changed the catalog: %+v", got.Snapshots)
		}
		// The federation's regions are simulated (no database): dr status
		// lists them as such and, with the shipment fresh, exits 0.
		mustContain(t, "dr status", cl.ok("dr", "status"), "simulated (no database)", shipped.ID)
	})

	t.Run("an unreachable repository is recorded as failed", func(t *testing.T) {
		if err := os.Rename(repo, repo+".moved"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(repo, []byte("not a directory"), 0o600); err != nil {
			t.Fatal(err)
		}
		errOut := cl.fails("snapshot", "ship")
		mustContain(t, "ship to a missing repository", errOut, "unreachable", repo)
		got := list()
		if f := got.Health.LastFailure; f == nil || !strings.Contains(f.Error, "unreachable") || got.Health.Failures != 1 {
			t.Fatalf("catalog after a failed shipment: %+v", got.Health)
		}
		// Shipments every second, all failing: stale after two seconds,
		// once the schedule has failed again.
		cl.ok("snapshot", "policy", "set", "--every", "1s", "--keep", "3")
		var r cliResult
		testutil.Eventually(t, 30*time.Second, func() error {
			if h := list().Health; h.Failures < 2 {
				return fmt.Errorf("the schedule has not failed again yet: %+v", h)
			}
			if r = cli(t, cl.env, "dr", "status"); r.code != 2 {
				return fmt.Errorf("dr status with stale shipments: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			return nil
		})
		mustContain(t, "dr status", r.stdout, "missing: control plane: the last control-plane snapshot", "unreachable")
		mustContain(t, "dr status", r.stderr, "not ready")
		st, _, err := l.Client.DRStatus(cx, nil)
		if err != nil || !st.Stale || !st.ControlPlane.Stale || st.ControlPlane.Failures < 2 {
			t.Fatalf("GET /v1/dr/status: %+v %v", st, err)
		}
	})
}

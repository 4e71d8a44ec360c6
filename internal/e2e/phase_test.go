package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/precheck"
	"github.com/atomcloud/atomfed/internal/report"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// regionKey is what must agree between a report's region list and the
// live one: health moves with every probe, these do not.
type regionKey struct {
	Name        string `json:"name"`
	URL         string `json:"url"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

func regionKeys(t *testing.T, what string, raw []byte) []regionKey {
	t.Helper()
	var l struct {
		Regions []regionKey `json:"regions"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		t.Fatalf("%s is not a region list: %v\n%s", what, err, raw)
	}
	return l.Regions
}

// TestPhaseG1Reports walks phase G.1 end to end against real processes:
// three servers and an agent per region, regions registered and a tenant
// created; the policy status read; the precheck run against the live
// cluster; a recorded go test -json run; the reports generated. Then every
// file must exist and agree with the live state: the audit head the
// reports cite is the live chain's entry at that index, the entries the
// verification created are in the chain with the same hashes, the region
// list is the live one, and the test summary is the recorded run's.
func TestPhaseG1Reports(t *testing.T) {
	c := startCluster(t)
	f := &federation{Cluster: c, agents: map[string][]*procs.AgentProc{}}
	port := func() (int, error) { return testutil.FreePort(t), nil }
	logs, data := procs.LogDir(t), t.TempDir()
	for i, s := range c.Servers {
		region := procs.Regions[i]
		register(t, c, &fsm.Region{Name: region, URL: s.URL, Tier: fsm.TierStaging})
		a, err := procs.NewAgentProc(atomfedBin, logs, data, region+"-a1", region, port, c.SerfAddrs(), c.Sec)
		if err != nil {
			t.Fatal(err)
		}
		a.Env = append(a.Env, withEnv()...) // a.Env holds its own agent token
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			a.Close()
			if t.Failed() {
				t.Logf("log of %s: %s\n%s", a.Node, a.LogPath, a.LogTail(30))
			}
		})
		f.agents[region] = append(f.agents[region], a)
	}
	for region := range f.agents {
		f.waitProbe(t, region, "")
	}
	leader := waitLeader(t, c)
	follower := c.Others(leader)[0]
	tenant := &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	if _, err := follower.Client.PutTenant(ctx(t, 10*time.Second), tenant, nil); err != nil {
		t.Fatalf("create tenant: %v", err)
	}

	// The policy status, as an operator reads it.
	var ps *structs.PolicyStatus
	testutil.Eventually(t, 30*time.Second, func() error {
		var err error
		ps, err = follower.Client.PolicyStatus(ctx(t, 20*time.Second))
		if err != nil {
			return err
		}
		st := map[string]string{}
		for _, p := range ps.Policies {
			st[p.ID] = p.Status
		}
		// P3 blocks: the default policy gates production registrations
		// with two approvers and none is registered here.
		want := map[string]string{"P1": "not_evaluated", "P2": "pass", "P3": "block", "P4": "pass",
			"P5": "not_evaluated", "P6": "pass", "P7": "block"}
		for id, w := range want {
			if st[id] != w {
				return fmt.Errorf("%s is %s, want %s (%v)", id, st[id], w, ps.Policies)
			}
		}
		return nil
	})
	if !ps.SimulationMode {
		t.Error("the policy status does not say the federation runs in simulation mode")
	}

	// The precheck against the live cluster, into the reports directory.
	out := t.TempDir()
	pr := cli(t, withEnv("GLOBAL_REGISTRY_URL=http://"+follower.Config.HTTPAddr), "precheck", "--out", out)
	if pr.code != 0 || !strings.Contains(pr.stdout, "decision: PROCEED_SIMULATION") {
		t.Fatalf("precheck against the cluster: exit %d\n%s\n%s", pr.code, pr.stdout, pr.stderr)
	}

	// A recorded test run (small, so that this test stays fast).
	testJSON := filepath.Join(out, "logs", "go-test.json")
	gt := exec.Command("go", "test", "-json", "-count=1", "-run", "^(TestDecideFollowsTheSeedRules|TestRedactor)$", report.Module+"/internal/precheck")
	var rec bytes.Buffer
	gt.Stdout = &rec
	if err := gt.Run(); err != nil {
		t.Fatalf("go test -json: %v\n%s", err, rec.String())
	}
	if err := os.WriteFile(testJSON, rec.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// Two approvers, whose keys the report approves its verifications'
	// approvals with (deregistering a region, a production region in and
	// out).
	var keyArgs []string
	for _, a := range []string{"approver-1", "approver-2"} {
		if _, err := c.Sec.MustSigningClient(leader.URL, a).RegisterMember(ctx(t, 10*time.Second), a, fsm.MemberApprover); err != nil {
			t.Fatalf("register %s: %v", a, err)
		}
		_, path, err := c.Sec.Signer(a)
		if err != nil {
			t.Fatal(err)
		}
		keyArgs = append(keyArgs, "--approver-key", path)
	}
	rr := cli(t, withEnv("ATOMFED_CACERT="+c.Sec.CAPath, "FEDERATION_TOKEN="+procs.Token),
		append([]string{"report", "--out", out, "--addr", leader.URL, "--test-json", testJSON, "--settle", "60s"}, keyArgs...)...)
	if rr.code != 0 {
		t.Fatalf("atomfed report: exit %d\n%s\n%s", rr.code, rr.stdout, rr.stderr)
	}

	// Eight files.
	var snap report.Snapshot
	files := []string{report.SnapshotFile}
	for _, comp := range report.Components() {
		files = append(files, comp.File())
	}
	mds := map[string]string{}
	for _, name := range files {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s was not written: %v", name, err)
		}
		if name == report.SnapshotFile {
			decodeJSON(t, name, string(b), &snap)
		} else {
			mds[name] = string(b)
		}
	}
	if len(files) != 8 || len(snap.Components) != 7 {
		t.Fatalf("%d files, %d components in the snapshot", len(files), len(snap.Components))
	}

	// The audit head is the live chain's entry at that index, and the
	// verification's entries are in the chain with the same hashes.
	live, err := leader.Client.Audit(ctx(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	chain := map[uint64]fsm.AuditEntry{}
	for _, e := range live.Recent {
		chain[e.Index] = e
	}
	if e, ok := chain[snap.Audit.Index]; !ok || e.Hash != snap.Audit.Head {
		t.Errorf("report audit head %s at %d; the live chain has %+v there (live head %s at %d)", snap.Audit.Head, snap.Audit.Index, e, live.Head, live.Index)
	}
	// The registry's verification registers a region and deregisters it
	// through an approval; the policy verification approves a production
	// region in and out. (Replication is simulated here: its
	// verifications write nothing.)
	var types []string
	for _, r := range snap.Audit.Created {
		types = append(types, r.Type)
	}
	if strings.Join(types, ",") != "region_upsert,approval_vote,approval_vote,approval_vote" {
		t.Fatalf("created audit entries %+v, want a region_upsert and three approval_votes that applied", snap.Audit.Created)
	}
	for _, r := range snap.Audit.Created {
		if e := chain[r.Index]; e.Hash != r.Hash || e.Type != r.Type {
			t.Errorf("created entry %+v; the live chain has %+v", r, e)
		}
		if r.Index > snap.Audit.Index {
			t.Errorf("entry %d created after the head %d the report cites", r.Index, snap.Audit.Index)
		}
	}
	for name, md := range mds {
		mustContain(t, name, md, snap.Audit.Head, fmt.Sprintf("| %d | region_upsert | `%s`", snap.Audit.Created[0].Index, snap.Audit.Created[0].Hash),
			"SIMULATION_MODE | **true**", "| P4 Every node serves /metrics and /global-status | **pass**")
	}

	// The region list is the live one.
	var g11 report.ComponentReport
	for _, cr := range snap.Components {
		if cr.Task == "G.1.1" {
			g11 = cr
		}
	}
	var listed []byte
	for _, s := range g11.Verification.Steps {
		if s.Call == "GET /region/list" {
			listed = s.Output
		}
	}
	var liveList bytes.Buffer
	if _, err := leader.Client.Do(ctx(t, 10*time.Second), http.MethodGet, "/region/list", nil, nil, &liveList); err != nil {
		t.Fatal(err)
	}
	got, want := regionKeys(t, "the report's region list", listed), regionKeys(t, "the live region list", liveList.Bytes())
	if fmt.Sprint(got) != fmt.Sprint(want) || len(want) != 3 {
		t.Errorf("report region list %v, live %v", got, want)
	}
	for _, r := range want {
		mustContain(t, "G.1.1_registry.md", mds["G.1.1_registry.md"], `"name": "`+r.Name+`"`)
	}

	// Verdicts: nothing unbuilt or untested passes.
	verdicts := map[string]string{}
	for _, cr := range snap.Components {
		verdicts[cr.Task] = cr.Verdict
	}
	wantVerdicts := map[string]string{"G.1.1": "unverified", "G.1.2": "unverified", "G.1.3": "unverified",
		"G.1.4": "unverified", "G.1.5": "unverified", "G.1.6": "unverified", "G.1.7": "unverified"}
	if fmt.Sprint(verdicts) != fmt.Sprint(wantVerdicts) {
		t.Errorf("verdicts %v, want %v (the packages of the built components are not all in this recorded run)", verdicts, wantVerdicts)
	}
	mustContain(t, "G.1.3_edge_controller.md", mds["G.1.3_edge_controller.md"], "**UNVERIFIED**", "Succeeded, but not against real parts", "replication")
	// Every verification ran, and the replication ones say they were
	// simulated (no region database here). The metrics aggregator is
	// verified live all the same: every region fresh and up in the global
	// view on every server.
	for _, cr := range snap.Components {
		v := cr.Verification
		switch cr.Task {
		case "G.1.1", "G.1.5", "G.1.7":
			if v == nil || !v.OK {
				t.Errorf("%s's verification failed: %+v", cr.Task, v)
			}
		case "G.1.2", "G.1.4":
			if v == nil || !v.OK || len(v.Simulated) == 0 || !strings.Contains(strings.Join(v.Simulated, " "), "replication") {
				t.Errorf("%s's verification does not say replication was simulated: %+v", cr.Task, v)
			}
		}
	}

	// The test summary is the recorded run's.
	if snap.Tests.Run == nil || snap.Tests.Run.Total.Passed != 2 || snap.Tests.Run.Total.Failed != 0 {
		t.Fatalf("test summary %+v, want the 2 tests of the recorded run", snap.Tests)
	}
	passed := bytes.Count(rec.Bytes(), []byte(`"Action":"pass","Package":"`+report.Module+`/internal/precheck","Test":"Test`))
	for _, cr := range snap.Components {
		if cr.Task == "G.1.7" && (cr.TestCounts.Passed != passed || cr.TestCounts.Passed != 2) {
			t.Errorf("G.1.7 counts %+v, the recording has %d passes", cr.TestCounts, passed)
		}
	}
	mustContain(t, "G.1.7_policy_manager.md", mds["G.1.7_policy_manager.md"], "| internal/precheck | pass | 2 | 0 | 0 |", snap.Tests.Run.SHA256)

	// The rest of the snapshot.
	if snap.Precheck == nil || snap.Precheck.Decision != precheck.ProceedSimulation {
		t.Errorf("snapshot precheck %+v", snap.Precheck)
	}
	if !snap.Simulation.Enabled || len(snap.Simulation.Nodes) != 6 {
		t.Errorf("simulation %+v, want all 6 nodes in simulation mode", snap.Simulation)
	}
	if snap.Policies == nil || len(snap.Policies.Policies) != 7 || snap.Policies.Policies[1].Status != structs.PolicyPass {
		t.Errorf("policies %+v", snap.Policies)
	}
	if head := strings.TrimSuffix(procs.GitCommit(), "-dirty"); head != "" && snap.Build.Commit != head {
		t.Errorf("report commit %q, HEAD %q", snap.Build.Commit, head)
	}
	for _, r := range []string{report.VerifyRegion, report.VerifyProdRegion, report.VerifyForgedRegion} {
		if _, _, err := leader.Client.Region(context.Background(), r, nil); client.StatusOf(err) != http.StatusNotFound {
			t.Errorf("the verification region %s is still there: %v", r, err)
		}
	}
}

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/recovery"
)

// lsnWrite is one row the home acknowledged, with the home's WAL insert
// position read right after its commit (after) and the one read after the
// previous commit (before): the commit's end lies in (before, after].
type lsnWrite struct {
	id            int64
	before, after uint64 // after 0: unknown (the home died before it was read)
}

// TestUnplannedFailover: tenant acme at home in us-east, mirrored to
// eu-west, under continuous writes; us-east's agent and PostgreSQL are
// killed for good (-9). A failover needs two approvals and shows the data
// at risk; eu-west takes writes afterwards; the rows lost are exactly the
// ones the home committed after the position eu-west had applied (the
// failover records it), and none before the position recorded at the
// start as the data at risk. Tenant robo, with the automatic policy, fails
// over by itself once eu-west passed a restore drill. Bad requests change
// nothing.
func TestUnplannedFailover(t *testing.T) {
	if _, err := pglocal.Find(); err != nil {
		t.Fatalf("this test needs PostgreSQL: %v", err)
	}
	if _, err := recovery.FindPgBackRest(""); err != nil {
		t.Fatalf("this test needs pgBackRest: %v", err)
	}
	start := time.Now()
	c := startCluster(t)
	leader := waitLeader(t, c)
	cx := ctx(t, 4*time.Minute)
	regions := []string{"us-east", "eu-west"}
	pgs := pgtest.NewFederation(t, regions...)
	db := map[string]*pgx.Conn{}
	agents := map[string]*procs.AgentProc{}
	// eu-west backs up to a repository its PostgreSQL (user postgres)
	// can reach, so that a restore drill can pass there.
	shared, err := os.MkdirTemp("", "atomfed-e2e-failover-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o711); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, r := range regions {
		pg := pgs[r]
		conn, err := pg.Connect(cx, pglocal.Database)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		db[r] = conn
		execPG(t, cx, conn, `CREATE TABLE orders (tenant_id text NOT NULL, id bigserial, amount int, email text, PRIMARY KEY (tenant_id, id))`)
		registerRegion(t, c, leader, r)
		args := []string{"--replication-passfile", pg.Passfile, "--replication-ca", pg.RootCert, "--replication-interval", "500ms"}
		if r == "eu-west" {
			args = append(args, "--backup-dir", filepath.Join(shared, r+"-a1"), "--backup-repo", filepath.Join(shared, "repo"))
		}
		a, err := procs.NewAgentProc(atomfedBin, procs.LogDir(t), dir, r+"-a1", r, func() (int, error) { return testutil.FreePort(t), nil }, c.SerfAddrs(), c.Sec, args...)
		if err != nil {
			t.Fatal(err)
		}
		a.Env = append(a.Env, "POSTGRES_DSN="+pg.DSN(pglocal.Database))
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("log of %s:\n%s", a.Node, a.LogTail(60))
			}
			a.Close()
		})
		agents[r] = a
	}
	registerRegion(t, c, leader, "sa-east")
	api := leader.Client
	execPG(t, cx, db["us-east"], `INSERT INTO orders (tenant_id, amount, email) SELECT t, g, t || g || '@example.com' FROM generate_series(1, 100) g, (VALUES ('acme'), ('robo')) v(t)`)
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, r := range regions {
			if _, err := api.RegionDatabase(cx, r, nil); err != nil {
				return err
			}
		}
		return nil
	})
	tables := []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}
	for _, tn := range []*fsm.Tenant{
		{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: tables},
		{ID: "robo", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: tables, Failover: &fsm.FailoverPolicy{Mode: fsm.FailoverAuto, RPOBudgetMS: 60000}},
	} {
		if _, err := api.PutTenant(cx, tn, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The approvers of the "failover" rule (2 of them, the default).
	for _, a := range []string{"alice", "bob"} {
		if _, err := c.Sec.MustSigningClient(leader.URL, a).RegisterMember(cx, a, fsm.MemberApprover); err != nil {
			t.Fatalf("approver %s: %v", a, err)
		}
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, tn := range []string{"acme", "robo"} {
			if n := countRows(t, cx, db["eu-west"], tn); n != 100 {
				return fmt.Errorf("eu-west has %d of %s's 100 rows", n, tn)
			}
			v, _, err := api.Failover(cx, tn, nil)
			if err != nil {
				return err
			}
			if v.Candidate == nil || v.Candidate.State != fsm.ReplStreaming {
				return fmt.Errorf("%s's candidate: %+v", tn, v.Candidate)
			}
		}
		return nil
	})
	t.Logf("federation up after %s", time.Since(start).Round(time.Millisecond))

	// P7's failover part blocks while no failover ran.
	if in, what := p7FailoverTests(t, cx, api); in || !strings.Contains(what, "no failover ran") {
		t.Fatalf("P7 failover tests before any failover: %v %q", in, what)
	}

	t.Run("bad requests change nothing", func(t *testing.T) {
		head := settled(t, c)
		before := tenantsEverywhere(t, c)
		for _, tc := range []struct {
			name   string
			call   func() error
			status int
			code   string
			says   string
		}{
			{"home is up", func() error {
				_, err := api.StartFailover(cx, "acme", wire.FailoverRequest{To: "eu-west"})
				return err
			}, http.StatusConflict, fsm.CodeHomeIsUp, "planned switchover"},
			{"unknown tenant", func() error { _, err := api.StartFailover(cx, "nobody", wire.FailoverRequest{}); return err }, http.StatusNotFound, "tenant_not_found", "nobody"},
			{"unknown region", func() error {
				_, err := api.StartFailover(cx, "acme", wire.FailoverRequest{To: "mars", Force: true})
				return err
			}, http.StatusBadRequest, "unknown_region", "mars"},
			{"not a mirror", func() error {
				_, err := api.StartFailover(cx, "acme", wire.FailoverRequest{To: "sa-east", Force: true})
				return err
			}, http.StatusConflict, fsm.CodeNotAMirror, "does not mirror"},
			{"unknown region failover", func() error {
				_, err := api.StartRegionFailover(cx, "mars", wire.FailoverRequest{})
				return err
			}, http.StatusNotFound, "region_not_found", "mars"},
			{"region failover with a target", func() error {
				_, err := api.StartRegionFailover(cx, "us-east", wire.FailoverRequest{To: "eu-west"})
				return err
			}, http.StatusBadRequest, "to_not_allowed", "best mirror"},
			{"negative lag budget", func() error {
				ms := int64(-1)
				_, err := api.StartFailover(cx, "acme", wire.FailoverRequest{Force: true, MaxLagMS: &ms})
				return err
			}, http.StatusBadRequest, "invalid_max_lag", "max_lag_ms"},
		} {
			err := tc.call()
			if client.StatusOf(err) != tc.status || !client.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("%s: %v, want %d %s saying %q", tc.name, err, tc.status, tc.code, tc.says)
			}
		}
		// The CLI says the same.
		cli := newCLI(t, c).with("ATOMFED_ADDR=" + leader.URL)
		out := cli.fails("tenant", "failover", "acme", "--to", "eu-west")
		mustContain(t, "CLI failover of a healthy home", out, "home_is_up", "switchover")
		settled(t, c)
		if after := tenantsEverywhere(t, c); after != before {
			t.Fatalf("a refused failover changed the tenants:\nbefore %s\nafter  %s", before, after)
		}
		for _, s := range c.Running() {
			for _, e := range auditSince(t, s, head) {
				if strings.HasPrefix(e, "failover_") || strings.HasPrefix(e, "switchover_") || strings.HasPrefix(e, "tenant_") || strings.HasPrefix(e, "approval_") {
					t.Fatalf("%s: audit entry %s after the refusals", s.ID(), e)
				}
			}
		}
	})

	// eu-west passes a restore drill (the automatic policy's precondition).
	testutil.Eventually(t, 90*time.Second, func() error {
		l, _, err := api.Drills(cx, "eu-west", nil)
		if err != nil {
			return err
		}
		for _, d := range l.Drills {
			if d.Status == fsm.DrillPassed {
				return nil
			}
		}
		if l.Running == nil {
			if _, err := api.RunDrill(cx, "eu-west"); err != nil && !client.IsCode(err, fsm.CodeDrillInProgress) {
				return fmt.Errorf("drill: %w", err)
			}
		}
		return fmt.Errorf("no passed drill of eu-west yet")
	})

	// Continuous writes of acme at its home, each with the home's WAL
	// position after its commit.
	var mu sync.Mutex
	var acked []lsnWrite
	var writerErr error
	stopWriter := make(chan struct{})
	writerDone := make(chan struct{})
	wconn, err := pgs["us-east"].Connect(cx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(writerDone)
		var prev uint64
		if err := wconn.QueryRow(cx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(new(string)); err != nil {
			return
		}
		var s string
		_ = wconn.QueryRow(cx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s)
		prev, _ = fsm.ParseLSN(s)
		for i := 0; ; i++ {
			select {
			case <-stopWriter:
				return
			default:
			}
			var id int64
			if err := wconn.QueryRow(cx, `INSERT INTO orders (tenant_id, amount, email) VALUES ('acme', $1, $2) RETURNING id`, i, fmt.Sprintf("w%d@acme.example", i)).Scan(&id); err != nil {
				mu.Lock()
				writerErr = err
				mu.Unlock()
				return // the home is gone
			}
			w := lsnWrite{id: id, before: prev}
			if err := wconn.QueryRow(cx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err == nil {
				w.after, _ = fsm.ParseLSN(s)
			}
			mu.Lock()
			acked = append(acked, w)
			mu.Unlock()
			if w.after == 0 {
				return
			}
			prev = w.after
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stopWriter:
		default:
			close(stopWriter)
		}
		<-writerDone
	})
	time.Sleep(1500 * time.Millisecond)
	// The link to eu-west breaks first (its replication login is refused
	// and its walsenders end): what the home acknowledges from now on
	// never reaches the mirror, and is lost with the home.
	execPG(t, cx, db["us-east"], `ALTER ROLE `+pglocal.ReplicationUser+` NOLOGIN`,
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '`+pglocal.ReplicationUser+`'`)
	time.Sleep(700 * time.Millisecond)

	// us-east is lost for good.
	killed := time.Now()
	if err := agents["us-east"].Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := pgs["us-east"].Kill(); err != nil {
		t.Fatal(err)
	}
	<-writerDone
	mu.Lock()
	t.Logf("home killed after %d acknowledged writes (the writer stopped on: %v)", len(acked), writerErr)
	if len(acked) < 20 {
		t.Fatalf("only %d writes were acknowledged before the kill: %v", len(acked), writerErr)
	}
	mu.Unlock()

	var downAt time.Duration
	testutil.Eventually(t, 30*time.Second, func() error {
		v, _, err := api.Failover(cx, "acme", nil)
		if err != nil {
			return err
		}
		if v.HomeHealth != fsm.HealthDown {
			return fmt.Errorf("us-east is %s", v.HomeHealth)
		}
		downAt = time.Since(killed)
		return nil
	})
	t.Logf("us-east seen down %s after the kill", downAt.Round(time.Millisecond))

	t.Run("the automatic policy fails robo over by itself", func(t *testing.T) {
		var st *wire.SwitchoverStatus
		testutil.Eventually(t, 30*time.Second, func() error {
			var err error
			if st, _, err = api.Switchover(cx, "robo", nil); err != nil {
				return err
			}
			if st.Kind != fsm.FailoverKind || st.Phase != fsm.PhaseDone {
				return fmt.Errorf("robo: %s %s %s", st.Kind, st.Phase, lastStep(st))
			}
			return nil
		})
		committed := int64(0)
		for _, s := range st.Steps {
			if s.Phase == fsm.PhaseCommitted {
				committed = s.At
			}
		}
		rto := time.Unix(0, committed).Sub(killed)
		t.Logf("robo failed over automatically: kill -> committed %s (start -> committed %s)", rto.Round(time.Millisecond), time.Duration(committed-st.StartedAt).Round(time.Millisecond))
		if st.Mode != fsm.FailoverAuto || st.To != "eu-west" || st.Risk == nil || !st.Risk.DrillOK || st.RequestedBy == "" {
			t.Fatalf("robo's failover: %+v risk %+v", st.Switchover, st.Risk)
		}
		if tn, _, err := api.Tenant(cx, "robo", nil); err != nil || tn.HomeRegion != "eu-west" || tn.Epoch != 2 {
			t.Fatalf("robo after its failover: %+v %v", tn, err)
		}
		execPG(t, cx, db["eu-west"], `INSERT INTO orders (tenant_id, amount, email) VALUES ('robo', 1, 'after@robo.example')`)
	})

	t.Run("two approvals fail acme over; the rows lost are the data at risk", func(t *testing.T) {
		ans, err := api.StartFailover(cx, "acme", wire.FailoverRequest{To: "eu-west", Reason: "us-east lost"})
		if err != nil {
			t.Fatal(err)
		}
		a := ans.Approval
		if a == nil || a.Status != fsm.ApprovalPending || a.Required != 2 || a.Action != fsm.ActionFailover {
			t.Fatalf("failover answer: %+v", ans)
		}
		for _, want := range []string{"tenant acme us-east -> eu-west", "last reported lag", "data at risk: up to", "since LSN", "drill: region eu-west's last restore drill passed"} {
			if !strings.Contains(a.Summary, want) {
				t.Fatalf("approval summary %q lacks %q", a.Summary, want)
			}
		}
		if tn, _, _ := api.Tenant(cx, "acme", nil); tn.HomeRegion != "us-east" {
			t.Fatal("the failover started before its approval")
		}
		if _, err := c.Sec.MustSigningClient(leader.URL, "alice").Approve(cx, a.ID); err != nil {
			t.Fatal(err)
		}
		voted := time.Now()
		ap, err := c.Sec.MustSigningClient(leader.URL, "bob").Approve(cx, a.ID)
		if err != nil || ap.Status != fsm.ApprovalApplied {
			t.Fatalf("second approval: %+v %v", ap, err)
		}
		var st *wire.SwitchoverStatus
		testutil.Eventually(t, 30*time.Second, func() error {
			if st, _, err = api.Switchover(cx, "acme", nil); err != nil {
				return err
			}
			if st.Kind != fsm.FailoverKind || st.Phase != fsm.PhaseDone {
				return fmt.Errorf("acme: %s %s %s", st.Kind, st.Phase, lastStep(st))
			}
			return nil
		})
		t.Logf("acme failed over %s after the second approval; risk %s; applied %s", time.Since(voted).Round(time.Millisecond), st.Risk, st.AppliedLSN)
		// The PII column came back at the new home, typed from what the
		// lost home's publisher last reported.
		if len(st.PII) != 1 || st.PII[0].Column != "email" || st.PII[0].Type != "text" {
			t.Fatalf("PII types recorded for the promotion: %+v", st.PII)
		}
		var hasEmail bool
		if err := db["eu-west"].QueryRow(cx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'email')`).Scan(&hasEmail); err != nil || !hasEmail {
			t.Fatalf("the new home's orders has no email column: %v", err)
		}
		// The rows lost.
		final, ok := fsm.ParseLSN(st.AppliedLSN)
		if !ok || st.Risk == nil {
			t.Fatalf("no applied LSN recorded: %+v", st.Switchover)
		}
		atStart, ok := fsm.ParseLSN(st.Risk.AppliedLSN)
		if !ok || atStart > final {
			t.Fatalf("data at risk from %s, promoted at %s", st.Risk.AppliedLSN, st.AppliedLSN)
		}
		present := map[int64]bool{}
		rs, err := db["eu-west"].Query(cx, `SELECT id FROM orders WHERE tenant_id = 'acme'`)
		if err != nil {
			t.Fatal(err)
		}
		for rs.Next() {
			var id int64
			_ = rs.Scan(&id)
			present[id] = true
		}
		rs.Close()
		// eu-west takes writes (after the rows were read: a new row may
		// take the id of a row lost with the old home).
		var id int64
		if err := db["eu-west"].QueryRow(cx, `INSERT INTO orders (tenant_id, amount, email) VALUES ('acme', 1, 'new@acme.example') RETURNING id`).Scan(&id); err != nil {
			t.Fatalf("a write at the new home: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		lost, ambiguous := 0, 0
		for _, w := range acked {
			switch {
			case w.after != 0 && w.after <= final:
				if !present[w.id] {
					t.Errorf("row %d committed before %s (at or before %X) is not at the new home", w.id, st.AppliedLSN, w.after)
				}
			case w.before >= final:
				if present[w.id] {
					t.Errorf("row %d committed after %s (after %X) is at the new home: the recorded position is wrong", w.id, st.AppliedLSN, w.before)
				}
				if w.before < atStart {
					t.Errorf("row %d lost although committed before the data at risk began (%s)", w.id, st.Risk.AppliedLSN)
				}
				lost++
			default:
				ambiguous++
			}
		}
		if lost == 0 {
			t.Errorf("no row was lost although the link was cut before the kill: the check proves nothing")
		}
		if ambiguous > 1 {
			t.Errorf("%d rows straddle the applied position; at most one can", ambiguous)
		}
		t.Logf("%d acknowledged writes, %d lost as recorded (after %s), %d at the boundary", len(acked), lost, st.AppliedLSN, ambiguous)
		// The history carries it (P7 evidence).
		h, err := api.Failovers(cx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range h.Failovers {
			found = found || (r.Tenant == "acme" && r.Mode == fsm.FailoverManual && r.To == "eu-west" && r.AppliedLSN == st.AppliedLSN && r.RTOMS > 0)
		}
		if !found {
			t.Fatalf("history lacks acme's failover: %+v", h.Failovers)
		}
		// P7's failover part passes from it, naming what ran.
		if in, what := p7FailoverTests(t, cx, api); !in || !strings.Contains(what, "RTO") || !strings.Contains(what, "-> eu-west") {
			t.Fatalf("P7 failover tests after the failovers: %v %q", in, what)
		}
		// The old home is acme's mirror now (its subscriber waits for it
		// with former_home + resync).
		v, _, err := api.TenantReplication(cx, "acme", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Mirrors) != 1 || v.Mirrors[0].Region != "us-east" {
			t.Fatalf("acme's mirrors after the failover: %+v", v.Mirrors)
		}
	})
	t.Run("after the failovers", func(t *testing.T) {
		// No tenant is homed in us-east any more: a region failover has
		// nothing to do; a second failover of acme is refused.
		if _, err := api.StartRegionFailover(cx, "us-east", wire.FailoverRequest{}); client.StatusOf(err) != http.StatusConflict || !client.IsCode(err, "no_tenants") {
			t.Fatalf("region failover of an empty region: %v", err)
		}
		if _, err := api.StartFailover(cx, "acme", wire.FailoverRequest{To: "us-east"}); !client.IsCode(err, fsm.CodeHomeIsUp) {
			t.Fatalf("failover of a tenant whose (new) home is up: %v", err)
		}
		if _, err := api.StartFailover(cx, "acme", wire.FailoverRequest{To: "us-east", Force: true}); !client.IsCode(err, fsm.CodeTargetDown) {
			t.Fatalf("failover back onto the lost region: %v", err)
		}
		cli := newCLI(t, c).with("ATOMFED_ADDR=" + leader.URL)
		out := cli.ok("tenant", "failover-status", "robo")
		mustContain(t, "failover-status", out, "Policy", "auto", "Failover", "us-east -> eu-west (auto)", "RTO")
		// The leader said once, in the audit chain, that robo waited for
		// the detection window.
		a, err := api.Audit(cx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var notes []string
		for _, e := range a.Recent {
			if e.Type == "failover_hold" || e.Type == "failover_auto" {
				notes = append(notes, e.Type+": "+e.Note)
			}
		}
		if len(notes) < 2 || !strings.Contains(strings.Join(notes, "\n"), "waits (detecting)") {
			t.Fatalf("audit notes of the automatic policy: %q", notes)
		}
	})
	t.Run("the old home comes back", func(t *testing.T) {
		checkOldHomeComesBack(t, cx, oldHomeReturn{c: c, api: api, pgs: pgs, agents: agents, tenant: "acme", oldHome: "us-east", newHome: "eu-west"})
	})
	t.Logf("test done after %s", time.Since(start).Round(time.Millisecond))
}

// countRows counts tenant's rows of orders in a database.
func countRows(t *testing.T, cx context.Context, c *pgx.Conn, tenant string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(cx, `SELECT count(*) FROM orders WHERE tenant_id = $1`, tenant).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// tenantsEverywhere is every tenant's placement on every running server,
// once they agree.
func tenantsEverywhere(t *testing.T, c *procs.Cluster) string {
	t.Helper()
	var out string
	testutil.Eventually(t, 20*time.Second, func() error {
		out = ""
		for _, s := range c.Running() {
			l, _, err := s.Client.Tenants(ctx(t, 10*time.Second), "", &client.QueryOptions{Consistency: "stale"})
			if err != nil {
				return err
			}
			var b strings.Builder
			for _, tn := range l {
				fmt.Fprintf(&b, "%s:%s%v@%d/%d ", tn.ID, tn.HomeRegion, tn.Mirrors, tn.Epoch, tn.ModifyIndex)
			}
			if out != "" && b.String() != out {
				return fmt.Errorf("servers differ: %s and %s", out, b.String())
			}
			out = b.String()
		}
		return nil
	})
	return out
}

// p7FailoverTests reads P7's failover tests capability.
func p7FailoverTests(t *testing.T, cx context.Context, api *client.Client) (bool, string) {
	t.Helper()
	ps, err := api.PolicyStatus(cx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps.Policies {
		if p.ID == "P7" {
			var ev struct {
				Tests struct {
					InPlace bool   `json:"in_place"`
					What    string `json:"what"`
				} `json:"failover_tests"`
			}
			b, _ := json.Marshal(p.Evidence)
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Fatal(err)
			}
			return ev.Tests.InPlace, ev.Tests.What
		}
	}
	t.Fatal("no P7 in the policy status")
	return false, ""
}

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/report"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// passingRecording writes a go test -json recording in which one test of
// every package the components name passed: the verdicts then turn on the
// live verifications alone, which is what this test is about.
func passingRecording(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	seen := map[string]bool{}
	at := time.Now().UTC().Format(time.RFC3339Nano)
	for _, c := range report.Components() {
		for _, p := range c.Packages {
			if seen[p] {
				continue
			}
			seen[p] = true
			pkg := report.Module + "/" + p
			fmt.Fprintf(&b, `{"Time":%q,"Action":"run","Package":%q,"Test":"TestStandIn"}`+"\n", at, pkg)
			fmt.Fprintf(&b, `{"Time":%q,"Action":"pass","Package":%q,"Test":"TestStandIn","Elapsed":0.01}`+"\n", at, pkg)
			fmt.Fprintf(&b, `{"Time":%q,"Action":"pass","Package":%q,"Elapsed":0.02}`+"\n", at, pkg)
		}
	}
	p := filepath.Join(dir, "go-test.json")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReportVerificationsRunAndCanFail runs `atomfed report --dev-dir`
// against a real `atomfed dev` federation with a PostgreSQL per region:
// the registry, federation sync, tenant replication and policy
// verifications run against the real parts (a signed region registered
// and deregistered through approvals, a global table and a tenant
// replicated and their rows compared, a forged registration refused, a
// production region approved in and out) and leave nothing behind. Then
// the first region's replication role may no longer log in, so that no
// mirror can receive its rows: the two replication verifications fail,
// and so do their verdicts, while the others still pass.
func TestReportVerificationsRunAndCanFail(t *testing.T) {
	_, base, banner := startDevWithPostgres(t, "the report verifications")
	m := regexp.MustCompile(`data dir: (\S+)`).FindStringSubmatch(banner)
	tok := regexp.MustCompile(`management token: (\S+)`).FindStringSubmatch(banner)
	if m == nil || tok == nil {
		t.Fatalf("no data dir or token in dev's banner:\n%s", banner)
	}
	dataDir, token := m[1], tok[1]
	var df struct {
		CACert    string            `json:"ca_cert"`
		RegionDBs map[string]string `json:"region_dbs"`
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "federation.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &df); err != nil || len(df.RegionDBs) != 3 || strings.Contains(string(b), "password") {
		t.Fatalf("dev's federation.json: %v\n%s", err, b)
	}
	addr := "https://127.0.0.1:" + strconv.Itoa(base)
	out := t.TempDir()
	rec := passingRecording(t, out)
	run := func(what, timeout string) *report.Snapshot {
		t.Helper()
		r := cli(t, []string{"FEDERATION_TOKEN=" + token}, "report", "--out", out, "--addr", addr, "--dev-dir", dataDir,
			"--test-json", rec, "--settle", "60s", "--verify-timeout", timeout)
		if r.code != 0 {
			t.Fatalf("%s: atomfed report: exit %d\n%s\n%s", what, r.code, r.stdout, r.stderr)
		}
		var snap report.Snapshot
		b, err := os.ReadFile(filepath.Join(out, report.SnapshotFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &snap); err != nil {
			t.Fatal(err)
		}
		for _, dsn := range df.RegionDBs {
			if strings.Contains(string(b), dsn) {
				t.Errorf("%s: the snapshot holds a region database's DSN", what)
			}
		}
		return &snap
	}
	verdicts := func(snap *report.Snapshot) map[string]report.ComponentReport {
		out := map[string]report.ComponentReport{}
		for _, cr := range snap.Components {
			out[cr.Task] = cr
		}
		return out
	}

	snap := run("with every part working", "60s")
	got := verdicts(snap)
	want := map[string]string{"G.1.1": "pass", "G.1.2": "pass", "G.1.3": "pass", "G.1.4": "pass",
		"G.1.5": "pass", "G.1.6": "pass", "G.1.7": report.VerdictPassSimulated}
	for task, w := range want {
		if cr := got[task]; cr.Verdict != w {
			t.Errorf("%s: %s (%s), want %s", task, cr.Verdict, cr.VerdictWhy, w)
			if cr.Verification != nil {
				for _, s := range cr.Verification.Steps {
					t.Logf("  %s: %s", s.Call, s.Result)
				}
			}
		}
	}
	// G.1.7 is simulated because the dev servers sign with keys they
	// made themselves, as their /health says; the verdict names it.
	if why := got["G.1.7"].VerdictWhy; !strings.Contains(why, "signing") {
		t.Errorf("G.1.7's pass_simulated does not name the simulated signing: %s", why)
	}
	// The edge controller and the DR coordinator are verified live: a
	// switchover, and a backup with its drill and a shipped snapshot.
	for _, task := range []string{"G.1.3", "G.1.6"} {
		if v := got[task].Verification; v == nil || !v.OK {
			t.Errorf("%s's verification: %+v", task, v)
		}
	}
	for _, task := range []string{"G.1.1", "G.1.2", "G.1.4", "G.1.7"} {
		lg, err := os.ReadFile(filepath.Join(out, "logs", task+".log"))
		if err != nil || !strings.Contains(string(lg), "== verification (ok=true)") || !strings.Contains(string(lg), "TestStandIn") {
			t.Errorf("logs/%s.log: %v\n%s", task, err, lg)
		}
	}
	steps := func(task string) string {
		var calls []string
		for _, s := range got[task].Verification.Steps {
			calls = append(calls, s.Call+": "+s.Result)
		}
		return strings.Join(calls, "\n")
	}
	for task, must := range map[string][]string{
		"G.1.1": {"POST /region/register report-verify (signed", "region.deregister", "gone from all 3 servers"},
		"G.1.2": {"the same rows in every region", "streamed to every region", "torn down in every region"},
		"G.1.4": {"the same rows", "no email values, RLS enabled", "torn down"},
		"G.1.7": {"refused with 403 (bad_signature)", "pending approval", "applied at index"},
		"G.1.3": {"writes go to ap-south, epoch 1", "fencing -> catching_up -> promoting -> committed -> done", "writes go to eu-west, epoch 2", "keeps its 20 PII values"},
		"G.1.6": {"verified", "newest verified backup", "control-plane snapshot", "the newest of"},
	} {
		s := steps(task)
		for _, m := range must {
			if !strings.Contains(s, m) {
				t.Errorf("%s's verification does not show %q:\n%s", task, m, s)
			}
		}
	}

	// Nothing is left behind: no region, tenant or global table of the
	// verifications, and no table in the regions' databases.
	tlsCfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: df.CACert}, "")
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.New(addr, client.WithToken(token), client.WithTLS(tlsCfg))
	if err != nil {
		t.Fatal(err)
	}
	cx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, r := range []string{report.VerifyRegion, report.VerifyProdRegion, report.VerifyForgedRegion} {
		if _, _, err := api.Region(cx, r, nil); client.StatusOf(err) != http.StatusNotFound {
			t.Errorf("region %s is still there: %v", r, err)
		}
	}
	for _, ten := range []string{report.VerifyTenant, report.VerifyEdgeTenant} {
		if _, _, err := api.Tenant(cx, ten, nil); client.StatusOf(err) != http.StatusNotFound {
			t.Errorf("tenant %s is still there: %v", ten, err)
		}
	}
	conns := map[string]*pgx.Conn{}
	for r, dsn := range df.RegionDBs {
		c, err := pgx.Connect(cx, dsn)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		conns[r] = c
		var n int
		if err := c.QueryRow(cx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'atomfed_verify'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s still has %d verification tables (%v)", r, n, err)
		}
	}

	// Break it: the first region (the writer of the global table and the
	// tenant's home) refuses its replication role's logins, so no mirror
	// ever receives a row.
	regions, _, err := api.Regions(cx, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := regions[0].Name
	home := conns[first]
	if _, err := home.Exec(cx, `ALTER ROLE `+pgx.Identifier{pglocal.ReplicationUser}.Sanitize()+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := home.Exec(context.Background(), `ALTER ROLE `+pgx.Identifier{pglocal.ReplicationUser}.Sanitize()+` LOGIN`); err != nil {
			t.Error(err)
		}
	}()
	snap = run("with "+first+"'s replication role locked out", "6s")
	got = verdicts(snap)
	for _, task := range []string{"G.1.2", "G.1.4"} {
		cr := got[task]
		if cr.Verdict != "fail" || !strings.Contains(cr.VerdictWhy, "not within 6s") {
			t.Errorf("%s with no row reaching a mirror: %s (%s), want fail", task, cr.Verdict, cr.VerdictWhy)
		}
	}
	if got["G.1.1"].Verdict != "pass" || got["G.1.7"].Verdict != report.VerdictPassSimulated {
		t.Errorf("G.1.1 %s, G.1.7 %s: the registry and the policies do not depend on replication", got["G.1.1"].Verdict, got["G.1.7"].Verdict)
	}
}

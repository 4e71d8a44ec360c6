package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// swFed is the federation the switchover tests share: three server
// processes, us-east, eu-west and ap-south each with a PostgreSQL and an
// agent process, sa-east registered without either, an application per
// region that writes to its region's database, and `atomfed edge` in
// front.
type swFed struct {
	t      *testing.T
	c      *procs.Cluster
	pgs    map[string]*pglocal.Cluster
	db     map[string]*pgx.Conn
	agents map[string]*procs.AgentProc
	edge   string // the edge's base URL
	cli    *cliEnv
	ctx    context.Context
}

// api is a client of a running server.
func (f *swFed) api() *client.Client {
	f.t.Helper()
	for _, s := range f.c.Running() {
		return s.Client
	}
	f.t.Fatal("no server is running")
	return nil
}

// regionApp is a region's application: POST /orders inserts the tenant's
// row (the tenant from the edge's header) in the region's database and
// answers its id; the fence's refusal is a 409, other errors a 500 with
// PostgreSQL's message. One connection, one request at a time.
func regionApp(t *testing.T, region string, pg *pglocal.Cluster) *httptest.Server {
	var mu sync.Mutex
	var conn *pgx.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if conn != nil {
			conn.Close(context.Background())
		}
	})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Email string `json:"email"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		mu.Lock()
		defer mu.Unlock()
		if conn == nil || conn.IsClosed() {
			c, err := pg.Connect(r.Context(), pglocal.Database)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			conn = c
		}
		var id int64
		err := conn.QueryRow(r.Context(), `INSERT INTO orders (tenant_id, amount, email) VALUES ($1, 1, $2) RETURNING id`,
			r.Header.Get("X-Atomfed-Tenant"), in.Email).Scan(&id)
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.Code == "WF001":
			http.Error(w, pe.Message, http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "region": region})
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// pgRegions are the regions with a PostgreSQL and an agent.
var pgRegions = []string{"us-east", "eu-west", "ap-south"}

func startSwitchoverFederation(t *testing.T) *swFed {
	if _, err := pglocal.Find(); err != nil {
		t.Fatalf("this test needs PostgreSQL: %v", err)
	}
	start := time.Now()
	c := startCluster(t)
	leader := waitLeader(t, c)
	f := &swFed{t: t, c: c, pgs: pgtest.NewFederation(t, pgRegions...), db: map[string]*pgx.Conn{},
		agents: map[string]*procs.AgentProc{}, ctx: ctx(t, 5*time.Minute)}
	dir := t.TempDir()
	for _, r := range pgRegions {
		pg := f.pgs[r]
		conn, err := pg.Connect(f.ctx, pglocal.Database)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		f.db[r] = conn
		// The application's migrations, in every region: orders with its
		// own sequence and a PII column.
		execPG(t, f.ctx, conn, `CREATE TABLE orders (tenant_id text NOT NULL, id bigserial, amount int, email text, PRIMARY KEY (tenant_id, id))`)
		app := regionApp(t, r, pg)
		if _, err := c.Sec.MustSigningClient(leader.URL, r).RegisterRegion(f.ctx, &fsm.Region{Name: r, URL: "http://" + r + ".example.com:8401", AppURL: app.URL}, nil); err != nil {
			t.Fatal(err)
		}
		a, err := procs.NewAgentProc(atomfedBin, procs.LogDir(t), dir, r+"-a1", r, func() (int, error) { return testutil.FreePort(t), nil }, c.SerfAddrs(), c.Sec,
			"--replication-passfile", pg.Passfile, "--replication-ca", pg.RootCert, "--replication-interval", "500ms")
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
		f.agents[r] = a
	}
	registerRegion(t, c, leader, "sa-east")
	execPG(t, f.ctx, f.db["us-east"], `INSERT INTO orders (tenant_id, amount, email) SELECT 'acme', g, 'c' || g || '@acme.example' FROM generate_series(1, 200) g`)
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, r := range pgRegions {
			if _, err := leader.Client.RegionDatabase(f.ctx, r, nil); err != nil {
				return err
			}
		}
		return nil
	})
	// keep_local: the applications write PII wherever acme is at home, and
	// the tests check it stays there (null_only is TestRegionDrain's).
	acme := &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"ap-south", "eu-west"}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}},
		PIIWhileAway: fsm.PIIWhileAwayKeepLocal}
	if _, err := leader.Client.PutTenant(f.ctx, acme, nil); err != nil {
		t.Fatal(err)
	}

	// The edge, in front of both applications, asks a server the tests
	// never kill (the crash tests kill the leader, which is another one).
	edgePort := testutil.FreePort(t)
	edgeSrv := c.Others(leader)[0]
	edge := procs.NewProc("edge", atomfedBin, filepath.Join(procs.LogDir(t), "edge.log"), "edge", "--addr", edgeSrv.URL,
		"--listen", fmt.Sprintf("127.0.0.1:%d", edgePort), "--metrics-listen", "", "--from", "us-east")
	edge.Env = []string{"FEDERATION_TOKEN=" + procs.Token, "ATOMFED_CACERT=" + c.Sec.CAPath}
	if err := edge.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = edge.Term()
		if _, err := edge.Wait(10 * time.Second); err != nil {
			_ = edge.Kill9()
		}
		if t.Failed() {
			t.Logf("log of atomfed edge:\n%s", edge.LogTail(40))
		}
		edge.Close()
	})
	f.edge = fmt.Sprintf("http://127.0.0.1:%d", edgePort)
	f.cli = newCLI(t, c).with("ATOMFED_ADDR=" + edgeSrv.URL)

	testutil.Eventually(t, 60*time.Second, func() error {
		for _, m := range []string{"eu-west", "ap-south"} {
			if n := len(f.rows(m)); n != 200 {
				return fmt.Errorf("%s has %d of acme's 200 rows", m, n)
			}
			if err := f.mirrorStreams(m); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("federation up, acme mirrored to eu-west and ap-south, after %s", time.Since(start).Round(time.Millisecond))
	return f
}

// rows are acme's rows in a region: id to email ("" for NULL).
func (f *swFed) rows(region string) map[int64]string {
	f.t.Helper()
	out := map[int64]string{}
	var exists bool
	if err := f.db[region].QueryRow(f.ctx, `SELECT to_regclass('orders') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return out
	}
	rs, err := f.db[region].Query(f.ctx, `SELECT id, coalesce(email, '') FROM orders WHERE tenant_id = 'acme'`)
	if err != nil {
		f.t.Fatalf("read acme's rows in %s: %v", region, err)
	}
	defer rs.Close()
	for rs.Next() {
		var id int64
		var email string
		if err := rs.Scan(&id, &email); err != nil {
			f.t.Fatal(err)
		}
		out[id] = email
	}
	return out
}

// mirrorStreams reports whether region's subscription of acme streams.
func (f *swFed) mirrorStreams(region string) error {
	v, _, err := f.api().TenantReplication(f.ctx, "acme", nil)
	if err != nil {
		return err
	}
	for _, m := range v.Mirrors {
		if m.Region == region && m.State == fsm.ReplStreaming {
			return nil
		}
	}
	b, _ := json.Marshal(v)
	return fmt.Errorf("%s does not stream acme yet: %s", region, b)
}

// start starts a switchover of acme through a running server, retrying
// the answers that say nothing was applied (no leader yet, a follower
// behind): the servers may be electing a leader after a crash.
func (f *swFed) start(req wire.SwitchoverRequest) *wire.SwitchoverStatus {
	f.t.Helper()
	var st *wire.SwitchoverStatus
	testutil.Eventually(f.t, 30*time.Second, func() error {
		var err error
		st, err = f.api().StartSwitchover(f.ctx, "acme", req)
		if client.IsCode(err, "no_leader") || client.IsCode(err, "busy") {
			return err
		}
		if err != nil {
			f.t.Fatalf("switchover of acme to %s: %v", req.To, err)
		}
		return nil
	})
	return st
}

// tenant is acme as every running server has it, once they agree.
func (f *swFed) tenant() *fsm.Tenant {
	f.t.Helper()
	var out *fsm.Tenant
	testutil.Eventually(f.t, 20*time.Second, func() error {
		out = nil
		for _, s := range f.c.Running() {
			tn, _, err := s.Client.Tenant(f.ctx, "acme", &client.QueryOptions{Consistency: "stale"})
			if err != nil {
				return err
			}
			if out != nil && (tn.ModifyIndex != out.ModifyIndex || tn.HomeRegion != out.HomeRegion || tn.Epoch != out.Epoch) {
				return fmt.Errorf("servers differ on acme: %+v and %+v", out, tn)
			}
			out = tn
		}
		return nil
	})
	return out
}

// waitSwitchover follows acme's switchover id until it ends, and returns
// its last status.
func (f *swFed) waitSwitchover(id uint64, within time.Duration) *wire.SwitchoverStatus {
	f.t.Helper()
	var st *wire.SwitchoverStatus
	testutil.Eventually(f.t, within, func() error {
		var err error
		if st, _, err = f.api().Switchover(f.ctx, "acme", nil); err != nil {
			return err
		}
		if st.ID != id || st.Active {
			return fmt.Errorf("switchover %d at %s: %s", st.ID, st.Phase, lastStep(st))
		}
		return nil
	})
	return st
}

func lastStep(st *wire.SwitchoverStatus) string {
	if len(st.Steps) == 0 {
		return ""
	}
	s := st.Steps[len(st.Steps)-1]
	var tasks []string
	for _, t := range st.Tasks {
		tasks = append(tasks, t.ID+"="+t.Status+" "+t.Error)
	}
	return s.Detail + " [" + strings.Join(tasks, "; ") + "]"
}

// edgeWriter writes acme's rows through the edge, one at a time, and
// records what each answer said: acknowledged rows (id, email, region),
// writes held by a switchover (503), refused by the fence (409), and
// anything else.
type edgeWriter struct {
	mu     sync.Mutex
	n      int
	acked  []ackedRow
	held   int
	fenced int
	other  []string
	stop   chan struct{}
	done   chan struct{}
}

type ackedRow struct {
	id     int64
	email  string
	region string
	at     time.Time
}

func (f *swFed) startWriter(tag string) *edgeWriter {
	w := &edgeWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		hc := &http.Client{Timeout: 10 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			email := fmt.Sprintf("%s%d@acme.example", tag, i)
			body, _ := json.Marshal(map[string]string{"email": email})
			req, _ := http.NewRequestWithContext(f.ctx, http.MethodPost, f.edge+"/orders", bytes.NewReader(body))
			req.Header.Set("X-Atomfed-Tenant", "acme")
			resp, err := hc.Do(req)
			w.mu.Lock()
			w.n++
			switch {
			case err != nil:
				w.other = append(w.other, err.Error())
			default:
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var out struct {
					ID     int64  `json:"id"`
					Region string `json:"region"`
				}
				switch {
				case resp.StatusCode == http.StatusOK && json.Unmarshal(b, &out) == nil && out.ID > 0:
					w.acked = append(w.acked, ackedRow{out.ID, email, out.Region, time.Now()})
				case resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "switchover_in_progress") && resp.Header.Get("Retry-After") != "":
					w.held++
				case resp.StatusCode == http.StatusConflict:
					w.fenced++
				default:
					w.other = append(w.other, fmt.Sprintf("%d %s", resp.StatusCode, b))
				}
			}
			w.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return w
}

func (w *edgeWriter) finish() {
	close(w.stop)
	<-w.done
}

// waitAcked waits until n more writes were acknowledged in region.
func (w *edgeWriter) waitAcked(t *testing.T, region string, n int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		got := 0
		for _, a := range w.acked {
			if a.region == region {
				got++
			}
		}
		if got < n {
			last := ""
			if len(w.other) > 0 {
				last = w.other[len(w.other)-1]
			}
			return fmt.Errorf("%d of %d writes acknowledged in %s (%d held, %d fenced, %d other, last: %s)", got, n, region, w.held, w.fenced, len(w.other), last)
		}
		return nil
	})
}

// checkRows asserts that every row the writers acknowledged is in both
// regions (once the mirror caught up), with its email where it was
// written and, where it was not, NULL (PII never leaves its region), no
// more: and that the rows written before in the home (seeded) kept their
// PII there.
func (f *swFed) checkRows(what string, ws ...*edgeWriter) {
	f.t.Helper()
	var acked []ackedRow
	for _, w := range ws {
		acked = append(acked, w.acked...)
	}
	seen := map[int64]bool{}
	for _, a := range acked {
		if seen[a.id] {
			f.t.Fatalf("%s: id %d acknowledged twice", what, a.id)
		}
		seen[a.id] = true
	}
	testutil.Eventually(f.t, 60*time.Second, func() error {
		for _, r := range pgRegions {
			rows := f.rows(r)
			if len(rows) != 200+len(acked) {
				return fmt.Errorf("%s: %s has %d rows, want the 200 seeded and %d acknowledged", what, r, len(rows), len(acked))
			}
			for _, a := range acked {
				email, ok := rows[a.id]
				want := ""
				if a.region == r {
					want = a.email
				}
				if !ok || email != want {
					return fmt.Errorf("%s: row %d (written in %s) in %s: present %v, email %q, want %q", what, a.id, a.region, r, ok, email, want)
				}
			}
			for id := int64(1); id <= 200; id++ {
				want := ""
				if r == "us-east" {
					want = fmt.Sprintf("c%d@acme.example", id)
				}
				if rows[id] != want {
					return fmt.Errorf("%s: seeded row %d in %s has email %q, want %q", what, id, r, rows[id], want)
				}
			}
		}
		return nil
	})
}

// ids written in region, in the order acknowledged.
func idsIn(acked []ackedRow, region string) []int64 {
	var out []int64
	for _, a := range acked {
		if a.region == region {
			out = append(out, a.id)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func fenceTriggers(t *testing.T, f *swFed, region string) int {
	var n int
	if err := f.db[region].QueryRow(f.ctx, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'af_fence_%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSwitchover moves tenant acme between two regions of a real
// federation (server processes, agent processes, a PostgreSQL per region)
// the way issue 17 asks: bad requests are refused and change nothing; a
// switchover under continuous writes through `atomfed edge` loses no
// acknowledged row, makes no duplicate key, continues the sequences, holds
// writes with 503 meanwhile and leaves the old home a mirror with its PII;
// the fail-back (through the CLI) does the same in the other direction;
// a switchover whose leader is killed -9 during a step, and one whose
// target's agent is, finish. acme has a second mirror, ap-south, which
// follows each new home from its hand-off slot; the last switchover moves
// acme onto it, with us-east following as a former home again.
func TestSwitchover(t *testing.T) {
	f := startSwitchoverFederation(t)
	before := f.tenant()
	if before.Epoch != 1 || before.HomeRegion != "us-east" {
		t.Fatalf("acme at the start: %+v", before)
	}

	t.Run("bad requests change nothing", func(t *testing.T) {
		api := f.api()
		head, err := api.Audit(f.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			tenant string
			req    wire.SwitchoverRequest
			status int
			code   string
			says   string
		}{
			{"nobody", wire.SwitchoverRequest{To: "eu-west"}, 404, "tenant_not_found", `"nobody" does not exist`},
			{"acme", wire.SwitchoverRequest{To: "mars"}, 400, "unknown_region", `region "mars" is not registered`},
			{"acme", wire.SwitchoverRequest{To: "sa-east"}, 409, fsm.CodeNotAMirror, "region sa-east does not mirror tenant acme"},
			{"acme", wire.SwitchoverRequest{To: "us-east"}, 400, fsm.CodeSwitchoverNoop, "already the home"},
		} {
			_, err := api.StartSwitchover(f.ctx, c.tenant, c.req)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != c.status || ce.Code != c.code || !strings.Contains(ce.Message, c.says) {
				t.Fatalf("switchover of %s to %s: %v, want %d %s saying %q", c.tenant, c.req.To, err, c.status, c.code, c.says)
			}
		}
		out := f.cli.fails("tenant", "switchover", "acme", "--to", "sa-east")
		var st *wire.SwitchoverStatus
		mustContain(t, "CLI refusal", out, "does not mirror tenant acme", "not_a_mirror")

		// A mirror that stopped hearing from its home: its lag grows, and
		// a switchover onto it is refused with that lag.
		home := f.db["us-east"]
		execPG(t, f.ctx, home, `ALTER ROLE `+pglocal.ReplicationUser+` NOLOGIN`,
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '`+pglocal.ReplicationUser+`'`)
		t.Cleanup(func() { _, _ = home.Exec(context.Background(), `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`) })
		// Once the mirror reports a lag over 1.5 s, a switchover with a
		// budget of 1 s is refused, naming the lag.
		lagBudget := int64(1000)
		testutil.Eventually(t, 30*time.Second, func() error {
			v, _, err := api.TenantReplication(f.ctx, "acme", nil)
			if err != nil {
				return err
			}
			for _, m := range v.Mirrors {
				if m.Region == "eu-west" && m.LagSeconds <= 1.5 {
					return fmt.Errorf("eu-west reports %s with lag %.3f s", m.State, m.LagSeconds)
				}
			}
			_, err = api.StartSwitchover(f.ctx, "acme", wire.SwitchoverRequest{To: "eu-west", MaxLagMS: &lagBudget})
			switch {
			case err == nil:
				t.Fatal("a switchover onto a mirror lagging over its budget started")
			case client.IsCode(err, "mirror_not_ready"):
				return err // between two reports: look again
			case !client.IsCode(err, "mirror_lagging") || !strings.Contains(err.Error(), "over the budget of 1000 ms") || !strings.Contains(err.Error(), "last reported lag for tenant acme is"):
				t.Fatalf("a switchover onto a lagging mirror: %v", err)
			}
			return nil
		})
		if _, _, err := api.Switchover(f.ctx, "acme", nil); !client.IsCode(err, fsm.CodeNoSwitchover) {
			t.Fatalf("a refused request started a switchover: %v", err)
		}
		if got := f.tenant(); got.ModifyIndex != before.ModifyIndex || got.Epoch != 1 {
			t.Fatalf("refused requests changed acme: %+v", got)
		}
		after, err := api.Audit(f.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(after.Recent) > 0 && after.Recent[0].Index > head.Index+1 {
			t.Fatalf("the audit window (from %d) does not reach back to %d", after.Recent[0].Index, head.Index)
		}
		for _, e := range after.Recent {
			if e.Index > head.Index && (strings.HasPrefix(e.Type, "switchover_") || strings.HasPrefix(e.Type, "tenant_")) {
				t.Fatalf("the audit chain has a %s entry (%d) after the refused requests", e.Type, e.Index)
			}
		}
		if n := fenceTriggers(t, f, "us-east"); n != 0 {
			t.Fatalf("refused requests fenced us-east (%d triggers)", n)
		}

		// A switchover that cannot catch up: a second one is refused, the
		// abort rolls it back, and the fence is lifted.
		big := int64(3600000)
		st, err = api.StartSwitchover(f.ctx, "acme", wire.SwitchoverRequest{To: "eu-west", MaxLagMS: &big, TimeoutMS: 60000})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.StartSwitchover(f.ctx, "acme", wire.SwitchoverRequest{To: "eu-west", MaxLagMS: &big}); !client.IsCode(err, fsm.CodeSwitchoverInProgress) {
			t.Fatalf("a concurrent switchover: %v", err)
		}
		testutil.Eventually(t, 30*time.Second, func() error {
			cur, _, err := api.Switchover(f.ctx, "acme", nil)
			if err != nil || cur.Phase != fsm.PhaseCatchingUp {
				return fmt.Errorf("switchover not catching up yet: %v %+v", err, cur)
			}
			return nil
		})
		if n := fenceTriggers(t, f, "us-east"); n == 0 {
			t.Fatal("no fence at us-east while catching up")
		}
		f.cli.ok("tenant", "switchover-abort", "acme", "--reason", "mirror cut off")
		end := f.waitSwitchover(st.ID, 30*time.Second)
		if end.Outcome != fsm.PhaseAborted || !strings.Contains(end.Error, "mirror cut off") {
			t.Fatalf("aborted switchover: %+v", end)
		}
		if n := fenceTriggers(t, f, "us-east"); n != 0 {
			t.Fatalf("%d fence triggers left at us-east after the rollback", n)
		}
		if got := f.tenant(); got.ModifyIndex != before.ModifyIndex || got.HomeRegion != "us-east" || got.Epoch != 1 {
			t.Fatalf("an aborted switchover changed acme: %+v", got)
		}
		if _, err := api.AbortSwitchover(f.ctx, "acme", ""); !client.IsCode(err, fsm.CodeNoSwitchover) {
			t.Fatalf("abort of an ended switchover: %v", err)
		}
		execPG(t, f.ctx, home, `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`)
		testutil.Eventually(t, 60*time.Second, func() error {
			if err := f.mirrorStreams("eu-west"); err != nil {
				return err
			}
			return f.mirrorStreams("ap-south")
		})
	})
	if t.Failed() {
		return
	}

	var writers []*edgeWriter
	t.Run("under writes through the edge", func(t *testing.T) {
		w := f.startWriter("a")
		writers = append(writers, w)
		w.waitAcked(t, "us-east", 20)
		begin := time.Now()
		st := f.start(wire.SwitchoverRequest{To: "eu-west"})
		end := f.waitSwitchover(st.ID, 60*time.Second)
		took := time.Since(begin)
		if end.Outcome != fsm.PhaseDone {
			t.Fatalf("switchover: %+v", end)
		}
		w.waitAcked(t, "eu-west", 20)
		w.finish()
		got := f.tenant()
		if got.HomeRegion != "eu-west" || strings.Join(got.Mirrors, ",") != "ap-south,us-east" || got.Epoch != 2 {
			t.Fatalf("acme after the switchover: %+v", got)
		}
		us, eu := idsIn(w.acked, "us-east"), idsIn(w.acked, "eu-west")
		sort.Slice(us, func(i, j int) bool { return us[i] < us[j] })
		if eu[0] <= us[len(us)-1] {
			t.Fatalf("eu-west's sequence did not continue past us-east's: first id at eu-west %d, last at us-east %d", eu[0], us[len(us)-1])
		}
		if len(w.other) > 0 {
			t.Fatalf("writes failed otherwise than held or fenced: %v", w.other)
		}
		if w.held == 0 {
			t.Fatal("no write was held with 503 switchover_in_progress during the switchover")
		}
		var firstAtNewHome time.Time
		for _, a := range w.acked {
			if a.region == "eu-west" {
				firstAtNewHome = a.at
				break
			}
		}
		t.Logf("switchover done in %s (request to done), first write acknowledged at the new home through the edge %s after the request; "+
			"%d writes acknowledged (%d at us-east, %d at eu-west), %d held with 503, %d refused by the fence",
			took.Round(time.Millisecond), firstAtNewHome.Sub(begin).Round(time.Millisecond), len(w.acked), len(us), len(eu), w.held, w.fenced)
		f.checkRows("after the switchover", writers...)
	})
	if t.Failed() {
		return
	}

	t.Run("fail-back through the CLI", func(t *testing.T) {
		w := f.startWriter("b")
		writers = append(writers, w)
		w.waitAcked(t, "eu-west", 10)
		out := f.cli.ok("tenant", "switchover", "acme", "--to", "us-east", "--timeout", "40s")
		t.Logf("atomfed tenant switchover acme --to us-east:\n%s", out)
		mustContain(t, "tenant switchover", out, "from eu-west to us-east started", "fencing", "catching_up", "promoting", "committed", "done",
			"switchover done in", "tenant acme is at home in us-east (epoch 3); the old home eu-west mirrors it")
		w.waitAcked(t, "us-east", 10)
		w.finish()
		if len(w.other) > 0 {
			t.Fatalf("writes failed otherwise than held or fenced: %v", w.other)
		}
		if got := f.tenant(); got.HomeRegion != "us-east" || got.Epoch != 3 {
			t.Fatalf("acme after the fail-back: %+v", got)
		}
		eu, us := idsIn(w.acked, "eu-west"), idsIn(w.acked, "us-east")
		if us[0] <= eu[len(eu)-1] {
			t.Fatalf("us-east's sequence did not continue past eu-west's: first id at us-east %d, last at eu-west %d", us[0], eu[len(eu)-1])
		}
		f.checkRows("after the fail-back", writers...)
		st := f.cli.ok("tenant", "switchover-status", "acme")
		mustContain(t, "switchover-status", st, "done", "eu-west (epoch 2)", "us-east (epoch 3)", "Fenced LSN")
	})
	if t.Failed() {
		return
	}

	t.Run("the leader killed during a step", func(t *testing.T) {
		// us-east -> eu-west, the leader killed twice: right after the
		// start (the fence step is being planned or run), then, once the
		// first is back, the next leader while the mirrors' catch-up steps
		// run (they cannot log in to us-east until the test lets them).
		home := f.db["us-east"]
		execPG(t, f.ctx, home, `ALTER ROLE `+pglocal.ReplicationUser+` NOLOGIN`,
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '`+pglocal.ReplicationUser+`'`)
		t.Cleanup(func() { _, _ = home.Exec(context.Background(), `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`) })
		kill := func(s *procs.ServerProc, when string) {
			t.Helper()
			if err := s.Kill9(); err != nil {
				t.Fatal(err)
			}
			_, _ = s.Wait(10 * time.Second)
			t.Logf("killed leader %s %s", s.ID(), when)
		}
		restart := func(s *procs.ServerProc) {
			t.Helper()
			if err := s.Restart(); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 30*time.Second, func() error { // back, and it knows the leader
				_, _, err := s.Client.Tenant(f.ctx, "acme", &client.QueryOptions{Consistency: "default"})
				return err
			})
		}
		first := waitLeader(t, f.c)
		st, err := first.Client.StartSwitchover(f.ctx, "acme", wire.SwitchoverRequest{To: "eu-west", TimeoutMS: 60000, MaxLagMS: ptr(int64(3600000))})
		if err != nil {
			t.Fatal(err)
		}
		kill(first, "right after the start")
		var during string
		testutil.Eventually(t, 30*time.Second, func() error {
			cur, _, err := f.api().Switchover(f.ctx, "acme", nil)
			if err != nil {
				return err
			}
			for _, tk := range cur.Tasks {
				if tk.Type == fsm.TaskTypeTenantCatchUp && tk.Status == fsm.TaskRunning && strings.Contains(string(tk.Result), `"behind"`) {
					during = cur.Phase + " (" + tk.ID + " " + tk.Status + ")"
					return nil
				}
			}
			return fmt.Errorf("no catch-up step running yet (%s: %s)", cur.Phase, lastStep(cur))
		})
		restart(first)
		kill(waitLeader(t, f.c), "during "+during)
		execPG(t, f.ctx, home, `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`)
		end := f.waitSwitchover(st.ID, 60*time.Second)
		if end.Outcome != fsm.PhaseDone {
			t.Fatalf("switchover after the leaders' crashes: %+v", end)
		}
		for _, s := range f.c.Servers {
			if !s.Running() {
				restart(s)
			}
		}
		if got := f.tenant(); got.HomeRegion != "eu-west" || got.Epoch != 4 {
			t.Fatalf("acme after the switchover: %+v", got)
		}
		f.checkRows("after the leader's crash", writers...)
	})
	if t.Failed() {
		return
	}

	t.Run("the target's agent killed during a step", func(t *testing.T) {
		// eu-west -> ap-south: us-east, the former home of the last
		// switchover, follows ap-south as a former home again (keeping its
		// PII), and ap-south's agent is killed while its catch-up step
		// runs: the mirrors cannot log in to eu-west until the test lets
		// them, so the step is surely running when the agent dies.
		a := f.agents["ap-south"]
		home := f.db["eu-west"]
		execPG(t, f.ctx, home, `ALTER ROLE `+pglocal.ReplicationUser+` NOLOGIN`,
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '`+pglocal.ReplicationUser+`'`)
		t.Cleanup(func() { _, _ = home.Exec(context.Background(), `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`) })
		st := f.start(wire.SwitchoverRequest{To: "ap-south", TimeoutMS: 60000})
		if strings.Join(st.Others, ",") != "us-east" || strings.Join(st.FormerHomes, ",") != "us-east" {
			t.Fatalf("switchover onto ap-south: others %v, former homes %v", st.Others, st.FormerHomes)
		}
		var phase string
		testutil.Eventually(t, 30*time.Second, func() error {
			cur, _, err := f.api().Switchover(f.ctx, "acme", nil)
			switch {
			case err != nil:
				return err
			case cur.ID != st.ID:
				return fmt.Errorf("switchover %d not seen yet", st.ID)
			case !cur.Active:
				t.Fatalf("the switchover ended before a step of ap-south was placed: %+v", cur)
			}
			for _, tk := range cur.Tasks {
				if tk.Type == fsm.TaskTypeTenantCatchUp && tk.Region == "ap-south" && tk.Status == fsm.TaskRunning && strings.Contains(string(tk.Result), `"behind"`) {
					phase = cur.Phase + " (" + tk.ID + " " + tk.Status + ": " + string(tk.Result) + ")"
					return nil
				}
			}
			return fmt.Errorf("ap-south's catch-up is not running yet (%s)", cur.Phase)
		})
		if err := a.Kill9(); err != nil {
			t.Fatal(err)
		}
		_, _ = a.Wait(10 * time.Second)
		t.Logf("killed %s during %s", a.Node, phase)
		if err := a.Restart(); err != nil {
			t.Fatal(err)
		}
		execPG(t, f.ctx, home, `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`)
		end := f.waitSwitchover(st.ID, 90*time.Second)
		if end.Outcome != fsm.PhaseDone {
			t.Fatalf("switchover after the target agent's crash: %+v", end)
		}
		if got := f.tenant(); got.HomeRegion != "ap-south" || strings.Join(got.Mirrors, ",") != "eu-west,us-east" || got.Epoch != 5 {
			t.Fatalf("acme after the switchover: %+v", got)
		}
		f.checkRows("after the agent's crash", writers...)
		// The new home takes writes, and both former homes get them.
		w := f.startWriter("c")
		w.waitAcked(t, "ap-south", 5)
		w.finish()
		if len(w.other) > 0 {
			t.Fatalf("writes at ap-south failed: %v", w.other)
		}
		f.checkRows("writes after the last switchover", append(writers, w)...)
	})
}

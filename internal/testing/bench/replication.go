package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// ReplicationOptions shape the tenant replication benchmark.
type ReplicationOptions struct {
	Bin     string
	Cluster *procs.Cluster
	// Rate is the insert rate at the home (rows per second), Duration
	// the length of each measured run, Rounds how many runs of each setup
	// (alternating, so drift in the machine's load hits both alike).
	Rate     int
	Duration time.Duration
	Rounds   int
	Log      func(format string, a ...any)
}

// LagStats is the lag of one setup over its runs: from an insert being
// sent at the home to the row being visible on the mirror (an apply-side
// trigger notifies a listener on the mirror).
type LagStats struct {
	Setup         time.Duration // to the subscription streaming with its table ready
	Sent, Seen    int
	Rate          float64 // achieved inserts per second
	P50, P99, Max time.Duration
	samples       []time.Duration
}

// ReplicationResult is what the replication benchmark measured.
type ReplicationResult struct {
	Rate       int
	Duration   time.Duration
	Rounds     int
	PG         string
	Controller LagStats // tenant replication set up by atomfed
	Manual     LagStats // the same publication and subscription by hand with psql
}

// repl is one benchmark run's environment.
type repl struct {
	o            ReplicationOptions
	home, mirror *pglocal.Cluster
	api          *client.Client
	agents       []*procs.AgentProc
}

const benchTenant = "bench"

// RunReplication measures replication lag of a tenant that atomfed
// replicates from one region's PostgreSQL to another's, and of the same
// publication and subscription set up by hand, on the same two clusters.
func RunReplication(ctx context.Context, o ReplicationOptions) (*ReplicationResult, error) {
	if _, err := pglocal.Find(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "atomfed-bench-repl-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil { // PostgreSQL may run as another user
		return nil, err
	}
	r := &repl{o: o}
	defer r.close()
	if err := r.start(ctx, dir); err != nil {
		return nil, err
	}
	res := &ReplicationResult{Rate: o.Rate, Duration: o.Duration, Rounds: o.Rounds}
	conn, err := r.home.Connect(ctx, pglocal.Database)
	if err != nil {
		return nil, err
	}
	_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&res.PG)
	conn.Close(ctx)
	o.Log("replication: atomfed sets up tenant %q (home rep-home, mirror rep-mirror)", benchTenant)
	if res.Controller.Setup, err = r.controllerSetup(ctx); err != nil {
		return nil, fmt.Errorf("controller setup: %w", err)
	}
	o.Log("replication: the same publication and subscription by hand with psql")
	if res.Manual.Setup, err = r.manualSetup(ctx); err != nil {
		return nil, fmt.Errorf("manual setup: %w", err)
	}
	for i := 0; i < o.Rounds; i++ {
		for _, run := range []struct {
			table string
			st    *LagStats
		}{{"bench_ctl", &res.Controller}, {"bench_manual", &res.Manual}} {
			if err := r.measure(ctx, run.table, int64(i)*int64(o.Rate)*int64(o.Duration/time.Second+1)*10, run.st); err != nil {
				return nil, fmt.Errorf("measure %s: %w", run.table, err)
			}
			o.Log("replication: round %d %s: %d/%d rows, p50 %s p99 %s", i+1, run.table, run.st.Seen, run.st.Sent, fmtDur(pct(run.st.samples, 50)), fmtDur(pct(run.st.samples, 99)))
		}
	}
	for _, st := range []*LagStats{&res.Controller, &res.Manual} {
		st.P50, st.P99, st.Max = pct(st.samples, 50), pct(st.samples, 99), pct(st.samples, 100)
		st.Rate = float64(st.Sent) / (float64(o.Rounds) * o.Duration.Seconds())
	}
	return res, nil
}

func (r *repl) start(ctx context.Context, dir string) error {
	settings := map[string]string{"fsync": "on", "full_page_writes": "on"} // as in production
	var err error
	if r.home, err = pglocal.Start(ctx, pglocal.Options{Name: "rep-home", Parent: dir, Settings: settings}); err != nil {
		return err
	}
	if r.mirror, err = pglocal.Start(ctx, pglocal.Options{Name: "rep-mirror", Parent: dir, Settings: settings, ReplicationPassword: r.home.ReplicationPassword}); err != nil {
		return err
	}
	leader, err := r.o.Cluster.Leader(ctx)
	if err != nil {
		return err
	}
	r.api = leader.Client
	for _, reg := range []string{"rep-home", "rep-mirror"} {
		rc, err := r.o.Cluster.Sec.SigningClient(leader.URL, reg)
		if err != nil {
			return err
		}
		if _, err := rc.RegisterRegion(ctx, &fsm.Region{Name: reg, URL: leader.URL}, nil); err != nil {
			return fmt.Errorf("register %s: %w", reg, err)
		}
	}
	for _, a := range []struct {
		region string
		pg     *pglocal.Cluster
	}{{"rep-home", r.home}, {"rep-mirror", r.mirror}} {
		ap, err := procs.NewAgentProc(r.o.Bin, filepath.Join(dir, "logs"), dir, a.region+"-a1", a.region, procs.FreePort, r.o.Cluster.SerfAddrs(), r.o.Cluster.Sec)
		if err != nil {
			return err
		}
		// The DSN holds a password: it goes in the environment, never on
		// the command line.
		ap.Env = append(ap.Env, "POSTGRES_DSN="+a.pg.DSN(pglocal.Database), "ATOMFED_REPLICATION_PASSFILE="+a.pg.Passfile, "ATOMFED_REPLICATION_CA="+a.pg.RootCert)
		if err := ap.Start(); err != nil {
			return err
		}
		r.agents = append(r.agents, ap)
	}
	table := `CREATE TABLE %s (tenant_id text NOT NULL, id bigint NOT NULL, payload text NOT NULL, email text,
		created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id))`
	return execAll(ctx, r.home, fmt.Sprintf(table, "bench_ctl"), fmt.Sprintf(table, "bench_manual"))
}

func (r *repl) close() {
	for _, a := range r.agents {
		a.Close()
	}
	for _, pg := range []*pglocal.Cluster{r.home, r.mirror} {
		if pg != nil {
			_ = pg.Remove()
		}
	}
}

func execAll(ctx context.Context, pg *pglocal.Cluster, stmts ...string) error {
	c, err := pg.Connect(ctx, pglocal.Database)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// notifyTrigger makes the mirror announce each applied row of table.
func notifyTrigger(table string) []string {
	return []string{
		`CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN PERFORM pg_notify('bench_' || TG_TABLE_NAME, NEW.id::text); RETURN NEW; END $$`,
		`CREATE TRIGGER bench_notify AFTER INSERT ON ` + table + ` FOR EACH ROW EXECUTE FUNCTION bench_notify()`,
		`ALTER TABLE ` + table + ` ENABLE ALWAYS TRIGGER bench_notify`,
	}
}

// controllerSetup puts the tenant and waits until its mirror streams.
func (r *repl) controllerSetup(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	tn := &fsm.Tenant{ID: benchTenant, HomeRegion: "rep-home", Mirrors: []string{"rep-mirror"},
		Tables: []fsm.TenantTable{{Name: "bench_ctl", PIIColumns: []string{"email"}}}}
	if _, err := r.api.PutTenant(ctx, tn, nil); err != nil {
		return 0, err
	}
	var v *fsm.TenantReplication
	var verr error
	if err := pollSetup(ctx, func() error {
		v, _, verr = r.api.TenantReplication(ctx, benchTenant, nil)
		if verr == nil && len(v.Mirrors) == 1 && v.Mirrors[0].State == fsm.ReplStreaming && len(v.Mirrors[0].Tables) == 1 && v.Mirrors[0].Tables[0].State == "ready" {
			return nil
		}
		return errors.New("not streaming")
	}); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("the mirror did not stream within 2 minutes: %v %+v (agent logs: %s)", verr, v, r.agents[1].LogTail(20))
	}
	took := time.Since(start)
	return took, execAll(ctx, r.mirror, notifyTrigger("bench_ctl")...)
}

// manualSetup creates the same publication and subscription with psql,
// the way an operator would without atomfed, and waits until the table
// is ready.
func (r *repl) manualSetup(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	home := []string{
		`GRANT SELECT ON bench_manual TO ` + pglocal.ReplicationUser,
		`CREATE PUBLICATION manual_pub FOR TABLE bench_manual (tenant_id, id, payload, created) WHERE (tenant_id = 'bench') WITH (publish = 'insert, update, delete')`,
	}
	mirror := []string{
		`CREATE TABLE bench_manual (tenant_id text NOT NULL, id bigint NOT NULL, payload text NOT NULL, created timestamptz NOT NULL, PRIMARY KEY (tenant_id, id))`,
		fmt.Sprintf(`CREATE SUBSCRIPTION manual_sub CONNECTION 'host=%s port=%d dbname=%s user=%s passfile=%s sslmode=verify-full sslrootcert=%s' PUBLICATION manual_pub WITH (synchronous_commit = 'off')`,
			r.home.Host, r.home.Port, pglocal.Database, pglocal.ReplicationUser, r.mirror.Passfile, r.mirror.RootCert),
	}
	if err := psql(ctx, r.home, home...); err != nil {
		return 0, err
	}
	if err := psql(ctx, r.mirror, mirror...); err != nil {
		return 0, err
	}
	var out string
	var qerr error
	if err := pollSetup(ctx, func() error {
		out, qerr = psqlOut(ctx, r.mirror, `SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = 'manual_sub' AND r.srsubstate = 'r'`)
		if qerr == nil && strings.TrimSpace(out) == "1" {
			return nil
		}
		return errors.New("not ready")
	}); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("the manual subscription was not ready within 2 minutes: %v %s", qerr, out)
	}
	took := time.Since(start)
	return took, execAll(ctx, r.mirror, notifyTrigger("bench_manual")...)
}

// pollSetup polls a replication setup for up to 2 minutes, every 20 ms:
// the resolution of the setup times the benchmark reports.
func pollSetup(ctx context.Context, fn func() error) error {
	return testutil.PollEvery(ctx, 2*time.Minute, 20*time.Millisecond, fn)
}

func psqlCmd(ctx context.Context, pg *pglocal.Cluster, sql string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(pg.BinDir, "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
		"-h", pg.Host, "-p", strconv.Itoa(pg.Port), "-U", pglocal.Superuser, "-d", pglocal.Database, "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSFILE="+pg.SuperuserPassfile)
	return cmd
}

func psql(ctx context.Context, pg *pglocal.Cluster, stmts ...string) error {
	for _, s := range stmts {
		if out, err := psqlCmd(ctx, pg, s).CombinedOutput(); err != nil {
			return fmt.Errorf("psql %s: %w: %s", s, err, out)
		}
	}
	return nil
}

func psqlOut(ctx context.Context, pg *pglocal.Cluster, sql string) (string, error) {
	out, err := psqlCmd(ctx, pg, sql).Output()
	return string(out), err
}

// measure inserts rows into table at the home at the configured rate for
// the configured duration, with ids from base, and records for each row
// the time from sending its insert to its notification from the mirror.
func (r *repl) measure(ctx context.Context, table string, base int64, st *LagStats) error {
	listen, err := r.mirror.Connect(ctx, pglocal.Database)
	if err != nil {
		return err
	}
	defer listen.Close(context.Background())
	if _, err := listen.Exec(ctx, "LISTEN bench_"+table); err != nil {
		return err
	}
	ins, err := r.home.Connect(ctx, pglocal.Database)
	if err != nil {
		return err
	}
	defer ins.Close(context.Background())

	var mu sync.Mutex
	sent := map[int64]time.Time{}
	seen := 0
	lctx, stopListen := context.WithCancel(ctx)
	defer stopListen()
	listened := make(chan error, 1)
	go func() {
		for {
			n, err := listen.WaitForNotification(lctx)
			if err != nil {
				listened <- err
				return
			}
			now := time.Now()
			id, _ := strconv.ParseInt(n.Payload, 10, 64)
			mu.Lock()
			if t0, ok := sent[id]; ok {
				st.samples = append(st.samples, now.Sub(t0))
				delete(sent, id)
				seen++
			}
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(r.o.Rate))
	defer tick.Stop()
	end := time.Now().Add(r.o.Duration)
	n := 0
	for id := base + 1; time.Now().Before(end); id++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		if _, err := ins.Exec(ctx, `INSERT INTO `+table+` (tenant_id, id, payload, email) VALUES ($1, $2, repeat('x', 200), 'pii@example.com')`, benchTenant, id); err != nil {
			return err
		}
		n++
	}
	st.Sent += n
	var listenErr error
	_ = testutil.PollEvery(context.Background(), 30*time.Second, 10*time.Millisecond, func() error {
		select {
		case listenErr = <-listened:
			return testutil.Abort(listenErr)
		default:
		}
		mu.Lock()
		defer mu.Unlock()
		if left := len(sent); left > 0 {
			return fmt.Errorf("%d rows not seen yet", left)
		}
		return nil
	})
	if listenErr != nil {
		return listenErr
	}
	stopListen()
	mu.Lock()
	st.Seen += seen
	mu.Unlock()
	if seen != n {
		return fmt.Errorf("%d of %d rows reached the mirror within 30 s", seen, n)
	}
	return nil
}

// pct returns the p-th percentile (100: the maximum).
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

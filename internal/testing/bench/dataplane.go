package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/procs"
)

// DataPlaneRegions are the regions of the data-plane federation, each with
// its own PostgreSQL, agent and application.
var DataPlaneRegions = []string{"us-east", "eu-west", "ap-south"}

// DataPlaneTenant is the tenant the data-plane benchmarks write: at home
// in us-east, mirrored to eu-west and ap-south, one table with a PII
// column.
const DataPlaneTenant = "acme"

// DataPlaneFed is the federation the data-plane benchmarks run on: three
// `atomfed server` processes (TLS, default flags), a real PostgreSQL 15,
// an `atomfed agent` process (with pgBackRest) and an application per
// region, and an `atomfed edge` process in front of the applications.
// The measurements are functions taking it, so that later ones (failover
// RTO, region rebuild) run on the same federation.
type DataPlaneFed struct {
	Cluster *procs.Cluster
	Regions []string
	PG      map[string]*pglocal.Cluster
	Agents  map[string]*procs.AgentProc
	// BackupDir is each agent's --backup-dir (its pgbackrest.conf, locks,
	// logs and the posix repository under repo/).
	BackupDir map[string]string
	Edge      *procs.Proc
	EdgeURL   string
	Dir       string
	Log       func(format string, a ...any)

	apps []*http.Server
}

// API is a client of a running server (not necessarily the leader).
func (f *DataPlaneFed) API() (*client.Client, error) {
	for _, s := range f.Cluster.Running() {
		return s.Client, nil
	}
	return nil, errors.New("no server is running")
}

// StartDataPlaneFed starts the federation under a new temporary directory
// and registers the tenant (acme, home us-east, mirrors eu-west and
// ap-south) once every region reported its database; it returns when both
// mirrors stream. Scheduled backups and drills are disabled (a benchmark
// asks for its own); retention keeps one full backup.
func StartDataPlaneFed(ctx context.Context, bin string, logf func(string, ...any)) (f *DataPlaneFed, err error) {
	if _, err := pglocal.Find(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "atomfed-bench-dp-")
	if err != nil {
		return nil, err
	}
	// PostgreSQL and pgBackRest run as another user when we are root.
	if err := os.Chmod(dir, 0o711); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	f = &DataPlaneFed{Regions: DataPlaneRegions, PG: map[string]*pglocal.Cluster{}, Agents: map[string]*procs.AgentProc{},
		BackupDir: map[string]string{}, Dir: dir, Log: logf}
	defer func() {
		if err != nil {
			f.Close(true)
		}
	}()
	start := time.Now()
	if f.Cluster, err = procs.StartCluster(procs.ClusterOptions{Bin: bin, Dir: filepath.Join(dir, "servers")}); err != nil {
		return f, err
	}
	leader, err := f.Cluster.WaitLeader(30 * time.Second)
	if err != nil {
		return f, err
	}
	settings := map[string]string{"fsync": "on", "full_page_writes": "on"}
	var pw string
	for _, r := range f.Regions {
		pg, err := pglocal.Start(ctx, pglocal.Options{Name: "dp-" + r, Parent: dir, Settings: settings, ReplicationPassword: pw})
		if err != nil {
			return f, err
		}
		pw = pg.ReplicationPassword
		f.PG[r] = pg
		// The application's migration, in every region: orders with its
		// own sequence and a PII column.
		if err := execAll(ctx, pg, `CREATE TABLE orders (tenant_id text NOT NULL, id bigserial, amount int, email text, PRIMARY KEY (tenant_id, id))`); err != nil {
			return f, err
		}
		app, err := f.startApp(r, pg)
		if err != nil {
			return f, err
		}
		rc, err := f.Cluster.Sec.SigningClient(leader.URL, r)
		if err != nil {
			return f, err
		}
		if _, err := rc.RegisterRegion(ctx, &fsm.Region{Name: r, URL: "http://" + r + ".example.com:8401", AppURL: app}, nil); err != nil {
			return f, fmt.Errorf("register %s: %w", r, err)
		}
		pol, err := leader.Client.BackupPolicy(ctx, r, nil)
		if err != nil {
			return f, err
		}
		pol.Disabled, pol.RetentionFull, pol.Default = true, 1, false
		if _, err := leader.Client.PutBackupPolicy(ctx, pol); err != nil {
			return f, fmt.Errorf("backup policy of %s: %w", r, err)
		}
		f.BackupDir[r] = filepath.Join(dir, "backup-"+r)
		args := []string{"--replication-passfile", pg.Passfile, "--replication-ca", pg.RootCert, "--replication-interval", "500ms",
			"--backup-dir", f.BackupDir[r]}
		if r == BackupRegion {
			// The agent manages the region's PostgreSQL: it can rebuild it.
			args = append(args, "--pg-data", pg.DataDir, "--pg-bin", pg.BinDir)
		}
		a, err := procs.NewAgentProc(bin, f.Cluster.LogDir, filepath.Join(dir, "agents"), r+"-a1", r, procs.FreePort, f.Cluster.SerfAddrs(), f.Cluster.Sec, args...)
		if err != nil {
			return f, err
		}
		// The DSN holds a password: environment, never the command line.
		a.Env = append(a.Env, "POSTGRES_DSN="+pg.DSN(pglocal.Database))
		if err := a.Start(); err != nil {
			return f, err
		}
		f.Agents[r] = a
	}
	if err := execAll(ctx, f.PG["us-east"], `INSERT INTO orders (tenant_id, amount, email) SELECT 'acme', g, 'c' || g || '@acme.example' FROM generate_series(1, 200) g`); err != nil {
		return f, err
	}
	if err := eventually(ctx, time.Minute, func() error {
		for _, r := range f.Regions {
			if _, err := leader.Client.RegionDatabase(ctx, r, nil); err != nil {
				return fmt.Errorf("%s's database not reported yet: %w", r, err)
			}
		}
		return nil
	}); err != nil {
		return f, err
	}
	acme := &fsm.Tenant{ID: DataPlaneTenant, HomeRegion: "us-east", Mirrors: []string{"ap-south", "eu-west"},
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	if _, err := leader.Client.PutTenant(ctx, acme, nil); err != nil {
		return f, err
	}
	edgeSrv := f.Cluster.Others(leader)[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return f, err
	}
	edgeAddr := ln.Addr().String()
	ln.Close()
	f.Edge = procs.NewProc("edge", bin, filepath.Join(f.Cluster.LogDir, "edge.log"), "edge", "--addr", edgeSrv.URL,
		"--listen", edgeAddr, "--metrics-listen", "", "--from", "us-east")
	f.Edge.Env = []string{"FEDERATION_TOKEN=" + procs.Token, "ATOMFED_CACERT=" + f.Cluster.Sec.CAPath}
	if err := f.Edge.Start(); err != nil {
		return f, err
	}
	f.EdgeURL = "http://" + edgeAddr
	if err := eventually(ctx, 2*time.Minute, func() error {
		for _, m := range []string{"eu-west", "ap-south"} {
			if err := f.MirrorStreams(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return f, err
	}
	logf("data plane: federation up, %s mirrored to eu-west and ap-south, after %s", DataPlaneTenant, time.Since(start).Round(time.Millisecond))
	return f, nil
}

// MirrorStreams reports whether region's subscription of the tenant
// streams.
func (f *DataPlaneFed) MirrorStreams(ctx context.Context, region string) error {
	return f.TenantMirrorStreams(ctx, DataPlaneTenant, region)
}

// TenantMirrorStreams reports whether region's subscription of tenant
// streams.
func (f *DataPlaneFed) TenantMirrorStreams(ctx context.Context, tenant, region string) error {
	api, err := f.API()
	if err != nil {
		return err
	}
	v, _, err := api.TenantReplication(ctx, tenant, nil)
	if err != nil {
		return err
	}
	for _, m := range v.Mirrors {
		if m.Region == region && m.State == fsm.ReplStreaming {
			return nil
		}
	}
	return fmt.Errorf("%s does not stream %s yet", region, tenant)
}

// startApp serves a region's application on loopback: POST /orders
// inserts the tenant's row (the tenant from the edge's header) in the
// region's database and answers its id and the region; the fence's
// refusal (WF001) is a 409, other errors a 500. One connection, one
// request at a time, like the e2e tests' application.
func (f *DataPlaneFed) startApp(region string, pg *pglocal.Cluster) (string, error) {
	var mu sync.Mutex
	var conn *pgx.Conn
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	s := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	})}
	s.RegisterOnShutdown(func() {
		mu.Lock()
		defer mu.Unlock()
		if conn != nil {
			conn.Close(context.Background())
		}
	})
	go func() { _ = s.Serve(ln) }()
	f.apps = append(f.apps, s)
	return "http://" + ln.Addr().String(), nil
}

// Close stops everything and removes the directory (keeping the logs'
// directory when keepLogs, which it names).
func (f *DataPlaneFed) Close(keepLogs bool) {
	if f.Edge != nil {
		_ = f.Edge.Term()
		if _, err := f.Edge.Wait(10 * time.Second); err != nil {
			_ = f.Edge.Kill9()
		}
		f.Edge.Close()
	}
	for _, s := range f.apps {
		_ = s.Close()
	}
	for _, a := range f.Agents {
		a.Close()
	}
	for _, pg := range f.PG {
		_ = pg.Remove()
	}
	if f.Cluster != nil {
		f.Cluster.Close()
	}
	if keepLogs && f.Cluster != nil {
		for r := range f.BackupDir {
			os.RemoveAll(f.BackupDir[r])
		}
		f.Log("data plane: logs kept in %s", f.Cluster.LogDir)
		return
	}
	os.RemoveAll(f.Dir)
}

// eventually retries fn every 200 ms until it succeeds, returns a
// retryNot, or within passes.
func eventually(ctx context.Context, within time.Duration, fn func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var stop retryNot
		if errors.As(err, &stop) {
			return stop.error
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// TestRouteFollowsPlacementAndLag routes a real replicated tenant of an
// `atomfed dev` federation (TLS servers, agents, one PostgreSQL per
// region), through the CLI and the API as an edge would: writes go to the
// home; a read from the mirror's region with a generous budget goes to the
// mirror; once the mirror stops hearing from its home its reported lag
// grows, a blocking route wakes, and a read whose budget is below that lag
// goes home with the reason, and back to the mirror once it streams
// again; `atomfed edge` proxies reads to the mirror's application and
// writes to the home's and writes its routing table to a real Redis; a
// change of placement wakes a blocking route too.
func TestRouteFollowsPlacementAndLag(t *testing.T) {
	start := time.Now()
	work, base, banner := startDevWithPostgres(t, "this test")
	superDSN := map[string]string{}
	for region, db := range devRegionDBs(t, banner) {
		superDSN[region] = db.superDSN()
	}
	caPath := regexp.MustCompile(`ATOMFED_CACERT=(\S+)`).FindStringSubmatch(banner)[1]
	token := regexp.MustCompile(`FEDERATION_TOKEN=(\S+)`).FindStringSubmatch(banner)[1]
	dataDir := regexp.MustCompile(`data dir: (\S+)`).FindStringSubmatch(banner)[1]
	addr := fmt.Sprintf("https://127.0.0.1:%d", base)
	tlsConf, err := tlsutil.ClientConfig(tlsutil.Files{CA: caPath}, "")
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.New(addr, client.WithToken(token), client.WithTLS(tlsConf))
	if err != nil {
		t.Fatal(err)
	}
	cx := ctx(t, 3*time.Minute)
	op := &cliEnv{t: t, env: []string{"ATOMFED_ADDR=" + addr, "ATOMFED_CACERT=" + caPath, "FEDERATION_TOKEN=" + token}}
	t.Logf("dev federation up in %s", time.Since(start).Round(time.Millisecond))

	// Each region's application (a TLS server that names its region) and
	// its endpoint, registered by the region's operator with the region's
	// key, as a region update.
	apps, appCA := regionApps(t, work, "us-east", "eu-west")
	for _, r := range []string{"us-east", "eu-west"} {
		v, _, err := api.Region(cx, r, nil)
		if err != nil {
			t.Fatal(err)
		}
		op.ok("region", "register", "--name", r, "--url", v.URL, "--app-url", apps[r],
			"--lat", strconv.FormatFloat(v.Location.Lat, 'f', -1, 64), "--lon", strconv.FormatFloat(v.Location.Lon, 'f', -1, 64),
			"--label", "env=dev", "--key", filepath.Join(dataDir, "keys", r+".key"))
	}
	mustContain(t, "region show", op.ok("region", "show", "eu-west"), apps["eu-west"])

	home, mirror := connectPG(t, cx, superDSN["us-east"]), connectPG(t, cx, superDSN["eu-west"])
	execPG(t, cx, home, `CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, amount int, PRIMARY KEY (tenant_id, id))`,
		`INSERT INTO orders SELECT 'acme', g, g FROM generate_series(1, 50) g`)
	acme := &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: []fsm.TenantTable{{Name: "orders"}}}
	if _, err := api.PutTenant(cx, acme, nil); err != nil {
		t.Fatal(err)
	}
	route := func(args ...string) wire.Route {
		t.Helper()
		var out wire.Route
		decodeJSON(t, "atomfed route", op.ok(append([]string{"route", "--tenant", "acme", "-o", "json"}, args...)...), &out)
		return out
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		var n int
		if err := mirror.QueryRow(cx, `SELECT count(*) FROM orders WHERE tenant_id = 'acme'`).Scan(&n); err != nil || n != 50 {
			return fmt.Errorf("eu-west has %d of acme's 50 rows (%v)", n, err)
		}
		if r := route("--op", "read", "--from", "eu-west", "--max-staleness", "60s"); r.Region != "eu-west" {
			return fmt.Errorf("a read from eu-west goes to %s: %s", r.Region, r.Reason)
		}
		return nil
	})
	t.Logf("tenant mirrored and routed to its mirror after %s", time.Since(start).Round(time.Millisecond))

	w := route("--op", "write", "--from", "eu-west")
	if w.Region != "us-east" || w.AppURL != apps["us-east"] || !strings.HasPrefix(w.Reason, "home") || len(w.Alternatives) != 0 {
		t.Fatalf("a write from eu-west goes home: %+v", w)
	}
	r := route("--op", "read", "--from", "eu-west", "--max-staleness", "60s")
	if r.AppURL != apps["eu-west"] || !strings.Contains(r.Reason, "nearest mirror within staleness budget") {
		t.Fatalf("a read from eu-west with a 60 s budget: %+v", r)
	}
	mustContain(t, "route table", op.ok("route", "--tenant", "acme", "--op", "read", "--from", "eu-west", "--max-staleness", "60s"),
		"eu-west", apps["eu-west"], "us-east", "nearest mirror within staleness budget")

	// Before the outage a read with a 1 s budget goes to the mirror too.
	testutil.Eventually(t, 30*time.Second, func() error {
		if r := route("--op", "read", "--from", "eu-west", "--max-staleness", "1s"); r.Region != "eu-west" {
			return fmt.Errorf("a read with a 1 s budget goes to %s: %s", r.Region, r.Reason)
		}
		return nil
	})

	// The mirror loses its home: its replication role may no longer log in
	// there, so the apply worker stops and the lag the mirror's agent
	// reports (the time since it last streamed) grows.
	budget := int64(1000)
	readReq := client.RouteRequest{Tenant: "acme", Op: "read", From: "eu-west", MaxStalenessMS: &budget}
	_, meta, err := api.Route(cx, readReq, &client.QueryOptions{Consistency: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan *client.Meta, 1)
	go func() {
		_, m, err := api.Route(cx, readReq, &client.QueryOptions{Consistency: "stale", Index: meta.Index, Wait: time.Minute})
		if err != nil {
			m = nil
		}
		woke <- m
	}()
	execPG(t, cx, home, `ALTER ROLE `+pglocal.ReplicationUser+` NOLOGIN`,
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '`+pglocal.ReplicationUser+`'`)
	t.Cleanup(func() { _, _ = home.Exec(context.Background(), `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`) })
	select {
	case m := <-woke:
		if m == nil || m.Index <= meta.Index {
			t.Fatalf("blocking route woke with %+v, want an index past %d", m, meta.Index)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a blocking route did not wake when the mirror's reported lag changed")
	}
	var lagging wire.Route
	testutil.Eventually(t, 30*time.Second, func() error {
		lagging = route("--op", "read", "--from", "eu-west", "--max-staleness", "1s")
		if lagging.Region != "us-east" {
			return fmt.Errorf("a read with a 1 s budget still goes to %s: %s", lagging.Region, lagging.Reason)
		}
		return nil
	})
	if !strings.Contains(lagging.Reason, "nearer skipped: eu-west: lag ") || !strings.Contains(lagging.Reason, "> budget 1000 ms") ||
		len(lagging.Alternatives) != 1 || lagging.Alternatives[0].LagMS == nil || *lagging.Alternatives[0].LagMS <= 1000 {
		t.Fatalf("a read whose budget is below the mirror's lag goes home, saying why: %+v", lagging)
	}
	if g := route("--op", "read", "--from", "eu-west", "--max-staleness", "10m"); g.Region != "eu-west" {
		t.Fatalf("a budget above the lag still reads from the mirror: %+v", g)
	}
	t.Logf("lag over budget routed home after %s: %s", time.Since(start).Round(time.Millisecond), lagging.Reason)

	// The home lets the mirror in again: it streams, and reads come back.
	execPG(t, cx, home, `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`)
	testutil.Eventually(t, 30*time.Second, func() error {
		if r := route("--op", "read", "--from", "eu-west", "--max-staleness", "1s"); r.Region != "eu-west" {
			return fmt.Errorf("a read with a 1 s budget still goes to %s: %s", r.Region, r.Reason)
		}
		return nil
	})
	t.Logf("mirror caught up and routed to again after %s", time.Since(start).Round(time.Millisecond))

	// atomfed edge, from eu-west, with the routing table in Redis: reads
	// go to the mirror's application, writes to the home's.
	redisAddr := startRedisServer(t, work)
	edgePort := testutil.FreePort(t)
	edgeProc := procs.NewProc("edge", atomfedBin, filepath.Join(work, "edge.log"), "edge", "--addr", addr, "--listen", fmt.Sprintf("127.0.0.1:%d", edgePort), "--metrics-listen", "", "--from", "eu-west",
		"--app-ca-cert", appCA)
	edgeProc.Env = []string{"REDIS_URL=redis://" + redisAddr, "FEDERATION_TOKEN=" + token, "ATOMFED_CACERT=" + caPath}
	if err := edgeProc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = edgeProc.Term()
		if _, err := edgeProc.Wait(10 * time.Second); err != nil {
			_ = edgeProc.Kill9()
		}
		if t.Failed() {
			t.Logf("log of atomfed edge:\n%s", edgeProc.LogTail(40))
		}
		edgeProc.Close()
	})
	through := func(method string) (string, string) {
		req, _ := http.NewRequestWithContext(cx, method, fmt.Sprintf("http://127.0.0.1:%d/orders", edgePort), nil)
		req.Header.Set("X-Atomfed-Tenant", "acme")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Header.Get("X-Atomfed-Region"), string(b)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if region, body := through(http.MethodGet); region != "eu-west" || body != "eu-west GET /orders" {
			return fmt.Errorf("a read through the edge: region %q, body %q", region, body)
		}
		return nil
	})
	if region, body := through(http.MethodPost); region != "us-east" || body != "us-east POST /orders" {
		t.Fatalf("a write through the edge: region %q, body %q", region, body)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		var got wire.Route
		v, err := redisHGet(redisAddr, "atomfed:routes", "acme:read")
		if err != nil || json.Unmarshal([]byte(v), &got) != nil || got.Region != "eu-west" || got.AppURL != apps["eu-west"] {
			return fmt.Errorf("acme:read in Redis: %q (%v)", v, err)
		}
		return nil
	})
	t.Logf("edge routed and Redis written after %s", time.Since(start).Round(time.Millisecond))

	// A change of placement wakes a blocking route: the edge's loop, from
	// the index of each answer (lag reports wake it too).
	_, meta, err = api.Route(cx, readReq, &client.QueryOptions{Consistency: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		r *wire.Route
		m *client.Meta
	}
	next := make(chan answer, 1)
	block := func(idx uint64) {
		out, m, err := api.Route(cx, readReq, &client.QueryOptions{Consistency: "stale", Index: idx, Wait: time.Minute})
		if err != nil {
			t.Errorf("blocking route: %v", err)
			out, m = nil, nil
		}
		next <- answer{out, m}
	}
	go block(meta.Index)
	patched, err := api.PatchTenant(cx, "acme", map[string]any{"mirrors": []string{"ap-south", "eu-west"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case a := <-next:
			if a.r == nil {
				t.FailNow()
			}
			if a.m.Index <= meta.Index {
				t.Fatalf("a blocking route answered index %d, not past %d", a.m.Index, meta.Index)
			}
			if len(a.r.Alternatives) == 2 {
				if a.m.Index < patched.ModifyIndex {
					t.Fatalf("the new placement answered at index %d, before the patch (%d)", a.m.Index, patched.ModifyIndex)
				}
				t.Logf("done in %s", time.Since(start).Round(time.Millisecond))
				return
			}
			meta = a.m
			go block(meta.Index)
		case <-deadline:
			t.Fatal("no blocking route showed the new mirror ap-south")
		}
	}
}

func connectPG(t *testing.T, cx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(cx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func execPG(t *testing.T, cx context.Context, c *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := c.Exec(cx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// regionApps starts a TLS application per region that answers
// "<region> <method> <path>", and writes the CA that verifies them.
func regionApps(t *testing.T, dir string, regions ...string) (map[string]string, string) {
	apps := map[string]string{}
	var pemBytes []byte
	for _, r := range regions {
		region := r
		s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			fmt.Fprintf(w, "%s %s %s", region, req.Method, req.URL.Path)
		}))
		t.Cleanup(s.Close)
		apps[r] = s.URL
		pemBytes = append(pemBytes, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})...)
	}
	path := filepath.Join(dir, "apps-ca.pem")
	if err := os.WriteFile(path, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return apps, path
}

// startRedisServer runs a private redis-server from the distribution's
// package on a free loopback port, without persistence.
func startRedisServer(t *testing.T, dir string) string {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("this test needs redis-server (apt-get install redis-server): %v", err)
	}
	port := testutil.FreePort(t)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testutil.Eventually(t, 10*time.Second, func() error {
		_, err := redisHGet(addr, "none", "none")
		return err
	})
	return addr
}

// redisHGet reads one field of a Redis hash ("" when absent).
func redisHGet(addr, key, field string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "*3\r\n$4\r\nHGET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(key), key, len(field), field)
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
	if err != nil {
		return "", fmt.Errorf("HGET: %q", line)
	}
	if n < 0 {
		return "", nil
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(rd, b); err != nil {
		return "", err
	}
	return string(b[:n]), nil
}

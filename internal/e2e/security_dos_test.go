package e2e_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// dosPerTokenCap is the --max-blocking-per-token of the cluster of
// TestSecurityDoS: small, so that the test reaches it with a few queries.
const dosPerTokenCap = 3

// TestSecurityDoS attacks a real three-process TLS cluster (with a real
// agent and a real PostgreSQL in us-east) the ways item 9 and the
// disclosure part of item 10 of the threat model describe:
//
//   - one token holding more blocking queries than its cap is refused 429
//     with Retry-After and a stable code, while another token's blocking
//     query is still served, wakes only for what it watches, and /health
//     answers; a blocking query without a token is refused;
//   - a slowloris client trickling its request headers, in plain HTTP and
//     inside TLS, is dropped;
//   - with real tenants and tasks present, the anonymous /metrics of every
//     server and the anonymous /health, /global-status and /metrics of the
//     agent show no tenant id, task id or database, while a token (the
//     agent's own, for the agent) still sees them.
//
// The refused queries and the slowloris leave the audit head and the
// regions unchanged (the views are reads).
func TestSecurityDoS(t *testing.T) {
	c := procs.StartTestCluster(t, procs.ClusterOptions{
		Bin:   atomfedBin,
		Port:  func() (int, error) { return testutil.FreePort(t), nil },
		Extra: []string{"--max-blocking-per-token", fmt.Sprint(dosPerTokenCap), "--anonymous-region-list"},
	})
	leader := waitLeader(t, c)
	register(t, c, &fsm.Region{Name: "us-east", URL: c.Servers[0].URL})
	register(t, c, &fsm.Region{Name: "eu-west", URL: c.Servers[1].URL})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.Sec.TLSConfig(), MaxIdleConnsPerHost: 32}}
	t.Cleanup(hc.CloseIdleConnections)

	type answer struct {
		code int
		hdr  http.Header
		body string
		err  error
	}
	do := func(ctx context.Context, url, token string) answer {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return answer{err: err}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return answer{code: resp.StatusCode, hdr: resp.Header, body: string(b), err: err}
	}
	metric := func(s *procs.ServerProc, name string) float64 {
		t.Helper()
		a := do(ctx(t, 5*time.Second), s.URL+"/metrics", procs.Token)
		if a.err != nil || a.code != 200 {
			t.Fatalf("GET /metrics on %s: %d %v", s.ID(), a.code, a.err)
		}
		for _, line := range strings.Split(a.body, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				var f float64
				fmt.Sscanf(v, "%g", &f)
				return f
			}
		}
		return 0
	}
	auditHead := func() string {
		t.Helper()
		a := do(ctx(t, 5*time.Second), leader.URL+"/v1/status/audit", procs.Token)
		var st struct {
			Head  string `json:"head"`
			Index uint64 `json:"index"`
		}
		if a.err != nil || a.code != 200 || json.Unmarshal([]byte(a.body), &st) != nil {
			t.Fatalf("GET /v1/status/audit: %d %v %s", a.code, a.err, a.body)
		}
		return fmt.Sprintf("%s@%d", st.Head, st.Index)
	}
	regions := func() string {
		t.Helper()
		a := do(ctx(t, 5*time.Second), leader.URL+"/v1/regions", procs.Token)
		if a.err != nil || a.code != 200 {
			t.Fatalf("GET /v1/regions: %d %v", a.code, a.err)
		}
		return a.body
	}

	t.Run("blocking queries over the per-token cap", func(t *testing.T) {
		reader, err := leader.Client.CreateToken(ctx(t, 10*time.Second), fsm.RoleReader, "dos test: another client")
		if err != nil {
			t.Fatal(err)
		}
		// The tasks of an agent that does not exist: nothing moves them,
		// so a query on them blocks for its whole wait.
		watched := leader.URL + "/v1/agents/dos-nobody/tasks"
		first := do(ctx(t, 5*time.Second), watched, procs.Token)
		tasksIndex := first.hdr.Get("X-Atomfed-Index")
		if first.code != 200 || tasksIndex == "" {
			t.Fatalf("GET %s: %d %s", watched, first.code, first.body)
		}
		// The scheduler's plans for the new regions land asynchronously:
		// take the baseline once they have.
		testutil.Eventually(t, 20*time.Second, func() error {
			tasks, _, err := leader.Client.Tasks(ctx(t, 5*time.Second), "", "probe", "", nil)
			if err != nil || len(tasks) != 2 {
				return fmt.Errorf("%d probe tasks, want 2: %v", len(tasks), err)
			}
			return nil
		})
		headBefore, regionsBefore := auditHead(), regions()

		// The attacker's token takes every slot it may have ...
		hold, stop := context.WithCancel(context.Background())
		defer stop()
		held := make(chan answer, dosPerTokenCap)
		for range dosPerTokenCap {
			go func() { held <- do(hold, watched+"?wait=60s&index="+tasksIndex, procs.Token) }()
		}
		testutil.Eventually(t, 10*time.Second, func() error {
			if n := metric(leader, "atomfed_http_blocking_queries"); n != dosPerTokenCap {
				return fmt.Errorf("%v blocking queries held, want %d", n, dosPerTokenCap)
			}
			return nil
		})
		// ... and one more is refused at once, with a code and Retry-After.
		refusedBefore := metric(leader, `atomfed_http_blocking_refused_total{cap="token"}`)
		over := do(ctx(t, 5*time.Second), watched+"?wait=60s&index="+tasksIndex, procs.Token)
		if over.code != http.StatusTooManyRequests || over.hdr.Get("Retry-After") == "" || !strings.Contains(over.body, `"too_many_blocking_queries"`) {
			t.Fatalf("blocking query over the per-token cap: %d Retry-After %q %s, want 429 too_many_blocking_queries with Retry-After",
				over.code, over.hdr.Get("Retry-After"), over.body)
		}
		if got := metric(leader, `atomfed_http_blocking_refused_total{cap="token"}`); got != refusedBefore+1 {
			t.Fatalf("refusals counted %v -> %v, want one more", refusedBefore, got)
		}

		// Another token is still served: its blocking query on the tenants
		// is held, and answers when a tenant changes, which does not wake
		// the attacker's queries on the tasks.
		tenantsIndex := do(ctx(t, 5*time.Second), leader.URL+"/v1/tenants", reader.Secret).hdr.Get("X-Atomfed-Index")
		other := make(chan answer, 1)
		go func() {
			other <- do(ctx(t, time.Minute), leader.URL+"/v1/tenants?wait=60s&index="+tenantsIndex, reader.Secret)
		}()
		testutil.Eventually(t, 10*time.Second, func() error {
			if n := metric(leader, "atomfed_http_blocking_queries"); n != dosPerTokenCap+1 {
				return fmt.Errorf("%v blocking queries held, want %d", n, dosPerTokenCap+1)
			}
			return nil
		})
		// /health answers while they are held.
		start := time.Now()
		if h := do(ctx(t, 5*time.Second), leader.URL+"/health", ""); h.code != 200 || time.Since(start) > 2*time.Second {
			t.Fatalf("/health with the cap reached: %d after %s", h.code, time.Since(start))
		}
		if head, regs := auditHead(), regions(); head != headBefore || regs != regionsBefore {
			t.Fatalf("the refused queries changed the state: audit %s -> %s", headBefore, head)
		}
		if _, err := leader.Client.PutTenant(ctx(t, 10*time.Second), newTenant("dos-wake"), nil); err != nil {
			t.Fatal(err)
		}
		select {
		case a := <-other:
			if a.code != 200 || !strings.Contains(a.body, "dos-wake") {
				t.Fatalf("the other token's blocking query: %d %v %s", a.code, a.err, a.body)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the other token's blocking query did not answer the tenant write")
		}
		select {
		case a := <-held:
			t.Fatalf("a blocking query on an agent's tasks returned after a tenant write: %d %s", a.code, a.body)
		case <-time.After(time.Second):
		}
		stop()
		for range dosPerTokenCap {
			<-held
		}
		testutil.Eventually(t, 10*time.Second, func() error {
			if n := metric(leader, "atomfed_http_blocking_queries"); n != 0 {
				return fmt.Errorf("%v blocking queries still held after their clients left", n)
			}
			return nil
		})
		// Slots come back: the token may block again.
		again, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if a := do(again, watched+"?wait=1s&index="+tasksIndex, procs.Token); a.code != 200 {
			t.Fatalf("blocking query after the slots were freed: %d %v %s", a.code, a.err, a.body)
		}
	})

	t.Run("blocking query without a token", func(t *testing.T) {
		list := do(ctx(t, 5*time.Second), leader.URL+"/region/list", "")
		idx := list.hdr.Get("X-Atomfed-Index")
		if list.code != 200 || idx == "" {
			t.Fatalf("anonymous GET /region/list: %d %s", list.code, list.body)
		}
		start := time.Now()
		a := do(ctx(t, 10*time.Second), leader.URL+"/region/list?wait=60s&index="+idx, "")
		if a.code != http.StatusUnauthorized || !strings.Contains(a.body, `"blocking_query_unauthenticated"`) || time.Since(start) > 5*time.Second {
			t.Fatalf("anonymous blocking query on /region/list: %d after %s %s, want 401 blocking_query_unauthenticated at once", a.code, time.Since(start), a.body)
		}
		if a := do(ctx(t, 10*time.Second), leader.URL+"/v1/tasks?wait=60s&index=1", ""); a.code != http.StatusUnauthorized {
			t.Fatalf("anonymous blocking query on /v1/tasks: %d %s", a.code, a.body)
		}
	})

	t.Run("slowloris is dropped", func(t *testing.T) {
		headBefore := auditHead()
		addr := strings.TrimPrefix(leader.URL, "https://")
		// trickle sends a request line, then one header byte a second,
		// and returns how long the server kept the connection open.
		trickle := func(conn net.Conn) (time.Duration, error) {
			defer conn.Close()
			start := time.Now()
			if _, err := io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: x\r\n"); err != nil {
				return 0, err
			}
			closed := make(chan struct{})
			go func() {
				// The server answers 408 or just closes; either ends the
				// read.
				_, _ = io.Copy(io.Discard, bufio.NewReader(conn))
				close(closed)
			}()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-closed:
					return time.Since(start), nil
				case <-tick.C:
					if time.Since(start) > 30*time.Second {
						return time.Since(start), errors.New("still open after 30 s")
					}
					_, _ = conn.Write([]byte("X"))
				}
			}
		}
		type result struct {
			name string
			d    time.Duration
			err  error
		}
		results := make(chan result, 2)
		go func() {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				results <- result{"plain", 0, err}
				return
			}
			d, err := trickle(conn)
			results <- result{"plain", d, err}
		}()
		go func() {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c.Sec.TLSConfig())
			if err != nil {
				results <- result{"tls", 0, err}
				return
			}
			d, err := trickle(conn)
			results <- result{"tls", d, err}
		}()
		// Served meanwhile.
		time.Sleep(2 * time.Second)
		if h := do(ctx(t, 5*time.Second), leader.URL+"/health", ""); h.code != 200 {
			t.Fatalf("/health during the slowloris: %d %v", h.code, h.err)
		}
		for range 2 {
			r := <-results
			// ReadHeaderTimeout is 10 s.
			if r.err != nil || r.d > 15*time.Second {
				t.Errorf("slowloris over %s: held %s: %v, want dropped after about 10 s", r.name, r.d, r.err)
			}
		}
		if head := auditHead(); head != headBefore {
			t.Fatalf("the slowloris changed the audit head: %s -> %s", headBefore, head)
		}
	})

	t.Run("anonymous views show no tenant, task or database", func(t *testing.T) {
		pg := startPG(t, "dos-db-pass-7c21")
		key := keygen(t, "dos-key-pass")
		ag, err := procs.NewAgentProc(atomfedBin, procs.LogDir(t), t.TempDir(), "us-east-dos", "us-east",
			func() (int, error) { return testutil.FreePort(t), nil }, c.SerfAddrs(), c.Sec)
		if err != nil {
			t.Fatal(err)
		}
		ag.Env = append(ag.Env, withEnv("POSTGRES_DSN="+pg.DSN("dos-db-pass-7c21"), "COSIGN_KEY_PATH="+key,
			"COSIGN_PASSWORD=dos-key-pass", "VAULT_ADDR="+standInVault(t))...)
		t.Cleanup(ag.Close)
		if err := ag.Start(); err != nil {
			t.Fatal(err)
		}
		// A tenant whose table does not exist at home: its publisher runs on
		// the agent and reports the issue, by tenant, to the servers.
		tenant := &fsm.Tenant{ID: "dos-secret-tenant", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
			Tables: []fsm.TenantTable{{Name: "orders"}}}
		if _, err := leader.Client.PutTenant(ctx(t, 10*time.Second), tenant, nil); err != nil {
			t.Fatal(err)
		}
		taskID := fsm.TenantPublisherTaskID(tenant.ID, "us-east")
		dbPort := fmt.Sprintf(":%d", pg.Port)
		// The authorized views have the detail (so the anonymous checks
		// below can fail).
		testutil.Eventually(t, 60*time.Second, func() error {
			for _, s := range c.Servers {
				if a := do(ctx(t, 5*time.Second), s.URL+"/metrics", procs.Token); !strings.Contains(a.body, `name="`+tenant.ID+`"`) {
					return fmt.Errorf("%s's /metrics with a token has no series for %s yet", s.ID(), tenant.ID)
				}
			}
			if a := do(ctx(t, 5*time.Second), ag.URL+"/health", ag.Token); !strings.Contains(a.body, taskID) || !strings.Contains(a.body, dbPort) {
				return fmt.Errorf("the agent's /health with its token does not show %s and its database yet: %s", taskID, a.body)
			}
			return nil
		})
		for _, s := range c.Servers {
			a := do(ctx(t, 5*time.Second), s.URL+"/metrics", "")
			if a.code != 200 || !strings.Contains(a.body, "atomfed_http_requests_total") {
				t.Fatalf("%s's anonymous /metrics: %d, want the aggregate series", s.ID(), a.code)
			}
			if strings.Contains(a.body, tenant.ID) {
				t.Errorf("%s's anonymous /metrics names the tenant", s.ID())
			}
			if a := do(ctx(t, 5*time.Second), s.URL+"/metrics", "not-a-token"); a.code != http.StatusUnauthorized {
				t.Errorf("%s's /metrics with an unknown token: %d, want 401", s.ID(), a.code)
			}
		}
		for _, path := range []string{"/health", "/global-status", "/metrics"} {
			for _, token := range []string{"", "not-the-agents-token", procs.Token} {
				a := do(ctx(t, 5*time.Second), ag.URL+path, token)
				if a.code != 200 {
					t.Fatalf("the agent's %s (token %q): %d", path, token, a.code)
				}
				for _, secret := range []string{tenant.ID, taskID, dbPort, "dos-db-pass-7c21"} {
					if strings.Contains(a.body, secret) {
						t.Errorf("the agent's %s without its token shows %q:\n%s", path, secret, a.body)
					}
				}
			}
		}
		var sum struct {
			Status    string `json:"status"`
			Node      string `json:"node"`
			TaskCount int    `json:"task_count"`
			Database  bool   `json:"database_configured"`
		}
		a := do(ctx(t, 5*time.Second), ag.URL+"/health", "")
		if err := json.Unmarshal([]byte(a.body), &sum); err != nil || sum.Status != "ok" || sum.Node != ag.Node || sum.TaskCount < 1 || !sum.Database {
			t.Errorf("the agent's anonymous /health: %+v %v, want status, node and counts", sum, err)
		}
	})
}

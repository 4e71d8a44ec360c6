package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/protobuf/proto"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/metrics"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestMetricsGlobalView runs the metrics aggregator on a real TLS
// federation of three servers and one agent per region, us-east's agent
// federating a real Prometheus 2.42 (PROM_URL) that scrapes itself. The
// global view on any server carries that Prometheus' series labelled
// region=us-east and every region's atomfed series; a global Prometheus
// scraping the view sees every region (count by (region)). With eu-west's
// agent stopped (SIGSTOP) the answer still comes within its deadline,
// names eu-west and carries the other regions; eu-west comes back with
// its agent. Tokens: a reader reads, no token is 401, and an agent's
// token cannot push another region's data or push for a task it does not
// hold; none of the refused pushes changes the view or the audit chain.
func TestMetricsGlobalView(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("this test needs Prometheus 2.42 (apt-get install prometheus; .ci/run installs it): %v", err)
	}
	// The global Prometheus receives the view by remote write from every
	// server (identical samples: it keeps one) and, once the servers'
	// addresses are known, scrapes it too.
	dir := t.TempDir()
	gAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	reloadGlobal := startPrometheus(t, promBin, filepath.Join(dir, "global-prom"), gAddr, "global: {scrape_interval: 1s, evaluation_interval: 1s}\n")
	c := procs.StartTestCluster(t, procs.ClusterOptions{
		Bin: atomfedBin, Port: func() (int, error) { return testutil.FreePort(t), nil },
		Extra: []string{"--remote-write-url", "http://" + gAddr + "/api/v1/write"},
	})
	promPort := testutil.FreePort(t)
	promAddr := fmt.Sprintf("127.0.0.1:%d", promPort)
	startPrometheus(t, promBin, filepath.Join(dir, "region-prom"), promAddr, fmt.Sprintf(`
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ["%s"]}]
`, promAddr))

	port := func() (int, error) { return testutil.FreePort(t), nil }
	logs, data := procs.LogDir(t), t.TempDir()
	// One agent per region, two in ap-south (where the task moves).
	agents := map[string]*procs.AgentProc{}
	byNode := map[string]*procs.AgentProc{}
	for i, s := range c.Servers {
		region := procs.Regions[i]
		register(t, c, &fsm.Region{Name: region, URL: s.URL})
		var extra []string
		if region == "us-east" {
			extra = []string{"--prom-url", "http://" + promAddr, "--prom-match", `{job="prometheus"}`}
		}
		n := 1
		if region == "ap-south" {
			n = 2
		}
		for j := 1; j <= n; j++ {
			a, err := procs.NewAgentProc(atomfedBin, logs, data, fmt.Sprintf("%s-a%d", region, j), region, port, c.SerfAddrs(), c.Sec, extra...)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = a.Cont()
				a.Close()
				if t.Failed() {
					t.Logf("log of %s: %s\n%s", a.Node, a.LogPath, a.LogTail(30))
				}
			})
			if j == 1 {
				agents[region] = a
			}
			byNode[a.Node] = a
		}
	}
	leader := waitLeader(t, c)
	reader, err := leader.Client.CreateToken(ctx(t, 10*time.Second), fsm.RoleReader, "metrics test reader")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.Sec.TLSConfig()}}
	get := func(base, path, token string, q url.Values) (int, http.Header, string, time.Duration) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx(t, 30*time.Second), http.MethodGet, base+path+"?"+q.Encode(), nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for k, v := range resp.Trailer {
			resp.Header[k] = v
		}
		return resp.StatusCode, resp.Header, string(b), time.Since(start)
	}
	match := url.Values{"match[]": {`up`, `{__name__=~"atomfed_raft_state|atomfed_scrape_up"}`}, "timeout": {"2s"}, "max_age": {"6s"}}
	promUp := fmt.Sprintf(`up{instance="%s",job="prometheus",region="us-east"} 1`, promAddr)
	serverOf := map[string]string{}
	for i, s := range c.Servers {
		serverOf[procs.Regions[i]] = s.ID()
	}
	everyRegion := func(body string, regions ...string) error {
		for _, r := range regions {
			if !strings.Contains(body, fmt.Sprintf(`atomfed_raft_state{instance="%s",job="atomfed",region="%s"`, serverOf[r], r)) {
				return fmt.Errorf("no atomfed series of %s", r)
			}
			if !strings.Contains(body, fmt.Sprintf(`atomfed_region_scrape_up{region="%s"} 1`, r)) {
				return fmt.Errorf("%s not up", r)
			}
		}
		return nil
	}

	t.Run("every server merges every region and the region's Prometheus", func(t *testing.T) {
		for _, s := range c.Servers {
			testutil.Eventually(t, 60*time.Second, func() error {
				code, hdr, body, _ := get(s.URL, "/v1/metrics/federate", reader.Secret, match)
				if code != 200 {
					return fmt.Errorf("%s: %d %s", s.ID(), code, body)
				}
				if !strings.Contains(body, promUp) {
					return fmt.Errorf("%s: no us-east Prometheus series %s in\n%s", s.ID(), promUp, body)
				}
				if m := hdr.Get(client.HeaderMissingRegions); m != "" {
					return fmt.Errorf("%s: missing %s", s.ID(), m)
				}
				return everyRegion(body, procs.Regions[:3]...)
			})
		}
		code, _, body, _ := get(leader.URL, "/v1/metrics/regions", reader.Secret, nil)
		if code != 200 || !strings.Contains(body, `"source":"prometheus","instance":"`+promAddr+`","up":true`) {
			t.Fatalf("regions: %d %s", code, body)
		}
	})

	t.Run("the dashboard and the alert rules query only what atomfed serves", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Fatalf("promtool comes with the prometheus package: %v", err)
		}
		rules := filepath.Join("..", "..", "deploy", "prometheus", "atomfed-rules.yml")
		if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
			t.Fatalf("promtool check rules %s: %v\n%s", rules, err, out)
		}
		exprs := artefactExprs(t, rules, filepath.Join("..", "..", "deploy", "grafana", "atomfed-global.json"))
		_, _, body, _ := get(leader.URL, "/v1/metrics/federate", reader.Secret, url.Values{"match[]": {`{__name__=~"atomfed_.+"}`}})
		served := map[string]bool{}
		for _, line := range strings.Split(body, "\n") {
			if name, _, ok := strings.Cut(line, "{"); ok && !strings.HasPrefix(line, "#") {
				served[name] = true
			}
		}
		// Served only while a tenant is replicated (every server exports
		// the lag its agents report); this federation has no PostgreSQL.
		needsReplication := map[string]bool{structs.MetricReplicationLagSeconds: true}
		for _, e := range exprs {
			for _, name := range metricNames(t, e) {
				if !served[name] && !needsReplication[name] {
					t.Errorf("%s (in %q) is not in atomfed's global view", name, e)
				}
			}
		}
		if len(exprs) < 10 {
			t.Fatalf("only %d expressions found in the artefacts", len(exprs))
		}
	})

	t.Run("a global Prometheus gets the view by remote write and by scraping it", func(t *testing.T) {
		// Remote write alone brings series the scrape below does not select.
		testutil.Eventually(t, 30*time.Second, func() error {
			for _, r := range procs.Regions[:3] {
				res, err := promQuery(gAddr, fmt.Sprintf(`atomfed_raft_state{job="atomfed",region=%q,instance=%q}`, r, serverOf[r]))
				if err != nil || !strings.Contains(res, `"value"`) {
					return fmt.Errorf("%s's atomfed_raft_state not remote-written: %s %v", r, res, err)
				}
			}
			return nil
		})
		u, _ := url.Parse(leader.URL)
		tokenFile := filepath.Join(dir, "reader.token")
		if err := os.WriteFile(tokenFile, []byte(reader.Secret), 0o600); err != nil {
			t.Fatal(err)
		}
		reloadGlobal(fmt.Sprintf(`
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: atomfed-global
    honor_labels: true
    scheme: %s
    metrics_path: /v1/metrics/federate
    params: {"match[]": ['{__name__=~"up|atomfed_scrape_up"}']}
    authorization: {credentials_file: %s}
    tls_config: {ca_file: %s}
    static_configs: [{targets: ["%s"]}]
`, u.Scheme, tokenFile, c.Sec.CAPath, u.Host))
		testutil.Eventually(t, 60*time.Second, func() error {
			res, err := promQuery(gAddr, `count by (region) (atomfed_scrape_up)`)
			if err != nil {
				return err
			}
			for _, r := range procs.Regions[:3] {
				if !strings.Contains(res, `"region":"`+r+`"`) {
					return fmt.Errorf("no %s in %s", r, res)
				}
			}
			if res, err := promQuery(gAddr, `up{job="prometheus",region="us-east"}`); err != nil || !strings.Contains(res, `"value"`) {
				return fmt.Errorf("the region Prometheus' up through the view: %s %v", res, err)
			}
			return nil
		})
	})

	t.Run("tokens", func(t *testing.T) {
		if code, _, body, _ := get(leader.URL, "/v1/metrics/federate", "", match); code != 401 {
			t.Fatalf("no token: %d %s", code, body)
		}
		if code, _, body, _ := get(leader.URL, "/v1/metrics/federate", reader.Secret, url.Values{"match[]": {"{"}}); code != 400 || !strings.Contains(body, "bad_match") {
			t.Fatalf("bad match: %d %s", code, body)
		}
		if code, _, body, _ := get(leader.URL, "/v1/metrics/federate", reader.Secret, url.Values{"match[]": {"up"}, "timeout": {"2h"}}); code != 400 || !strings.Contains(body, "bad_timeout") {
			t.Fatalf("timeout out of range: %d %s", code, body)
		}
		tasks, _, err := leader.Client.Tasks(ctx(t, 5*time.Second), "us-east", fsm.TaskTypeMetrics, "", nil)
		if err != nil || len(tasks) != 1 || tasks[0].Agent != "us-east-a1" {
			t.Fatalf("us-east's metrics task: %+v %v", tasks, err)
		}
		gen := tasks[0].Generation
		euTasks, _, err := leader.Client.Tasks(ctx(t, 5*time.Second), "eu-west", fsm.TaskTypeMetrics, "", nil)
		if err != nil || len(euTasks) != 1 {
			t.Fatalf("eu-west's metrics task: %+v %v", euTasks, err)
		}
		rogue, err := c.Sec.AgentToken("us-east-rogue", "us-east")
		if err != nil {
			t.Fatal(err)
		}
		audit, err := leader.Client.Audit(ctx(t, 5*time.Second), nil)
		if err != nil {
			t.Fatal(err)
		}
		fake := func(region string) []byte {
			var b bytes.Buffer
			f := &dto.MetricFamily{Name: proto.String("up"), Type: dto.MetricType_UNTYPED.Enum(), Metric: []*dto.Metric{{
				Label:   []*dto.LabelPair{{Name: proto.String("job"), Value: proto.String("fake")}, {Name: proto.String("region"), Value: proto.String(region)}},
				Untyped: &dto.Untyped{Value: proto.Float64(0)}}}}
			if err := metrics.Encode(&b, []*dto.MetricFamily{f}); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}
		push := func(s *procs.ServerProc, token, region string, gen uint64, body []byte) error {
			cl, err := c.Sec.Client(s.URL, client.WithToken(token))
			if err != nil {
				t.Fatal(err)
			}
			return cl.PushMetrics(ctx(t, 5*time.Second), region, gen, metrics.ScrapeStatus{}, body)
		}
		for _, s := range c.Servers {
			for what, tc := range map[string]struct {
				token, region string
				gen           uint64
				body          []byte
				status        int
				code          string
			}{
				"eu-west's agent for us-east":             {agents["eu-west"].Token, "us-east", gen, fake("us-east"), 403, "token_binding"},
				"eu-west's agent with us-east series":     {agents["eu-west"].Token, "eu-west", euTasks[0].Generation, fake("us-east"), 403, "foreign_region"},
				"an agent of us-east not holding it":      {rogue, "us-east", gen, fake("us-east"), 409, "not_task_holder"},
				"the holder at an older generation":       {agents["us-east"].Token, "us-east", gen - 1, fake("us-east"), 409, "not_task_holder"},
				"an operator":                             {procs.Token, "us-east", gen, fake("us-east"), 403, "forbidden_role"},
				"a reader":                                {reader.Secret, "us-east", gen, fake("us-east"), 403, "forbidden_role"},
				"no token":                                {"", "us-east", gen, fake("us-east"), 401, "unauthenticated"},
				"the holder with a body that is not gzip": {agents["us-east"].Token, "us-east", gen, []byte("up 1\n"), 400, "bad_snapshot"},
			} {
				err := push(s, tc.token, tc.region, tc.gen, tc.body)
				if client.StatusOf(err) != tc.status || !client.IsCode(err, tc.code) {
					t.Errorf("%s on %s: %v, want %d %s", what, s.ID(), err, tc.status, tc.code)
				}
			}
		}
		// Nothing of it reached the view, and nothing went through Raft.
		for _, s := range c.Servers {
			_, _, body, _ := get(s.URL, "/v1/metrics/federate", reader.Secret, url.Values{"match[]": {`up{job="fake"}`}})
			if strings.Contains(body, `job="fake"`) {
				t.Fatalf("%s serves a refused push:\n%s", s.ID(), body)
			}
		}
		after, err := leader.Client.Audit(ctx(t, 5*time.Second), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range after.Recent {
			if e.Index > audit.Index && e.Type != "agent_report" && e.Type != "task_plan" && e.Type != "agent_upsert" {
				t.Errorf("audit entry %d %s after the refused pushes", e.Index, e.Type)
			}
		}
	})

	t.Run("the holder stops: the task moves to its peer and the old holder is fenced", func(t *testing.T) {
		metricsTask := func() *fsm.Task {
			tasks, _, err := leader.Client.Tasks(ctx(t, 5*time.Second), "ap-south", fsm.TaskTypeMetrics, "", nil)
			if err != nil || len(tasks) != 1 {
				t.Fatalf("ap-south's metrics task: %+v %v", tasks, err)
			}
			return tasks[0]
		}
		first := metricsTask()
		holder := byNode[first.Agent]
		if holder == nil {
			t.Fatalf("ap-south's metrics task on %q", first.Agent)
		}
		if err := holder.Stop(); err != nil {
			t.Fatal(err)
		}
		defer holder.Cont()
		var moved *fsm.Task
		testutil.Eventually(t, 30*time.Second, func() error {
			moved = metricsTask()
			if moved.Agent == "" || moved.Agent == first.Agent || moved.Status != fsm.TaskRunning {
				return fmt.Errorf("on %q, %s", moved.Agent, moved.Status)
			}
			return nil
		})
		fromPeer := func() error {
			for _, s := range c.Servers {
				code, _, body, _ := get(s.URL, "/v1/metrics/regions", reader.Secret, nil)
				want := fmt.Sprintf(`"region":"ap-south","status":"ok","agent":"%s","generation":%d`, moved.Agent, moved.Generation)
				if code != 200 || !strings.Contains(body, want) {
					return fmt.Errorf("%s: %d %s, want %s", s.ID(), code, body, want)
				}
			}
			return nil
		}
		testutil.Eventually(t, 20*time.Second, fromPeer)
		// The old holder wakes up with its old assignment: whatever it
		// pushes before it learns the task moved is refused everywhere.
		if err := holder.Cont(); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 20*time.Second, func() error {
			st, err := holder.Status(ctx(t, 5*time.Second))
			if err != nil {
				return err
			}
			for _, rt := range st.Tasks {
				if rt.ID == first.ID {
					return fmt.Errorf("%s still runs %s", holder.Node, rt.ID)
				}
			}
			return nil
		})
		if err := fromPeer(); err != nil {
			t.Fatalf("after the old holder woke up: %v", err)
		}
	})

	t.Run("a stopped region is named within the deadline and comes back", func(t *testing.T) {
		eu := agents["eu-west"]
		if err := eu.Stop(); err != nil {
			t.Fatal(err)
		}
		stopped := true
		defer func() {
			if stopped {
				_ = eu.Cont()
			}
		}()
		for _, s := range c.Servers {
			testutil.Eventually(t, 30*time.Second, func() error {
				code, hdr, body, took := get(s.URL, "/v1/metrics/federate", reader.Secret, match)
				if took > 2*time.Second+time.Second {
					t.Fatalf("%s answered in %s, past its 2s deadline", s.ID(), took)
				}
				if code != 200 {
					return fmt.Errorf("%s: %d %s", s.ID(), code, body)
				}
				if hdr.Get(client.HeaderMissingRegions) != "eu-west" || !strings.Contains(body, `atomfed_region_scrape_up{region="eu-west"} 0`) {
					return fmt.Errorf("%s: missing %q", s.ID(), hdr.Get(client.HeaderMissingRegions))
				}
				if !strings.Contains(body, promUp) {
					return fmt.Errorf("%s: us-east's Prometheus series gone", s.ID())
				}
				if strings.Contains(body, `region="eu-west",`) {
					return fmt.Errorf("%s: still serves eu-west's stale series", s.ID())
				}
				return everyRegion(body, "us-east", "ap-south")
			})
		}
		code, _, body, _ := get(leader.URL, "/v1/metrics/regions", reader.Secret, url.Values{"max_age": {"6s"}})
		if code != 200 || !strings.Contains(body, `"region":"eu-west","status":"stale"`) {
			t.Fatalf("regions with eu-west stopped: %d %s", code, body)
		}
		if err := eu.Cont(); err != nil {
			t.Fatal(err)
		}
		stopped = false
		testutil.Eventually(t, 60*time.Second, func() error {
			code, hdr, body, _ := get(leader.URL, "/v1/metrics/federate", reader.Secret, match)
			if code != 200 || hdr.Get(client.HeaderMissingRegions) != "" {
				return fmt.Errorf("%d missing %q", code, hdr.Get(client.HeaderMissingRegions))
			}
			return everyRegion(body, procs.Regions[:3]...)
		})
	})
}

// startPrometheus runs a private Prometheus on addr with config (and its
// remote-write receiver), its data in dir, and waits until it is ready. The
// function it returns replaces the config and has Prometheus reload it.
func startPrometheus(t *testing.T, bin, dir, addr, config string) func(config string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--storage.tsdb.retention.time=1h", "--web.enable-remote-write-receiver")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus %s log (tail):\n%s", addr, tail(string(b), 3000))
		}
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("prometheus %s: %d", addr, resp.StatusCode)
		}
		return nil
	})
	return func(config string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// promQuery runs an instant PromQL query and returns the result's JSON.
func promQuery(addr, q string) (string, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Status != "success" {
		return "", fmt.Errorf("query %s: %s %v", q, out.Status, err)
	}
	return string(out.Data), nil
}

// artefactExprs returns the PromQL of the alert rules (one `expr:` line
// each) and of the dashboard's panels.
func artefactExprs(t *testing.T, rulesPath, dashboardPath string) []string {
	t.Helper()
	var out []string
	b, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if e, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:"); ok {
			out = append(out, strings.TrimSpace(e))
		}
	}
	b, err = os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	return out
}

// metricNames parses expr with Prometheus' parser and returns the metric
// names it selects.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// TestDevPrometheusPerRegion: `atomfed dev --prometheus` (what `make run`
// starts) gives every region its own Prometheus scraping the region's
// nodes, and the global view carries each one's up series with its region,
// fetched through the CLI as the README shows.
func TestDevPrometheusPerRegion(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Fatalf("this test needs Prometheus (apt-get install prometheus; .ci/run installs it): %v", err)
	}
	dir := t.TempDir()
	base := consecutiveFreePorts(t, 18)
	logPath := filepath.Join(dir, "dev.log")
	p := procs.NewProc("dev", atomfedBin, logPath, "dev", "--no-postgres", "--prometheus", "--data-dir", filepath.Join(dir, "data"),
		"--http-port", strconv.Itoa(base), "--raft-port", strconv.Itoa(base+3), "--serf-port", strconv.Itoa(base+6),
		"--agent-http-port", strconv.Itoa(base+9), "--agent-serf-port", strconv.Itoa(base+12), "--prometheus-port", strconv.Itoa(base+15))
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Term()
		if _, err := p.Wait(30 * time.Second); err != nil {
			_ = p.Kill9()
		}
		if t.Failed() {
			t.Logf("log of atomfed dev (%s):\n%s", p.ExitStatus(), p.LogTail(60))
		}
		p.Close()
	})
	testutil.Eventually(t, 90*time.Second, func() error {
		if !p.Running() {
			t.Fatalf("atomfed dev exited (%s):\n%s", p.ExitStatus(), p.LogTail(60))
		}
		if !p.LogContains("Press Ctrl-C to stop.") {
			return fmt.Errorf("atomfed dev is not up yet")
		}
		return nil
	})
	if !p.LogContains("one Prometheus per region") {
		t.Fatalf("dev started no Prometheus:\n%s", p.LogTail(40))
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	env := os.Environ()
	for _, kv := range []string{"ATOMFED_ADDR", "ATOMFED_CACERT", "FEDERATION_TOKEN"} {
		i := strings.Index(string(b), kv+"=")
		if i < 0 {
			t.Fatalf("no %s in dev's banner", kv)
		}
		env = append(env, strings.Fields(string(b)[i:])[0])
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		cmd := exec.Command(atomfedBin, "metrics", "federate", "--match", "up", "--deadline", "2s")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("atomfed metrics federate: %v\n%s", err, out)
		}
		for i, r := range []string{"us-east", "eu-west", "ap-south"} { // dev's regions, in port order
			want := fmt.Sprintf(`up{instance="127.0.0.1:%d",job="atomfed-%s",region="%s"} 1`, base+i, r, r)
			if !strings.Contains(string(out), want) {
				return fmt.Errorf("no %s in\n%s", want, out)
			}
		}
		return nil
	})
}

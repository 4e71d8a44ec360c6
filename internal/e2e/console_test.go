package e2e_test

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// axeSource is axe-core, the accessibility checker, injected into the
// console's pages by this test only (testdata/axe/README.md).
//
//go:embed testdata/axe/axe.min.js
var axeSource string

// consoleShotsEnv names a directory for screenshots of every page of the
// console (`make reports` sets it to reports/console).
const consoleShotsEnv = "ATOMFED_CONSOLE_SHOTS"

// chromiumEnv names the browser binary; by default Debian's chromium.
const chromiumEnv = "ATOMFED_CHROMIUM"

// TestConsoleInABrowser drives the operator console in a real browser
// (headless chromium) against three server processes and an agent process
// per region, two regions on real PostgreSQL: logged in with a reader
// token, by keyboard, it sees three regions on the map and one region go down when its
// agent is killed; the lag chart of a replicated tenant collect points
// while rows are written at home; a pending approval appear and go away
// after two `atomfed approve` calls; the policies, the audit chain
// (verified in the browser) and the cluster. A reader has no control for
// the console's one action (creating a reader token) and a crafted call
// from the page is refused 403 with nothing changed. No page has a
// serious or critical axe-core violation, a script error or a CSP
// violation, and the token appears in no URL and no server log. Logged in
// again as an operator, the console creates a reader token that works and
// revokes it.
func TestConsoleInABrowser(t *testing.T) {
	chrome := os.Getenv(chromiumEnv)
	if chrome == "" {
		chrome = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(chrome); err != nil {
		t.Fatalf("this test needs Debian's chromium (apt-get install chromium, as .ci/run does) or %s naming a Chrome binary: %v", chromiumEnv, err)
	}
	if _, err := pglocal.Find(); err != nil {
		t.Fatalf("this test needs PostgreSQL: %v", err)
	}
	start := time.Now()
	c := startCluster(t)
	leader := waitLeader(t, c)
	ctx := ctx(t, 3*time.Minute)
	api := leader.Client
	pgs := pgtest.NewFederation(t, "us-east", "eu-west")
	locations := map[string]fsm.Location{"us-east": {Lat: 39.04, Lon: -77.49}, "eu-west": {Lat: 53.35, Lon: -6.26}, "ap-south": {Lat: 19.08, Lon: 72.88}}
	agents := map[string]*procs.AgentProc{}
	dir := t.TempDir()
	// The regions' PostgreSQL runs as the postgres user and must reach
	// pgBackRest's configuration and repository, which the agents write.
	shared, err := os.MkdirTemp("", "atomfed-e2e-console-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o711); err != nil {
		t.Fatal(err)
	}
	for i, r := range []string{"us-east", "eu-west", "ap-south"} {
		if _, err := c.Sec.MustSigningClient(leader.URL, r).RegisterRegion(ctx, &fsm.Region{Name: r, URL: c.Servers[i].URL, Location: locations[r]}, nil); err != nil {
			t.Fatalf("register %s: %v", r, err)
		}
		var extra []string
		if pg := pgs[r]; pg != nil {
			extra = []string{"--replication-passfile", pg.Passfile, "--replication-ca", pg.RootCert, "--replication-interval", "500ms",
				"--backup-dir", filepath.Join(shared, r), "--backup-repo", filepath.Join(shared, r, "repo")}
		}
		a, err := procs.NewAgentProc(atomfedBin, procs.LogDir(t), dir, r+"-a1", r, func() (int, error) { return testutil.FreePort(t), nil }, c.SerfAddrs(), c.Sec, extra...)
		if err != nil {
			t.Fatal(err)
		}
		if pg := pgs[r]; pg != nil {
			a.Env = append(a.Env, "POSTGRES_DSN="+pg.DSN(pglocal.Database)) // a secret: never on the command line
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		agents[r] = a
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("log of %s:\n%s", a.Node, a.LogTail(30))
			}
			a.Close()
		})
	}
	for _, a := range []string{"approver-1", "approver-2"} {
		if _, err := c.Sec.MustSigningClient(leader.URL, a).RegisterMember(ctx, a, fsm.MemberApprover); err != nil {
			t.Fatalf("register approver %s: %v", a, err)
		}
	}
	reader, err := api.CreateToken(ctx, fsm.RoleReader, "console test")
	if err != nil {
		t.Fatal(err)
	}
	home, err := pgs["us-east"].Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { home.Close(context.Background()) })
	if _, err := home.Exec(ctx, `CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, amount int, email text, PRIMARY KEY (tenant_id, id))`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error { // once both agents have reported their databases
		for _, r := range []string{"us-east", "eu-west"} {
			if _, err := api.RegionDatabase(ctx, r, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if _, err := api.PutTenant(ctx, &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("federation up in %s", time.Since(start).Round(time.Millisecond))

	b := newBrowser(t, ctx, chrome)
	b.open(leader.URL + "/ui/")
	b.wait("the login page", `!document.getElementById('login').hidden`)
	b.shot("login")
	b.checkA11y("login")
	// By keyboard: the page opens with the focus in the token field; type
	// the token, Tab to the button (a visible focus ring), Enter.
	if got := b.str(`document.activeElement.id`); got != "token" {
		t.Fatalf("the login page opens with the focus on %q, want the token field", got)
	}
	b.do("type the token and tab to the button", chromedp.KeyEvent(reader.Secret+"\t"))
	if got := b.str(`document.activeElement.textContent + ' ' + getComputedStyle(document.activeElement).outlineStyle`); got != "Log in solid" {
		t.Fatalf("Tab from the token field focused %q, want the Log in button with a solid outline", got)
	}
	b.do("log in", chromedp.KeyEvent("\r"))
	b.wait("the console after login", `!document.getElementById('nav').hidden && location.hash === '#/map'`)

	t.Run("map", func(t *testing.T) {
		b.t = t
		b.wait("three regions on the map", `document.querySelectorAll('#map g.region').length === 3 &&
			[...document.querySelectorAll('#map g.region')].every(g => g.dataset.health !== 'unknown')`)
		b.wait("the leader's region ringed and an RTT between regions", `document.querySelectorAll('#map .leader-ring').length === 1 && document.querySelectorAll('#map .rtt-label').length > 0`)
		if h := b.str(`document.querySelector('#map g.region[data-region="ap-south"]').dataset.health`); h == "down" {
			t.Fatalf("ap-south is down before its agent is stopped")
		}
		b.shot("map")
		b.checkA11y("map")
	})

	// ap-south's agent crashes; the map is checked again at the end, once
	// Serf has noticed.
	if err := agents["ap-south"].Kill9(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	t.Run("tenant lag chart", func(t *testing.T) {
		b.t = t
		b.go_("#/tenants")
		b.waitFor("acme's mirror streaming", `(() => { const r = document.querySelector('#tenants-table tr[data-tenant="acme"] .mirror[data-mirror="eu-west"]');
			return r && r.querySelector('.badge').textContent === 'streaming'; })()`, 90*time.Second)
		w := &homeWriter{next: 1}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx, pgs["us-east"], stop) }()
		defer func() { close(stop); wg.Wait() }()
		points := `Number(document.querySelector('#tenants-table tr[data-tenant="acme"] .mirror[data-mirror="eu-west"] svg.lag-chart').dataset.points)`
		first := b.num(points)
		b.wait("new points on acme's lag chart while rows are written", fmt.Sprintf("%s >= %d", points, int(first)+3))
		if w.count() == 0 {
			t.Fatalf("no row was written at home while the chart moved")
		}
		b.shot("tenants")
		b.checkA11y("tenants")
		b.go_("#/tenant/acme")
		b.wait("acme's page with its tables, PII column names, mirror chart and routing answer", `document.body.innerText.includes('email') &&
			document.querySelector('#mirrors-table tr[data-mirror="eu-west"] svg.lag-chart') !== null &&
			document.body.innerText.includes('write → us-east')`)
		b.shot("tenant")
		b.checkA11y("tenant")
	})

	t.Run("approvals", func(t *testing.T) {
		b.t = t
		b.go_("#/approvals")
		b.wait("the approvals page", `document.getElementById('pending-approvals') !== null`)
		_, ap, err := c.Sec.MustSigningClient(leader.URL, "sa-east").RegisterRegionGated(ctx,
			&fsm.Region{Name: "sa-east", URL: c.Servers[0].URL, Tier: fsm.TierProduction, Location: fsm.Location{Lat: -23.55, Lon: -46.63}}, nil)
		if err != nil || ap == nil {
			t.Fatalf("a production region should wait for approvals: %+v %v", ap, err)
		}
		row := fmt.Sprintf(`document.querySelector('#pending-approvals tr[data-approval="%s"]')`, ap.ID)
		b.wait("the pending approval with what it applies and its command", row+` !== null && `+row+`.innerText.includes('atomfed approve `+ap.ID+`') && `+row+`.innerText.includes('0 of 2') &&
			`+row+`.querySelector('details pre').textContent.includes('"tier": "production"')`)
		b.shot("approvals")
		b.checkA11y("approvals")
		e := newCLI(t, c)
		for i, who := range []string{"approver-1", "approver-2"} {
			_, key, err := c.Sec.Signer(who)
			if err != nil {
				t.Fatal(err)
			}
			e.with("COSIGN_KEY_PATH="+key).ok("approve", ap.ID, "--addr", c.Others(leader)[0].URL)
			if i == 0 {
				b.wait("the first vote", row+` !== null && `+row+`.innerText.includes('1 of 2') && `+row+`.innerText.includes('approver-1')`)
			}
		}
		b.wait("the approval gone from the pending ones and applied", row+` === null &&
			document.querySelector('#closed-approvals tr[data-approval="`+ap.ID+`"] .badge').textContent === 'applied'`)
	})

	t.Run("policies, audit chain, cluster", func(t *testing.T) {
		b.t = t
		b.go_("#/policies")
		b.wait("P1-P7", `document.querySelectorAll('#policies-table tr[data-policy]').length === 7`)
		b.shot("policies")
		b.checkA11y("policies")
		b.go_("#/audit")
		b.wait("the audit chain verified in the browser", `(() => { const v = document.getElementById('audit-verdict');
			return v && Number(v.dataset.verified) >= 20 && v.dataset.broken === '0' && v.innerText.includes('newest entry is the head'); })()`)
		if n := b.num(`document.querySelectorAll('#audit-table tr[data-verify="broken"]').length`); n != 0 {
			t.Fatalf("%v audit links do not recompute", n)
		}
		b.shot("audit")
		b.checkA11y("audit")
		b.go_("#/cluster")
		b.wait("three Raft peers, one leader, and the Serf members", `document.querySelectorAll('#peers-table tbody tr').length === 3 &&
			document.querySelectorAll('#peers-table .s-leader').length === 1 && document.querySelectorAll('#members-table tbody tr').length >= 5 &&
			/Term\s*\d+/.test(document.getElementById('this-server').innerText)`)
		b.shot("cluster")
		b.checkA11y("cluster")
	})

	t.Run("backups", func(t *testing.T) {
		b.t = t
		b.go_("#/backups")
		// The agents with a database take their region's first backup as
		// soon as they are up (the default policy), with pgBackRest.
		b.waitFor("us-east and eu-west verified, ap-south simulated", `(() => { const state = (r) => { const row = document.querySelector('#backup-regions tr[data-region="' + r + '"]');
				return row ? row.querySelector('td .badge').textContent : ''; };
			return state('us-east') === 'verified' && state('eu-west') === 'verified' && state('ap-south') === 'simulated' &&
				document.querySelectorAll('#backup-catalog tr[data-backup] .s-verified').length >= 2; })()`, 90*time.Second)
		b.shot("backups")
		b.checkA11y("backups")
	})

	t.Run("a reader cannot create or revoke tokens", func(t *testing.T) {
		b.t = t
		before, err := api.ListTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		headBefore, err := api.Audit(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !b.bool(`document.getElementById('nav-tokens').hidden`) {
			t.Fatalf("a reader sees the Tokens page in the navigation")
		}
		b.go_("#/tokens")
		b.wait("the tokens page refusing a reader", `document.body.innerText.includes('needs an operator token')`)
		if !b.bool(`document.getElementById('token-form-section').hidden && document.querySelector('[data-revoke]') === null`) {
			t.Fatalf("a reader has a control to create or revoke a token")
		}
		crafted := `(async () => { const h = {Authorization: 'Bearer ' + sessionStorage.getItem('atomfed.console.token'), 'Content-Type': 'application/json'};
			const c = await fetch('/v1/tokens', {method: 'POST', headers: h, body: JSON.stringify({role: 'operator', description: 'crafted'})});
			const d = await fetch('/v1/tokens/` + before[0].Accessor + `', {method: 'DELETE', headers: h});
			return [c.status, (await c.json()).error.code, d.status].join(' '); })()`
		if got := b.str(crafted); got != "403 forbidden_role 403" {
			t.Fatalf("a reader's crafted token calls from the console answered %q, want 403 forbidden_role twice", got)
		}
		after, err := api.ListTokens(ctx)
		if err != nil || len(after) != len(before) {
			t.Fatalf("tokens changed after a reader's refused calls: %d -> %d (%v)", len(before), len(after), err)
		}
		for _, e := range mustAuditSince(t, ctx, api, headBefore.Index) {
			if strings.HasPrefix(e.Type, "token_") {
				t.Fatalf("the audit chain has a %s entry after a reader's refused calls", e.Type)
			}
		}
		if u := b.str(`location.href + ' ' + JSON.stringify(localStorage)`); strings.Contains(u, reader.Secret) {
			t.Fatalf("the token is in the URL or localStorage: %s", u)
		}
		for _, s := range c.Servers {
			if s.LogContains(reader.Secret) {
				t.Fatalf("%s logged the reader token", s.ID())
			}
		}
	})

	t.Run("a region goes down when its agent is killed", func(t *testing.T) {
		b.t = t
		b.go_("#/map")
		b.waitFor("ap-south down on the map", `document.querySelector('#map g.region[data-region="ap-south"]').dataset.health === 'down' &&
			document.querySelector('#regions-table tr[data-region="ap-south"] td.health .badge').textContent === 'down'`, 90*time.Second)
		t.Logf("ap-south shown down %s after its agent was killed", time.Since(killed).Round(time.Millisecond))
		b.shot("map-region-down")
	})
	t.Run("an operator creates and revokes a reader token", func(t *testing.T) {
		b.t = t
		b.do("log out", chromedp.Click(chromedp.CSS("#logout")))
		b.wait("the login page again", `!document.getElementById('login').hidden && sessionStorage.length === 0`)
		b.do("log in as the operator", chromedp.SendKeys(chromedp.CSS("#token"), procs.Token), chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)))
		b.wait("the operator's console", `!document.getElementById('nav').hidden && !document.getElementById('nav-tokens').hidden`)
		b.go_("#/tokens")
		b.wait("the token form and the reader tokens", `!document.getElementById('token-form-section').hidden &&
			document.querySelector('#tokens-table tr[data-accessor="`+reader.Accessor+`"]') !== null`)
		b.shot("tokens")
		b.checkA11y("tokens")
		b.do("create a reader token", chromedp.SendKeys(chromedp.CSS("#token-desc"), "made in the console"), chromedp.Click(chromedp.CSS("#token-create")))
		b.wait("the new token's secret", `document.querySelector('#token-form-result .secret') !== null`)
		secret := b.str(`document.querySelector('#token-form-result .secret').textContent`)
		made, err := c.Sec.Client(leader.URL, client.WithToken(secret))
		if err != nil {
			t.Fatal(err)
		}
		self, err := made.TokenSelf(ctx)
		if err != nil || self.Role != fsm.RoleReader || self.Description != "made in the console" {
			t.Fatalf("the console's new token: %+v %v, want a reader token", self, err)
		}
		row := `#tokens-table tr[data-accessor="` + self.Accessor + `"]`
		b.wait("the new token in the list", `document.querySelector('`+row+`') !== null`)
		b.do("revoke it (two clicks)", chromedp.Click(chromedp.CSS(row+" button[data-revoke]")))
		b.wait("the armed revoke button", `document.querySelector('`+row+` button[data-revoke]').textContent.includes('again')`)
		b.do("confirm", chromedp.Click(chromedp.CSS(row+" button[data-revoke]")))
		b.wait("the token gone from the list", `document.querySelector('`+row+`') === null`)
		if _, err := made.TokenSelf(ctx); client.StatusOf(err) != 401 {
			t.Fatalf("the revoked token still works: %v", err)
		}
		for _, s := range c.Servers {
			if s.LogContains(secret) || s.LogContains(procs.Token) {
				t.Fatalf("%s logged a token the console sent", s.ID())
			}
		}
	})
	b.t = t
	if len(b.problems()) > 0 {
		t.Fatalf("the console's pages reported errors:\n%s", strings.Join(b.problems(), "\n"))
	}
	t.Run("a switchover's progress on the tenant page", func(t *testing.T) {
		b.t = t
		b.go_("#/tenant/acme")
		b.wait("no switchover yet", `document.getElementById('switchover-none') !== null`)
		if _, err := api.StartSwitchover(ctx, "acme", wire.SwitchoverRequest{To: "eu-west"}); err != nil {
			t.Fatalf("switch acme over to eu-west: %v", err)
		}
		b.waitFor("the switchover done, step by step, and acme at home in eu-west", `(() => { const sw = document.getElementById('switchover');
			const steps = [...document.querySelectorAll('#switchover-steps tr[data-phase]')].map((r) => r.dataset.phase).join(',');
			return sw && sw.innerText.includes('us-east → eu-west') && steps.includes('fencing') && steps.includes('committed') && steps.endsWith('done') &&
				document.querySelector('dl.kv dd').textContent === 'eu-west'; })()`, 60*time.Second)
		b.shot("tenant-switchover")
		b.checkA11y("tenant with a switchover")
	})
	t.Logf("console test took %s", time.Since(start).Round(time.Millisecond))
}

// mustAuditSince returns the audit entries after index.
func mustAuditSince(t *testing.T, ctx context.Context, api *client.Client, index uint64) []fsm.AuditEntry {
	t.Helper()
	st, err := api.Audit(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []fsm.AuditEntry
	for _, e := range st.Recent {
		if e.Index > index {
			out = append(out, e)
		}
	}
	return out
}

// browser is one headless chromium tab driven over the DevTools protocol.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
	mu    sync.Mutex
	errs  []string
}

func newBrowser(t *testing.T, parent context.Context, chrome string) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.Flag("ignore-certificate-errors", true), // the federation's own CA; the browser has no way to be given it
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1366, 900))
	actx, cancelA := chromedp.NewExecAllocator(parent, opts...)
	b := &browser{t: t, shots: os.Getenv(consoleShotsEnv)}
	bctx, cancelB := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			b.report("script error: " + ev.ExceptionDetails.Text + " " + exceptionText(ev.ExceptionDetails))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.report("console " + string(ev.Type) + ": " + strings.Join(parts, " "))
			}
		case *cdplog.EventEntryAdded:
			// A refused API call (the reader's crafted ones) is logged by
			// the network; what matters here is a script, a CSP or a
			// security problem.
			if e := ev.Entry; e != nil && e.Level == cdplog.EntryLevelError && e.Source != cdplog.EntrySourceNetwork {
				b.report("browser log (" + string(e.Source) + "): " + e.Text + " " + e.URL)
			}
		}
	}))
	b.ctx = bctx
	t.Cleanup(func() { cancelB(); cancelA() })
	if b.shots != "" {
		if err := os.MkdirAll(b.shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d != nil && d.Exception != nil {
		return d.Exception.Description
	}
	return ""
}

func (b *browser) report(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errs = append(b.errs, s)
}

func (b *browser) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) open(url string) { b.t.Helper(); b.do("open "+url, chromedp.Navigate(url)) }

// go_ moves to a page of the console, as its navigation links do.
func (b *browser) go_(hash string) {
	b.t.Helper()
	b.do("go to "+hash, chromedp.Evaluate[chromedp.Void](`location.hash = `+jsString(hash)))
}

// eval evaluates a JavaScript expression (awaiting a promise) into T.
func eval[T any](b *browser, expr string) (T, error) {
	return chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

func mustEval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := eval[T](b, expr)
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (b *browser) str(expr string) string  { b.t.Helper(); return mustEval[string](b, expr) }
func (b *browser) num(expr string) float64 { b.t.Helper(); return mustEval[float64](b, expr) }
func (b *browser) bool(expr string) bool   { b.t.Helper(); return mustEval[bool](b, expr) }

// wait polls a JavaScript condition until it holds (45 s at most); on
// timeout it fails with the page's text.
func (b *browser) wait(what, cond string) {
	b.t.Helper()
	b.waitFor(what, cond, 45*time.Second)
}

// waitFor is wait with its own limit, for what waits on the federation
// rather than on the page (an initial copy, Serf's failure detection).
func (b *browser) waitFor(what, cond string, limit time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = eval[bool](b, `(() => { try { return !!(`+cond+`); } catch (e) { return false; } })()`); last == nil && ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	text, _ := eval[string](b, `document.body.innerText.slice(0, 3000)`)
	b.t.Fatalf("the console never showed %s (%v); the page reads:\n%s\nproblems: %v", what, last, text, b.problems())
}

// shot writes a screenshot of what a laptop screen shows of the page
// (the 1366x900 window) when consoleShotsEnv names a directory.
func (b *browser) shot(name string) {
	b.t.Helper()
	if b.shots == "" {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// checkA11y runs axe-core on the page and fails on any serious or
// critical violation.
func (b *browser) checkA11y(page string) {
	b.t.Helper()
	if !b.bool(`typeof window.axe !== 'undefined'`) {
		if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[chromedp.Void](axeSource)); err != nil {
			b.t.Fatalf("inject axe-core: %v", err)
		}
	}
	raw, err := eval[string](b, `axe.run(document, {resultTypes: ['violations']}).then(r => JSON.stringify(r.violations
		.filter(v => v.impact === 'serious' || v.impact === 'critical')
		.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.html + ' ' + n.failureSummary)}))))`)
	if err != nil {
		b.t.Fatalf("axe-core on %s: %v", page, err)
	}
	var violations []map[string]any
	if err := json.Unmarshal([]byte(raw), &violations); err != nil {
		b.t.Fatal(err)
	}
	if len(violations) > 0 {
		pretty, _ := json.MarshalIndent(violations, "", "  ")
		b.t.Errorf("the %s page has %d serious or critical accessibility violations:\n%s", page, len(violations), pretty)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

package e2e_test

import (
	"bufio"
	"context"
	"fmt"
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
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// TestREADMETour runs every shell block of the README's tour, as printed,
// in one bash session against `atomfed dev` with PostgreSQL, the way a
// newcomer pastes them after `make run`. Only three things differ from a
// terminal: the placeholder export lines are the ones dev printed, the
// dev ports 8401-8403 are the test's, and HOME is a temporary directory
// (the tour keeps keys in ~/.atomfed/keys). Every command must succeed,
// and no API answer may be an error unless the README announces it (a
// comment saying it is refused). Then the tour's effects are checked: the
// approved production region, the curl-registered one, the reports, the
// snapshot, and acme's rows on its mirror without the PII column.
func TestREADMETour(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq", "openssl", "sha256sum", "psql"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required by the README's tour (.ci/run installs it)", tool)
		}
	}
	work, base, banner := startDevWithPostgres(t, "the tour")
	exports := regexp.MustCompile(`(?m)^\s*(export (ATOMFED_ADDR|POSTGRES_DSN)=.*?)(\s+#.*)?$`).FindAllStringSubmatch(banner, -1)
	if len(exports) != 2 {
		t.Fatalf("dev printed %d export lines, want ATOMFED_ADDR... and POSTGRES_DSN:\n%s", len(exports), banner)
	}
	byVar := map[string]string{}
	for _, e := range exports {
		byVar[e[2]] = strings.TrimSpace(e[1])
	}

	blocks := readmeBlocks(t)
	if len(blocks) < 5 {
		t.Fatalf("found %d shell blocks in the README's tour", len(blocks))
	}
	var script strings.Builder
	script.WriteString("set -euo pipefail\nshopt -s expand_aliases\n")
	var commands []string
	refused := map[int]bool{}
	for _, block := range blocks {
		lines := strings.Split(block, "\n")
		for i := 0; i < len(lines); i++ {
			line := lines[i]
			trimmed := strings.TrimSpace(line)
			if trimmed == "" || strings.HasPrefix(trimmed, "#") {
				script.WriteString(line + "\n")
				continue
			}
			announced := i > 0 && strings.Contains(lines[i-1], "refused")
			cmd := line
			for strings.HasSuffix(strings.TrimSpace(lines[i]), `\`) && i+1 < len(lines) {
				i++
				cmd += "\n" + lines[i]
			}
			if f := strings.Fields(cmd); f[0] == "export" && strings.Contains(cmd, "...") {
				name, _, _ := strings.Cut(f[1], "=")
				real, ok := byVar[name]
				if !ok {
					t.Fatalf("the README exports %s, which dev does not print", name)
				}
				cmd = real
			}
			cmd = devPorts(cmd, base)
			n := len(commands)
			commands = append(commands, cmd)
			refused[n] = announced
			fmt.Fprintf(&script, "echo '@@@ %d'\n%s\n", n, cmd)
		}
	}
	bin := filepath.Join(work, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(atomfedBin, filepath.Join(bin, "atomfed")); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(work, "home")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "-c", script.String())
	sh.Dir = work
	sh.Env = append(os.Environ(), "HOME="+home)
	out, err := sh.CombinedOutput()
	segments := splitSegments(string(out))
	if err != nil {
		last := len(segments) - 1
		t.Fatalf("the tour stopped at command %d:\n%s\n(%v); its output:\n%s", last, commands[max(last, 0)], err, segments[last])
	}
	if os.Getenv("ATOMFED_TOUR_LOG") != "" {
		for n, cmd := range commands {
			t.Logf("$ %s\n%s", cmd, segments[n])
		}
	}
	if len(segments) != len(commands) {
		t.Fatalf("%d of the tour's %d commands ran:\n%s", len(segments), len(commands), out)
	}
	for n, cmd := range commands {
		hasError := strings.Contains(segments[n], `{"error":`)
		switch {
		case refused[n] && !hasError:
			t.Errorf("the README says this is refused, but it was not:\n%s\n%s", cmd, segments[n])
		case !refused[n] && hasError:
			t.Errorf("an error the README does not announce:\n%s\n%s", cmd, segments[n])
		}
	}
	if !strings.Contains(segments[len(commands)-1], "replayed_nonce") {
		t.Errorf("the replayed registration: %s", segments[len(commands)-1])
	}
	checkTourEffects(t, work, base, byVar, banner)
}

// readmeBlocks returns the README's shell blocks from the tour on (the
// set-up block with make run and make test comes before it).
func readmeBlocks(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	tour := strings.Index(readme, "## A short tour")
	end := strings.Index(readme, "## Other targets")
	if tour < 0 || end < tour {
		t.Fatal("the README has no tour section")
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(readme[tour:end], -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// devPorts moves the README's dev ports (8401-8403) to the test's.
func devPorts(cmd string, base int) string {
	for i := 0; i < 3; i++ {
		port := strconv.Itoa(8401 + i)
		for _, host := range []string{"127.0.0.1:", "localhost:"} {
			cmd = strings.ReplaceAll(cmd, host+port, host+strconv.Itoa(base+i))
		}
	}
	return cmd
}

// splitSegments cuts the tour's output at its command markers.
func splitSegments(out string) []string {
	var segs []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "@@@ ") {
			segs = append(segs, "")
			continue
		}
		if len(segs) > 0 {
			segs[len(segs)-1] += sc.Text() + "\n"
		}
	}
	return segs
}

// checkTourEffects checks what the tour did, through the API and in the
// mirror's database.
func checkTourEffects(t *testing.T, work string, base int, env map[string]string, banner string) {
	t.Helper()
	caPath := regexp.MustCompile(`ATOMFED_CACERT=(\S+)`).FindStringSubmatch(env["ATOMFED_ADDR"])[1]
	token := regexp.MustCompile(`FEDERATION_TOKEN=(\S+)`).FindStringSubmatch(env["ATOMFED_ADDR"])[1]
	tlsConf, err := tlsutil.ClientConfig(tlsutil.Files{CA: caPath}, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(fmt.Sprintf("https://127.0.0.1:%d", base), client.WithToken(token), client.WithTLS(tlsConf))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctx(t, 2*time.Minute)
	for name, tier := range map[string]string{"sa-east": fsm.TierProduction, "sa-west": fsm.TierStaging} {
		r, _, err := c.Region(ctx, name, nil)
		if err != nil || r.Tier != tier {
			t.Errorf("region %s after the tour: %+v %v, want tier %s", name, r, err, tier)
		}
	}
	acme, _, err := c.Tenant(ctx, "acme", nil)
	if err != nil || len(acme.Mirrors) != 2 || len(acme.Tables) != 1 || acme.Labels["team"] != "payments" || acme.Labels["tier"] != "gold" {
		t.Errorf("acme after the tour (patches keep what they do not name): %+v %v", acme, err)
	}
	for _, f := range []string{"state.snap", "cli-state.snap", "tour-reports/G.1_precheck.json", "tour-reports/PhaseG.1_Snapshot.json", "home/.atomfed/keys/sa-east.key"} {
		if st, err := os.Stat(filepath.Join(work, f)); err != nil || st.Size() == 0 {
			t.Errorf("the tour did not write %s: %v", f, err)
		}
	}
	// acme's row reaches eu-west without its email, initech's does not,
	// and the global table is there.
	m := regexp.MustCompile(`postgres\s+region eu-west\s+\S+\s+PGPASSFILE=(\S+) psql -h (\S+) -p (\d+) -U (\S+) (\S+)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("dev printed no psql line for eu-west:\n%s", banner)
	}
	dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s passfile=%s", m[2], m[3], m[4], m[5], m[1])
	testutil.Eventually(t, 60*time.Second, func() error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var tenants string
		var emailCols int
		if err := conn.QueryRow(ctx, "SELECT string_agg(DISTINCT tenant_id, ',') FROM orders").Scan(&tenants); err != nil {
			return fmt.Errorf("eu-west orders: %w", err)
		}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'email'").Scan(&emailCols); err != nil {
			return err
		}
		if tenants != "acme" || emailCols != 0 {
			return fmt.Errorf("eu-west holds orders of %q with %d email columns, want acme's only and no email", tenants, emailCols)
		}
		var global bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass('public.currencies') IS NOT NULL").Scan(&global); err != nil || !global {
			return fmt.Errorf("the global table currencies is not in eu-west yet (%v)", err)
		}
		return nil
	})
}

// startDev starts `atomfed dev` on free consecutive ports (again on
// others when one was taken meanwhile) and waits until it is up. It
// returns the process, its first port (the first server's API) and its
// log file.
// startDevWithPostgres starts `atomfed dev` with a PostgreSQL per region
// (what needs it says so when PostgreSQL is missing) in a new work dir,
// and returns the dir, its first port and its banner.
func startDevWithPostgres(t *testing.T, what string) (string, int, string) {
	t.Helper()
	if _, err := pglocal.Find(); err != nil {
		t.Fatalf("%s needs PostgreSQL: %v", what, err)
	}
	work := t.TempDir()
	// dev's PostgreSQL runs as the postgres user when the test runs as
	// root: it must be able to reach its data dir under work.
	for _, d := range []string{filepath.Dir(work), work} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	_, base, logPath := startDev(t, work, true)
	logBytes, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	return work, base, string(logBytes)
}

func startDev(t *testing.T, dir string, postgres bool) (*procs.Proc, int, string) {
	t.Helper()
	var p *procs.Proc
	var base int
	var logPath string
	for attempt := 1; ; attempt++ {
		base = consecutiveFreePorts(t, 15)
		data := filepath.Join(dir, fmt.Sprintf("data-%d", attempt))
		// Searchable, so that PostgreSQL, run as the postgres user when
		// the test runs as root, reaches its directories inside.
		if err := os.Mkdir(data, 0o711); err != nil {
			t.Fatal(err)
		}
		args := []string{"dev", "--data-dir", data,
			"--http-port", strconv.Itoa(base), "--raft-port", strconv.Itoa(base + 3), "--serf-port", strconv.Itoa(base + 6),
			"--agent-http-port", strconv.Itoa(base + 9), "--agent-serf-port", strconv.Itoa(base + 12)}
		if !postgres {
			args = append(args, "--no-postgres")
		}
		logPath = filepath.Join(dir, fmt.Sprintf("dev-%d.log", attempt))
		p = procs.NewProc("dev", atomfedBin, logPath, args...)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		proc := p
		t.Cleanup(func() {
			_ = proc.Term()
			if _, err := proc.Wait(30 * time.Second); err != nil {
				_ = proc.Kill9()
			}
			if t.Failed() {
				t.Logf("log of atomfed dev (%s):\n%s", proc.ExitStatus(), proc.LogTail(60))
			}
			proc.Close()
		})
		if attempt == 3 || !exitsOnPortInUse(p) {
			break
		}
		t.Logf("atomfed dev found one of ports %d-%d taken; trying other ports", base, base+14)
	}
	testutil.Eventually(t, 90*time.Second, func() error {
		if !p.Running() {
			t.Fatalf("atomfed dev exited (%s):\n%s", p.ExitStatus(), p.LogTail(60))
		}
		if !p.LogContains("Press Ctrl-C to stop.") {
			return fmt.Errorf("atomfed dev is not up yet")
		}
		return nil
	})
	return p, base, logPath
}

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// cliResult is one run of the atomfed CLI.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cli runs the atomfed binary with args (and extra environment) the way a
// user would, and returns its output and exit code.
func cli(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(c, atomfedBin, args...)
	// A user's environment must not point the CLI elsewhere.
	cmd.Env = append(filterEnv(os.Environ(), "ATOMFED_ADDR=", "GLOBAL_REGISTRY_URL=", "FEDERATION_TOKEN=", "ATOMFED_CACERT=", "COSIGN_"), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("atomfed %s: %v", strings.Join(args, " "), err)
	}
	return r
}

func filterEnv(env []string, drop ...string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, d := range drop {
			if strings.HasPrefix(kv, d) {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// cliEnv runs the CLI against one cluster: its CA and token are in the
// environment, as an operator would export them.
type cliEnv struct {
	t   *testing.T
	env []string
}

func newCLI(t *testing.T, c *procs.Cluster) *cliEnv {
	return &cliEnv{t: t, env: []string{"ATOMFED_CACERT=" + c.Sec.CAPath, "FEDERATION_TOKEN=" + procs.Token}}
}

// with returns a copy with more environment (e.g. COSIGN_KEY_PATH).
func (e *cliEnv) with(kv ...string) *cliEnv {
	return &cliEnv{t: e.t, env: append(append([]string(nil), e.env...), kv...)}
}

// ok runs the CLI and fails the test unless it exits 0.
func (e *cliEnv) ok(args ...string) string {
	e.t.Helper()
	r := cli(e.t, e.env, args...)
	if r.code != 0 {
		e.t.Fatalf("atomfed %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the CLI, expects a non-zero exit and returns stderr.
func (e *cliEnv) fails(args ...string) string {
	e.t.Helper()
	r := cli(e.t, e.env, args...)
	if r.code == 0 {
		e.t.Fatalf("atomfed %s: exit 0, want a failure\nstdout: %s", strings.Join(args, " "), r.stdout)
	}
	return r.stderr
}

func mustContain(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not mention %q:\n%s", what, w, got)
		}
	}
}

func decodeJSON(t *testing.T, what, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", what, err, s)
	}
}

// TestCLIAgainstCluster drives a three-process cluster with the CLI the way
// an operator would: regions, tenants, raft peers, and a snapshot saved
// from it and restored into a fresh cluster, which then has the same audit
// head. Invalid input exits non-zero with a message naming the problem.
func TestCLIAgainstCluster(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	leader := waitLeader(t, c)
	// Commands go to a follower, which forwards to the leader, like a user
	// who picked any server.
	addr := c.Others(leader)[0].URL
	e := newCLI(t, c)
	key := func(member string) string {
		_, path, err := c.Sec.Signer(member)
		if err != nil {
			t.Fatal(err)
		}
		return path
	}

	// Two approvers register their keys (signed by those keys).
	for _, a := range []string{"approver-1", "approver-2"} {
		mustContain(t, "trust register", e.with("COSIGN_KEY_PATH="+key(a)).ok("trust", "register", "--id", a, "--kind", "approver", "--addr", addr),
			"approver "+a+" registered")
	}
	// A production region waits for two distinct approvals.
	out := e.with("COSIGN_KEY_PATH="+key("us-east")).ok("region", "register", "--name", "us-east", "--url", "https://us-east.example.com:8401",
		"--tier", "production", "--lat", "39.04", "--lon", "-77.49", "--label", "provider=aws", "--addr", addr)
	mustContain(t, "production region register output", out, "pending approval", "needs 2 approvals")
	id := strings.TrimSuffix(strings.Fields(out)[2], ":")
	mustContain(t, "first approval", e.with("COSIGN_KEY_PATH="+key("approver-1")).ok("approve", id, "--addr", addr), "1 of 2")
	mustContain(t, "same approver again", e.with("COSIGN_KEY_PATH="+key("approver-1")).fails("approve", id, "--addr", addr), "duplicate_approval")
	mustContain(t, "second approval", e.with("COSIGN_KEY_PATH="+key("approver-2")).ok("approve", id, "--addr", addr), "2 of 2", "was applied")
	mustContain(t, "approvals list", e.ok("approvals", "--addr", addr), id, "applied")
	mustContain(t, "staging register", e.with("COSIGN_KEY_PATH="+key("eu-west")).ok("region", "register", "--name", "eu-west",
		"--url", "https://eu-west.example.com:8401", "--addr", addr), "region eu-west registered")
	mustContain(t, "unsigned register", e.fails("region", "register", "--name", "sa-east", "--url", "https://sa.example.com", "--addr", addr),
		"signed request", "COSIGN_KEY_PATH")
	mustContain(t, "register signed by another region's key", e.with("COSIGN_KEY_PATH="+key("eu-west")).fails("region", "register",
		"--name", "us-east", "--url", "https://x.example.com", "--addr", addr), "wrong_signer")

	var regions struct {
		Regions []*fsm.Region `json:"regions"`
	}
	decodeJSON(t, "region list -o json", e.ok("region", "list", "-o", "json", "--addr", addr), &regions)
	if len(regions.Regions) != 2 || regions.Regions[1].Name != "us-east" || regions.Regions[1].Tier != "production" ||
		regions.Regions[1].Labels["provider"] != "aws" || regions.Regions[1].Location.Lat != 39.04 {
		t.Errorf("region list -o json = %+v, want eu-west and the production us-east", regions.Regions)
	}

	out = e.ok("tenant", "put", "acme", "--home", "us-east", "--mirror", "eu-west",
		"--table", "orders:email,phone", "--table", "invoices", "--label", "plan=gold", "--addr", addr)
	mustContain(t, "tenant put output", out, "tenant acme stored")
	e.ok("tenant", "put", "globex", "--home", "eu-west", "--addr", leader.URL)

	var acme fsm.Tenant
	decodeJSON(t, "tenant get -o json", e.ok("tenant", "get", "acme", "-o", "json", "--addr", addr), &acme)
	if acme.HomeRegion != "us-east" || len(acme.Mirrors) != 1 || acme.Mirrors[0] != "eu-west" || len(acme.Tables) != 2 ||
		acme.Tables[1].Name != "orders" || strings.Join(acme.Tables[1].PIIColumns, ",") != "email,phone" || acme.Labels["plan"] != "gold" {
		t.Errorf("tenant get acme = %+v", acme)
	}
	mustContain(t, "tenant get (table)", e.ok("tenant", "get", "acme", "--addr", addr), "us-east", "eu-west", "orders (PII: email,phone)")

	var tenants struct {
		Tenants []*fsm.Tenant `json:"tenants"`
	}
	decodeJSON(t, "tenant list -o json", e.ok("tenant", "list", "-o", "json", "--addr", addr), &tenants)
	if len(tenants.Tenants) != 2 || tenants.Tenants[0].ID != "acme" || tenants.Tenants[1].ID != "globex" {
		t.Errorf("tenant list = %+v, want acme and globex", tenants.Tenants)
	}
	// ATOMFED_ADDR is honoured when --addr is absent; --region filters.
	r := cli(t, append(e.env, "ATOMFED_ADDR="+leader.URL), "tenant", "list", "--region", "eu-west")
	if r.code != 0 || !strings.Contains(r.stdout, "acme") || !strings.Contains(r.stdout, "globex") {
		t.Errorf("tenant list --region eu-west via ATOMFED_ADDR: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = cli(t, append(e.env, "ATOMFED_ADDR="+leader.URL), "tenant", "list", "--region", "us-east")
	if r.code != 0 || !strings.Contains(r.stdout, "acme") || strings.Contains(r.stdout, "globex") {
		t.Errorf("tenant list --region us-east via ATOMFED_ADDR: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	mustContain(t, "tenant delete output", e.ok("tenant", "delete", "globex", "--addr", addr), "tenant globex deleted")
	mustContain(t, "tenant get of a deleted tenant", e.fails("tenant", "get", "globex", "--addr", addr), `"globex" does not exist`)

	// operator raft list-peers: three voters, one leader, as a table and as JSON.
	out = e.ok("operator", "raft", "list-peers", "--addr", addr)
	for _, s := range c.Servers {
		mustContain(t, "list-peers", out, s.ID(), s.Config.RaftAddr)
	}
	if n := strings.Count(out, "leader"); n != 1 {
		t.Errorf("list-peers shows %d leaders:\n%s", n, out)
	}
	var peers []structs.Peer
	decodeJSON(t, "list-peers -o json", e.ok("operator", "raft", "list-peers", "-o", "json", "--addr", addr), &peers)
	leaders := 0
	for _, p := range peers {
		if !p.Voter {
			t.Errorf("peer %s is not a voter", p.ID)
		}
		if p.Leader {
			leaders++
			if p.ID != leader.ID() {
				t.Errorf("list-peers names %s leader, want %s", p.ID, leader.ID())
			}
		}
	}
	if len(peers) != 3 || leaders != 1 {
		t.Errorf("list-peers -o json = %+v, want 3 voters and 1 leader", peers)
	}

	// Invalid input: a non-zero exit and a message that names the problem.
	signed := e.with("COSIGN_KEY_PATH=" + key("ok-name"))
	mustContain(t, "register Bad_Name", signed.fails("region", "register", "--name", "Bad_Name", "--url", "x", "--addr", addr),
		`"Bad_Name"`, "DNS label", "invalid_region_name")
	mustContain(t, "register with a bad url", signed.fails("region", "register", "--name", "ok-name", "--url", "x", "--addr", addr),
		`url "x"`, "invalid_url")
	mustContain(t, "tenant put with an unknown home", e.fails("tenant", "put", "initech", "--home", "nowhere", "--addr", addr),
		`"nowhere"`, "not a registered region")
	mustContain(t, "an unknown output format", e.fails("region", "list", "-o", "yaml", "--addr", addr), `--output "yaml"`)
	mustContain(t, "a bad label", e.fails("tenant", "put", "initech", "--home", "us-east", "--label", "nokey", "--addr", addr), `label "nokey"`)
	mustContain(t, "a bad address", e.fails("region", "list", "--addr", "ftp://x"), `"ftp://x"`)

	// Snapshot save from the cluster, restore into a fresh cluster.
	snap := filepath.Join(t.TempDir(), "fed.snap")
	mustContain(t, "snapshot save output", e.ok("snapshot", "save", snap, "--addr", addr), "saved snapshot", snap)
	src, err := leader.Client.Audit(ctx(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if src.Index == 0 || strings.Trim(src.Head, "0") == "" {
		t.Fatalf("source audit head is empty: %+v", src)
	}

	fresh := startCluster(t)
	freshLeader := waitLeader(t, fresh)
	freshAddr := fresh.Others(freshLeader)[0].URL
	fe := newCLI(t, fresh)
	out = fe.ok("snapshot", "restore", snap, "--addr", freshAddr)
	mustContain(t, "snapshot restore output", out, "restored snapshot", src.Head)
	got, err := freshLeader.Client.Audit(ctx(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The fresh cluster's chain goes on from its own head, and records the
	// restore: an entry snapshot_restore whose note names the source head
	// (the restored snapshot's), on every server.
	restoreEntry := func(a *wire.AuditStatus) string {
		for _, e := range a.Recent {
			if e.Type == "snapshot_restore" && strings.Contains(e.Note, "its audit head "+src.Head) {
				return e.Hash
			}
		}
		return ""
	}
	rec := restoreEntry(got)
	if rec == "" {
		t.Fatalf("after restore the fresh cluster's audit trail (head %s@%d) records no restore of the source head %s@%d: %+v", got.Head, got.Index, src.Head, src.Index, got.Recent)
	}
	for _, s := range fresh.Servers {
		waitAuditHas(t, s, rec)
	}
	var restored fsm.Tenant
	decodeJSON(t, "tenant get after restore", fe.ok("tenant", "get", "acme", "-o", "json", "--addr", freshAddr), &restored)
	if restored.ModifyIndex != acme.ModifyIndex || restored.Labels["plan"] != "gold" {
		t.Errorf("after restore tenant acme = %+v, want %+v", restored, acme)
	}
	fe.fails("tenant", "get", "globex", "--addr", freshAddr)
	mustContain(t, "restore of a file that is no snapshot",
		fe.fails("snapshot", "restore", filepath.Join(filepath.Dir(snap), "missing.snap"), "--addr", freshAddr), "missing.snap")
}

// auditHas reports whether head is the audit head or one of the recent
// entries of a.
func auditHas(a *wire.AuditStatus, head string) bool {
	if a.Head == head {
		return true
	}
	for _, e := range a.Recent {
		if e.Hash == head {
			return true
		}
	}
	return false
}

// waitAuditHas waits until s's own audit trail holds head.
func waitAuditHas(t *testing.T, s *procs.ServerProc, head string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		a, err := s.Client.Audit(context.Background(), &client.QueryOptions{Consistency: "stale"})
		if err == nil && auditHas(a, head) {
			return nil
		}
		return fmt.Errorf("%s: audit trail lacks %s (%+v, err %v)", s.ID(), head, a, err)
	})
}

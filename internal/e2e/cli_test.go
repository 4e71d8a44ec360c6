package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/e2e"
	"github.com/atomcloud/atomfed/internal/structs"
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
	cmd.Env = append(filterEnv(os.Environ(), "ATOMFED_ADDR=", "GLOBAL_REGISTRY_URL=", "FEDERATION_TOKEN="), env...)
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

// ok runs the CLI and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := cli(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("atomfed %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the CLI, expects a non-zero exit and returns stderr.
func fails(t *testing.T, args ...string) string {
	t.Helper()
	r := cli(t, nil, args...)
	if r.code == 0 {
		t.Fatalf("atomfed %s: exit 0, want a failure\nstdout: %s", strings.Join(args, " "), r.stdout)
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

	out := ok(t, "region", "register", "--name", "us-east", "--url", "https://us-east.example.com:8401",
		"--tier", "production", "--lat", "39.04", "--lon", "-77.49", "--label", "provider=aws", "--addr", addr)
	mustContain(t, "region register output", out, "region us-east registered")
	ok(t, "region", "register", "--name", "eu-west", "--url", "https://eu-west.example.com:8401", "--addr", addr)

	var regions struct {
		Regions []*fsm.Region `json:"regions"`
	}
	decodeJSON(t, "region list -o json", ok(t, "region", "list", "-o", "json", "--addr", addr), &regions)
	if len(regions.Regions) != 2 || regions.Regions[1].Name != "us-east" || regions.Regions[1].Tier != "production" ||
		regions.Regions[1].Labels["provider"] != "aws" || regions.Regions[1].Location.Lat != 39.04 {
		t.Errorf("region list -o json = %+v, want eu-west and the production us-east", regions.Regions)
	}

	out = ok(t, "tenant", "put", "acme", "--home", "us-east", "--mirror", "eu-west",
		"--table", "orders:email,phone", "--table", "invoices", "--label", "plan=gold", "--addr", addr)
	mustContain(t, "tenant put output", out, "tenant acme stored")
	ok(t, "tenant", "put", "globex", "--home", "eu-west", "--addr", leader.URL)

	var acme fsm.Tenant
	decodeJSON(t, "tenant get -o json", ok(t, "tenant", "get", "acme", "-o", "json", "--addr", addr), &acme)
	if acme.HomeRegion != "us-east" || len(acme.Mirrors) != 1 || acme.Mirrors[0] != "eu-west" || len(acme.Tables) != 2 ||
		acme.Tables[1].Name != "orders" || strings.Join(acme.Tables[1].PIIColumns, ",") != "email,phone" || acme.Labels["plan"] != "gold" {
		t.Errorf("tenant get acme = %+v", acme)
	}
	mustContain(t, "tenant get (table)", ok(t, "tenant", "get", "acme", "--addr", addr), "us-east", "eu-west", "orders (PII: email,phone)")

	var tenants struct {
		Tenants []*fsm.Tenant `json:"tenants"`
	}
	decodeJSON(t, "tenant list -o json", ok(t, "tenant", "list", "-o", "json", "--addr", addr), &tenants)
	if len(tenants.Tenants) != 2 || tenants.Tenants[0].ID != "acme" || tenants.Tenants[1].ID != "globex" {
		t.Errorf("tenant list = %+v, want acme and globex", tenants.Tenants)
	}
	// ATOMFED_ADDR is honoured when --addr is absent; --region filters.
	r := cli(t, []string{"ATOMFED_ADDR=" + leader.URL}, "tenant", "list", "--region", "eu-west")
	if r.code != 0 || !strings.Contains(r.stdout, "acme") || !strings.Contains(r.stdout, "globex") {
		t.Errorf("tenant list --region eu-west via ATOMFED_ADDR: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = cli(t, []string{"ATOMFED_ADDR=" + leader.URL}, "tenant", "list", "--region", "us-east")
	if r.code != 0 || !strings.Contains(r.stdout, "acme") || strings.Contains(r.stdout, "globex") {
		t.Errorf("tenant list --region us-east via ATOMFED_ADDR: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	mustContain(t, "tenant delete output", ok(t, "tenant", "delete", "globex", "--addr", addr), "tenant globex deleted")
	mustContain(t, "tenant get of a deleted tenant", fails(t, "tenant", "get", "globex", "--addr", addr), `"globex" does not exist`)

	// operator raft list-peers: three voters, one leader, as a table and as JSON.
	out = ok(t, "operator", "raft", "list-peers", "--addr", addr)
	for _, s := range c.Servers {
		mustContain(t, "list-peers", out, s.ID(), s.Config.RaftAddr)
	}
	if n := strings.Count(out, "leader"); n != 1 {
		t.Errorf("list-peers shows %d leaders:\n%s", n, out)
	}
	var peers []structs.Peer
	decodeJSON(t, "list-peers -o json", ok(t, "operator", "raft", "list-peers", "-o", "json", "--addr", addr), &peers)
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
	mustContain(t, "register Bad_Name", fails(t, "region", "register", "--name", "Bad_Name", "--url", "x", "--addr", addr),
		`"Bad_Name"`, "DNS label", "invalid_region_name")
	mustContain(t, "register with a bad url", fails(t, "region", "register", "--name", "ok-name", "--url", "x", "--addr", addr),
		`url "x"`, "invalid_url")
	mustContain(t, "tenant put with an unknown home", fails(t, "tenant", "put", "initech", "--home", "nowhere", "--addr", addr),
		`"nowhere"`, "not a registered region")
	mustContain(t, "an unknown output format", fails(t, "region", "list", "-o", "yaml", "--addr", addr), `--output "yaml"`)
	mustContain(t, "a bad label", fails(t, "tenant", "put", "initech", "--home", "us-east", "--label", "nokey", "--addr", addr), `label "nokey"`)
	mustContain(t, "a bad address", fails(t, "region", "list", "--addr", "ftp://x"), `"ftp://x"`)

	// Snapshot save from the cluster, restore into a fresh cluster.
	snap := filepath.Join(t.TempDir(), "fed.snap")
	mustContain(t, "snapshot save output", ok(t, "snapshot", "save", snap, "--addr", addr), "saved snapshot", snap)
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
	out = ok(t, "snapshot", "restore", snap, "--addr", freshAddr)
	mustContain(t, "snapshot restore output", out, "restored snapshot", src.Head)
	got, err := freshLeader.Client.Audit(ctx(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Head != src.Head || got.Index != src.Index {
		t.Fatalf("after restore the fresh cluster's audit head is %s@%d, want %s@%d", got.Head, got.Index, src.Head, src.Index)
	}
	// Every server of the fresh cluster ends up with the restored state.
	for _, s := range fresh.Servers {
		waitAuditHead(t, s, src.Head)
	}
	var restored fsm.Tenant
	decodeJSON(t, "tenant get after restore", ok(t, "tenant", "get", "acme", "-o", "json", "--addr", freshAddr), &restored)
	if restored.ModifyIndex != acme.ModifyIndex || restored.Labels["plan"] != "gold" {
		t.Errorf("after restore tenant acme = %+v, want %+v", restored, acme)
	}
	fails(t, "tenant", "get", "globex", "--addr", freshAddr)
	mustContain(t, "restore of a file that is no snapshot",
		fails(t, "snapshot", "restore", filepath.Join(filepath.Dir(snap), "missing.snap"), "--addr", freshAddr), "missing.snap")
}

func waitAuditHead(t *testing.T, s *e2e.ServerProc, head string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		h, err := s.Health(context.Background())
		if err == nil && h.AuditHead == head {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: audit head is not %s after 20s (health %+v, err %v)", s.ID(), head, h, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

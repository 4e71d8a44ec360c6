package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/precheck"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// noInfra blanks every variable the precheck and the nodes read, so that
// the machine's environment cannot leak into a test.
var noInfra = []string{"GLOBAL_REGISTRY_URL=", "VAULT_ADDR=", "COSIGN_KEY_PATH=", "COSIGN_PASSWORD=",
	"POSTGRES_DSN=", "PGPASSWORD=", "SIMULATION_MODE=", "VAULT_TOKEN="}

func withEnv(extra ...string) []string { return append(append([]string{}, noInfra...), extra...) }

// standInVault answers /v1/sys/health as an unsealed, active Vault does.
func standInVault(t *testing.T) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/sys/health" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"initialized":true,"sealed":false,"standby":false,"version":"stand-in"}`)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// keygen makes a key pair with the CLI, as a user would.
func keygen(t *testing.T, password string) string {
	t.Helper()
	prefix := filepath.Join(t.TempDir(), "node")
	r := cli(t, []string{"COSIGN_PASSWORD=" + password}, "keygen", "--out", prefix)
	if r.code != 0 {
		t.Fatalf("atomfed keygen: exit %d: %s", r.code, r.stderr)
	}
	if fi, err := os.Stat(prefix + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key %s: %v %v, want mode 0600", prefix+".key", fi, err)
	}
	pub, err := os.ReadFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	v, err := signing.ParsePublicKey(pub)
	if err != nil {
		t.Fatalf("the public key does not parse: %v", err)
	}
	s, err := signing.LoadSigner(prefix+".key", []byte(password))
	if err != nil || s.KeyID != v.KeyID || !strings.Contains(r.stdout, v.KeyID) {
		t.Fatalf("the private key (%v) does not match the public key %s, or keygen did not print its id: %s", err, v.KeyID, r.stdout)
	}
	if r := cli(t, []string{"COSIGN_PASSWORD=" + password}, "keygen", "--out", prefix); r.code == 0 || !strings.Contains(r.stderr, "refusing to overwrite") {
		t.Errorf("a second keygen to the same prefix: exit %d %q, want a refusal", r.code, r.stderr)
	}
	return prefix + ".key"
}

// precheckRun is one `atomfed precheck` with its outputs.
type precheckRun struct {
	cliResult
	report precheck.Report
	json   string
	log    string
}

func runPrecheck(t *testing.T, env []string) precheckRun {
	t.Helper()
	out := t.TempDir()
	r := precheckRun{cliResult: cli(t, env, "precheck", "--out", out)}
	b, err := os.ReadFile(filepath.Join(out, precheck.ReportFile))
	if err != nil {
		t.Fatalf("precheck wrote no %s: %v\nstdout: %s\nstderr: %s", precheck.ReportFile, err, r.stdout, r.stderr)
	}
	r.json = string(b)
	decodeJSON(t, precheck.ReportFile, r.json, &r.report)
	l, err := os.ReadFile(filepath.Join(out, precheck.LogFile))
	if err != nil {
		t.Fatalf("precheck wrote no %s: %v", precheck.LogFile, err)
	}
	r.log = string(l)
	return r
}

func (r precheckRun) all() string { return r.stdout + r.stderr + r.json + r.log }

func (r precheckRun) expect(t *testing.T, what, decision string, code int, statuses ...string) {
	t.Helper()
	if r.report.Decision != decision || r.code != code || r.report.ExitCode != code {
		t.Errorf("%s: decision %s exit %d (recorded %d), want %s exit %d\nstdout: %s\nstderr: %s",
			what, r.report.Decision, r.code, r.report.ExitCode, decision, code, r.stdout, r.stderr)
	}
	for i, n := range precheck.AllChecks {
		if got := r.report.Checks[n]; got.Status != statuses[i] || got.Detail == "" {
			t.Errorf("%s: %s is %s (%s), want %s with a detail", what, n, got.Status, got.Detail, statuses[i])
		}
	}
	mustContain(t, what+": log", r.log, "decision="+decision)
}

// TestPrecheckCLI tries `atomfed precheck` as the issue does: no registry
// blocks; a live federation without vault, cosign and postgres proceeds in
// simulation with a warning; with a real PostgreSQL, a key from keygen and
// a stand-in Vault it proceeds; and a DSN's password appears in none of
// the outputs, whether the connection works or is refused.
func TestPrecheckCLI(t *testing.T) {
	const pw, wrongPW = "Ph4seG1-pg-pass-7f3a9c", "Wr0ng-pass-e81d44b2"
	closed := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))

	r := runPrecheck(t, withEnv("GLOBAL_REGISTRY_URL="+closed))
	r.expect(t, "no registry", precheck.Block, precheck.ExitBlock, "NO_REGISTRY", "MISSING", "MISSING", "MISSING")
	mustContain(t, "BLOCK stderr", r.stderr, "BLOCK")

	c := startCluster(t)
	leader := waitLeader(t, c)
	// The default registry URL is plain http: the API port answers
	// /health over plain HTTP too.
	registry := "GLOBAL_REGISTRY_URL=http://" + c.Others(leader)[0].Config.HTTPAddr
	r = runPrecheck(t, withEnv(registry))
	r.expect(t, "federation only", precheck.ProceedSimulation, 0, "UP", "MISSING", "MISSING", "MISSING")
	mustContain(t, "PROCEED_SIMULATION stderr", r.stderr, "WARNING: proceeding in SIMULATION_MODE: vault MISSING, cosign MISSING, postgres MISSING")

	pg := startPG(t, pw)
	key := keygen(t, "key-pass-93c1")
	vault := standInVault(t)
	full := withEnv(registry, "VAULT_ADDR="+vault, "COSIGN_KEY_PATH="+key, "COSIGN_PASSWORD=key-pass-93c1", "POSTGRES_DSN="+pg.DSN(pw))
	r = runPrecheck(t, full)
	r.expect(t, "everything present", precheck.Proceed, 0, "UP", "UP", "OK", "REACHABLE")
	if strings.Contains(r.stderr, "WARNING") {
		t.Errorf("PROCEED printed a warning: %s", r.stderr)
	}
	if strings.Contains(r.all(), pw) {
		t.Errorf("the DSN password appears in the outputs of a working precheck:\n%s", r.all())
	}
	mustContain(t, "postgres detail", r.report.Checks["postgres"].Detail, "connected to PostgreSQL")

	// The same with a keyword/value DSN.
	kv := fmt.Sprintf("host=127.0.0.1 port=%d user=atom password=%s dbname=postgres sslmode=disable", pg.Port, pw)
	r = runPrecheck(t, withEnv(registry, "VAULT_ADDR="+vault, "COSIGN_KEY_PATH="+key, "COSIGN_PASSWORD=key-pass-93c1", "POSTGRES_DSN="+kv))
	r.expect(t, "keyword DSN", precheck.Proceed, 0, "UP", "UP", "OK", "REACHABLE")
	if strings.Contains(r.all(), pw) {
		t.Errorf("the keyword DSN's password appears in the outputs:\n%s", r.all())
	}

	// A wrong password: PostgreSQL refuses, and neither password shows.
	r = runPrecheck(t, withEnv(registry, "VAULT_ADDR="+vault, "COSIGN_KEY_PATH="+key, "COSIGN_PASSWORD=key-pass-93c1", "POSTGRES_DSN="+pg.DSN(wrongPW)))
	r.expect(t, "wrong DSN password", precheck.ProceedSimulation, 0, "UP", "UP", "OK", "ERROR:auth_failed")
	for _, p := range []string{pw, wrongPW} {
		if strings.Contains(r.all(), p) {
			t.Errorf("a DSN password appears in the outputs of a refused connection:\n%s", r.all())
		}
	}
	mustContain(t, "auth failure detail", r.report.Checks["postgres"].Detail, "password authentication failed")
	mustContain(t, "postgres target", r.report.Checks["postgres"].Target, "atom:"+precheck.Mask+"@")

	// A key that does not decrypt.
	r = runPrecheck(t, withEnv(registry, "VAULT_ADDR="+vault, "COSIGN_KEY_PATH="+key, "COSIGN_PASSWORD=not-the-password", "POSTGRES_DSN="+pg.DSN(pw)))
	r.expect(t, "wrong key password", precheck.ProceedSimulation, 0, "UP", "UP", "ERROR:bad_key", "REACHABLE")
}

// nodeHealth reads a node's /health simulation fields.
func nodeHealth(t *testing.T, url string) (bool, *structs.Simulation) {
	t.Helper()
	var h struct {
		SimulationMode bool                `json:"simulation_mode"`
		Simulation     *structs.Simulation `json:"simulation"`
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		// /health is also served over plain HTTP on the API port.
		resp, err := http.Get(strings.Replace(url, "https://", "http://", 1) + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&h)
	})
	if h.Simulation == nil {
		t.Fatalf("%s/health has no simulation field", url)
	}
	return h.SimulationMode, h.Simulation
}

// TestSimulationModeOnNodes starts real servers and agents: without their
// critical infrastructure they run in simulation mode and say which parts
// are simulated (log, /health, /global-status); an agent with a region
// database, a key and Vault does not; SIMULATION_MODE=false with something
// missing refuses to start and names it.
func TestSimulationModeOnNodes(t *testing.T) {
	logs, data := procs.LogDir(t), t.TempDir()
	port := func() (int, error) { return testutil.FreePort(t), nil }
	sec, err := procs.NewSecurity(data)
	if err != nil {
		t.Fatal(err)
	}
	secure := &http.Client{Transport: &http.Transport{TLSClientConfig: sec.TLSConfig()}}
	newServer := func(node string, env ...string) *procs.ServerProc {
		cfg := procs.ServerConfig{Node: node, Region: "us-east", DataDir: filepath.Join(data, node),
			HTTPAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), RaftAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
			SerfAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), BootstrapExpect: 1}
		s, err := procs.NewServerProc(atomfedBin, logs, cfg, sec)
		if err != nil {
			t.Fatal(err)
		}
		s.Env = append(sec.Env(), withEnv(env...)...)
		t.Cleanup(s.Close)
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	newAgent := func(node string, env ...string) *procs.AgentProc {
		a, err := procs.NewAgentProc(atomfedBin, logs, data, node, "us-east", port, []string{fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}, sec)
		if err != nil {
			t.Fatal(err)
		}
		a.Env = append(a.Env, withEnv(env...)...) // a.Env holds its own agent token
		t.Cleanup(a.Close)
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		return a
	}
	refused := func(p *procs.Proc, names ...string) {
		t.Helper()
		code, err := p.Wait(30 * time.Second)
		if err != nil || code == 0 {
			t.Fatalf("%s with SIMULATION_MODE=false and missing infrastructure: exit %d, %v\n%s", p.Name, code, err, p.LogTail(10))
		}
		log := p.LogTail(20)
		mustContain(t, p.Name+"'s refusal", log, append([]string{"refusing to start", "SIMULATION_MODE=false"}, names...)...)
	}

	refused(newServer("strict-server", "SIMULATION_MODE=false").Proc, "vault (MISSING: VAULT_ADDR is not set)", "cosign (MISSING: COSIGN_KEY_PATH is not set)")
	refused(newAgent("strict-agent", "SIMULATION_MODE=false").Proc, "postgres (MISSING: POSTGRES_DSN is not set)")

	s := newServer("sim-server")
	on, sim := nodeHealth(t, s.URL)
	if !on || !sim.Simulates("secrets") || !sim.Simulates("signing") || sim.Role != "server" {
		t.Errorf("server without vault and key: simulation_mode %v %+v", on, sim)
	}
	var gs struct {
		SimulationMode bool                `json:"simulation_mode"`
		Simulation     *structs.Simulation `json:"simulation"`
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/global-status?consistency=stale", nil)
		req.Header.Set("Authorization", "Bearer "+procs.Token)
		resp, err := secure.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&gs)
	})
	if !gs.SimulationMode || !gs.Simulation.Simulates("signing") {
		t.Errorf("/global-status: %+v", gs)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if !s.LogContains("*** SIMULATION MODE ***") || !s.LogContains("*** SIMULATED *** signing") {
			return fmt.Errorf("the server's log does not announce the simulation:\n%s", s.LogTail(10))
		}
		return nil
	})

	a := newAgent("sim-agent")
	on, sim = nodeHealth(t, a.URL)
	if !on || !sim.Simulates("replication") || !sim.Simulates("tenant_rls") || !sim.Simulates("backups") {
		t.Errorf("agent without a region database: simulation_mode %v %+v", on, sim)
	}

	pg := startPG(t, "agent-db-pass-51d0")
	key := keygen(t, "agent-key-pass")
	vault := standInVault(t)
	full := newAgent("prod-agent", "POSTGRES_DSN="+pg.DSN("agent-db-pass-51d0"), "COSIGN_KEY_PATH="+key, "COSIGN_PASSWORD=agent-key-pass", "VAULT_ADDR="+vault)
	on, sim = nodeHealth(t, full.URL)
	// Out of simulation mode, the agent still lists the one part this
	// build never runs for real: secrets from Vault.
	if on || sim.Enabled || len(sim.Simulated) != 1 || sim.Simulated[0].Part != "secrets" || sim.Simulated[0].Because != "not built" ||
		sim.Checks["postgres"].Status != "REACHABLE" {
		t.Errorf("agent with everything present: simulation_mode %v %+v", on, sim)
	}
	if b, _ := os.ReadFile(full.LogPath); strings.Contains(string(b), "agent-db-pass-51d0") {
		t.Error("the agent's log shows its database password")
	}
	for _, path := range []string{"/health", "/global-status"} {
		// Anonymous: no database at all; with the agent's own token: the
		// masked DSN, never the password.
		for _, token := range []string{"", full.Token} {
			req, _ := http.NewRequest(http.MethodGet, full.URL+path, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := secure.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case strings.Contains(string(b), "agent-db-pass-51d0"):
				t.Errorf("the agent's %s shows its database password:\n%s", path, b)
			case token == "" && (strings.Contains(string(b), precheck.Mask) || strings.Contains(string(b), fmt.Sprintf(":%d", pg.Port))):
				t.Errorf("the agent's anonymous %s shows its database:\n%s", path, b)
			case token != "" && !strings.Contains(string(b), precheck.Mask):
				t.Errorf("the agent's %s with its token shows no masked DSN:\n%s", path, b)
			}
		}
	}
	forced := newAgent("forced-agent", "SIMULATION_MODE=true", "POSTGRES_DSN="+pg.DSN("agent-db-pass-51d0"), "COSIGN_KEY_PATH="+key, "COSIGN_PASSWORD=agent-key-pass", "VAULT_ADDR="+vault)
	on, sim = nodeHealth(t, forced.URL)
	if !on || !sim.Simulates("replication") || !strings.Contains(sim.Reason, "SIMULATION_MODE=true") {
		t.Errorf("agent with SIMULATION_MODE=true: %v %+v", on, sim)
	}
}

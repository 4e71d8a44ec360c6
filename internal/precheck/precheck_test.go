package precheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// standIn serves /health like an atomfed server and /v1/sys/health like
// Vault, answering vaultCode.
func standIn(t *testing.T, vaultCode int) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(structs.Health{Status: "ok", Node: "s1", Region: "us-east", RaftState: "Leader", Leader: "s1", Index: 7})
	})
	mux.HandleFunc("/v1/sys/health", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(vaultCode)
		fmt.Fprint(w, `{"initialized":true,"sealed":false}`)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func writeKey(t *testing.T, password string) string {
	kp, err := signing.GenerateKeyPair([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "node.key")
	if err := os.WriteFile(p, kp.PrivatePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRegistryCheck(t *testing.T) {
	up := standIn(t, 200)
	got := Run(ctx(t), Config{RegistryURL: up.URL}, Registry)[Registry]
	if got.Status != StatusUp || !strings.Contains(got.Detail, "node s1") {
		t.Errorf("registry answering /health: %+v, want UP naming the node", got)
	}
	got = Run(ctx(t), Config{RegistryURL: "http://" + closedPort(t)}, Registry)[Registry]
	if got.Status != StatusNoRegistry || !strings.Contains(got.Detail, "refused") {
		t.Errorf("nothing listening: %+v, want NO_REGISTRY saying the connection was refused", got)
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	t.Cleanup(bad.Close)
	got = Run(ctx(t), Config{RegistryURL: bad.URL}, Registry)[Registry]
	if got.Status != StatusNoRegistry || !strings.Contains(got.Detail, "HTTP 500") {
		t.Errorf("registry answering 500: %+v, want NO_REGISTRY", got)
	}
}

func TestVaultCheck(t *testing.T) {
	cases := []struct {
		name, addr, want string
	}{
		{"unset", "", StatusMissing},
		{"active", standIn(t, 200).URL, StatusUp},
		{"standby", standIn(t, 429).URL, StatusUp},
		{"sealed", standIn(t, 503).URL, "ERROR:sealed"},
		{"not initialized", standIn(t, 501).URL, "ERROR:not_initialized"},
		{"not vault", standIn(t, 404).URL, "ERROR:http_404"},
		{"nothing listening", "http://" + closedPort(t), "ERROR:unreachable"},
		{"not a URL", "vault.internal:8200", "ERROR:invalid_url"},
	}
	for _, c := range cases {
		got := Run(ctx(t), Config{VaultAddr: c.addr}, Vault)[Vault]
		if got.Status != c.want || got.Detail == "" {
			t.Errorf("%s: %+v, want status %s with a detail", c.name, got, c.want)
		}
	}
}

func TestVaultCheckTimesOut(t *testing.T) {
	// A listener that accepts but never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	start := time.Now()
	got := Run(ctx(t), Config{VaultAddr: "http://" + ln.Addr().String(), Timeout: 300 * time.Millisecond}, Vault)[Vault]
	if got.Status != "ERROR:timeout" {
		t.Errorf("silent vault: %+v, want ERROR:timeout", got)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the check took %s with a 300ms timeout", d)
	}
}

func TestCosignCheck(t *testing.T) {
	key := writeKey(t, "correct horse")
	cases := []struct {
		name, path, password, want string
	}{
		{"unset", "", "", StatusMissing},
		{"loads", key, "correct horse", StatusOK},
		{"wrong password", key, "battery staple", "ERROR:bad_key"},
		{"no such file", filepath.Join(t.TempDir(), "none.key"), "", "ERROR:not_found"},
	}
	for _, c := range cases {
		got := Run(ctx(t), Config{CosignKeyPath: c.path, CosignPassword: []byte(c.password)}, Cosign)[Cosign]
		if got.Status != c.want {
			t.Errorf("%s: %+v, want %s", c.name, got, c.want)
		}
		if c.password != "" && strings.Contains(got.Detail, c.password) {
			t.Errorf("%s: the detail shows the password: %s", c.name, got.Detail)
		}
	}
	notKey := filepath.Join(t.TempDir(), "garbage.key")
	os.WriteFile(notKey, []byte("not a key"), 0o600)
	if got := Run(ctx(t), Config{CosignKeyPath: notKey}, Cosign)[Cosign]; got.Status != "ERROR:bad_key" {
		t.Errorf("a file that is not a key: %+v, want ERROR:bad_key", got)
	}
}

func TestPostgresCheckFailuresHideThePassword(t *testing.T) {
	const pw = "s3cr3t-Pa55"
	addr := closedPort(t)
	host, port, _ := net.SplitHostPort(addr)
	cases := []struct {
		name, dsn, want string
	}{
		{"unset", "", StatusMissing},
		{"url, nothing listening", "postgres://atom:" + pw + "@" + addr + "/atom", "ERROR:unreachable"},
		{"keyword, nothing listening", "host=" + host + " port=" + port + " user=atom password=" + pw + " dbname=atom", "ERROR:unreachable"},
		{"quoted keyword", "host=" + host + " port=" + port + " user=atom password='" + pw + "' dbname=atom", "ERROR:unreachable"},
		{"password in the query", "postgres://atom@" + addr + "/atom?password=" + pw, "ERROR:unreachable"},
		{"broken url", "postgres://atom:" + pw + "@" + host + ":notaport/atom", "ERROR:invalid_dsn"},
		{"unknown keyword", "host=" + host + " password=" + pw + " bogus_setting", "ERROR:invalid_dsn"},
	}
	for _, c := range cases {
		got := Run(ctx(t), Config{PostgresDSN: c.dsn}, Postgres)[Postgres]
		if got.Status != c.want {
			t.Errorf("%s: %+v, want %s", c.name, got, c.want)
		}
		b, _ := json.Marshal(got)
		if strings.Contains(string(b), pw) {
			t.Errorf("%s: the password appears in the result: %s", c.name, b)
		}
		if c.dsn != "" && !strings.Contains(got.Target, Mask) {
			t.Errorf("%s: target %q does not show the masked password", c.name, got.Target)
		}
	}
}

func TestRedactor(t *testing.T) {
	cases := []struct{ dsn, pw string }{
		{"postgres://u:p%40ss%2Fword@h:5432/db", "p@ss/word"},
		{"postgresql://u:plain@h/db?sslmode=disable", "plain"},
		{"postgres://u@h/db?sslpassword=kp&password=qp", "qp"},
		{"host=h password='it''s \\'quoted\\'' user=u", `it`},
		{"host=h password=a&b user=u", "a&b"},
	}
	for _, c := range cases {
		r := NewRedactor(Config{PostgresDSN: c.dsn})
		out := r.Redact("connect " + c.dsn + " failed")
		if strings.Contains(out, c.pw) {
			t.Errorf("Redact(%q) = %q still shows %q", c.dsn, out, c.pw)
		}
		if !strings.Contains(out, Mask) {
			t.Errorf("Redact(%q) = %q shows no mask", c.dsn, out)
		}
	}
	// Unknown secrets in DSN shapes are masked too.
	r := NewRedactor(Config{})
	for _, s := range []string{"password=zzz host=h", "postgres://u:zzz@h/db", "https://u:zzz@vault:8200"} {
		if out := r.Redact(s); strings.Contains(out, "zzz") {
			t.Errorf("Redact(%q) = %q", s, out)
		}
	}
	// Secrets named by the caller.
	r = NewRedactor(Config{Secrets: []string{"pgpass-from-env"}})
	if out := r.Redact("error: pgpass-from-env rejected"); strings.Contains(out, "pgpass-from-env") {
		t.Errorf("an extra secret survives: %q", out)
	}
}

func TestDecideFollowsTheSeedRules(t *testing.T) {
	all := func(reg, vault, cosign, pg string) Checks {
		return Checks{Registry: {Status: reg}, Vault: {Status: vault}, Cosign: {Status: cosign}, Postgres: {Status: pg}}
	}
	cases := []struct {
		name   string
		checks Checks
		want   string
	}{
		{"everything present", all(StatusUp, StatusUp, StatusOK, StatusReachable), Proceed},
		{"vault missing", all(StatusUp, StatusMissing, StatusOK, StatusReachable), ProceedSimulation},
		{"postgres in error", all(StatusUp, StatusUp, StatusOK, "ERROR:auth_failed"), ProceedSimulation},
		{"only the registry", all(StatusUp, StatusMissing, StatusMissing, StatusMissing), ProceedSimulation},
		{"no registry, rest present", all(StatusNoRegistry, StatusUp, StatusOK, StatusReachable), Block},
		{"nothing at all", all(StatusNoRegistry, StatusMissing, StatusMissing, StatusMissing), Block},
	}
	for _, c := range cases {
		got, reasons := Decide(c.checks)
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
		if (got == Proceed) != (len(reasons) == 0) {
			t.Errorf("%s: reasons %v for %s", c.name, reasons, got)
		}
	}
}

func TestPrecheckWritesItsFiles(t *testing.T) {
	up := standIn(t, 200)
	const pw = "hunter2-long"
	dsn := "postgres://atom:" + pw + "@" + closedPort(t) + "/atom"
	r := Precheck(ctx(t), Config{RegistryURL: up.URL, VaultAddr: up.URL, PostgresDSN: dsn}, "test")
	if r.Decision != ProceedSimulation || r.ExitCode != 0 || !r.SimulationMode {
		t.Fatalf("registry and vault up, cosign missing, postgres refused: %s exit %d", r.Decision, r.ExitCode)
	}
	if w := r.Warning(); !strings.Contains(w, "cosign MISSING") || !strings.Contains(w, "postgres ERROR:unreachable") {
		t.Errorf("warning %q does not name what is missing", w)
	}
	dir := t.TempDir()
	jp, lp, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	jb, _ := os.ReadFile(jp)
	lb, _ := os.ReadFile(lp)
	var back Report
	if err := json.Unmarshal(jb, &back); err != nil {
		t.Fatal(err)
	}
	if back.Decision != ProceedSimulation || back.Checks[Vault].Status != StatusUp || back.Checks[Postgres].Detail == "" {
		t.Errorf("the JSON file does not carry the result: %s", jb)
	}
	for _, want := range []string{"check=registry status=UP", "check=cosign status=MISSING", "decision=PROCEED_SIMULATION", "WARNING"} {
		if !strings.Contains(string(lb), want) {
			t.Errorf("the log lacks %q:\n%s", want, lb)
		}
	}
	for name, b := range map[string][]byte{"json": jb, "log": lb} {
		if strings.Contains(string(b), pw) {
			t.Errorf("the %s file shows the DSN password", name)
		}
	}

	blocked := Precheck(ctx(t), Config{RegistryURL: "http://" + closedPort(t)}, "test")
	if blocked.Decision != Block || blocked.ExitCode != ExitBlock {
		t.Errorf("no registry: %s exit %d, want BLOCK exit %d", blocked.Decision, blocked.ExitCode, ExitBlock)
	}
}

func TestEvaluateSimulationPerRole(t *testing.T) {
	up := standIn(t, 200)
	key := writeKey(t, "pw")

	sim, err := Evaluate(ctx(t), Config{}, RoleServer, "")
	if err != nil {
		t.Fatal(err)
	}
	if !sim.Enabled || !sim.Simulates("secrets") || !sim.Simulates("signing") || sim.Simulates("replication") {
		t.Errorf("server with nothing: %+v, want simulation of secrets and signing only", sim)
	}
	if _, ok := sim.Checks[Registry]; ok {
		t.Error("a server checked the registry: it is the registry")
	}

	sim, err = Evaluate(ctx(t), Config{VaultAddr: up.URL, CosignKeyPath: key, CosignPassword: []byte("pw")}, RoleServer, "")
	if err != nil || sim.Enabled || len(sim.Simulated) != 1 || !sim.Simulates("secrets") || !strings.Contains(sim.Simulated[0].Because, "no Vault client") {
		t.Errorf("server with vault and key: %+v, %v, want no simulation mode, and secrets listed as not built", sim, err)
	}

	sim, err = Evaluate(ctx(t), Config{VaultAddr: up.URL, CosignKeyPath: key, CosignPassword: []byte("pw")}, RoleAgent, "")
	if err != nil || !sim.Enabled || !sim.Simulates("replication") || !sim.Simulates("backups") || sim.Simulates("signing") {
		t.Errorf("agent without a database: %+v, %v, want replication and backups simulated", sim, err)
	}
	for _, p := range sim.Simulated {
		if p.Part != "secrets" && !strings.HasPrefix(p.Because, "postgres MISSING") {
			t.Errorf("part %s simulated because %q", p.Part, p.Because)
		}
	}

	sim, err = Evaluate(ctx(t), Config{VaultAddr: up.URL, CosignKeyPath: key, CosignPassword: []byte("pw")}, RoleServer, "true")
	if err != nil || !sim.Enabled || sim.Simulates("signing") {
		t.Errorf("SIMULATION_MODE=true with everything present: %+v, %v, want simulation mode, with the provisioned key still signing", sim, err)
	}

	_, err = Evaluate(ctx(t), Config{CosignKeyPath: key, CosignPassword: []byte("pw")}, RoleServer, "false")
	if !errors.Is(err, ErrMissingInfrastructure) || !strings.Contains(err.Error(), "vault (MISSING") || strings.Contains(err.Error(), "cosign") {
		t.Errorf("SIMULATION_MODE=false without vault: %v, want a refusal naming vault only", err)
	}
	_, err = Evaluate(ctx(t), Config{}, RoleAgent, "false")
	if !errors.Is(err, ErrMissingInfrastructure) || !strings.Contains(err.Error(), "postgres (MISSING: POSTGRES_DSN is not set)") {
		t.Errorf("agent with SIMULATION_MODE=false and no database: %v", err)
	}
	if _, err := Evaluate(ctx(t), Config{}, RoleServer, "maybe"); err == nil || !strings.Contains(err.Error(), "SIMULATION_MODE") {
		t.Errorf("SIMULATION_MODE=maybe: %v, want an error naming the variable", err)
	}
}

// recordURL is a transport that records the URL asked for and fails.
type recordURL struct{ got *string }

func (r recordURL) RoundTrip(req *http.Request) (*http.Response, error) {
	*r.got = req.URL.String()
	return nil, errors.New("not sent")
}

func TestRegistryDefaultsToLocalhost8401(t *testing.T) {
	var got string
	c := Run(ctx(t), Config{Transport: recordURL{&got}}, Registry)[Registry]
	if got != "http://localhost:8401/health" || c.Status != StatusNoRegistry {
		t.Errorf("with GLOBAL_REGISTRY_URL unset the registry check asked %q (%s), want http://localhost:8401/health", got, c.Status)
	}
}

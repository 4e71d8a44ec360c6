package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/precheck"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestAnonymousSurfacesShowNoDetail: a server whose simulation checks
// failed against real targets (a Vault address, a signing key path) shows
// on /health, without a token or with an unknown one, which checks failed
// and nothing of what they checked; with a token of any role it shows
// everything. /metrics, a 401, a 404 and a 405 without a token name no
// tenant, target or path either.
func TestAnonymousSurfacesShowNoDetail(t *testing.T) {
	const vault, keyPath = "http://127.0.0.1:1/vault-e2e-target", "/nonexistent/atomfed-anon-test/cosign.key"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sim, err := precheck.Evaluate(ctx, precheck.Config{VaultAddr: vault, CosignKeyPath: keyPath, Timeout: time.Second}, precheck.RoleServer, "")
	if err != nil {
		t.Fatal(err)
	}
	if !sim.Enabled || !strings.Contains(sim.Reason, "127.0.0.1:1") || !strings.Contains(sim.Reason, keyPath) {
		t.Fatalf("the fixture's evaluation does not name its targets (the test would prove nothing): %+v", sim)
	}
	c := testcluster.New(t, testcluster.Options{Servers: 1, Simulation: sim})
	l := c.WaitLeader()
	c.RegisterRegion(&fsm.Region{Name: "home", URL: "https://home.example:8443", Tier: fsm.TierStaging})
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme-hidden", tenantJSON("acme-hidden", "home"), http.StatusCreated)
	reader, err := l.Client.CreateToken(testcluster.Ctx(t, 10*time.Second), fsm.RoleReader, "anonymous test")
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"127.0.0.1:1", "vault-e2e-target", "atomfed-anon-test", "acme-hidden"}
	anon := http.Header{"Authorization": {""}}
	for _, req := range []struct {
		method, path string
		hdr          http.Header
		status       int
	}{
		{http.MethodGet, "/health", anon, http.StatusOK},
		{http.MethodGet, "/health", http.Header{"Authorization": {"Bearer atf_not_a_token"}}, http.StatusOK},
		{http.MethodGet, "/metrics", anon, http.StatusOK},
		{http.MethodGet, "/global-status", anon, http.StatusUnauthorized},
		{http.MethodGet, "/v1/tenants/acme-hidden", anon, http.StatusUnauthorized},
		{http.MethodGet, "/no/such/path", anon, http.StatusNotFound},
		{http.MethodDelete, "/health", anon, http.StatusMethodNotAllowed},
	} {
		r := l.Do(t, req.method, req.path, nil, req.hdr)
		if r.Status != req.status {
			t.Errorf("%s %s: %d %s, want %d", req.method, req.path, r.Status, r.Body, req.status)
		}
		for _, s := range secrets {
			if strings.Contains(string(r.Body), s) {
				t.Errorf("%s %s without a valid token shows %q:\n%s", req.method, req.path, s, r.Body)
			}
		}
	}
	// The anonymous view still says that the node runs simulated and why,
	// by check name and status.
	if b := string(l.Do(t, http.MethodGet, "/health", nil, anon).Body); !strings.Contains(b, `"simulation_mode":true`) || !strings.Contains(b, "vault") {
		t.Errorf("anonymous /health lost the simulation summary:\n%s", b)
	}
	for name, token := range map[string]string{"the bootstrap token": testcluster.Token, "a reader token": reader.Secret} {
		b := string(l.Do(t, http.MethodGet, "/health", nil, http.Header{"Authorization": {"Bearer " + token}}).Body)
		if !strings.Contains(b, "127.0.0.1:1") || !strings.Contains(b, keyPath) {
			t.Errorf("/health with %s hides the checks' targets:\n%s", name, b)
		}
	}
}

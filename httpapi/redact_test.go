package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type fakeAgent struct{}

func (fakeAgent) AgentStatus() any {
	return map[string]any{"tasks": []string{"tenant-pub/acme/us-east"}}
}
func (fakeAgent) AgentSummary() any { return map[string]any{"task_count": 1} }

// TestAgentEndpointsWithoutItsTokenShowNoDetail: an agent's /health,
// /global-status and /metrics show no task, tenant or table without the
// agent's own token (another token is no better), and everything with it.
func TestAgentEndpointsWithoutItsTokenShowNoDetail(t *testing.T) {
	reg := prometheus.NewRegistry()
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lag", Help: "h"}, []string{"tenant", "mirror"})
	issues := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "issues", Help: "h"}, []string{"kind", "code"})
	reg.MustRegister(lag, issues)
	lag.WithLabelValues("acme", "eu-west").Set(1)
	issues.WithLabelValues("tenant", "table_not_found").Set(1)
	h := NewAgentHandler(fakeAgent{}, reg, "agent-secret", nil)
	get := func(path, token string) string {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		b, _ := io.ReadAll(rec.Body)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, b)
		}
		return string(b)
	}
	for _, path := range []string{"/health", "/global-status", "/metrics"} {
		for _, token := range []string{"", "another-token"} {
			if b := get(path, token); strings.Contains(b, "acme") {
				t.Errorf("GET %s with token %q shows the tenant:\n%s", path, token, b)
			}
		}
		if b := get(path, "agent-secret"); !strings.Contains(b, "acme") {
			t.Errorf("GET %s with the agent's token hides the tenant:\n%s", path, b)
		}
	}
	if b := get("/metrics", ""); !strings.Contains(b, `issues{code="table_not_found",kind="tenant"} 1`) {
		t.Errorf("anonymous /metrics lost the aggregate series:\n%s", b)
	}
}

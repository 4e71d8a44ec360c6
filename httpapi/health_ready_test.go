package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestHealthReadyFollowsTheLeader: /health?ready, the chart's readiness
// probe, is 200 on a server that knows a leader and 503 (same body,
// status no_leader) on one that does not, while plain /health stays 200
// on both (the liveness probe must not restart a server waiting to be
// added back).
func TestHealthReadyFollowsTheLeader(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Servers: 1})
	l := c.WaitLeader()
	alone := c.AddServer(func(cfg *cluster.Config) { cfg.Join = nil })
	for _, tc := range []struct {
		name   string
		n      *testcluster.Node
		path   string
		status int
		health string
	}{
		{"leader, ready", l, "/health?ready", http.StatusOK, "ok"},
		{"leader, live", l, "/health", http.StatusOK, "ok"},
		{"alone, ready", alone, "/health?ready", http.StatusServiceUnavailable, "no_leader"},
		{"alone, live", alone, "/health", http.StatusOK, "no_leader"},
	} {
		r := tc.n.Do(t, http.MethodGet, tc.path, nil, http.Header{"Authorization": {""}})
		var h structs.Health
		if err := json.Unmarshal(r.Body, &h); err != nil {
			t.Fatalf("%s: %v: %s", tc.name, err, r.Body)
		}
		if r.Status != tc.status || h.Status != tc.health {
			t.Errorf("%s: GET %s = %d %q, want %d %q", tc.name, tc.path, r.Status, h.Status, tc.status, tc.health)
		}
	}
}

package httpapi_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// scrape reads n's /metrics into series (name plus labels, as exposed) ->
// value.
func scrape(t *testing.T, n *testcluster.Node) map[string]float64 {
	t.Helper()
	r := n.Do(t, http.MethodGet, "/metrics", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics on %s: %d %s", n.ID, r.Status, r.Body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("%s: unparsable metrics line %q", n.ID, line)
		}
		out[line[:i]] = v
	}
	return out
}

func hasPrefix(series map[string]float64, prefix string) bool {
	for k := range series {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// TestMetricsPerNode checks that every node serves the raft, fsm, http and
// serf series from its own registry: the values are each node's own.
func TestMetricsPerNode(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	mustWrite(t, l, http.MethodPut, "/v1/regions/home", regionJSON("home"), http.StatusCreated)
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", tenantJSON("acme", "home"), http.StatusCreated)

	// Node i answers i+1 health checks, so each counter is different.
	nodes := c.Running()
	for i, n := range nodes {
		for j := 0; j <= i; j++ {
			n.Do(t, http.MethodGet, "/health", nil, nil)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		leaders := 0
		for i, n := range nodes {
			s := scrape(t, n)
			for _, p := range []string{"atomfed_raft_", "atomfed_fsm_", "atomfed_http_", "atomfed_serf_"} {
				if !hasPrefix(s, p) {
					return fmt.Errorf("%s serves no %s* series", n.ID, p)
				}
			}
			for _, name := range []string{"atomfed_raft_is_leader", "atomfed_fsm_index", `atomfed_serf_members{status="alive"}`,
				`atomfed_fsm_apply_total{result="ok",type="tenant_upsert"}`} {
				if _, ok := s[name]; !ok {
					return fmt.Errorf("%s does not serve %s", n.ID, name)
				}
			}
			if got := s[`atomfed_http_requests_total{code="200",method="GET",route="/health"}`]; got != float64(i+1) {
				return fmt.Errorf("%s counts %v health checks, it answered %d: registries are shared", n.ID, got, i+1)
			}
			if s[`atomfed_serf_members{status="alive"}`] != 3 {
				return fmt.Errorf("%s sees %v alive serf members", n.ID, s[`atomfed_serf_members{status="alive"}`])
			}
			isLeader := s["atomfed_raft_is_leader"] == 1
			if isLeader {
				leaders++
			}
			if isLeader != n.Server.IsLeader() || (s[`atomfed_raft_state{state="Leader"}`] == 1) != isLeader {
				return fmt.Errorf("%s: is_leader %v, raft_state Leader %v, server IsLeader %v", n.ID,
					s["atomfed_raft_is_leader"], s[`atomfed_raft_state{state="Leader"}`], n.Server.IsLeader())
			}
		}
		if leaders != 1 {
			return fmt.Errorf("atomfed_raft_is_leader is 1 on %d nodes, want exactly 1", leaders)
		}
		return nil
	})
}

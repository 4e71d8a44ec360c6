package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestReplicationEndpoints checks the replication endpoints' contract
// without any agent: global tables, the tenant replication view and the
// /global-status section, and their refusals.
func TestReplicationEndpoints(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("us-east"), http.StatusCreated)
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("eu-west"), http.StatusCreated)

	// Through a follower: the leader's answer crosses the forwarding RPC.
	if r := mustWrite(t, f, http.MethodPut, "/v1/global-tables/public.currencies", `{"writer_region":"us-east"}`, http.StatusCreated); !strings.Contains(string(r.Body), `"writer_region":"us-east"`) {
		t.Fatalf("global table written through a follower: %s", r.Body)
	}
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", `{"home_region":"us-east","mirrors":["eu-west"],"tables":[{"name":"orders","pii_columns":["email"]}],"sync_mode":"sync","sync_degrade_after_ms":5000}`, http.StatusCreated)
	c.Settle()

	var g wire.GlobalTableStatus
	do(t, l, http.MethodGet, "/v1/global-tables/public.currencies", nil, nil).JSON(t, &g)
	if g.GlobalTable == nil || g.WriterRegion != "us-east" || g.Sync.Status != fsm.ReplStatusPending || len(g.Sync.Regions) != 1 {
		t.Fatalf("global table: %s", do(t, l, http.MethodGet, "/v1/global-tables/public.currencies", nil, nil).Body)
	}
	var v fsm.TenantReplication
	do(t, f, http.MethodGet, "/v1/tenants/acme/replication", nil, nil).JSON(t, &v)
	if v.Status != fsm.ReplStatusPending || v.SyncMode != fsm.SyncModeSync || v.Sync == nil || v.Sync.DegradeAfterMS != 5000 ||
		v.Publisher == nil || len(v.Publisher.Issues) == 0 || v.Publisher.Issues[0].Code != "no_agent" || len(v.Mirrors) != 1 {
		t.Fatalf("without agents the replication view must say nothing runs it: %+v", v)
	}
	var gs wire.GlobalStatus
	do(t, l, http.MethodGet, "/global-status", nil, nil).JSON(t, &gs)
	if gs.Replication == nil || len(gs.Replication.GlobalTables) != 1 || len(gs.Replication.Tenants) != 1 || gs.Replication.Drift == nil {
		t.Fatalf("/global-status replication: %+v", gs.Replication)
	}

	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"unsigned database report", http.MethodPut, "/v1/regions/us-east/database", `{"endpoint":{"host":"h","port":1,"database":"a"},"node":"us-east-a1"}`, 403, "unsigned"},
		{"endpoint that would inject into a connection string", http.MethodPut, "/v1/regions/us-east/database", `{"endpoint":{"host":"h sslmode=disable","port":5432,"database":"a"},"node":"n"}`, 400, "invalid_endpoint"},
		{"endpoint without a port", http.MethodPut, "/v1/regions/us-east/database", `{"endpoint":{"host":"h","database":"a"},"node":"n"}`, 400, "invalid_endpoint"},
		{"endpoint with a password field", http.MethodPut, "/v1/regions/us-east/database", `{"endpoint":{"host":"h","port":1,"database":"a","password":"x"},"node":"n"}`, 400, "unknown_field"},
		{"global table of an unknown writer", http.MethodPut, "/v1/global-tables/fx", `{"writer_region":"mars"}`, 400, "unknown_region"},
		{"global table with a bad name", http.MethodPut, "/v1/global-tables/Bad;Name", `{"writer_region":"us-east"}`, 400, "invalid_table_name"},
		{"global table body/path mismatch", http.MethodPut, "/v1/global-tables/fx", `{"name":"fy","writer_region":"us-east"}`, 400, "name_mismatch"},
		{"delete a writer region", http.MethodDelete, "/v1/regions/us-east", nil, 409, "region_in_use"},
		{"sync tenant without mirrors", http.MethodPut, "/v1/tenants/s", `{"home_region":"us-east","sync_mode":"sync"}`, 400, "invalid_sync_mode"},
		{"degrade bound in async mode", http.MethodPut, "/v1/tenants/s", `{"home_region":"us-east","mirrors":["eu-west"],"sync_degrade_after_ms":5000}`, 400, "invalid_sync_fallback"},
		{"replication of an unknown tenant", http.MethodGet, "/v1/tenants/nobody/replication", nil, 404, "tenant_not_found"},
		{"unknown global table", http.MethodGet, "/v1/global-tables/nope", nil, 404, "global_table_not_found"},
		{"database of a region without one", http.MethodGet, "/v1/regions/eu-west/database", nil, 404, "database_not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := stateOf(t, l, "")
			wantError(t, do(t, f, tc.method, tc.path, sendable(tc.body), nil), tc.status, tc.code)
			if after := stateOf(t, l, ""); !after.equal(before) {
				t.Fatal("a refused request changed the state")
			}
		})
	}
	// Roles: readers read the replication state; global tables are an
	// operator's to write; a region database is an agent's to report.
	ctx := testcluster.Ctx(t, time.Minute)
	tokens := map[string]string{}
	for _, role := range []string{fsm.RoleReader, fsm.RoleAgent, fsm.RoleApprover} {
		tok, err := l.Client.CreateToken(ctx, role, "replication roles test")
		if role == fsm.RoleAgent {
			tok, err = l.Client.CreateAgentToken(ctx, "us-east-a1", "us-east", "replication roles test")
		}
		if err != nil {
			t.Fatal(err)
		}
		tokens[role] = tok.Secret
	}
	c.Settle()
	bearer := func(role string) http.Header { return http.Header{"Authorization": {"Bearer " + tokens[role]}} }
	for _, path := range []string{"/v1/tenants/acme/replication", "/v1/global-tables", "/v1/global-tables/public.currencies", "/v1/replication", "/v1/regions/eu-west"} {
		if r := do(t, f, http.MethodGet, path, nil, bearer(fsm.RoleReader)); r.Status != http.StatusOK {
			t.Fatalf("a reader may read %s: %d %s", path, r.Status, r.Body)
		}
	}
	for _, tc := range []struct {
		name, role, method, path string
		body                     any
	}{
		{"reader writes a global table", fsm.RoleReader, http.MethodPut, "/v1/global-tables/fx", `{"writer_region":"us-east"}`},
		{"agent writes a global table", fsm.RoleAgent, http.MethodPut, "/v1/global-tables/fx", `{"writer_region":"us-east"}`},
		{"agent deletes a global table", fsm.RoleAgent, http.MethodDelete, "/v1/global-tables/public.currencies", nil},
		{"reader reports a database", fsm.RoleReader, http.MethodPut, "/v1/regions/us-east/database", `{"endpoint":{"host":"h","port":1,"database":"a"},"node":"n"}`},
		{"approver reports a database", fsm.RoleApprover, http.MethodPut, "/v1/regions/us-east/database", `{"endpoint":{"host":"h","port":1,"database":"a"},"node":"n"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stateOf(t, l, "")
			wantError(t, do(t, f, tc.method, tc.path, sendable(tc.body), bearer(tc.role)), 403, "forbidden_role")
			if after := stateOf(t, l, ""); !after.equal(before) {
				t.Fatal("a refused request changed the state")
			}
		})
	}
	mustWrite(t, l, http.MethodDelete, "/v1/global-tables/public.currencies", nil, http.StatusOK)
}

// TestRegionDatabaseReportedByItsAgent: an agent reports its region's
// database endpoint itself, signed with its key; the record is shown with
// the region and holds nothing secret. An agent may report only its own
// region's database, and only with its own key.
func TestRegionDatabaseReportedByItsAgent(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("us-east"), http.StatusCreated)
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("eu-west"), http.StatusCreated)
	ep := fsm.DatabaseEndpoint{Host: "10.1.2.3", Port: 5432, Database: "atomfed"}
	c.AddAgentWith("eu-west-a1", "eu-west", testcluster.AgentOptions{Database: &ep})
	var rv wire.RegionView
	testutil.Eventually(t, 30*time.Second, func() error {
		rv = wire.RegionView{}
		do(t, l, http.MethodGet, "/v1/regions/eu-west", nil, nil).JSON(t, &rv)
		if rv.Database == nil || *rv.Database != ep {
			return fmt.Errorf("region view without the reported endpoint: %+v", rv)
		}
		return nil
	})
	record := func(region string) []byte {
		return do(t, f, http.MethodGet, "/v1/regions/"+region+"/database", nil, nil).Body
	}
	if body := string(record("eu-west")); !strings.Contains(body, `"reported_by":"eu-west-a1"`) || strings.Contains(strings.ToLower(body), "password") {
		t.Fatalf("database record: %s", body)
	}
	// A region read-modify-write round trip carries the read-only field.
	var rmw map[string]any
	do(t, l, http.MethodGet, "/v1/regions/eu-west", nil, nil).JSON(t, &rmw)
	mustWrite(t, l, http.MethodPut, "/v1/regions/eu-west", rmw, http.StatusOK)

	// The agent keeps heartbeating, so the refusals are checked on the
	// database records and the audit trail rather than the whole state.
	reports := func() int {
		var audit wire.AuditStatus
		do(t, l, http.MethodGet, "/v1/status/audit", nil, nil).JSON(t, &audit)
		n := 0
		for _, e := range audit.Recent {
			if e.Type == fsm.RegionDatabaseType.String() {
				n++
			}
		}
		return n
	}
	logged := reports()
	for _, tc := range []struct {
		name, region, node, signer, code string
	}{
		{"another region's database", "us-east", "eu-west-a1", "eu-west-a1", "wrong_region"},
		{"signed with another member's key", "eu-west", "eu-west-a1", "us-east", "wrong_signer"},
		{"a member that is no agent", "us-east", "us-east", "us-east", "wrong_signer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			east, west := record("us-east"), record("eu-west")
			b, sig := c.SignBody(tc.signer, map[string]any{"endpoint": map[string]any{"host": "evil", "port": 5432, "database": "x"}, "node": tc.node}, nil)
			wantError(t, do(t, f, http.MethodPut, "/v1/regions/"+tc.region+"/database", b, http.Header{"X-Atomfed-Signature": {sig}}), 403, tc.code)
			if !bytes.Equal(east, record("us-east")) || !bytes.Equal(west, record("eu-west")) {
				t.Fatal("a refused report changed a database record")
			}
		})
	}
	if n := reports(); n != logged || n == 0 {
		t.Fatalf("region_database entries in the audit trail: %d before the refusals, %d after", logged, n)
	}
}

package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi"
	"github.com/atomcloud/atomfed/internal/testcluster"
)

// TestReplicationEndpoints checks the replication endpoints' contract
// without any agent: endpoints reported per region, global tables, the
// tenant replication view and the /global-status section, and their
// refusals.
func TestReplicationEndpoints(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("us-east"), http.StatusCreated)
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("eu-west"), http.StatusCreated)

	// A database endpoint, reported through a follower, is shown with its
	// region and holds nothing secret.
	mustWrite(t, f, http.MethodPut, "/v1/regions/us-east/database",
		`{"endpoint":{"host":"10.1.2.3","port":5432,"database":"atomfed"},"node":"us-east-a1"}`, http.StatusOK)
	var rv httpapi.RegionView
	do(t, l, http.MethodGet, "/v1/regions/us-east", nil, nil).JSON(t, &rv)
	if rv.Database == nil || rv.Database.Host != "10.1.2.3" || rv.Database.Port != 5432 {
		t.Fatalf("region view: %+v", rv)
	}
	body := string(do(t, l, http.MethodGet, "/v1/regions/us-east/database", nil, nil).Body)
	if !strings.Contains(body, `"reported_by":"us-east-a1"`) || strings.Contains(strings.ToLower(body), "password") {
		t.Fatalf("database record: %s", body)
	}
	// A region read-modify-write round trip carries the read-only field.
	mustWrite(t, l, http.MethodPut, "/v1/regions/us-east", string(do(t, l, http.MethodGet, "/v1/regions/us-east", nil, nil).Body), http.StatusOK)

	mustWrite(t, l, http.MethodPut, "/v1/global-tables/public.currencies", `{"writer_region":"us-east"}`, http.StatusCreated)
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", `{"home_region":"us-east","mirrors":["eu-west"],"tables":[{"name":"orders","pii_columns":["email"]}],"sync_mode":"sync","sync_degrade_after_ms":5000}`, http.StatusCreated)
	c.Settle()

	var g httpapi.GlobalTableStatus
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
	var gs httpapi.GlobalStatus
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
	mustWrite(t, l, http.MethodDelete, "/v1/global-tables/public.currencies", nil, http.StatusOK)
}

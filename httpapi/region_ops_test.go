package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/policy"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestRegionMaintenanceAndDrainAPI on an in-process cluster whose agents
// run stand-in switchover steps: bad requests are refused with their codes
// and change nothing; maintenance refuses new placements (409
// region_in_maintenance) and keeps the ones there; a drain of a region
// without tenants ends at once; a drain of us-east moves acme and globex
// onto eu-west one by one (the blocking GET follows it), reports solo as
// "cannot move: no mirror" and ends partial; a second drain while one runs
// is 409; residency and pii_while_away: keep_local is audited and listed
// in P1's evidence.
func TestRegionMaintenanceAndDrainAPI(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		mustWrite(t, l, http.MethodPost, "/region/register", regionJSON(r), http.StatusCreated)
	}
	fence := openStep(fsm.TaskTypeTenantFence, func(t *fsm.Task) any {
		return fsm.FenceResult{State: fsm.StepFenced, FencedLSN: "0/100", PII: []fsm.PIIColumnType{{Table: "public.orders", Column: "email", Type: "text", TypMod: -1}}}
	})
	catchUp := &fakeStep{typ: fsm.TaskTypeTenantCatchUp, done: func(*fsm.Task) any {
		return fsm.CatchUpResult{State: fsm.StepCaughtUp, Target: "0/100", Applied: "0/100"}
	}}
	promote := openStep(fsm.TaskTypeTenantPromote, func(t *fsm.Task) any {
		var spec fsm.PromoteSpec
		_ = json.Unmarshal(t.Spec, &spec)
		slots := map[string]string{}
		for _, r := range spec.HandOff {
			slots[r] = "0/200"
		}
		return fsm.PromoteResult{State: fsm.StepPromoted, Slots: slots}
	})
	euSub := &lagSubscriber{changed: make(chan struct{}, 16)}
	usSub := &lagSubscriber{changed: make(chan struct{}, 16)}
	c.AddAgentWith("us-east-a1", "us-east", testcluster.AgentOptions{
		Executors: func(prometheus.Registerer) ([]agent.Executor, error) { return []agent.Executor{fence, usSub}, nil },
	})
	c.AddAgentWith("eu-west-a1", "eu-west", testcluster.AgentOptions{
		Executors: func(prometheus.Registerer) ([]agent.Executor, error) {
			return []agent.Executor{euSub, catchUp, promote}, nil
		},
	})
	for _, id := range []string{"acme", "globex"} {
		tn := tenantJSON(id, "us-east", "eu-west")
		tn["tables"] = []map[string]any{{"name": "orders", "pii_columns": []string{"email"}}}
		mustWrite(t, l, http.MethodPut, "/v1/tenants/"+id, tn, http.StatusCreated)
	}
	mustWrite(t, l, http.MethodPut, "/v1/tenants/solo", tenantJSON("solo", "us-east"), http.StatusCreated)
	opsIndex := func() uint64 { return do(t, l, http.MethodGet, "/v1/regions/us-east/maintenance", nil, nil).Index() }

	// Residency: set at creation; keep_local audited and in P1's evidence.
	var acme fsm.Tenant
	do(t, f, http.MethodGet, "/v1/tenants/acme", nil, nil).JSON(t, &acme)
	if acme.ResidencyRegion != "us-east" {
		t.Fatalf("acme's residency: %+v", acme)
	}
	mustWrite(t, f, http.MethodPatch, "/v1/tenants/globex", map[string]any{"pii_while_away": "keep_local"}, http.StatusOK)
	var audit wire.AuditStatus
	do(t, l, http.MethodGet, "/v1/status/audit?recent=20", nil, nil).JSON(t, &audit)
	found := false
	for _, e := range audit.Recent {
		found = found || strings.Contains(e.Note, "residency exception: tenant globex (residency region us-east)")
	}
	if !found {
		t.Fatalf("no residency exception in the audit chain: %+v", audit.Recent)
	}
	var ps struct {
		Policies []struct {
			ID       string          `json:"id"`
			Evidence json.RawMessage `json:"evidence"`
		} `json:"policies"`
	}
	do(t, l, http.MethodGet, "/v1/policy/status", nil, nil).JSON(t, &ps)
	for _, p := range ps.Policies {
		if p.ID != "P1" {
			continue
		}
		var ev policy.PIIEvidence
		if err := json.Unmarshal(p.Evidence, &ev); err != nil || len(ev.Exceptions) != 1 || ev.Exceptions[0].Tenant != "globex" || ev.Exceptions[0].ResidencyRegion != "us-east" {
			t.Fatalf("P1 evidence: %s (%v)", p.Evidence, err)
		}
	}
	for _, b := range []struct {
		body, code string
		status     int
	}{
		{`{"pii_while_away":"anywhere"}`, fsm.CodeInvalidPIIWhileAway, 400},
		{`{"residency_region":"eu-west"}`, fsm.CodeResidencyNotHome, 409},
	} {
		r := do(t, f, http.MethodPatch, "/v1/tenants/acme", json.RawMessage(b.body), nil)
		if d, _ := r.ErrorDetail(); r.Status != b.status || d.Code != b.code {
			t.Fatalf("PATCH %s: %d %s", b.body, r.Status, r.Body)
		}
	}

	// Bad requests change nothing.
	before := opsIndex()
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{http.MethodPost, "/v1/regions/mars/drain", "", 404, "region_not_found"},
		{http.MethodGet, "/v1/regions/mars/drain", "", 404, "region_not_found"},
		{http.MethodGet, "/v1/regions/us-east/drain", "", 404, fsm.CodeNoDrain},
		{http.MethodDelete, "/v1/regions/us-east/drain", "", 404, fsm.CodeNoDrain},
		{http.MethodPut, "/v1/regions/mars/maintenance", `{"maintenance":true}`, 404, "region_not_found"},
		{http.MethodPut, "/v1/regions/us-east/maintenance", `{}`, 400, "missing_maintenance"},
		{http.MethodPut, "/v1/regions/us-east/maintenance", `{"maintenance":"yes"}`, 400, ""},
	} {
		var body any
		if c.body != "" {
			body = json.RawMessage(c.body)
		}
		r := do(t, f, c.method, c.path, body, nil)
		if d, _ := r.ErrorDetail(); r.Status != c.status || c.code != "" && d.Code != c.code {
			t.Fatalf("%s %s %s: %d %s, want %d %s", c.method, c.path, c.body, r.Status, r.Body, c.status, c.code)
		}
	}
	if got := opsIndex(); got != before {
		t.Fatalf("a refused request changed the regions' operations (index %d -> %d)", before, got)
	}

	// Maintenance: new placements refused, existing ones stay.
	mustWrite(t, f, http.MethodPut, "/v1/regions/ap-south/maintenance", json.RawMessage(`{"maintenance":true}`), http.StatusOK)
	r := do(t, f, http.MethodPatch, "/v1/tenants/acme", map[string]any{"mirrors": []string{"eu-west", "ap-south"}}, nil)
	if d, _ := r.ErrorDetail(); r.Status != http.StatusConflict || d.Code != fsm.CodeRegionInMaintenance || !strings.Contains(d.Message, "region ap-south is in maintenance") {
		t.Fatalf("a mirror added in a region in maintenance: %d %s", r.Status, r.Body)
	}
	var ops wire.RegionOpsStatus
	do(t, f, http.MethodGet, "/v1/regions/ap-south/maintenance", nil, nil).JSON(t, &ops)
	if !ops.Maintenance || ops.MaintenanceBy == "" {
		t.Fatalf("ap-south's maintenance: %+v", ops)
	}
	// A drain of a region without tenants ends at once.
	mustWrite(t, f, http.MethodPost, "/v1/regions/ap-south/drain", nil, http.StatusAccepted).JSON(t, &ops)
	if ops.Active || ops.Drain == nil || ops.Drain.State != fsm.DrainDone || ops.Total != 0 {
		t.Fatalf("drain of an empty region: %+v", ops)
	}
	mustWrite(t, f, http.MethodPut, "/v1/regions/ap-south/maintenance", json.RawMessage(`{"maintenance":false}`), http.StatusOK)

	// The mirrors report streaming before the drain (a mirror without a
	// report is no target).
	for _, id := range []string{"acme", "globex"} {
		testutil.Eventually(t, 30*time.Second, func() error {
			var v fsm.TenantReplication
			do(t, f, http.MethodGet, "/v1/tenants/"+id+"/replication", nil, nil).JSON(t, &v)
			for _, m := range v.Mirrors {
				if m.Region == "eu-west" && m.State == fsm.ReplStreaming {
					return nil
				}
			}
			return fmt.Errorf("%s: eu-west not streaming yet: %+v", id, v.Mirrors)
		})
	}
	// The drain of us-east: the catch-up is held, so the first switchover
	// waits and a second drain is refused meanwhile.
	mustWrite(t, f, http.MethodPost, "/v1/regions/us-east/drain", nil, http.StatusAccepted).JSON(t, &ops)
	if !ops.Active || ops.Total != 3 || ops.Failed != 1 || ops.Drain.Tenants[2].Reason != fsm.NoMirrorReason {
		t.Fatalf("drain at its start: %+v", ops)
	}
	r = do(t, f, http.MethodPost, "/v1/regions/us-east/drain", nil, nil)
	if d, _ := r.ErrorDetail(); r.Status != http.StatusConflict || d.Code != fsm.CodeDrainInProgress {
		t.Fatalf("a second drain: %d %s", r.Status, r.Body)
	}
	r = do(t, f, http.MethodPut, "/v1/regions/us-east/maintenance", json.RawMessage(`{"maintenance":false}`), nil)
	if d, _ := r.ErrorDetail(); r.Status != http.StatusConflict || d.Code != fsm.CodeDrainInProgress {
		t.Fatalf("maintenance off while draining: %d %s", r.Status, r.Body)
	}
	r = do(t, f, http.MethodPut, "/v1/tenants/newco", tenantJSON("newco", "us-east"), nil)
	if d, _ := r.ErrorDetail(); r.Status != http.StatusConflict || d.Code != fsm.CodeRegionInMaintenance {
		t.Fatalf("a tenant placed in a draining region: %d %s", r.Status, r.Body)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		var st wire.SwitchoverStatus
		if r := do(t, f, http.MethodGet, "/v1/tenants/acme/switchover", nil, nil); r.Status == 200 {
			r.JSON(t, &st)
		}
		if st.Phase != fsm.PhaseCatchingUp || st.RequestedBy != "drain:us-east" {
			return fmt.Errorf("acme's switchover: %+v; drain: %s", st.Switchover, do(t, f, http.MethodGet, "/v1/regions/us-east/drain", nil, nil).Body)
		}
		return nil
	})
	catchUp.open.Store(true)
	// Follow with blocking reads until it ends.
	var idx uint64
	deadline := time.Now().Add(60 * time.Second)
	for ops.Active {
		if time.Now().After(deadline) {
			t.Fatalf("drain did not end: %+v", ops)
		}
		r := do(t, f, http.MethodGet, fmt.Sprintf("/v1/regions/us-east/drain?index=%d&wait=5s", idx), nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("drain status: %d %s", r.Status, r.Body)
		}
		r.JSON(t, &ops)
		idx = r.Index()
	}
	if ops.Drain.State != fsm.DrainPartial || ops.Moved != 2 || ops.Failed != 1 || ops.Remaining != 0 {
		t.Fatalf("drain at its end: %+v", ops.Drain)
	}
	for _, id := range []string{"acme", "globex"} {
		var tn fsm.Tenant
		do(t, f, http.MethodGet, "/v1/tenants/"+id, nil, nil).JSON(t, &tn)
		if tn.HomeRegion != "eu-west" || tn.ResidencyRegion != "us-east" {
			t.Fatalf("%s after the drain: %+v", id, tn)
		}
	}
	// Reads are not routed to a region in maintenance.
	var route wire.Route
	do(t, f, http.MethodGet, "/v1/route?tenant=acme&op=read&from=us-east&max_staleness_ms=600000", nil, nil).JSON(t, &route)
	if route.Region != "eu-west" || len(route.Alternatives) != 1 || route.Alternatives[0].Eligible || !strings.Contains(route.Alternatives[0].Reason, "in maintenance") {
		t.Fatalf("a read of acme from us-east in maintenance: %+v", route)
	}
	mustWrite(t, f, http.MethodPut, "/v1/regions/us-east/maintenance", json.RawMessage(`{"maintenance":false}`), http.StatusOK)
	mustWrite(t, f, http.MethodPut, "/v1/tenants/newco", tenantJSON("newco", "us-east"), http.StatusCreated)
}

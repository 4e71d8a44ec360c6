package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestDivergenceAPI: GET /v1/tenants/{id}/divergence answers 404 for an
// unknown tenant and an empty list when nothing is in quarantine; a
// blocking read on a follower wakes when the leader records an old home's
// counts (the divergence routine's command), which every server exports
// as atomfed_tenant_divergent_rows and the audit chain notes; an operator
// marks them reconciled through a follower (forwarded, audited, metric 0);
// bad or repeated resolves, and a reader's, are refused and change
// nothing.
func TestDivergenceAPI(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	for _, r := range []string{"us-east", "eu-west"} {
		mustWrite(t, l, http.MethodPost, "/region/register", regionJSON(r), http.StatusCreated)
	}
	acme := tenantJSON("acme", "eu-west", "us-east")
	acme["tables"] = []map[string]any{{"name": "orders", "pii_columns": []string{"email"}}}
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", acme, http.StatusCreated)

	wantError(t, do(t, f, http.MethodGet, "/v1/tenants/nope/divergence", nil, nil), http.StatusNotFound, "tenant_not_found")
	empty := do(t, f, http.MethodGet, "/v1/tenants/acme/divergence", nil, nil)
	if empty.Status != http.StatusOK || strings.TrimSpace(string(empty.Body)) != `{"tenant":"acme","divergence":[]}` {
		t.Fatalf("no divergence: %d %s", empty.Status, empty.Body)
	}

	// A blocking read wakes at the leader's record.
	type answer struct {
		list *wire.DivergenceList
		err  error
	}
	woke := make(chan answer, 1)
	go func() {
		l, _, err := f.Client.Divergence(context.Background(), "acme", &client.QueryOptions{Index: empty.Index(), Wait: 20 * time.Second})
		woke <- answer{l, err}
	}()
	time.Sleep(200 * time.Millisecond)
	var created uint64
	l.Server.FSM().Read(func(s *fsm.State) { created = s.Tenants["acme"].CreateIndex })
	ctx := testcluster.Ctx(t, 10*time.Second)
	res, err := l.Server.Apply(ctx, fsm.DivergenceRecordType, fsm.DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "us-east", Epoch: 2,
		Tables: map[string]int64{"public.orders": 7}, Missing: 5, RowsReconciled: 12, FoundAt: 1, At: time.Now().UnixNano(),
		Keys: []fsm.DivergentKey{{Table: "public.orders", Key: `{"id": 3, "tenant_id": "acme"}`, Reason: fsm.ReasonMissingAtNewHome}}})
	if err != nil || res.Err != nil {
		t.Fatalf("record: %v %v", err, res)
	}
	var got answer
	select {
	case got = <-woke:
	case <-time.After(15 * time.Second):
		t.Fatal("the blocking divergence read did not wake at the record")
	}
	if got.err != nil || len(got.list.Divergence) != 1 {
		t.Fatalf("divergence after the record: %+v %v", got.list, got.err)
	}
	e := got.list.Divergence[0]
	if e.Region != "us-east" || e.Total != 7 || e.Missing != 5 || e.Differs != 2 || !e.Open || e.Quarantine != "atomfed_quarantine.divergent_rows" || e.Tables["public.orders"] != 7 ||
		len(e.Keys) != 1 || e.Keys[0].Key != `{"id": 3, "tenant_id": "acme"}` {
		t.Fatalf("divergence entry: %+v", e)
	}
	var note string
	l.Server.FSM().Read(func(s *fsm.State) { a := s.RecentAudit(); note = a[len(a)-1].Note })
	if !strings.Contains(note, "7 rows of tenant acme committed at us-east after the failover are in quarantine at us-east") {
		t.Fatalf("audit note: %q", note)
	}
	metric := func(n *testcluster.Node) float64 {
		t.Helper()
		mfs, err := n.Reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "atomfed_tenant_divergent_rows" {
				continue
			}
			for _, m := range mf.GetMetric() {
				lb := map[string]string{}
				for _, p := range m.GetLabel() {
					lb[p.GetName()] = p.GetValue()
				}
				if lb["tenant"] == "acme" && lb["region"] == "us-east" {
					return m.GetGauge().GetValue()
				}
			}
		}
		return -1
	}
	metricIs := func(n *testcluster.Node, want float64) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			if v := metric(n); v != want {
				return fmt.Errorf("atomfed_tenant_divergent_rows on %s: %v, want %v", n.ID, v, want)
			}
			return nil
		})
	}
	metricIs(f, 7)

	// Refusals change nothing.
	reader, err := l.Client.CreateToken(ctx, fsm.RoleReader, "divergence test")
	if err != nil {
		t.Fatal(err)
	}
	divIndex := func() (idx uint64) {
		l.Server.FSM().Read(func(s *fsm.State) { idx = s.TableIndex(fsm.TableDivergence) })
		return idx
	}
	before := divIndex()
	wantError(t, do(t, f, http.MethodDelete, "/v1/tenants/acme/divergence/US_EAST", nil, nil), http.StatusBadRequest, "invalid_region")
	wantError(t, do(t, f, http.MethodDelete, "/v1/tenants/acme/divergence/us-east?note="+strings.Repeat("x", 600), nil, nil), http.StatusBadRequest, "invalid_note")
	wantError(t, do(t, f, http.MethodDelete, "/v1/tenants/acme/divergence/eu-west", nil, nil), http.StatusNotFound, fsm.CodeNoDivergence)
	wantError(t, do(t, f, http.MethodDelete, "/v1/tenants/nope/divergence/us-east", nil, nil), http.StatusNotFound, "tenant_not_found")
	rc := c.NewClient(f, client.WithToken(reader.Secret))
	if _, err := rc.ResolveDivergence(ctx, "acme", "us-east", ""); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a reader's resolve: %v", err)
	}
	if after := divIndex(); after != before {
		t.Fatalf("refused resolves moved the divergence index from %d to %d", before, after)
	}

	// An operator resolves it through a follower.
	r := mustWrite(t, f, http.MethodDelete, "/v1/tenants/acme/divergence/us-east?note=merged", nil, http.StatusOK)
	var done wire.DivergenceEntry
	if err := json.Unmarshal(r.Body, &done); err != nil || done.Open || done.ResolvedBy == "" || done.ResolvedNote != "merged" || done.Total != 7 {
		t.Fatalf("resolved entry: %+v %v", done, err)
	}
	wantError(t, do(t, f, http.MethodDelete, "/v1/tenants/acme/divergence/us-east", nil, nil), http.StatusConflict, "divergence_resolved")
	l.Server.FSM().Read(func(s *fsm.State) { a := s.RecentAudit(); note = a[len(a)-1].Note })
	if !strings.Contains(note, "marked the 7 quarantined rows of tenant acme at us-east reconciled: merged") {
		t.Fatalf("resolve audit note: %q", note)
	}
	metricIs(f, 0)
}

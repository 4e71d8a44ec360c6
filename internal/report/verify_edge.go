package report

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

const (
	// VerifyEdgeTenant is the tenant the edge controller's verification
	// routes and switches over.
	VerifyEdgeTenant = "report-verify-edge"
	verifyEdgeTable  = verifySchema + ".report_edge"
)

// verifyEdge checks the edge controller on the live federation's
// PostgreSQL: it places VerifyEdgeTenant in the first region with the
// second as mirror, waits for its rows there, and asks GET /v1/route where
// a write goes (the home, epoch 1); it switches the tenant over to the
// mirror, follows the switchover until it is done, and asks again (the new
// home, the next epoch); it writes rows at the new home and waits until
// the old home, now a mirror, has them, with the PII it held intact. Then it
// removes the tenant and its table.
func verifyEdge(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	if sim := simulatedParts(env.fed, []string{"replication"}); len(sim) > 0 {
		v := &Verification{OK: true}
		r, _, err := env.c.Route(ctx, client.RouteRequest{Tenant: "report-verify-none", Op: "write"}, nil)
		if client.StatusOf(err) != http.StatusNotFound {
			return v.fail(Step{Call: "GET /v1/route?tenant=report-verify-none&op=write"}, "an unknown tenant is routed: %+v (%v)", r, err), nil
		}
		v.ok(Step{Call: "GET /v1/route?tenant=report-verify-none&op=write", Status: http.StatusNotFound}, "an unknown tenant is not routed; no switchover was tried: replication runs simulated")
		return v, nil
	}
	v := &Verification{OK: true}
	var refs []AuditRef
	regions, conns, closeAll, failed, err := regionsAndConns(ctx, env, 2, "a switchover")
	defer closeAll()
	if err != nil {
		return v.fail(failed, "%v", err), refs
	}
	home, mirror := regions[0], regions[1]
	cleanup, failed, err := freshTenant(ctx, env, VerifyEdgeTenant, verifyEdgeTable, conns, regions)
	if err != nil {
		return v.fail(failed, "%v", err), refs
	}
	// The application's schema is in every region, as its migrations
	// would put it (with the id's sequence); the rows only at the home.
	ddl := "CREATE TABLE " + verifyEdgeTable + " (tenant_id text NOT NULL, id bigserial, amount bigint NOT NULL, email text, PRIMARY KEY (tenant_id, id))"
	call := "in " + home + " and " + mirror + ": create " + verifyEdgeTable + "; in " + home + ": 20 rows (email PII)"
	if err := execAll(ctx, conns[mirror], "CREATE SCHEMA IF NOT EXISTS "+verifySchema, ddl); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	if err := execAll(ctx, conns[home], "CREATE SCHEMA IF NOT EXISTS "+verifySchema, ddl,
		"INSERT INTO "+verifyEdgeTable+" (tenant_id, amount, email) SELECT '"+VerifyEdgeTenant+"', g, 'e' || g || '@example.com' FROM generate_series(1, 20) g"); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "created")
	defer cleanup()
	ten := &fsm.Tenant{ID: VerifyEdgeTenant, HomeRegion: home, Mirrors: []string{mirror},
		Tables: []fsm.TenantTable{{Name: verifyEdgeTable, PIIColumns: []string{"email"}}},
		Labels: map[string]string{"purpose": "phase-report-verification"}}
	got, ref, err := putTenant(ctx, env, v, ten)
	if err != nil {
		return v, refs
	}
	refs = append(refs, ref)

	q := "SELECT count(*)::text || ':' || md5(string_agg(id || '=' || amount, ',' ORDER BY id)) FROM " + verifyEdgeTable + " WHERE tenant_id = $1"
	same := func(from, to string) error { return sameRows(ctx, env, conns, from, to, q, VerifyEdgeTenant) }
	call = "compare the tenant's rows in " + home + " and " + mirror
	if err := same(home, mirror); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "the same rows")

	route := func(want string, epoch uint64) (Step, error) {
		step := Step{Call: "GET /v1/route?tenant=" + VerifyEdgeTenant + "&op=write"}
		var r *wire.Route
		err := waitFor(ctx, env, func() error {
			var err error
			r, _, err = env.c.Route(ctx, client.RouteRequest{Tenant: VerifyEdgeTenant, Op: "write"}, nil)
			if err != nil {
				return err
			}
			if r.Region != want || r.Epoch != epoch {
				return fmt.Errorf("writes go to %s at epoch %d (%s), want %s at epoch %d", r.Region, r.Epoch, r.Reason, want, epoch)
			}
			return nil
		})
		if err != nil {
			return step, err
		}
		step.Status, step.Result = http.StatusOK, fmt.Sprintf("writes go to %s, epoch %d: %s", r.Region, r.Epoch, r.Reason)
		return step, nil
	}
	if step, err := route(home, got.Epoch); err != nil {
		return v.fail(step, "%v", err), refs
	} else {
		v.Steps = append(v.Steps, step)
	}

	step := Step{Call: "POST /v1/tenants/" + VerifyEdgeTenant + "/switchover {\"to\":\"" + mirror + "\"}"}
	// The mirror's subscriber reports streaming a moment after the rows
	// are there: a start refused as not ready yet is asked again.
	var st *wire.SwitchoverStatus
	err = waitFor(ctx, env, func() error {
		var err error
		st, err = env.c.StartSwitchover(ctx, VerifyEdgeTenant, wire.SwitchoverRequest{To: mirror})
		var ce *client.Error
		if errors.As(err, &ce) && (ce.Code == "mirror_not_ready" || ce.Code == "mirror_lagging") {
			return err
		}
		if err != nil {
			return &stopWaiting{err}
		}
		return nil
	})
	if err != nil {
		step.Status = client.StatusOf(err)
		return v.fail(step, "%v", err), refs
	}
	step.Status, step.Index = http.StatusAccepted, st.ID
	v.ok(step, "switchover %d started (%s)", st.ID, st.Phase)
	refs = append(refs, AuditRef{Index: st.ID, What: "switchover of " + VerifyEdgeTenant + " to " + mirror + " started"})
	call = "GET /v1/tenants/" + VerifyEdgeTenant + "/switchover until it is done"
	var phases []string
	err = waitFor(ctx, env, func() error {
		cur, _, err := env.c.Switchover(ctx, VerifyEdgeTenant, nil)
		if err != nil {
			return err
		}
		if len(phases) == 0 || phases[len(phases)-1] != cur.Phase {
			phases = append(phases, cur.Phase)
		}
		st = cur
		switch cur.Phase {
		case fsm.PhaseDone:
			return nil
		case fsm.PhaseAborted:
			return nil
		}
		return fmt.Errorf("switchover %d is %s", cur.ID, cur.Phase)
	})
	if err != nil {
		return v.fail(Step{Call: call}, "%v (phases seen: %s)", err, strings.Join(phases, ", ")), refs
	}
	if st.Phase == fsm.PhaseAborted {
		return v.fail(Step{Call: call}, "switchover %d rolled back: %s", st.ID, st.Error), refs
	}
	// The phases as the switchover recorded them: polling may miss a
	// short one.
	var steps []string
	for _, s := range st.Steps {
		steps = append(steps, s.Phase)
	}
	v.ok(Step{Call: call, Index: st.ModifyIndex}, "done: %s; fenced at %s, epoch %d -> %d", strings.Join(steps, " -> "), st.FencedLSN, st.FromEpoch, st.NewEpoch)
	if step, err := route(mirror, st.NewEpoch); err != nil {
		return v.fail(step, "%v", err), refs
	} else {
		v.Steps = append(v.Steps, step)
	}

	call = "in " + mirror + " (the new home): write 5 rows; compare in " + home + " (now a mirror)"
	if err := execAll(ctx, conns[mirror], "INSERT INTO "+verifyEdgeTable+" (tenant_id, amount) SELECT '"+VerifyEdgeTenant+"', 100 + g FROM generate_series(1, 5) g"); err != nil {
		return v.fail(Step{Call: call}, "the new home refused a write: %v", err), refs
	}
	if err := same(mirror, home); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	var pii int
	if err := conns[home].QueryRow(ctx, "SELECT count(*) FROM "+verifyEdgeTable+" WHERE tenant_id = $1 AND email LIKE 'e%@example.com'", VerifyEdgeTenant).Scan(&pii); err != nil || pii != 20 {
		return v.fail(Step{Call: call}, "the old home holds %d of its 20 PII values (%v)", pii, err), refs
	}
	v.ok(Step{Call: call}, "25 rows at both; the old home keeps its 20 PII values; sequences continued at the new home")
	return v, refs
}

// waitTasksGone waits until the federation has no task of tenant left.
func waitTasksGone(ctx context.Context, env *verifyEnv, tenant string) error {
	return waitFor(ctx, env, func() error {
		tasks, _, err := env.c.Tasks(ctx, "", "", "", nil)
		if err != nil {
			return err
		}
		var left []string
		for _, t := range tasks {
			if strings.Contains(t.ID, "/"+tenant+"/") {
				left = append(left, t.ID+" ("+t.Status+")")
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("tasks left: %s", strings.Join(left, ", "))
		}
		return nil
	})
}

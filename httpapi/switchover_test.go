package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// fakeStep is a switchover step's executor: while its gate is closed it
// reports progress (running); once open it reports success with the
// result done makes of the task.
type fakeStep struct {
	typ  string
	open atomic.Bool
	done func(t *fsm.Task) any
}

func (f *fakeStep) Type() string { return f.typ }

func (f *fakeStep) Run(ctx context.Context, t *fsm.Task, report func(agent.TaskStatus)) error {
	for !f.open.Load() {
		report(agent.TaskStatus{Status: fsm.TaskRunning, Result: fsm.CatchUpResult{State: fsm.StepBehind, Applied: "0/80", BytesBehind: 32}})
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	report(agent.TaskStatus{Status: fsm.TaskSucceeded, Result: f.done(t)})
	<-ctx.Done()
	return nil
}

func openStep(typ string, done func(t *fsm.Task) any) *fakeStep {
	f := &fakeStep{typ: typ, done: done}
	f.open.Store(true)
	return f
}

// TestSwitchoverAPI drives a switchover through the API on an in-process
// cluster whose agents run stand-in step executors: bad requests are
// refused with their codes and start nothing; a started switchover holds
// the tenant's writes (route 503, placement writes 409); a catch-up past
// its timeout rolls back, so does an abort, both lifting the fence and
// leaving the tenant as it was; a switchover whose steps succeed commits
// the new home and epoch and ends with the old home a former-home mirror.
func TestSwitchoverAPI(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		mustWrite(t, l, http.MethodPost, "/region/register", regionJSON(r), http.StatusCreated)
	}
	fence := openStep(fsm.TaskTypeTenantFence, func(t *fsm.Task) any {
		var spec fsm.FenceSpec
		_ = json.Unmarshal(t.Spec, &spec)
		if spec.Ensure == fsm.EnsureAbsent {
			return fsm.FenceResult{State: fsm.StepUnfenced}
		}
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
	euSub.lagMS.Store(40)
	c.AddAgentWith("us-east-a1", "us-east", testcluster.AgentOptions{
		Executors: func(prometheus.Registerer) ([]agent.Executor, error) { return []agent.Executor{fence, usSub}, nil },
	})
	c.AddAgentWith("eu-west-a1", "eu-west", testcluster.AgentOptions{
		Executors: func(prometheus.Registerer) ([]agent.Executor, error) {
			return []agent.Executor{euSub, catchUp, promote}, nil
		},
	})
	acme := tenantJSON("acme", "us-east", "eu-west")
	acme["tables"] = []map[string]any{{"name": "orders", "pii_columns": []string{"email"}}}
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", acme, http.StatusCreated)
	mustWrite(t, l, http.MethodPut, "/v1/tenants/bare", tenantJSON("bare", "us-east", "eu-west"), http.StatusCreated)

	status := func(n *testcluster.Node) wire.SwitchoverStatus {
		t.Helper()
		var st wire.SwitchoverStatus
		r := do(t, n, http.MethodGet, "/v1/tenants/acme/switchover", nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("switchover status: %d %s", r.Status, r.Body)
		}
		r.JSON(t, &st)
		return st
	}
	waitPhase := func(phase string) wire.SwitchoverStatus {
		t.Helper()
		var st wire.SwitchoverStatus
		testutil.Eventually(t, 30*time.Second, func() error {
			if st = status(f); st.Phase != phase {
				return fmt.Errorf("switchover at %s (%+v), want %s", st.Phase, st.Steps, phase)
			}
			return nil
		})
		return st
	}
	tenant := func() fsm.Tenant {
		var tn fsm.Tenant
		do(t, l, http.MethodGet, "/v1/tenants/acme", nil, nil).JSON(t, &tn)
		return tn
	}
	before := tenant()

	// Bad requests: each refused with its code, nothing started.
	for _, c := range []struct {
		tenant, body string
		status       int
		code, says   string
	}{
		{"nobody", `{"to":"eu-west"}`, 404, "tenant_not_found", `"nobody" does not exist`},
		{"acme", `{"to":"mars"}`, 400, "unknown_region", "not registered"},
		{"acme", `{"to":"ap-south"}`, 409, fsm.CodeNotAMirror, "does not mirror tenant acme"},
		{"acme", `{"to":"us-east"}`, 400, fsm.CodeSwitchoverNoop, "already the home"},
		{"acme", `{}`, 400, "missing_to", "give the region"},
		{"acme", `{"to":"eu-west","bogus":1}`, 400, "", "bogus"},
		{"acme", `{"to":"eu-west","timeout_ms":5}`, 400, "invalid_timeout", "between 1000"},
		{"acme", `{"to":"eu-west","max_lag_ms":-1}`, 400, "invalid_max_lag", "between 0"},
		{"bare", `{"to":"eu-west"}`, 409, fsm.CodeNotReplicated, "no tables"},
	} {
		r := do(t, f, http.MethodPost, "/v1/tenants/"+c.tenant+"/switchover", json.RawMessage(c.body), nil)
		d, _ := r.ErrorDetail()
		if r.Status != c.status || (c.code != "" && d.Code != c.code) || !strings.Contains(d.Message, c.says) {
			t.Fatalf("POST %s %s: %d %s, want %d %s saying %q", c.tenant, c.body, r.Status, r.Body, c.status, c.code, c.says)
		}
	}
	// A lagging target: refused with its lag in the message.
	euSub.set(12000)
	testutil.Eventually(t, 30*time.Second, func() error {
		var v fsm.TenantReplication
		do(t, f, http.MethodGet, "/v1/tenants/acme/replication", nil, nil).JSON(t, &v)
		for _, m := range v.Mirrors {
			if m.Region == "eu-west" && m.LagSeconds == 12 {
				return nil
			}
		}
		return fmt.Errorf("eu-west's lag of 12 s not reported yet: %+v", v.Mirrors)
	})
	r := do(t, f, http.MethodPost, "/v1/tenants/acme/switchover", map[string]any{"to": "eu-west"}, nil)
	if d, _ := r.ErrorDetail(); r.Status != http.StatusConflict || d.Code != "mirror_lagging" || !strings.Contains(d.Message, "12000 ms, over the budget of 10000 ms") {
		t.Fatalf("a lagging target: %d %s", r.Status, r.Body)
	}
	if r := do(t, f, http.MethodGet, "/v1/tenants/acme/switchover", nil, nil); r.Status != 404 {
		t.Fatalf("a refused request started a switchover: %d %s", r.Status, r.Body)
	}
	if got := tenant(); got.ModifyIndex != before.ModifyIndex {
		t.Fatalf("a refused request changed the tenant: %+v", got)
	}
	euSub.set(40)

	// A catch-up that never ends rolls back at the timeout.
	var st wire.SwitchoverStatus
	testutil.Eventually(t, 30*time.Second, func() error {
		r := do(t, f, http.MethodPost, "/v1/tenants/acme/switchover", map[string]any{"to": "eu-west", "timeout_ms": 6000}, nil)
		if r.Status != http.StatusAccepted {
			return fmt.Errorf("start: %d %s", r.Status, r.Body)
		}
		r.JSON(t, &st)
		return nil
	})
	if st.Phase != fsm.PhaseFencing || st.From != "us-east" || st.To != "eu-west" || !st.Active || st.NewEpoch != 2 || st.TimeoutMS != 6000 {
		t.Fatalf("started: %+v", st)
	}
	st = waitPhase(fsm.PhaseCatchingUp)
	if st.FencedLSN != "0/100" || len(st.PII) != 1 {
		t.Fatalf("catching up: %+v", st)
	}
	// Writes are held: the route answers 503, placement writes 409, a
	// second switchover 409.
	r = do(t, f, http.MethodGet, "/v1/route?tenant=acme&op=write", nil, nil)
	if d, _ := r.ErrorDetail(); r.Status != http.StatusServiceUnavailable || d.Code != fsm.CodeSwitchoverInProgress || r.Header.Get("Retry-After") == "" {
		t.Fatalf("write route during a switchover: %d %s", r.Status, r.Body)
	}
	if r := do(t, f, http.MethodGet, "/v1/route?tenant=acme&op=read", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("read route during a switchover: %d %s", r.Status, r.Body)
	}
	wantError(t, do(t, f, http.MethodPatch, "/v1/tenants/acme", map[string]any{"labels": map[string]string{"a": "b"}}, nil), http.StatusConflict, fsm.CodeSwitchoverInProgress)
	wantError(t, do(t, f, http.MethodDelete, "/v1/tenants/acme", nil, nil), http.StatusConflict, fsm.CodeSwitchoverInProgress)
	wantError(t, do(t, f, http.MethodPost, "/v1/tenants/acme/switchover", map[string]any{"to": "eu-west"}, nil), http.StatusConflict, fsm.CodeSwitchoverInProgress)
	testutil.Eventually(t, 10*time.Second, func() error {
		tasks := status(f).Tasks
		for _, tk := range tasks {
			if tk.Type == fsm.TaskTypeTenantCatchUp && tk.Region == "eu-west" && strings.Contains(string(tk.Result), `"bytes_behind":32`) {
				return nil
			}
		}
		return fmt.Errorf("the status does not show the catch-up's progress: %+v", tasks)
	})
	st = waitPhase(fsm.PhaseAborted)
	if !strings.Contains(st.Error, "timed out after 6000 ms") || st.Outcome != fsm.PhaseAborted || st.Active {
		t.Fatalf("timed out: %+v", st)
	}
	if got := tenant(); got.HomeRegion != "us-east" || got.Epoch != before.Epoch || got.ModifyIndex != before.ModifyIndex {
		t.Fatalf("a rolled back switchover changed the tenant: %+v", got)
	}
	if r := do(t, f, http.MethodGet, "/v1/route?tenant=acme&op=write", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("write route after the rollback: %d %s", r.Status, r.Body)
	}

	// An operator's abort rolls back the same way; a blocking read wakes.
	mustWrite(t, f, http.MethodPost, "/v1/tenants/acme/switchover", map[string]any{"to": "eu-west"}, http.StatusAccepted)
	st = waitPhase(fsm.PhaseCatchingUp)
	r = mustWrite(t, f, http.MethodDelete, "/v1/tenants/acme/switchover?reason=window+closed", nil, http.StatusAccepted)
	r.JSON(t, &st)
	if st.Phase != fsm.PhaseRollingBack || !strings.Contains(st.Error, "window closed") {
		t.Fatalf("abort: %+v", st)
	}
	blocked := do(t, f, http.MethodGet, fmt.Sprintf("/v1/tenants/acme/switchover?index=%d&wait=20s", r.Index()), nil, nil)
	blocked.JSON(t, &st)
	if blocked.Index() <= r.Index() {
		t.Fatalf("a blocking read answered at %d, not after %d", blocked.Index(), r.Index())
	}
	st = waitPhase(fsm.PhaseAborted)
	wantError(t, do(t, f, http.MethodDelete, "/v1/tenants/acme/switchover", nil, nil), http.StatusNotFound, fsm.CodeNoSwitchover)

	// Steps that succeed: committed, then done once the old home streams
	// from the new one.
	catchUp.open.Store(true)
	mustWrite(t, f, http.MethodPost, "/v1/tenants/acme/switchover", map[string]any{"to": "eu-west"}, http.StatusAccepted)
	st = waitPhase(fsm.PhaseDone)
	var phases []string
	for _, s := range st.Steps {
		phases = append(phases, s.Phase)
	}
	if strings.Join(phases, ",") != "fencing,catching_up,promoting,committed,done" || st.Slots["us-east"] != "0/200" {
		t.Fatalf("done: phases %v, %+v", phases, st)
	}
	got := tenant()
	if got.HomeRegion != "eu-west" || strings.Join(got.Mirrors, ",") != "us-east" || got.Epoch != before.Epoch+1 {
		t.Fatalf("tenant after the switchover: %+v", got)
	}
	var tasks wire.TaskList
	do(t, l, http.MethodGet, "/v1/tasks", nil, nil).JSON(t, &tasks)
	var former fsm.SubscriberSpec
	for _, tk := range tasks.Tasks {
		if tk.ID == fsm.TenantSubscriberTaskID("acme", "us-east") {
			_ = json.Unmarshal(tk.Spec, &former)
		}
		if tk.ID == fsm.TenantSubscriberTaskID("acme", "eu-west") {
			t.Fatalf("the new home still has its subscriber task: %+v", tk)
		}
	}
	if !former.FormerHome || former.Source != "eu-west" {
		t.Fatalf("the old home's subscriber is not a former home's: %+v", former)
	}
	rt := do(t, f, http.MethodGet, "/v1/route?tenant=acme&op=write", nil, nil)
	var route wire.Route
	rt.JSON(t, &route)
	if rt.Status != 200 || route.Region != "eu-west" || route.Epoch != before.Epoch+1 {
		t.Fatalf("write route after the switchover: %d %s", rt.Status, rt.Body)
	}
	wantError(t, do(t, f, http.MethodDelete, "/v1/tenants/acme/switchover", nil, nil), http.StatusNotFound, fsm.CodeNoSwitchover)

	// The client decodes the status strictly: every field the server
	// sends is one the wire type knows.
	strict, _, err := c.NewClient(f, client.WithStrictDecoding()).Switchover(testcluster.Ctx(t, 10*time.Second), "acme", nil)
	if err != nil || strict.Phase != fsm.PhaseDone || len(strict.Steps) != 5 {
		t.Fatalf("strict decoding of the status: %+v %v", strict, err)
	}
}

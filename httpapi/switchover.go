package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Codes of the switchover's refusals that the API adds to the FSM's.
const (
	codeMirrorNotReady = "mirror_not_ready"
	codeMirrorLagging  = "mirror_lagging"
)

// startSwitchover answers POST /v1/tenants/{id}/switchover: it checks the
// request against this server's state (the FSM checks it again at apply),
// including the target's last reported lag against max_lag_ms, and starts
// the switchover. 202: the leader moves it on as its steps report.
func (a *API) startSwitchover(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	var in wire.SwitchoverRequest
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	budget := int64(wire.DefaultSwitchoverMaxLagMS)
	if in.MaxLagMS != nil {
		if *in.MaxLagMS < 0 || *in.MaxLagMS > wire.MaxSwitchoverMaxLagMS {
			writeError(w, badRequest("invalid_max_lag", fmt.Sprintf("max_lag_ms %d must be between 0 and %d", *in.MaxLagMS, wire.MaxSwitchoverMaxLagMS)))
			return
		}
		budget = *in.MaxLagMS
	}
	cmd := fsm.SwitchoverStart{Tenant: id, To: in.To, TimeoutMS: in.TimeoutMS, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	// Checked on state at least as new as the request (a follower a
	// moment behind would not know a tenant just created).
	if err := a.c.ConsistentRead(r.Context()); err != nil {
		if (errors.Is(err, structs.ErrNotLeader) || errors.Is(err, structs.ErrFollowerBehind)) && r.Header.Get(HeaderForwarded) == "" {
			a.forward(w, r, body, true) // the leader checks it on its own state
			return
		}
		writeError(w, err)
		return
	}
	var check error
	a.c.FSM().Read(func(s *fsm.State) {
		if check = fsm.SwitchoverStartCheck(s, &cmd); check == nil {
			check = targetReady(s, id, in.To, budget)
		}
	})
	if check != nil {
		writeError(w, check)
		return
	}
	a.write(w, r, body, fsm.SwitchoverStartType, cmd, func(res *fsm.ApplyResult) {
		a.answerSwitchover(w, res.Value.(*fsm.Switchover))
	})
}

// targetReady refuses a switchover onto a mirror whose subscription is
// not set up, or whose last reported lag is over budget (ms): its
// catch-up would hold the tenant's writes fenced for that long, or time
// out.
func targetReady(s *fsm.State, tenant, to string, budget int64) error {
	task := s.Tasks[fsm.TenantSubscriberTaskID(tenant, to)]
	var res fsm.SubscriberResult
	if task == nil || task.Agent == "" || len(task.Result) == 0 || json.Unmarshal(task.Result, &res) != nil {
		return &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: codeMirrorNotReady, Message: fmt.Sprintf(
			"region %s has not reported its subscription of tenant %s yet: wait until GET /v1/tenants/%s/replication shows it streaming", to, tenant, tenant)}
	}
	// A mirror that streams, or stopped a moment ago with every table
	// copied (its lag is then the time since it last streamed), is judged
	// by its lag; one still copying or failing could not catch up.
	if res.State != fsm.ReplStreaming && res.State != fsm.ReplDown {
		msg := fmt.Sprintf("region %s's subscription of tenant %s is %s, not streaming", to, tenant, res.State)
		if task.Error != "" {
			msg += " (" + task.Error + ")"
		}
		return &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: codeMirrorNotReady, Message: msg +
			": a switchover onto it could not catch up; fix the mirror first (GET /v1/tenants/" + tenant + "/replication)"}
	}
	if lag := int64(res.LagSeconds * 1000); lag > budget {
		return &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: codeMirrorLagging, Message: fmt.Sprintf(
			"region %s's last reported lag for tenant %s is %d ms, over the budget of %d ms: the tenant's writes would stay fenced while it catches up. "+
				"Wait until it catches up, or give a larger max_lag_ms (--max-lag)", to, tenant, lag, budget)}
	}
	return nil
}

// getSwitchover answers GET /v1/tenants/{id}/switchover, blocking on
// ?index= until the switchover or one of its tasks changes.
func (a *API) getSwitchover(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := maxIndex(s.TableIndex(fsm.TableSwitchovers), s.TableIndex(fsm.TableTenants))
		s.TableIndex(fsm.TableTasks)
		sw := s.Switchover(id)
		if sw == nil {
			if s.Tenants[id] == nil {
				return nil, idx, notFound("tenant_not_found", "tenant "+quote(id)+" does not exist")
			}
			return nil, idx, notFound(fsm.CodeNoSwitchover, "tenant "+quote(id)+" has never switched over: start one with POST /v1/tenants/"+id+"/switchover")
		}
		st, sidx := switchoverStatus(s.State, sw)
		return st, sidx, nil
	})
}

// abortSwitchover answers DELETE /v1/tenants/{id}/switchover: the
// switchover rolls back (lifts the fence) if its promotion has not
// started; ?reason= is recorded with it.
func (a *API) abortSwitchover(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	reason := r.URL.Query().Get("reason")
	if len(reason) > 512 {
		writeError(w, badRequest("invalid_reason", "reason must be at most 512 bytes"))
		return
	}
	cmd := fsm.SwitchoverAbort{Tenant: id, Reason: reason, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	a.write(w, r, nil, fsm.SwitchoverAbortType, cmd, func(res *fsm.ApplyResult) {
		a.answerSwitchover(w, res.Value.(*fsm.Switchover))
	})
}

// answerSwitchover answers a start or an abort: 202 and the status as of
// the write.
func (a *API) answerSwitchover(w http.ResponseWriter, sw *fsm.Switchover) {
	var st wire.SwitchoverStatus
	a.c.FSM().Read(func(s *fsm.State) { st, _ = switchoverStatus(s, sw) })
	writeJSON(w, http.StatusAccepted, st)
}

// switchoverStatus is sw with the tasks of its phase, and the largest
// modify index among them: a blocking read wakes when the switchover or
// one of its tasks changes, not on every other task's report.
func switchoverStatus(s *fsm.State, sw *fsm.Switchover) (wire.SwitchoverStatus, uint64) {
	st := wire.SwitchoverStatus{Switchover: *sw, Active: sw.Active(), Deadline: sw.Deadline(), Tasks: []wire.SwitchoverTask{}}
	idx := sw.ModifyIndex
	add := func(t *fsm.Task) {
		st.Tasks = append(st.Tasks, wire.SwitchoverTask{ID: t.ID, Type: t.Type, Region: t.Region, Agent: t.Agent, Status: t.Status,
			Error: t.Error, Result: t.Result, ReportedAt: t.ReportedAt})
		idx = maxIndex(idx, t.ModifyIndex)
	}
	if sw.Phase == fsm.PhaseCommitted {
		for _, m := range sw.HandOff() {
			if t := s.Tasks[fsm.TenantSubscriberTaskID(sw.Tenant, m)]; t != nil {
				add(t)
			}
		}
		return st, idx
	}
	for _, t := range s.SortedTasks() {
		if !fsm.IsSwitchoverTask(t.Type) || !strings.HasPrefix(t.ID, t.Type+"/"+sw.Tenant+"/") {
			continue
		}
		var spec struct {
			Switchover uint64 `json:"switchover"`
		}
		if json.Unmarshal(t.Spec, &spec) == nil && spec.Switchover == sw.ID {
			add(t)
		}
	}
	return st, idx
}

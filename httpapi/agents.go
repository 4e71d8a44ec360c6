package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

func (a *API) listAgents(w http.ResponseWriter, r *http.Request) {
	region := r.URL.Query().Get("region")
	a.read(w, r, func(s *view) (any, uint64, error) {
		out := make([]*fsm.Agent, 0, len(s.Agents))
		for _, ag := range s.SortedAgents() {
			if region == "" || ag.Region == region {
				out = append(out, ag)
			}
		}
		return wire.AgentList{Agents: out}, s.TableIndex(fsm.TableAgents), nil
	})
}

func (a *API) getAgent(w http.ResponseWriter, r *http.Request) {
	node := mux.Vars(r)["node"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := s.TableIndex(fsm.TableAgents)
		ag, ok := s.Agents[node]
		if !ok {
			return nil, idx, notFound("agent_not_found", "agent "+quote(node)+" is not registered")
		}
		return ag, idx, nil
	})
}

// agentTasks is the blocking query agents watch: it moves only when this
// agent's assignments change.
func (a *API) agentTasks(w http.ResponseWriter, r *http.Request) {
	node := mux.Vars(r)["node"]
	if err := actsAs(identityOf(r), node); err != nil {
		writeError(w, err)
		return
	}
	a.read(w, r, func(s *view) (any, uint64, error) {
		return wire.TaskList{Tasks: nonNilTasks(s.AgentTasks(node))}, s.TableIndex(fsm.AgentTasksTable(node)), nil
	})
}

func (a *API) listTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	region, typ, agent := q.Get("region"), q.Get("type"), q.Get("agent")
	a.read(w, r, func(s *view) (any, uint64, error) {
		out := []*fsm.Task{}
		for _, t := range s.SortedTasks() {
			if (region == "" || t.Region == region) && (typ == "" || t.Type == typ) && (agent == "" || t.Agent == agent) {
				out = append(out, t)
			}
		}
		return wire.TaskList{Tasks: out}, s.TableIndex(fsm.TableTasks), nil
	})
}

func nonNilTasks(t []*fsm.Task) []*fsm.Task {
	if t == nil {
		return []*fsm.Task{}
	}
	return t
}

// agentReport commits an agent's heartbeat and task statuses.
func (a *API) agentReport(w http.ResponseWriter, r *http.Request) {
	node := mux.Vars(r)["node"]
	if err := actsAs(identityOf(r), node); err != nil {
		writeError(w, err)
		return
	}
	var in struct {
		fsm.AgentReport
		wire.Envelope
	}
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	rep := in.AgentReport
	if rep.Node == "" {
		rep.Node = node
	} else if rep.Node != node {
		writeError(w, badRequest("node_mismatch", "the body names agent "+quote(rep.Node)+" but the path names "+quote(node)))
		return
	}
	if rep.Auth, err = signedAuth(r, body, in.Envelope); err != nil {
		writeError(w, err)
		return
	}
	rep.At = a.stamp()
	a.writeSigned(w, r, body, fsm.AgentReportType, rep, rep.Auth, rep.At, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value)
	})
}

// agentLeave hands an agent's tasks back before it leaves.
func (a *API) agentLeave(w http.ResponseWriter, r *http.Request) {
	node := mux.Vars(r)["node"]
	if err := actsAs(identityOf(r), node); err != nil {
		writeError(w, err)
		return
	}
	var env wire.Envelope
	body, _, err := decodeWrite(w, r, &env)
	if err != nil {
		writeError(w, err)
		return
	}
	auth, err := signedAuth(r, body, env)
	if err != nil {
		writeError(w, err)
		return
	}
	cmd := fsm.AgentLeave{Node: node, At: a.stamp(), Auth: auth}
	a.writeSigned(w, r, body, fsm.AgentLeaveType, cmd, auth, cmd.At, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value)
	})
}

func (a *API) coordinates(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.c.Coordinates())
}

func (a *API) nearestRegions(w http.ResponseWriter, r *http.Request) {
	from := r.URL.Query().Get("from")
	if from == "" {
		writeError(w, badRequest("missing_from", "give ?from=<node or region> to rank regions from"))
		return
	}
	out, err := a.c.NearestRegions(from)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.NearestRegions{From: from, Regions: out})
}

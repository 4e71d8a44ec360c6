package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// globalTableInput is a global table write's body; sync is read-only.
type globalTableInput struct {
	fsm.GlobalTable
	Sync any `json:"sync,omitempty"`
}

// databaseInput is an agent's report of its region's database endpoint,
// signed with the agent's key.
type databaseInput struct {
	wire.DatabaseReport
	wire.Envelope
}

// putRegionDatabase records the endpoint an agent reports for its region.
func (a *API) putRegionDatabase(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	if err := actsFor(identityOf(r), region); err != nil {
		writeError(w, err)
		return
	}
	var in databaseInput
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := fsm.ValidateEndpoint(&in.Endpoint); err != nil {
		writeError(w, err)
		return
	}
	auth, err := signedAuth(r, body, in.Envelope)
	if err != nil {
		writeError(w, err)
		return
	}
	cmd := fsm.RegionDatabaseReport{Region: region, Endpoint: in.Endpoint, Node: in.Node, At: a.stamp(), Auth: auth}
	a.writeSigned(w, r, body, fsm.RegionDatabaseType, cmd, auth, cmd.At, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value)
	})
}

func (a *API) getRegionDatabase(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := s.TableIndex(fsm.TableDatabases)
		d, ok := s.Databases[region]
		if !ok {
			return nil, idx, notFound("database_not_found", "no agent of region "+quote(region)+" has reported a database endpoint")
		}
		return d, idx, nil
	})
}

// tenantReplication answers GET /v1/tenants/{id}/replication.
func (a *API) tenantReplication(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := maxIndex(s.TableIndex(fsm.TableTenants), s.TableIndex(fsm.TableTasks), s.TableIndex(fsm.TableSyncStates))
		v, ok := s.TenantReplicationView(id)
		if !ok {
			return nil, idx, notFound("tenant_not_found", "tenant "+quote(id)+" does not exist and has no replication left")
		}
		return v, idx, nil
	})
}

// replicationSummary answers GET /v1/replication.
func (a *API) replicationSummary(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		return s.ReplicationSummary(), replicationIndex(s), nil
	})
}

func replicationIndex(s *view) uint64 {
	return maxIndex(s.TableIndex(fsm.TableTenants), s.TableIndex(fsm.TableTasks), s.TableIndex(fsm.TableSyncStates),
		s.TableIndex(fsm.TableGlobalTables), s.TableIndex(fsm.TableRegions))
}

func (a *API) listGlobalTables(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		return wire.GlobalTableList{Tables: s.SortedGlobalTables()}, s.TableIndex(fsm.TableGlobalTables), nil
	})
}

func (a *API) getGlobalTable(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := replicationIndex(s)
		g, ok := s.GlobalTables[name]
		if !ok {
			return nil, idx, notFound("global_table_not_found", "global table "+quote(name)+" does not exist")
		}
		out := wire.GlobalTableStatus{GlobalTable: g}
		for _, v := range s.GlobalTableViews() {
			if v.Name == name {
				out.Sync = v
			}
		}
		return out, idx, nil
	})
}

func (a *API) putGlobalTable(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	var in globalTableInput
	body, cas, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	g := in.GlobalTable
	if g.Name == "" {
		g.Name = name
	} else if g.Name != name {
		writeError(w, badRequest("name_mismatch", "the body names table "+quote(g.Name)+" but the path names "+quote(name)))
		return
	}
	if err := fsm.ValidateGlobalTable(&g); err != nil {
		writeError(w, err)
		return
	}
	cmd := fsm.GlobalTableUpsert{Table: g, CAS: cas, At: a.stamp()}
	a.write(w, r, body, fsm.GlobalTableUpsertType, cmd, func(res *fsm.ApplyResult) {
		out := res.Value.(*fsm.GlobalTable)
		writeJSON(w, createdOrOK(out.CreateIndex, out.ModifyIndex), out)
	})
}

func (a *API) deleteGlobalTable(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	cas, err := parseCAS(r)
	if err != nil {
		writeError(w, err)
		return
	}
	cmd := fsm.GlobalTableDelete{Name: name, CAS: cas, At: a.stamp()}
	a.write(w, r, nil, fsm.GlobalTableDeleteType, cmd, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, wire.DeleteResponse{Deleted: "global_table", Name: name, Index: res.Index})
	})
}

package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// getDivergence answers GET /v1/tenants/{id}/divergence: the counts of the
// rows each old home of the tenant keeps in quarantine after a failover,
// blocking on ?index= until they change. Row contents never leave the old
// home's database: the answer holds counts per table and reason.
func (a *API) getDivergence(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := maxIndex(s.TableIndex(fsm.TableDivergence), s.TableIndex(fsm.TableTenants))
		t := s.Tenants[id]
		if t == nil {
			return nil, idx, notFound("tenant_not_found", "tenant "+quote(id)+" does not exist")
		}
		out := wire.DivergenceList{Tenant: id, Divergence: []wire.DivergenceEntry{}}
		for _, d := range s.DivergenceOf(id, t.CreateIndex) {
			out.Divergence = append(out.Divergence, wire.NewDivergenceEntry(d))
		}
		return out, idx, nil
	})
}

// resolveDivergence answers DELETE /v1/tenants/{id}/divergence/{region}:
// an operator marks the rows the old home region keeps in quarantine as
// reconciled (?note= is recorded with it, in the audit chain too). The
// rows themselves stay in that region's quarantine table; deleting them
// there is the operator's, once they are merged.
func (a *API) resolveDivergence(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	note := r.URL.Query().Get("note")
	switch {
	case !fsm.ValidRegionName(v["region"]):
		writeError(w, badRequest("invalid_region", "region "+quote(v["region"])+" is not a region name (a DNS label)"))
		return
	case len(note) > 512:
		writeError(w, badRequest("invalid_note", "note must be at most 512 bytes"))
		return
	}
	cmd := fsm.DivergenceRecord{Tenant: v["id"], Region: v["region"], Resolve: true, Note: note, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	a.write(w, r, nil, fsm.DivergenceRecordType, cmd, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, wire.NewDivergenceEntry(res.Value.(*fsm.Divergence)))
	})
}

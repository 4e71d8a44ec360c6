package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
)

// patchTenant is PATCH /v1/tenants/{id}: a JSON merge patch (RFC 7396)
// on the tenant as it is. Named fields replace the current ones (a list
// replaces the whole list), null removes a field, labels merge key by key,
// and what the patch does not name stays; PUT, by contrast, replaces the
// whole tenant. The FSM applies the patch to the tenant as it is at the
// entry (fsm.TenantPatch), so a concurrent write to a field the patch
// does not name is never lost. With ?cas=N it applies only to
// modify_index N (409 otherwise).
func (a *API) patchTenant(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	var patch json.RawMessage
	body, cas, err := decodeWrite(w, r, &patch)
	if err != nil {
		writeError(w, err)
		return
	}
	// Refuse a bad patch here with the FSM's own check, on the tenant as
	// this server knows it (caught up with the leader when it does not
	// know it yet); the leader's FSM applies it to the current tenant.
	cur := a.tenant(id)
	if cur == nil {
		if err := a.catchUp(r.Context()); err != nil {
			writeError(w, err)
			return
		}
		if cur = a.tenant(id); cur == nil {
			writeError(w, notFound("tenant_not_found", "tenant "+quote(id)+" does not exist: create it with PUT"))
			return
		}
	}
	// A move of a replicated tenant is refused first: other faults of
	// such a patch (the new home still listed as a mirror) would hide why.
	var named struct {
		Home *string `json:"home_region"`
	}
	if json.Unmarshal(patch, &named) == nil && named.Home != nil {
		if err := a.homeChangeCheck(id, *named.Home); err != nil {
			writeError(w, err)
			return
		}
	}
	if _, err := fsm.PatchTenant(cur, patch); err != nil {
		writeError(w, err)
		return
	}
	cmd := fsm.TenantPatch{ID: id, Patch: patch, CAS: cas, At: a.stamp()}
	a.write(w, r, body, fsm.TenantPatchType, cmd, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value.(*fsm.Tenant))
	})
}

// homeChangeCheck refuses, before anything is logged, a write that would
// move tenant id's home to home while it is replicated, as this server
// knows it (the leader's FSM checks again at apply).
func (a *API) homeChangeCheck(id, home string) (err error) {
	a.c.FSM().Read(func(s *fsm.State) { err = fsm.HomeChangeCheck(s, s.Tenants[id], home) })
	return err
}

func (a *API) tenant(id string) (t *fsm.Tenant) {
	a.c.FSM().Read(func(s *fsm.State) { t = s.Tenants[id] })
	return t
}

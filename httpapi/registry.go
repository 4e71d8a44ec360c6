package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// regionInput is a region write's body: a region, plus the read-only fields
// a GET returns, accepted and ignored so a read-modify-write round trip
// works.
type regionInput struct {
	fsm.Region
	Health   json.RawMessage `json:"health,omitempty"`
	Database json.RawMessage `json:"database,omitempty"`
	// PublicKey is the region's key, required on its first registration,
	// which it must sign (proof of possession).
	PublicKey string `json:"public_key,omitempty"`
	wire.Envelope
}

func regionViews(s *fsm.State) []wire.RegionView {
	regs := s.SortedRegions()
	out := make([]wire.RegionView, len(regs))
	for i, r := range regs {
		out[i] = regionView(s, r)
	}
	return out
}

// regionView is a region as the API shows it: a copy of the stored value,
// with its health and database endpoint.
func regionView(s *fsm.State, r *fsm.Region) wire.RegionView {
	return wire.RegionView{Region: *r, Health: s.RegionHealth(r.Name), Database: regionEndpoint(s, r.Name)}
}

func regionEndpoint(s *fsm.State, region string) *fsm.DatabaseEndpoint {
	if d := s.Databases[region]; d != nil {
		ep := d.Endpoint
		return &ep
	}
	return nil
}

// decodeWrite reads and strictly decodes a write's body into v, and its
// ?cas parameter.
func decodeWrite(w http.ResponseWriter, r *http.Request, v any) ([]byte, *uint64, error) {
	body, err := readBody(w, r, MaxBodyBytes)
	if err != nil {
		return nil, nil, err
	}
	if err := decodeStrict(body, v); err != nil {
		return nil, nil, err
	}
	cas, err := parseCAS(r)
	return body, cas, err
}

// registerRegion is the seed path POST /region/register: create or update
// a region from its body.
func (a *API) registerRegion(w http.ResponseWriter, r *http.Request) {
	a.upsertRegion(w, r, "")
}

// putRegion is PUT /v1/regions/{name}.
func (a *API) putRegion(w http.ResponseWriter, r *http.Request) {
	a.upsertRegion(w, r, mux.Vars(r)["name"])
}

func (a *API) upsertRegion(w http.ResponseWriter, r *http.Request, pathName string) {
	var in regionInput
	body, cas, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	reg := in.Region
	if pathName != "" {
		if reg.Name == "" {
			reg.Name = pathName
		} else if reg.Name != pathName {
			writeError(w, badRequest("name_mismatch", "the body names region "+quote(reg.Name)+" but the path names "+quote(pathName)))
			return
		}
	}
	fsm.NormalizeRegion(&reg)
	if err := fsm.ValidateRegion(&reg); err != nil {
		writeError(w, err)
		return
	}
	auth, err := signedAuth(r, body, in.Envelope)
	if err != nil {
		writeError(w, err)
		return
	}
	rules, _ := a.c.Protocols()
	if reg.AppURL != "" && rules < fsm.RulesTrustBound {
		// Stored only under RulesTrustBound: refused rather than dropped.
		writeError(w, badRequest("app_url_unsupported", fmt.Sprintf("app_url needs every server at protocol %d (the cluster speaks %d): finish the upgrade first, or register without app_url", fsm.RulesTrustBound, rules)))
		return
	}
	at := a.stamp()
	cmd := fsm.RegionUpsert{Region: reg, CAS: cas, At: at, Auth: auth, PublicKey: in.PublicKey}
	action := func(s *fsm.State) (string, string) {
		return fsm.RegionUpsertAction(s, &reg, rules), "production region " + reg.Name + ": " + fsm.RegionUpsertChange(s, &reg)
	}
	a.writeGated(w, r, body, fsm.RegionUpsertType, cmd, action, auth, at, func(res *fsm.ApplyResult) {
		out := res.Value.(*fsm.Region)
		writeJSON(w, createdOrOK(out.CreateIndex, out.ModifyIndex), out)
	})
}

func createdOrOK(create, modify uint64) int {
	if create == modify {
		return http.StatusCreated
	}
	return http.StatusOK
}

func (a *API) listRegions(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		return wire.RegionList{Regions: regionViews(s.State)}, maxIndex(s.TableIndex(fsm.TableRegions), s.TableIndex(fsm.TableAgents), s.TableIndex(fsm.TableTasks), s.TableIndex(fsm.TableDatabases)), nil
	})
}

// anonymousRegionList is /region/list with Config.AnonymousRegionList: a
// request with a token gets the whole view (after the token is checked);
// one without gets each region's name, URL, tier, status and health
// status, and nothing about its database, labels, location, agents or
// probe.
func (a *API) anonymousRegionList(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		a.auth(anyRole, a.listRegions)(w, r)
		return
	}
	a.read(w, r, func(s *view) (any, uint64, error) {
		out := wire.AnonymousRegionList{Regions: []wire.AnonymousRegion{}}
		for _, v := range regionViews(s.State) {
			ar := wire.AnonymousRegion{Name: v.Name, URL: v.URL, Tier: v.Tier, Status: v.Status}
			ar.Health.Status = v.Health.Status
			out.Regions = append(out.Regions, ar)
		}
		return out, maxIndex(s.TableIndex(fsm.TableRegions), s.TableIndex(fsm.TableAgents), s.TableIndex(fsm.TableTasks)), nil
	})
}

func (a *API) getRegion(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := maxIndex(s.TableIndex(fsm.TableRegions), s.TableIndex(fsm.TableAgents), s.TableIndex(fsm.TableTasks), s.TableIndex(fsm.TableDatabases))
		reg, ok := s.Regions[name]
		if !ok {
			return nil, idx, notFound("region_not_found", "region "+quote(name)+" is not registered")
		}
		return regionView(s.State, reg), idx, nil
	})
}

func (a *API) deleteRegion(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	cas, err := parseCAS(r)
	if err != nil {
		writeError(w, err)
		return
	}
	at := a.stamp()
	cmd := fsm.RegionDelete{Name: name, CAS: cas, At: at}
	action := func(s *fsm.State) (string, string) {
		if s.Regions[name] == nil {
			return "", "" // let the FSM answer 404
		}
		return fsm.ActionDeregisterRegion, "deregister region " + name
	}
	a.writeGated(w, r, nil, fsm.RegionDeleteType, cmd, action, nil, at, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, wire.DeleteResponse{Deleted: "region", Name: name, Index: res.Index})
	})
}

func (a *API) listTenants(w http.ResponseWriter, r *http.Request) {
	region := r.URL.Query().Get("region")
	a.read(w, r, func(s *view) (any, uint64, error) {
		all := s.SortedTenants()
		if region == "" {
			return wire.TenantList{Tenants: all}, s.TableIndex(fsm.TableTenants), nil
		}
		out := make([]*fsm.Tenant, 0)
		for _, t := range all {
			if t.HomeRegion == region || slices.Contains(t.Mirrors, region) {
				out = append(out, t)
			}
		}
		return wire.TenantList{Tenants: out}, s.TableIndex(fsm.TableTenants), nil
	})
}

func (a *API) getTenant(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := s.TableIndex(fsm.TableTenants)
		t, ok := s.Tenants[id]
		if !ok {
			return nil, idx, notFound("tenant_not_found", "tenant "+quote(id)+" does not exist")
		}
		return t, idx, nil
	})
}

func (a *API) putTenant(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	var t fsm.Tenant
	body, cas, err := decodeWrite(w, r, &t)
	if err != nil {
		writeError(w, err)
		return
	}
	if t.ID == "" {
		t.ID = id
	} else if t.ID != id {
		writeError(w, badRequest("id_mismatch", "the body names tenant "+quote(t.ID)+" but the path names "+quote(id)))
		return
	}
	// A move of a replicated tenant is refused first: other faults of
	// such a write (the new home still listed as a mirror) would hide why.
	if err := a.homeChangeCheck(id, t.HomeRegion); err != nil {
		writeError(w, err)
		return
	}
	fsm.NormalizeTenant(&t)
	if err := fsm.ValidateTenant(&t); err != nil {
		writeError(w, err)
		return
	}
	t.Epoch = 0 // read-only, like the indexes: accepted so that a GET round-trips, and set by the FSM
	cmd := fsm.TenantUpsert{Tenant: t, CAS: cas, At: a.stamp()}
	a.write(w, r, body, fsm.TenantUpsertType, cmd, func(res *fsm.ApplyResult) {
		out := res.Value.(*fsm.Tenant)
		writeJSON(w, createdOrOK(out.CreateIndex, out.ModifyIndex), out)
	})
}

func (a *API) deleteTenant(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	cas, err := parseCAS(r)
	if err != nil {
		writeError(w, err)
		return
	}
	cmd := fsm.TenantDelete{ID: id, CAS: cas, At: a.stamp()}
	a.write(w, r, nil, fsm.TenantDeleteType, cmd, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, wire.DeleteResponse{Deleted: "tenant", Name: id, Index: res.Index})
	})
}

// maxIndex returns the largest index: a view built from several tables moves
// when any of them does.
func maxIndex(idx ...uint64) uint64 {
	var m uint64
	for _, i := range idx {
		if i > m {
			m = i
		}
	}
	return m
}

// quote quotes a user-supplied name for an error message, truncated so a
// huge name cannot bloat the response.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.Quote(s)
}

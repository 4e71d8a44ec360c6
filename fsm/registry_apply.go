package fsm

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Deleted is the apply result of a deletion.
type Deleted struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	At   int64  `json:"-"`
}

func (d *Deleted) at() int64 { return d.At }

// checkCAS compares an expected modify index with the stored object's.
// cur is 0 when the object does not exist, so cas=0 means "create only".
func checkCAS(kind, name string, cas *uint64, cur uint64) error {
	if cas == nil || *cas == cur {
		return nil
	}
	if cur == 0 {
		return conflictf("cas: %s %q does not exist (expected modify_index %d)", kind, name, *cas)
	}
	if *cas == 0 {
		return conflictf("cas: %s %q already exists (modify_index %d); cas=0 only creates", kind, name, cur)
	}
	return conflictf("cas: %s %q has modify_index %d, not %d", kind, name, cur, *cas)
}

// RegionUpsert creates or replaces a region.
type RegionUpsert struct {
	Region Region  `json:"region"`
	CAS    *uint64 `json:"cas,omitempty"` // expected modify index; 0 = create only
	At     int64   `json:"at"`            // leader's clock, unix nanoseconds
	// Auth is the region's signature over the request (policy P2). A first
	// registration is signed by the key in PublicKey, proving possession;
	// later ones by a valid key of the region.
	Auth      *SignedAuth `json:"auth,omitempty"`
	PublicKey string      `json:"public_key,omitempty"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

func applyRegionUpsert(s *State, e *Entry) (any, error) {
	cmd := body[RegionUpsert](e)
	r := cmd.Region
	if cmd.Rules < RulesTrustBound {
		// A server before protocol 4 does not know app_url and drops it;
		// every server stores what the oldest one does.
		r.AppURL = ""
	}
	NormalizeRegion(&r)
	if err := ValidateRegion(&r); err != nil {
		return nil, err
	}
	if _, err := regionSigner(s, cmd, cmd.At, !e.Approved); err != nil {
		return nil, err
	}
	if action := RegionUpsertAction(s, &r, cmd.Rules); action != "" {
		if err := requireApproval(s, e, action); err != nil {
			return nil, err
		}
	}
	old := s.Regions[r.Name]
	var cur uint64
	if old != nil {
		cur = old.ModifyIndex
	}
	if err := checkCAS("region", r.Name, cmd.CAS, cur); err != nil {
		return nil, err
	}
	if s.Members[r.Name] == nil {
		key, _ := newKey(cmd.PublicKey, cmd.At) // regionSigner checked it
		s.Members[r.Name] = &Member{ID: r.Name, Kind: MemberRegion, Keys: []MemberKey{*key}, CreateIndex: e.Index, ModifyIndex: e.Index}
		s.keyOwners[key.KeyID] = r.Name
		touchTrust(s, e)
	}
	if !e.Approved {
		recordNonce(s, cmd.Auth, cmd.At)
	}
	r.ModifyIndex, r.UpdatedAt = e.Index, cmd.At
	if old != nil {
		r.CreateIndex, r.CreatedAt = old.CreateIndex, old.CreatedAt
	} else {
		r.CreateIndex, r.CreatedAt = e.Index, cmd.At
	}
	s.Regions[r.Name] = &r
	s.touch(TableRegions, e.Index)
	return &r, nil
}

// RegionDelete removes a region that no tenant uses.
type RegionDelete struct {
	Name string  `json:"name"`
	CAS  *uint64 `json:"cas,omitempty"`
	At   int64   `json:"at"`
}

func applyRegionDelete(s *State, e *Entry) (any, error) {
	cmd := body[RegionDelete](e)
	old := s.Regions[cmd.Name]
	if old == nil {
		return nil, notFoundf("region_not_found", "region %q is not registered", cmd.Name)
	}
	if err := checkCAS("region", cmd.Name, cmd.CAS, old.ModifyIndex); err != nil {
		return nil, err
	}
	for _, t := range s.SortedTenants() {
		if t.HomeRegion == cmd.Name {
			return nil, preconditionf("region_in_use", "region %q is the home region of tenant %q; move or delete the tenant first", cmd.Name, t.ID)
		}
		for _, m := range t.Mirrors {
			if m == cmd.Name {
				return nil, preconditionf("region_in_use", "region %q mirrors tenant %q; remove it from the tenant's mirrors first", cmd.Name, t.ID)
			}
		}
	}
	for _, g := range s.SortedGlobalTables() {
		if g.WriterRegion == cmd.Name {
			return nil, preconditionf("region_in_use", "region %q is the writer of global table %q; move or delete the table first", cmd.Name, g.Name)
		}
	}
	if err := requireApproval(s, e, ActionDeregisterRegion); err != nil {
		return nil, err
	}
	delete(s.Regions, cmd.Name)
	s.touch(TableRegions, e.Index)
	if s.RegionOps[cmd.Name] != nil {
		delete(s.RegionOps, cmd.Name) // its maintenance flag and drain go with it
		s.touch(TableRegionOps, e.Index)
	}
	if m := s.Members[cmd.Name]; m != nil && m.Kind == MemberRegion {
		deleteMember(s, e, m) // a deregistered region's keys are no longer trusted
	}
	return &Deleted{Kind: "region", Name: cmd.Name, At: cmd.At}, nil
}

// TenantUpsert creates or replaces a tenant's placement. Under
// RulesTrustBound it also keeps the tenant's epoch (set at creation,
// bumped by a change of home) and refuses a change of home for a
// replicated tenant (HomeChangeCheck); before, the epoch stays as it was
// and any home change applies.
type TenantUpsert struct {
	Tenant Tenant  `json:"tenant"`
	CAS    *uint64 `json:"cas,omitempty"`
	At     int64   `json:"at"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

func applyTenantUpsert(s *State, e *Entry) (any, error) {
	cmd := body[TenantUpsert](e)
	return upsertTenant(s, e, cmd.Tenant, cmd.CAS, cmd.At, cmd.Rules)
}

// upsertTenant stores t, checked, as the tenant's new version, under the
// given rules.
func upsertTenant(s *State, e *Entry, t Tenant, cas *uint64, at int64, rules int) (*Tenant, error) {
	NormalizeTenant(&t)
	if err := ValidateTenant(&t); err != nil {
		return nil, err
	}
	if s.Regions[t.HomeRegion] == nil {
		return nil, invalidf("unknown_region", "home_region %q is not a registered region", t.HomeRegion)
	}
	for _, m := range t.Mirrors {
		if s.Regions[m] == nil {
			return nil, invalidf("unknown_region", "mirror %q is not a registered region", m)
		}
	}
	old := s.Tenants[t.ID]
	var cur uint64
	if old != nil {
		cur = old.ModifyIndex
	}
	if err := checkCAS("tenant", t.ID, cas, cur); err != nil {
		return nil, err
	}
	if rules >= RulesTrustBound {
		if err := switchoverHold(s, t.ID); err != nil {
			return nil, err
		}
		if err := HomeChangeCheck(s, old, t.HomeRegion); err != nil {
			return nil, err
		}
	}
	note, err := applyResidency(old, &t, rules)
	if err != nil {
		return nil, err
	}
	if rules >= RulesTrustBound {
		if err := placementMaintenanceCheck(s, old, &t); err != nil {
			return nil, err
		}
	}
	t.Epoch = nextEpoch(old, t.HomeRegion, rules)
	t.ModifyIndex, t.UpdatedAt = e.Index, at
	if old != nil {
		t.CreateIndex, t.CreatedAt = old.CreateIndex, old.CreatedAt
	} else {
		t.CreateIndex, t.CreatedAt = e.Index, at
	}
	s.Tenants[t.ID] = &t
	s.indexTenant(t.ID)
	s.touch(TableTenants, e.Index)
	if note != "" {
		s.auditNote = note
	}
	if !t.IsSync() && s.SyncStates[t.ID] != nil {
		delete(s.SyncStates, t.ID) // a recorded degrade means nothing in async mode
		s.touch(TableSyncStates, e.Index)
	}
	return &t, nil
}

// TenantPatch changes the fields of a tenant that Patch names, a JSON merge
// patch (RFC 7396) applied to the tenant as it is at the entry: a named
// field replaces the current value (a list the whole list), null removes
// it, objects (labels) merge key by key. Applied in the FSM, a patch never
// loses a concurrent write to a field it does not name.
//
// Its rules are TenantUpsert's: the patched tenant is stored as an upsert.
type TenantPatch struct {
	ID    string          `json:"id"`
	Patch json.RawMessage `json:"patch"`
	CAS   *uint64         `json:"cas,omitempty"`
	At    int64           `json:"at"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

func applyTenantPatch(s *State, e *Entry) (any, error) {
	cmd := body[TenantPatch](e)
	cur := s.Tenants[cmd.ID]
	if cur == nil {
		return nil, notFoundf("tenant_not_found", "tenant %q does not exist: create it with PUT", cmd.ID)
	}
	t, err := PatchTenant(cur, cmd.Patch)
	if err != nil {
		return nil, err
	}
	return upsertTenant(s, e, *t, cmd.CAS, cmd.At, cmd.Rules)
}

// PatchTenant applies a JSON merge patch to cur and returns the tenant it
// describes, normalized and validated (the regions it names are checked on
// apply). The id and the read-only fields (indexes, times) stay cur's.
func PatchTenant(cur *Tenant, patch json.RawMessage) (*Tenant, error) {
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, invalidf("bad_patch", "the patch is not JSON: %v", err)
	}
	po, ok := p.(map[string]any)
	if !ok {
		return nil, invalidf("bad_patch", "a merge patch must be a JSON object")
	}
	if id, ok := po["id"]; ok && id != cur.ID {
		return nil, invalidf("id_mismatch", "the patch names tenant %v but patches %q", id, cur.ID)
	}
	if _, ok := po["epoch"]; ok {
		// A server without epochs refuses the field as unknown; every
		// server refuses it, so that all come to the same state.
		return nil, invalidf("read_only_field", "epoch is set by atomfed (1 at creation, one more with each change of home): leave it out of the patch")
	}
	b, _ := json.Marshal(cur) // a Tenant always encodes
	var doc any
	_ = json.Unmarshal(b, &doc)
	merged, _ := json.Marshal(mergePatch(doc, po))
	var t Tenant
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, invalidf("bad_patch", "the patched tenant does not decode: %v", err)
	}
	t.ID, t.CreateIndex, t.ModifyIndex, t.CreatedAt, t.UpdatedAt, t.Epoch = cur.ID, cur.CreateIndex, cur.ModifyIndex, cur.CreatedAt, cur.UpdatedAt, cur.Epoch
	if _, ok := po["residency_region"]; !ok {
		// Not named: kept, or moved along with the home of a tenant
		// without tables, as for a PUT that leaves it out (residency.go).
		t.ResidencyRegion = ""
	}
	NormalizeTenant(&t)
	if err := ValidateTenant(&t); err != nil {
		return nil, err
	}
	return &t, nil
}

// mergePatch applies an RFC 7396 merge patch to target.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}

// TenantDelete removes a tenant.
type TenantDelete struct {
	ID  string  `json:"id"`
	CAS *uint64 `json:"cas,omitempty"`
	At  int64   `json:"at"`
}

func applyTenantDelete(s *State, e *Entry) (any, error) {
	cmd := body[TenantDelete](e)
	old := s.Tenants[cmd.ID]
	if old == nil {
		return nil, notFoundf("tenant_not_found", "tenant %q does not exist", cmd.ID)
	}
	if err := checkCAS("tenant", cmd.ID, cmd.CAS, old.ModifyIndex); err != nil {
		return nil, err
	}
	// Not Ruled: a switchover exists only once every server speaks
	// protocol 4 (SwitchoverStart needs it), so no older entry meets one.
	if err := switchoverHold(s, cmd.ID); err != nil {
		return nil, err
	}
	delete(s.Tenants, cmd.ID)
	s.indexTenant(cmd.ID)
	s.touch(TableTenants, e.Index)
	if s.SyncStates[cmd.ID] != nil {
		delete(s.SyncStates, cmd.ID)
		s.touch(TableSyncStates, e.Index)
	}
	return &Deleted{Kind: "tenant", Name: cmd.ID, At: cmd.At}, nil
}

// RegionUpsertAction returns the approvable action a region write is, or
// "": the registration of a production region (new, or moved to
// production), and any change of what approvers approved to a region that
// is production now (its tier, URL, application URL or status; its key:
// KeyRotateAction). Such a change needs the same approvals as the
// registration, so that the region's own key cannot undo an approval, for
// instance by downgrading the region to staging and back. Under rules
// before RulesApprovalBound only the registration (new, or moved to
// production) was gated; before RulesTrustBound app_url did not exist, so
// it is not compared (the servers of then could not see it).
func RegionUpsertAction(s *State, r *Region, rules int) string {
	if old := s.Regions[r.Name]; rules < RulesTrustBound && old != nil && r.AppURL != old.AppURL {
		c := *r
		c.AppURL = old.AppURL
		r = &c
	}
	if rules < RulesApprovalBound {
		if old := s.Regions[r.Name]; r.Tier != TierProduction || old != nil && old.Tier == TierProduction {
			return ""
		}
		return ActionRegisterProductionRegion
	}
	if RegionUpsertChange(s, r) == "" {
		return ""
	}
	return ActionRegisterProductionRegion
}

// RegionUpsertChange describes the approval-guarded change a region write
// makes ("" when it makes none): "new production region", or the fields of
// a production region it changes, "tier production -> staging".
func RegionUpsertChange(s *State, r *Region) string {
	old := s.Regions[r.Name]
	if old == nil || old.Tier != TierProduction {
		if r.Tier != TierProduction {
			return ""
		}
		if old == nil {
			return "new production region"
		}
		return "tier " + old.Tier + " -> " + r.Tier
	}
	var changes []string
	for _, f := range []struct{ name, from, to string }{
		{"tier", old.Tier, r.Tier}, {"url", old.URL, r.URL}, {"app_url", old.AppURL, r.AppURL}, {"status", old.Status, r.Status},
	} {
		if f.from != f.to {
			changes = append(changes, f.name+" "+f.from+" -> "+f.to)
		}
	}
	return strings.Join(changes, ", ")
}

// regionSigner checks that a region write is signed by the region: by one
// of its valid keys, or, on its first registration, by the key it brings.
// fresh=false (an approved write applied later) skips timestamp and nonce.
func regionSigner(s *State, c *RegionUpsert, at int64, fresh bool) (string, error) {
	name := c.Region.Name
	if m := s.Members[name]; m != nil {
		if m.Kind != MemberRegion {
			return "", preconditionf("member_exists", "%q is already a %s member, not a region", name, m.Kind)
		}
		signer, _, err := verifyAuth(s, c.Auth, at, fresh, nil)
		if err != nil {
			return "", err
		}
		if signer == nil || signer.ID != name {
			return "", forbiddenf("wrong_signer", "region %s must be updated with its own key, not with %s", name, memberName(signer))
		}
		return name, nil
	}
	if c.PublicKey == "" {
		if c.Auth == nil || c.Auth.Signature == "" {
			_, _, err := verifyAuth(s, c.Auth, at, fresh, nil)
			return "", err
		}
		return "", invalidf("public_key_required", "region %s is new: its first registration must carry public_key and be signed by that key", name)
	}
	key, err := newKey(c.PublicKey, at)
	if err != nil {
		return "", err
	}
	if owner := s.KeyOwner(key.KeyID); owner != nil {
		return "", preconditionf("key_in_use", "key %s already belongs to %s %s; every region has its own key", key.KeyID, owner.Kind, owner.ID)
	}
	if _, _, err := verifyAuth(s, c.Auth, at, fresh, key); err != nil {
		return "", err
	}
	if c.Auth.KeyID != key.KeyID {
		return "", forbiddenf("wrong_signer", "a new region proves possession of its key: sign with the key in public_key (%s)", key.KeyID)
	}
	return name, nil
}

package fsm

import (
	"fmt"
	"sort"
)

// Divergence: after an unplanned failover, the old home that comes back
// may hold rows it committed that the new home never got. Its subscriber
// (replication/resync.go) keeps them in the quarantine table of its own
// database (atomfed_quarantine.divergent_rows: the rows stay in that
// region, PII included) and reports how many; the leader records the count
// here (DivergenceRecord) so that a person sees it, in the API, the audit
// chain and a metric, and reconciles them. Only counts are recorded, never
// a row's contents.

// TableDivergence is the table of the tenants' divergence records.
const TableDivergence = "divergence"

// Divergence is one old home's quarantined rows of one tenant: the rows it
// committed after the failover moved the home away (or that differ from
// the new home's), as its subscriber last reported them.
type Divergence struct {
	Tenant        string `json:"tenant"`
	TenantCreated uint64 `json:"tenant_created"`
	// Region is the old home, which holds the quarantined rows.
	Region string `json:"region"`
	// Epoch is the placement the old home came back into; Failover the
	// failover (switchover record id) that moved the home away, when known.
	Epoch    uint64 `json:"epoch"`
	Failover uint64 `json:"failover,omitempty"`
	// Tables counts the quarantined rows per table; Total is their sum,
	// Missing the part the new home does not have at all.
	Tables  map[string]int64 `json:"tables"`
	Total   int64            `json:"total"`
	Missing int64            `json:"missing_at_new_home"`
	// RowsReconciled counts the rows the old home changed to equal the
	// new home's before it subscribed.
	RowsReconciled int64 `json:"rows_reconciled"`
	// Keys are the first MaxDivergentKeys quarantined rows' keys and
	// reasons (never a row's contents).
	Keys    []DivergentKey `json:"keys,omitempty"`
	FoundAt int64          `json:"found_at"`
	// ResolvedBy and ResolvedAt: a person marked the quarantined rows
	// reconciled (DELETE /v1/tenants/{id}/divergence/{region}).
	ResolvedBy   string `json:"resolved_by,omitempty"`
	ResolvedAt   int64  `json:"resolved_at,omitempty"`
	ResolvedNote string `json:"resolved_note,omitempty"`
	CreateIndex  uint64 `json:"create_index"`
	ModifyIndex  uint64 `json:"modify_index"`
}

// Open reports whether the rows still wait for a person.
func (d *Divergence) Open() bool { return d.ResolvedAt == 0 }

// Limits of a divergence record.
const (
	maxDivergenceTables = 1024
	maxDivergenceNote   = 512
)

func divergenceKey(tenant, region string) string { return tenant + "/" + region }

// DivergenceOf returns the divergence records of the tenant as created at
// created (its CreateIndex; records of an earlier tenant of that id are
// left out), by region.
func (s *State) DivergenceOf(tenant string, created uint64) []*Divergence {
	var out []*Divergence
	for _, d := range s.Divergences {
		if d.Tenant == tenant && d.TenantCreated == created {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// Divergence returns the tenant's record of region, or nil.
func (s *State) Divergence(tenant, region string) *Divergence {
	return s.Divergences[divergenceKey(tenant, region)]
}

// SortedDivergences returns every record, by tenant and region.
func (s *State) SortedDivergences() []*Divergence {
	out := make([]*Divergence, 0, len(s.Divergences))
	for _, d := range s.Divergences {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		return divergenceKey(out[i].Tenant, out[i].Region) < divergenceKey(out[j].Tenant, out[j].Region)
	})
	return out
}

func validateDivergence(d *Divergence) error {
	var sum int64
	for t, n := range d.Tables {
		if t == "" || len(t) > 256 || n <= 0 {
			return fmt.Errorf("divergence of tenant %s at %s: table %q counts %d rows", d.Tenant, d.Region, t, n)
		}
		sum += n
	}
	switch {
	case !ValidTenantID(d.Tenant) || !ValidRegionName(d.Region):
		return fmt.Errorf("divergence of tenant %q at %q: invalid tenant or region", d.Tenant, d.Region)
	case len(d.Tables) == 0 || len(d.Tables) > maxDivergenceTables || sum != d.Total:
		return fmt.Errorf("divergence of tenant %s at %s: tables do not add up to %d", d.Tenant, d.Region, d.Total)
	case d.Missing < 0 || d.Missing > d.Total || d.RowsReconciled < 0:
		return fmt.Errorf("divergence of tenant %s at %s: bad counts", d.Tenant, d.Region)
	case len(d.ResolvedNote) > maxDivergenceNote:
		return fmt.Errorf("divergence of tenant %s at %s: note too long", d.Tenant, d.Region)
	case len(d.Keys) > MaxDivergentKeys || int64(len(d.Keys)) > d.Total:
		return fmt.Errorf("divergence of tenant %s at %s: %d keys", d.Tenant, d.Region, len(d.Keys))
	}
	for _, k := range d.Keys {
		if d.Tables[k.Table] == 0 || k.Key == "" || len(k.Key) > MaxDivergentKeyLen || (k.Reason != ReasonMissingAtNewHome && k.Reason != ReasonDiffersFromNewHome) {
			return fmt.Errorf("divergence of tenant %s at %s: bad key %+v", d.Tenant, d.Region, k)
		}
	}
	return nil
}

// readDivergenceSnapshot restores the divergence records of a snapshot.
func readDivergenceSnapshot(doc *snapshotDoc, s *State) error {
	for _, d := range doc.Divergences {
		if d == nil {
			return fmt.Errorf("snapshot holds a null divergence record")
		}
		if err := validateDivergence(d); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		k := divergenceKey(d.Tenant, d.Region)
		if s.Divergences[k] != nil {
			return fmt.Errorf("snapshot holds two divergence records of tenant %s at %s", d.Tenant, d.Region)
		}
		s.Divergences[k] = d
	}
	return nil
}

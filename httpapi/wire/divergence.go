package wire

import "github.com/atomcloud/atomfed/fsm"

// DivergenceList answers GET /v1/tenants/{id}/divergence: the rows each
// old home of the tenant committed after a failover and keeps in
// quarantine, as counts (the rows stay in that region's database, in
// atomfed_quarantine.divergent_rows). Empty when there are none.
type DivergenceList struct {
	Tenant     string            `json:"tenant"`
	Divergence []DivergenceEntry `json:"divergence"`
}

// DivergenceEntry is one old home's record, with Open true while no
// person marked the rows reconciled, Differs the rows the new home holds
// with other values (Total - Missing), and Quarantine the table that
// holds them in that region's database.
type DivergenceEntry struct {
	fsm.Divergence
	Open       bool   `json:"open"`
	Differs    int64  `json:"differs_from_new_home"`
	Quarantine string `json:"quarantine_table"`
}

// QuarantineTable is where an old home keeps its divergent rows.
const QuarantineTable = "atomfed_quarantine.divergent_rows"

// NewDivergenceEntry is d as the API answers it.
func NewDivergenceEntry(d *fsm.Divergence) DivergenceEntry {
	return DivergenceEntry{Divergence: *d, Open: d.Open(), Differs: d.Total - d.Missing, Quarantine: QuarantineTable}
}

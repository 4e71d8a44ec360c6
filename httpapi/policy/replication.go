package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Verdicts of one publication (P1) or mirror (P5) in the evidence.
const (
	VerdictVerified   = "verified"   // the executor's report shows the policy holds
	VerdictViolation  = "violation"  // the executor's report shows it does not
	VerdictUnverified = "unverified" // no usable report yet
	VerdictSimulated  = "simulated"  // no agent with a region database runs it
)

// SimulatedRegion is a region whose replication runs simulated: no alive
// agent there runs the replication task type, because none has a region
// database (POSTGRES_DSN).
type SimulatedRegion struct {
	Region string `json:"region"`
	What   string `json:"what"`
}

// PublicationCheck is one tenant publication as P1 checked it.
type PublicationCheck struct {
	Tenant      string `json:"tenant"`
	Home        string `json:"home_region"`
	Publication string `json:"publication"`
	Task        string `json:"task"`
	Agent       string `json:"agent,omitempty"`
	// ReportedAt is when the publisher's report was committed.
	ReportedAt *time.Time            `json:"reported_at,omitempty"`
	Verdict    string                `json:"verdict"`
	Reason     string                `json:"reason,omitempty"`
	Tables     []PublishedTableCheck `json:"tables,omitempty"`
	// ForeignSlots are the logical slots of the home's database that are
	// not atomfed's, as the publisher found them: each can decode the
	// tenant's rows, PII included.
	ForeignSlots []fsm.ForeignSlot `json:"foreign_slots,omitempty"`
}

// PublishedTableCheck is one published table: its PII columns (from the
// tenant spec), the columns the publication publishes (from
// pg_publication_tables, as the publisher read them) and the PII among
// them.
type PublishedTableCheck struct {
	Table            string   `json:"table"`
	PIIColumns       []string `json:"pii_columns"`
	PublishedColumns []string `json:"published_columns"`
	RowFilter        string   `json:"row_filter,omitempty"`
	PIIPublished     []string `json:"pii_published,omitempty"`
}

// PIIEvidence is P1's evidence.
type PIIEvidence struct {
	Checked      string             `json:"checked"`
	Publications []PublicationCheck `json:"publications"`
	Simulated    []SimulatedRegion  `json:"simulated,omitempty"`
	// Exceptions are the residency exceptions: tenants whose
	// pii_while_away is keep_local (a temporary home keeps PII values, in
	// that region). Away are the tenants at home outside their residency
	// region now, with the policy their temporary home applies.
	Exceptions []ResidencyCheck `json:"exceptions,omitempty"`
	Away       []ResidencyCheck `json:"away,omitempty"`
}

// ResidencyCheck is a tenant's residency as P1 lists it.
type ResidencyCheck struct {
	Tenant          string `json:"tenant"`
	ResidencyRegion string `json:"residency_region"`
	Home            string `json:"home"`
	Away            bool   `json:"away"`
	PIIWhileAway    string `json:"pii_while_away"`
}

// residencyChecks lists the residency exceptions and the tenants away.
func residencyChecks(s *fsm.State, ev *PIIEvidence) {
	for _, t := range s.SortedTenants() {
		c := ResidencyCheck{Tenant: t.ID, ResidencyRegion: t.Residency(), Home: t.HomeRegion, Away: t.Away(), PIIWhileAway: t.PIIPolicy()}
		if c.PIIWhileAway == fsm.PIIWhileAwayKeepLocal {
			ev.Exceptions = append(ev.Exceptions, c)
		}
		if c.Away {
			ev.Away = append(ev.Away, c)
		}
	}
}

// MirrorCheck is one tenant mirror as P5 checked it.
type MirrorCheck struct {
	Tenant       string           `json:"tenant"`
	Region       string           `json:"region"`
	Subscription string           `json:"subscription"`
	Task         string           `json:"task"`
	Agent        string           `json:"agent,omitempty"`
	ReportedAt   *time.Time       `json:"reported_at,omitempty"`
	Verdict      string           `json:"verdict"`
	Reason       string           `json:"reason,omitempty"`
	Tables       []MirrorRLSCheck `json:"tables,omitempty"`
}

// MirrorRLSCheck is one mirror table's row-level security as the
// subscriber's probe found it, and what is wrong with it.
type MirrorRLSCheck struct {
	Table    string        `json:"table"`
	RLS      *fsm.RLSState `json:"rls"`
	Problems []string      `json:"problems,omitempty"`
}

// RLSEvidence is P5's evidence.
type RLSEvidence struct {
	Checked   string            `json:"checked"`
	Mirrors   []MirrorCheck     `json:"mirrors"`
	Simulated []SimulatedRegion `json:"simulated,omitempty"`
}

// replicatedTenants are the tenants whose rows leave their home: tenants
// with tables and at least one mirror.
func replicatedTenants(s *fsm.State) []*fsm.Tenant {
	var out []*fsm.Tenant
	for _, t := range s.SortedTenants() {
		if len(t.Tables) > 0 && len(t.Mirrors) > 0 {
			out = append(out, t)
		}
	}
	return out
}

// runner says who runs a replication task: its agent, or why nobody
// (simulated: no alive agent of the region runs that task type).
func runner(s *fsm.State, t *fsm.Task) (verdict, reason string) {
	if t.Agent != "" {
		return "", ""
	}
	for _, a := range s.SortedAgents() {
		if a.Region == t.Region && a.Status == fsm.AgentAlive && a.HasCapability(t.Type) {
			return VerdictUnverified, "the task is not placed on an agent yet"
		}
	}
	return VerdictSimulated, "replication in region " + t.Region + " is simulated: no alive agent there runs " + t.Type +
		" tasks (an agent needs a region database, POSTGRES_DSN)"
}

func reportedAt(t *fsm.Task) *time.Time {
	if t.ReportedAt == 0 {
		return nil
	}
	at := time.Unix(0, t.ReportedAt).UTC()
	return &at
}

// tableName is a table name as executors report it (public. omitted).
func tableName(n string) string { return strings.TrimPrefix(n, "public.") }

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			if x == y {
				out = append(out, x)
			}
		}
	}
	return out
}

// NoPIIInTransit is P1: no tenant publication publishes one of its
// tenant's PII columns. It checks, for every replicated tenant, the column
// list its home's publisher read back from pg_publication_tables against
// the tenant's PII columns, and blocks naming the tenant, table and column
// of any PII published. It also blocks, naming the slot and the region,
// while a home's publisher reports a logical replication slot there that
// is not atomfed's (foreign_logical_slot): it can decode the PII columns
// of every change. Tenants whose publisher has not reported, or whose
// home runs replication simulated, are not verified: then P1 is
// not_evaluated. The evidence also lists the residency exceptions
// (pii_while_away keep_local) and the tenants away from their residency
// region (fsm/residency.go).
func NoPIIInTransit(ctx context.Context, in *Input) structs.PolicyResult {
	ev := PIIEvidence{Publications: []PublicationCheck{},
		Checked: "for every tenant with tables and mirrors: the published column list of each table of its publication in its home region " +
			"(pg_publication_tables.attnames, read by the home's tenant-publisher on every probe) against the tenant's PII columns; " +
			"and the logical replication slots of the home's database (pg_replication_slots): any that is not atomfed's can decode the tenant's PII"}
	var tenants int
	in.Source.FSM().Read(func(s *fsm.State) {
		residencyChecks(s, &ev)
		ts := replicatedTenants(s)
		tenants = len(ts)
		for _, t := range ts {
			ev.Publications = append(ev.Publications, checkPublication(s, t))
		}
	})
	if tenants == 0 {
		return structs.PolicyResult{Status: structs.PolicyNotEvaluated, Evidence: ev,
			Reason: "no tenant is replicated yet (none has tables and mirrors), so no publication carries tenant rows to check"}
	}
	var bad, open []string
	simulated := map[string]bool{}
	for _, p := range ev.Publications {
		switch p.Verdict {
		case VerdictViolation:
			bad = append(bad, p.Reason)
		case VerdictSimulated:
			if !simulated[p.Home] {
				simulated[p.Home] = true
				ev.Simulated = append(ev.Simulated, SimulatedRegion{Region: p.Home,
					What: "tenant publications are not created or checked there (no agent with a region database)"})
			}
			open = append(open, "tenant "+p.Tenant+": "+p.Reason)
		case VerdictUnverified:
			open = append(open, "tenant "+p.Tenant+": "+p.Reason)
		}
	}
	sort.Slice(ev.Simulated, func(i, j int) bool { return ev.Simulated[i].Region < ev.Simulated[j].Region })
	switch {
	case len(bad) > 0:
		return structs.PolicyResult{Status: structs.PolicyBlock, Evidence: ev, Reason: "PII can leave its region: " + strings.Join(bad, "; ")}
	case len(open) > 0:
		return structs.PolicyResult{Status: structs.PolicyNotEvaluated, Evidence: ev,
			Reason: fmt.Sprintf("%d of %d tenant publications are not verified: %s", len(open), tenants, strings.Join(open, "; "))}
	}
	reason := fmt.Sprintf("none of the %d tenant publications publishes a PII column of its tenant (as their publishers read them from pg_publication_tables)", tenants)
	if n := len(ev.Exceptions); n > 0 {
		reason += fmt.Sprintf("; %d residency exception(s) (pii_while_away keep_local) listed in the evidence", n)
	}
	return structs.PolicyResult{Status: structs.PolicyPass, Evidence: ev, Reason: reason}
}

func checkPublication(s *fsm.State, t *fsm.Tenant) PublicationCheck {
	id := fsm.TenantPublisherTaskID(t.ID, t.HomeRegion)
	c := PublicationCheck{Tenant: t.ID, Home: t.HomeRegion, Publication: fsm.TenantPublication(t.ID), Task: id}
	task := s.Tasks[id]
	if task == nil {
		c.Verdict, c.Reason = VerdictUnverified, "its publisher task is not planned yet"
		return c
	}
	c.Agent, c.ReportedAt = task.Agent, reportedAt(task)
	if v, why := runner(s, task); v != "" {
		c.Verdict, c.Reason = v, why
		return c
	}
	var r fsm.PublisherResult
	if len(task.Result) == 0 || json.Unmarshal(task.Result, &r) != nil {
		c.Verdict, c.Reason = VerdictUnverified, "its publisher has not reported yet"
		return c
	}
	// Published columns count whatever the publisher's state: a failed
	// step may have left PII in a publication.
	reported := map[string]fsm.TableState{}
	for _, ts := range r.Tables {
		reported[tableName(ts.Name)] = ts
	}
	c.Verdict = VerdictVerified
	var leaks, missing []string
	for _, is := range r.Issues {
		if is.Code != fsm.IssueForeignLogicalSlot || is.Slot == nil {
			continue
		}
		sl := *is.Slot
		c.ForeignSlots = append(c.ForeignSlots, sl)
		state := "inactive"
		if sl.Active {
			state = "active"
		}
		leaks = append(leaks, fmt.Sprintf("tenant %s: logical slot %s (plugin %s, %s) in %s's database is not atomfed's and can decode its PII columns",
			t.ID, sl.Name, sl.Plugin, state, t.HomeRegion))
	}
	for _, tt := range t.Tables {
		ts, ok := reported[tableName(tt.Name)]
		tc := PublishedTableCheck{Table: tt.Name, PIIColumns: append([]string{}, tt.PIIColumns...), PublishedColumns: ts.Columns, RowFilter: ts.RowFilter}
		if tc.PublishedColumns == nil {
			tc.PublishedColumns = []string{}
		}
		switch {
		case !ok || len(ts.Columns) == 0:
			missing = append(missing, tt.Name)
		default:
			tc.PIIPublished = intersect(ts.Columns, tt.PIIColumns)
			for _, col := range tc.PIIPublished {
				leaks = append(leaks, fmt.Sprintf("tenant %s table %s column %s (publication %s in %s)", t.ID, tt.Name, col, c.Publication, t.HomeRegion))
			}
		}
		c.Tables = append(c.Tables, tc)
	}
	switch {
	case len(leaks) > 0:
		c.Verdict, c.Reason = VerdictViolation, strings.Join(leaks, ", ")
	case r.State != fsm.ReplReady:
		c.Verdict, c.Reason = VerdictUnverified, "its publisher reports "+r.State
		if len(r.Issues) > 0 {
			c.Reason += ": " + r.Issues[0].Message
		}
	case len(missing) > 0:
		c.Verdict, c.Reason = VerdictUnverified, "its publisher reported no published columns of "+strings.Join(missing, ", ")
	}
	return c
}

// TenantRLS is P5: every mirror table of every replicated tenant has
// row-level security enabled and forced, with the tenant policy as its
// only permissive policy, as the mirror's tenant-subscriber found it on
// its last probe. It blocks naming the tenant, region, table and what is
// wrong; mirrors whose subscriber has not reported, or that run
// simulated, are not verified: then P5 is not_evaluated.
func TenantRLS(ctx context.Context, in *Input) structs.PolicyResult {
	ev := RLSEvidence{Mirrors: []MirrorCheck{},
		Checked: "for every tenant with tables and mirrors: each table in each mirror region, as its tenant-subscriber read it on every probe " +
			"(pg_class.relrowsecurity, relforcerowsecurity and the table's pg_policy rows): row-level security enabled and forced, the permissive " +
			"policy " + fsm.TenantPolicyName + " USING (tenant_id = current_setting('app.tenant_id', true)) for every command and role, and no other permissive policy"}
	var tenants int
	in.Source.FSM().Read(func(s *fsm.State) {
		ts := replicatedTenants(s)
		tenants = len(ts)
		for _, t := range ts {
			for _, m := range t.Mirrors {
				ev.Mirrors = append(ev.Mirrors, checkMirror(s, t, m))
			}
		}
	})
	if tenants == 0 {
		return structs.PolicyResult{Status: structs.PolicyNotEvaluated, Evidence: ev,
			Reason: "no tenant is replicated yet (none has tables and mirrors), so no mirror table exists to check"}
	}
	var bad, open []string
	simulated := map[string]bool{}
	for _, m := range ev.Mirrors {
		switch m.Verdict {
		case VerdictViolation:
			bad = append(bad, m.Reason)
		case VerdictSimulated:
			if !simulated[m.Region] {
				simulated[m.Region] = true
				ev.Simulated = append(ev.Simulated, SimulatedRegion{Region: m.Region,
					What: "tenant mirrors and their row-level security are not set up or checked there (no agent with a region database)"})
			}
			open = append(open, "tenant "+m.Tenant+" in "+m.Region+": "+m.Reason)
		case VerdictUnverified:
			open = append(open, "tenant "+m.Tenant+" in "+m.Region+": "+m.Reason)
		}
	}
	sort.Slice(ev.Simulated, func(i, j int) bool { return ev.Simulated[i].Region < ev.Simulated[j].Region })
	switch {
	case len(bad) > 0:
		return structs.PolicyResult{Status: structs.PolicyBlock, Evidence: ev, Reason: "tenant rows are not isolated: " + strings.Join(bad, "; ")}
	case len(open) > 0:
		return structs.PolicyResult{Status: structs.PolicyNotEvaluated, Evidence: ev,
			Reason: fmt.Sprintf("%d of %d tenant mirrors are not verified: %s", len(open), len(ev.Mirrors), strings.Join(open, "; "))}
	}
	return structs.PolicyResult{Status: structs.PolicyPass, Evidence: ev,
		Reason: fmt.Sprintf("every table of the %d mirrors of %d replicated tenants has row-level security enabled and forced with the tenant policy (as their subscribers found it)", len(ev.Mirrors), tenants)}
}

func checkMirror(s *fsm.State, t *fsm.Tenant, mirror string) MirrorCheck {
	id := fsm.TenantSubscriberTaskID(t.ID, mirror)
	c := MirrorCheck{Tenant: t.ID, Region: mirror, Subscription: fsm.TenantSubscription(t.ID, mirror), Task: id}
	task := s.Tasks[id]
	if task == nil {
		c.Verdict, c.Reason = VerdictUnverified, "its subscriber task is not planned yet"
		return c
	}
	c.Agent, c.ReportedAt = task.Agent, reportedAt(task)
	if v, why := runner(s, task); v != "" {
		c.Verdict, c.Reason = v, why
		return c
	}
	var r fsm.SubscriberResult
	if len(task.Result) == 0 || json.Unmarshal(task.Result, &r) != nil {
		c.Verdict, c.Reason = VerdictUnverified, "its subscriber has not reported yet"
		return c
	}
	reported := map[string]fsm.TableState{}
	for _, ts := range r.Tables {
		reported[tableName(ts.Name)] = ts
	}
	c.Verdict = VerdictVerified
	var bad, missing []string
	for _, tt := range t.Tables {
		ts := reported[tableName(tt.Name)]
		tc := MirrorRLSCheck{Table: tt.Name, RLS: ts.RLS}
		if ts.RLS == nil {
			missing = append(missing, tt.Name)
		} else if tc.Problems = ts.RLS.Problems(); len(tc.Problems) > 0 {
			bad = append(bad, fmt.Sprintf("tenant %s region %s table %s: %s", t.ID, mirror, tt.Name, strings.Join(tc.Problems, ", ")))
		}
		c.Tables = append(c.Tables, tc)
	}
	switch {
	case len(bad) > 0:
		c.Verdict, c.Reason = VerdictViolation, strings.Join(bad, "; ")
	case len(missing) > 0:
		c.Verdict, c.Reason = VerdictUnverified, "its subscriber reported no row-level security of "+strings.Join(missing, ", ")+
			" (the mirror table does not exist yet, or could not be read; the subscriber reports "+r.State+")"
	}
	return c
}

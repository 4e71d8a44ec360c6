package replication

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// Any role with the REPLICATION attribute, the replication role included,
// can create a logical slot with any output plugin installed on the
// server (test_decoding, wal2json, ...) and decode from it every change
// made in the database afterwards, PII columns included: neither column
// grants nor row-level security apply to logical decoding. atomfed cannot
// prevent that (PostgreSQL 15 has no finer privilege), so a publisher
// looks for it on every step and reports each logical slot of its
// database that is not one of atomfed's subscriptions'. It drops none:
// an operator may run a CDC tool on purpose.

// tablesyncSlot matches the slot a subscription's table-sync worker holds
// while it copies a table (pg_<subscription oid>_sync_<relid>_<system id>).
var tablesyncSlot = regexp.MustCompile(`^pg_[0-9]+_sync_[0-9]+_[0-9]+$`)

// atomfedSlot reports whether a logical slot with output plugin plugin
// named name is one atomfed's subscriptions hold: pgoutput, named as
// atomfed names its subscriptions (fsm.TenantSubscription,
// fsm.GlobalSubscription: af_...) or as PostgreSQL names their table-sync
// slots. A pgoutput slot sends only what a publication publishes, which
// the replication role may read anyway; any other plugin decodes whole
// rows.
func atomfedSlot(name, plugin string) bool {
	if plugin != "pgoutput" {
		return false
	}
	return strings.HasPrefix(name, "af_") || tablesyncSlot.MatchString(name)
}

// foreignSlots lists, as foreign_logical_slot issues, the logical slots of
// the current database that are not atomfed's.
func (p *publisher) foreignSlots(ctx context.Context, conn *pgx.Conn) ([]fsm.ReplicationIssue, error) {
	rows, err := conn.Query(ctx, `SELECT slot_name::text, coalesce(plugin::text, ''), active FROM pg_replication_slots
		WHERE slot_type = 'logical' AND database = current_database() ORDER BY slot_name`)
	if err != nil {
		return nil, err
	}
	var out []fsm.ReplicationIssue
	for rows.Next() {
		var s fsm.ForeignSlot
		if err := rows.Scan(&s.Name, &s.Plugin, &s.Active); err != nil {
			rows.Close()
			return nil, err
		}
		if atomfedSlot(s.Name, s.Plugin) {
			continue
		}
		out = append(out, foreignSlotIssue(s, p.spec.Region))
	}
	rows.Close()
	return out, rows.Err()
}

func foreignSlotIssue(s fsm.ForeignSlot, region string) fsm.ReplicationIssue {
	state := "inactive"
	if s.Active {
		state = "active: something is reading it now"
	}
	// Slot names are limited to lower-case letters, digits and '_', so
	// the name can be quoted as it is.
	return fsm.ReplicationIssue{Code: fsm.IssueForeignLogicalSlot, At: time.Now().UnixNano(), Slot: &s, Message: fmt.Sprintf(
		"logical replication slot %s (output plugin %s, %s) in region %s's database is not atomfed's: whoever reads it decodes every change "+
			"made in this database, PII columns included, and can carry it out of region %s. If no CDC tool of yours holds it, drop it "+
			"(SELECT pg_drop_replication_slot('%s')), remove the output plugins you do not use from PostgreSQL's $libdir and allow "+
			"replication logins in pg_hba.conf only from the peer regions (docs/security.md)",
		s.Name, s.Plugin, state, region, region, s.Name)}
}

package replication

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// mirrorTypeKinds are the pg_type.typtype values a mirror column may take:
// base types (arrays included), domains, enums, ranges and multiranges. A
// composite or a pseudo-type named by a source is refused.
var mirrorTypeKinds = map[string]bool{"b": true, "d": true, "e": true, "r": true, "m": true}

// resolveTypeSQL looks a source's type text up in this database, as a bind
// parameter, and returns the type as this database prints it for the
// source's type modifier (an integer), and whether that text names the same
// type again here, with a modifier only if the type takes one. Every
// function is schema-qualified, so that nothing on the mirror's search
// path stands in for them.
const resolveTypeSQL = `SELECT t.typtype::text, pg_catalog.format_type(t.oid, $2::int4),
		pg_catalog.to_regtype(pg_catalog.format_type(t.oid, $2::int4)) = t.oid AND ($2::int4 = -1 OR t.typmodin <> 0)
	FROM pg_catalog.pg_type t WHERE t.oid = pg_catalog.to_regtype($1)`

// resolveTypes returns cols with each type as this (the mirror's) database
// names it. The type text a source reports is never spliced into SQL: a
// source's database is another region's, and a subscriber runs its DDL as
// a superuser. The text is looked up here as a bind parameter, and the
// DDL gets this database's own format_type of the type it resolved to. A
// type this database does not have, or that no mirror column may have, is
// refused with an issue, before anything is executed.
func resolveTypes(ctx context.Context, q querier, source, table string, cols []column) ([]column, *fsm.ReplicationIssue) {
	out := make([]column, len(cols))
	for i, c := range cols {
		refuse := func(why string) ([]column, *fsm.ReplicationIssue) {
			return nil, &fsm.ReplicationIssue{Code: fsm.IssueUnsafeType, Table: table, At: time.Now().UnixNano(), Message: fmt.Sprintf(
				"region %s reports column %s of %s with type %q, which %s; nothing is changed here "+
					"(create the type in this region first, or fix the column in %s)", source, clip(c.Name), table, clip(c.Type), why, source)}
		}
		var kind, typ string
		var same *bool
		err := q.QueryRow(ctx, resolveTypeSQL, c.Type, c.TypMod).Scan(&kind, &typ, &same)
		switch {
		case err == pgx.ErrNoRows:
			return refuse("is not a type of this database")
		case err != nil && isPgError(err):
			return refuse("is not a type name here (" + pgMessage(err) + ")")
		case err != nil:
			return nil, &fsm.ReplicationIssue{Code: fsm.IssueDatabaseUnreachable, Table: table, At: time.Now().UnixNano(),
				Message: "resolve the type of column " + c.Name + " of " + table + ": " + pgMessage(err)}
		case !mirrorTypeKinds[kind]:
			return refuse("is a composite or pseudo-type here, which a mirror column may not have")
		case same == nil || !*same:
			return refuse(fmt.Sprintf("with type modifier %d does not print as a name of the same type here", c.TypMod))
		}
		out[i] = c
		out[i].Type = typ
	}
	return out, nil
}

// clip bounds a text a source reports before it goes into a status
// message.
func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

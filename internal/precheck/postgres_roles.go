package precheck

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/jackc/pgx/v5"
)

// replicationUser is the role other regions' subscriptions log in as
// (replication.DefaultReplicationUser).
const replicationUser = "atomfed_replicator"

// outputPlugins are logical decoding output plugins, other than pgoutput,
// that decode whole rows: with one installed, any REPLICATION role (the
// replication role included) can read every change of a database, PII
// columns included, through a slot of its own. pgoutput sends only what a
// publication publishes. A library in $libdir is not known to be an
// output plugin until it is loaded, so the check knows them by name.
var outputPlugins = []string{"test_decoding", "wal2json", "decoderbufs", "decoder_raw", "decoder_json", "wal2mongo", "jsoncdc", "pglogical_output"}

// postgresFindings looks, on a region's database, for what widens what
// the replication role can read: the role with BYPASSRLS or superuser
// (row-level security then limits nothing), and output plugins other than
// pgoutput installed in $libdir. It returns the findings, and a note when
// the precheck's role may not list $libdir (then the plugins are not
// checked).
func postgresFindings(ctx context.Context, conn *pgx.Conn) (findings []string, note string) {
	var super, bypass bool
	err := conn.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`, replicationUser).Scan(&super, &bypass)
	switch {
	case err == nil && (super || bypass):
		what := "has BYPASSRLS"
		if super {
			what = "is a superuser"
		}
		findings = append(findings, fmt.Sprintf("the replication role %s %s: row-level security does not limit what another region's credential reads here; ALTER ROLE %s NOSUPERUSER NOBYPASSRLS",
			replicationUser, what, replicationUser))
	case err != nil && err != pgx.ErrNoRows:
		note = "the replication role not checked: " + err.Error()
	}
	var user string
	var may bool
	if err := conn.QueryRow(ctx, `SELECT current_user::text, has_function_privilege('pg_catalog.pg_ls_dir(text)', 'EXECUTE')
		AND has_table_privilege('pg_catalog.pg_config', 'SELECT')`).Scan(&user, &may); err != nil || !may {
		return findings, join(note, fmt.Sprintf("output plugins in $libdir not checked: %s may not list it (needs superuser, or EXECUTE on pg_ls_dir(text) and SELECT on pg_config)", user))
	}
	var libdir string
	var files []string
	err = conn.QueryRow(ctx, `SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'`).Scan(&libdir)
	if err == nil {
		var rows pgx.Rows
		if rows, err = conn.Query(ctx, `SELECT f FROM pg_ls_dir($1) f`, libdir); err == nil {
			files, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
	}
	if err != nil {
		return findings, join(note, "output plugins in $libdir not checked: "+err.Error())
	}
	have := map[string]bool{}
	for _, f := range files {
		have[strings.TrimSuffix(f, path.Ext(f))] = true
	}
	for _, p := range outputPlugins {
		if have[p] {
			findings = append(findings, fmt.Sprintf("output plugin %s is installed in $libdir (%s): any REPLICATION role, the replication role included, can decode every change with it, PII columns included; remove %s unless you use it (docs/security.md)",
				p, libdir, p+".so"))
		}
	}
	return findings, note
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

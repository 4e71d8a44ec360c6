package replication

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
)

// Session settings of every executor connection. synchronous_commit=local
// matters: with synchronous_standby_names set and every mirror down, a
// commit with the default setting waits for a mirror, and the controller
// that must degrade the home would wait with it.
var sessionParams = map[string]string{
	"application_name":   "atomfed-agent",
	"synchronous_commit": "local",
	"statement_timeout":  "30000",
	"lock_timeout":       "10000",
}

const connectTimeout = 5 * time.Second

// redact describes a DSN parse failure without the DSN, which may hold a
// password.
func redact(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return "check its syntax"
	}
	return "check its syntax"
}

// connectLocal opens the agent's connection to its region's database.
func connectLocal(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("POSTGRES_DSN does not parse (%s)", redact(err))
	}
	return connect(ctx, cfg)
}

// sourceConnString is the connection string to a source region's database
// as the replication role, with the password in a passfile: it is both the
// subscription's CONNECTION and the agent's own way to the publisher. It
// always asks for TLS with the server's certificate verified against the
// replication CA and its name against the endpoint's host (verify-full):
// the source is another region, reached over networks atomfed does not
// own, and the role's password must reach only the source's server.
func sourceConnString(ep *fsm.DatabaseEndpoint, cfg *Config) string {
	s := fmt.Sprintf("host=%s port=%d dbname=%s user=%s", ep.Host, ep.Port, ep.Database, cfg.ReplicationUser)
	if cfg.ReplicationPassfile != "" {
		s += " passfile=" + quoteConnValue(cfg.ReplicationPassfile)
	}
	s += " sslmode=verify-full"
	if cfg.ReplicationCA != "" {
		s += " sslrootcert=" + quoteConnValue(cfg.ReplicationCA)
	}
	return s + " connect_timeout=10"
}

func connectSource(ctx context.Context, ep *fsm.DatabaseEndpoint, c *Config) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(sourceConnString(ep, c))
	if err != nil {
		return nil, err
	}
	return connect(ctx, cfg)
}

func connect(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > connectTimeout {
		cfg.ConnectTimeout = connectTimeout
	}
	// The simple protocol keeps DDL and catalog queries free of prepared
	// statements that a dropped column or table would invalidate.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	ctx, cancel := context.WithTimeout(ctx, connectTimeout+time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// quoteConnValue quotes a libpq connection string value.
func quoteConnValue(s string) string {
	if s != "" && !strings.ContainsAny(s, ` '\`) {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// quoteLiteral quotes a SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ident quotes an identifier.
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// tableRef is a schema-qualified table.
type tableRef struct{ Schema, Name string }

func parseTable(name string) tableRef {
	if s, n, ok := strings.Cut(name, "."); ok {
		return tableRef{s, n}
	}
	return tableRef{"public", name}
}

func (t tableRef) String() string { return t.Schema + "." + t.Name }

// Quoted returns the table as a quoted SQL name.
func (t tableRef) Quoted() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// display is the table as the spec names it (public. omitted).
func (t tableRef) display() string {
	if t.Schema == "public" {
		return t.Name
	}
	return t.String()
}

// sqlState returns the SQLSTATE of a PostgreSQL error, or "".
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// pgMessage returns a PostgreSQL error's message (and detail), or the
// error's text.
func pgMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		if pe.Detail != "" {
			return pe.Message + " (" + pe.Detail + ")"
		}
		return pe.Message
	}
	return err.Error()
}

// parseLSN parses a PostgreSQL LSN ("16/B374D848").
func parseLSN(s string) (uint64, bool) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, false
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return h<<32 | l, true
}

// issueFromErr classifies a failed statement into an issue.
func issueFromErr(table string, what string, err error) fsm.ReplicationIssue {
	code := fsm.IssueSQL
	switch st := sqlState(err); {
	case st == "42501":
		code = fsm.IssuePermissionDenied
	case st == "42P01":
		code = fsm.IssueMissingTable
	case st == "23505":
		code = fsm.IssueConflict
	case st == "" && !isPgError(err):
		code = fsm.IssueDatabaseUnreachable
	}
	return fsm.ReplicationIssue{Code: code, Table: table, Message: what + ": " + pgMessage(err), At: time.Now().UnixNano()}
}

func isPgError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}

package replication

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestResolveTypesUsesOnlyTheMirrorsOwnTypeNames feeds the mirror-side type
// resolution what a hostile source could report: the type written into
// DDL is always the mirror's own format_type of a type it has, and
// anything else is refused before a statement runs.
func TestResolveTypesUsesOnlyTheMirrorsOwnTypeNames(t *testing.T) {
	pg := pgtest.New(t, pglocal.Options{Name: "types"})
	ctx := testCtx(t)
	conn, err := pg.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE victim (id int); CREATE TYPE mood AS ENUM ('ok'); CREATE DOMAIN posint AS int CHECK (VALUE > 0)`); err != nil {
		t.Fatal(err)
	}
	ok := []struct {
		typ    string
		typmod int32
		want   string
	}{
		{"integer", -1, "integer"},
		{"character varying(20)", 24, "character varying(20)"},
		{"numeric(12,2)", 12<<16 | 2 + 4, "numeric(12,2)"},
		{"text[]", -1, "text[]"},
		{"timestamp(3) with time zone", 3, "timestamp(3) with time zone"},
		{"mood", -1, "mood"},
		{"posint", -1, "posint"},
		{"int4", -1, "integer"}, // the mirror's name, not the source's text
	}
	for _, c := range ok {
		cols, is := resolveTypes(ctx, conn, "evil", "t", []column{{Name: "c", Type: c.typ, TypMod: c.typmod}})
		if is != nil {
			t.Fatalf("%q (typmod %d) refused: %s", c.typ, c.typmod, is.Message)
		}
		if cols[0].Type != c.want {
			t.Fatalf("%q resolved to %q, want %q", c.typ, cols[0].Type, c.want)
		}
	}
	bad := []struct {
		typ    string
		typmod int32
		why    string
	}{
		{"integer); DROP TABLE victim; --", -1, "is not a type name here"},
		{`integer DEFAULT (pg_sleep(1)::text)::int`, -1, "is not a type name here"},
		{"no_such_type", -1, "is not a type of this database"},
		{"pg_class", -1, "composite or pseudo-type"},
		{"record", -1, "composite or pseudo-type"},
		{"anyelement", -1, "composite or pseudo-type"},
		{"integer", 7, "does not print as a name of the same type"},
	}
	for _, c := range bad {
		_, is := resolveTypes(ctx, conn, "evil", "t", []column{{Name: "c", Type: c.typ, TypMod: c.typmod}})
		if is == nil {
			t.Fatalf("%q (typmod %d) was accepted", c.typ, c.typmod)
		}
		if is.Code != fsm.IssueUnsafeType || !strings.Contains(is.Message, c.why) || !strings.Contains(is.Message, "nothing is changed here") {
			t.Fatalf("%q: issue %s %q, want %s saying %q", c.typ, is.Code, is.Message, fsm.IssueUnsafeType, c.why)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname = 'victim'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("victim table: %d (%v)", n, err)
	}
}

// TestSourceConnectionsVerifyTheServer: the agent (pgx) and a subscription
// (libpq, in the mirror's server) reach a source over TLS with
// verify-full against the replication CA. A source that presents a
// certificate for another name, one signed by another CA, or no TLS at all
// is refused before the role's password is sent.
func TestSourceConnectionsVerifyTheServer(t *testing.T) {
	pw := pglocal.NewSecret()
	mirror := pgtest.New(t, pglocal.Options{Name: "mirror", ReplicationPassword: pw})
	good := pgtest.New(t, pglocal.Options{Name: "good", ReplicationPassword: pw})
	wrongName := pgtest.New(t, pglocal.Options{Name: "wrongname", ReplicationPassword: pw, TLSNames: []string{"db.other.example"}})
	plain := pgtest.New(t, pglocal.Options{Name: "plain", ReplicationPassword: pw, NoTLS: true})
	otherCA := mirror.Dir + "/other-ca.pem" // readable by the mirror's server
	if ca, err := tlsutil.NewCA("another CA"); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(otherCA, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	cfg := func(ca string) *Config {
		return &Config{ReplicationUser: pglocal.ReplicationUser, ReplicationPassfile: mirror.Passfile, ReplicationCA: ca}
	}
	ep := func(c *pglocal.Cluster) *fsm.DatabaseEndpoint {
		h, p, d := c.Endpoint()
		return &fsm.DatabaseEndpoint{Host: h, Port: p, Database: d}
	}
	if s := sourceConnString(ep(good), cfg(mirror.RootCert)); !strings.Contains(s, "sslmode=verify-full") || !strings.Contains(s, "sslrootcert="+mirror.RootCert) {
		t.Fatalf("connection string %q does not verify the server", s)
	}
	// The agent's own connections.
	c, err := connectSource(ctx, ep(good), cfg(mirror.RootCert))
	if err != nil {
		t.Fatalf("verified connection to the right server: %v", err)
	}
	var ssl bool
	if err := c.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		t.Fatalf("the connection is not TLS (%v)", err)
	}
	c.Close(context.Background())
	refused := []struct {
		name string
		src  *pglocal.Cluster
		ca   string
		want string
	}{
		{"another name", wrongName, mirror.RootCert, "certificate"},
		{"another CA", good, otherCA, "certificate"},
		{"no TLS", plain, mirror.RootCert, "TLS"},
	}
	for _, r := range refused {
		c, err := connectSource(ctx, ep(r.src), cfg(r.ca))
		if err == nil {
			c.Close(context.Background())
			t.Fatalf("%s: the agent connected", r.name)
		}
		if !strings.Contains(err.Error(), r.want) {
			t.Fatalf("%s: the agent's error %q does not say %q", r.name, err, r.want)
		}
	}
	// Subscriptions: libpq in the mirror's server, with the connection
	// string the subscriber gives it.
	mc, err := mirror.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close(context.Background())
	for _, r := range refused {
		_, err := mc.Exec(ctx, "CREATE SUBSCRIPTION probe CONNECTION "+quoteLiteral(sourceConnString(ep(r.src), cfg(r.ca)))+
			" PUBLICATION p WITH (create_slot = false, enabled = false)")
		if err == nil {
			_, _ = mc.Exec(ctx, "ALTER SUBSCRIPTION probe SET (slot_name = NONE)")
			_, _ = mc.Exec(ctx, "DROP SUBSCRIPTION probe")
			t.Fatalf("%s: the mirror's server connected", r.name)
		}
		if !strings.Contains(err.Error(), "could not connect to the publisher") {
			t.Fatalf("%s: the subscription's error %q is not a refused connection", r.name, err)
		}
		t.Logf("%s: %v", r.name, err)
	}
	if _, err := mc.Exec(ctx, "CREATE SUBSCRIPTION probe CONNECTION "+quoteLiteral(sourceConnString(ep(good), cfg(mirror.RootCert)))+
		" PUBLICATION p WITH (create_slot = false, enabled = false, slot_name = NONE)"); err != nil {
		t.Fatalf("a subscription to the right server over verify-full: %v", err)
	}
	_, _ = mc.Exec(ctx, "DROP SUBSCRIPTION probe")
}

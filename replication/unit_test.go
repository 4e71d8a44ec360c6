package replication

import (
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

func TestTenantKeyPicksAUsableKeyWithoutPII(t *testing.T) {
	ti := &tableInfo{Ref: tableRef{"public", "orders"}, Indexes: []index{
		{Name: "orders_pkey", Primary: true, Usable: true, Columns: []string{"id"}},
		{Name: "orders_b", Usable: true, Columns: []string{"tenant_id", "email"}},
		{Name: "orders_c", Usable: true, Columns: []string{"tenant_id", "id"}},
		{Name: "orders_d", Usable: false, Columns: []string{"tenant_id"}},
	}}
	key, is := tenantKey(ti, map[string]bool{"email": true})
	if is != nil || key.Name != "orders_c" {
		t.Fatalf("picked %+v, %+v; want orders_c (holds tenant_id, no PII)", key, is)
	}
	ti.Indexes = ti.Indexes[:2]
	if _, is := tenantKey(ti, map[string]bool{"email": true}); is == nil || is.Code != fsm.IssuePIIInKey || !strings.Contains(is.Message, "email") {
		t.Fatalf("a key with a PII column: %+v", is)
	}
	ti.Indexes = ti.Indexes[:1]
	if _, is := tenantKey(ti, nil); is == nil || is.Code != fsm.IssueNoReplicaIdentity {
		t.Fatalf("no key with tenant_id: %+v", is)
	}
	ti.Indexes = []index{{Name: "p", Primary: true, Usable: true, Columns: []string{"tenant_id", "id"}}, {Name: "a", Usable: true, Columns: []string{"tenant_id", "x"}}}
	if key, _ := tenantKey(ti, nil); key.Name != "p" {
		t.Fatalf("the primary key is preferred, got %s", key.Name)
	}
}

func TestDigestAndDrift(t *testing.T) {
	a := []column{{Name: "id", Type: "bigint"}, {Name: "note", Type: "text"}}
	b := []column{{Name: "note", Type: "text"}, {Name: "id", Type: "bigint"}}
	if digest(a) != digest(b) {
		t.Fatal("column order changed the digest; logical replication matches columns by name")
	}
	c := []column{{Name: "id", Type: "integer"}, {Name: "rogue", Type: "int"}}
	d := drift(c, a, "us-east")
	for _, want := range []string{"id is integer here but bigint in us-east", "note is missing here", "rogue exists only here"} {
		if !strings.Contains(d, want) {
			t.Fatalf("drift %q does not say %q", d, want)
		}
	}
	if drift(b, a, "x") != "" {
		t.Fatal("equal columns drift")
	}
}

func TestStandbyNamesAndWorkerErrors(t *testing.T) {
	if got := standbyNames([]string{"b", "a"}); got != `ANY 1 ("a", "b")` {
		t.Fatalf("standby names %q", got)
	}
	if standbyNames(nil) != "" {
		t.Fatal("no standby must mean an empty setting")
	}
	for _, c := range []struct{ state, msg, want string }{
		{"23505", "duplicate key value violates unique constraint", fsm.IssueConflict},
		{"42P01", `logical replication target relation "public.x" does not exist`, fsm.IssueMissingTable},
		{"55000", `logical replication target relation "public.x" is missing replicated column: "y"`, fsm.IssueMissingColumn},
		{"42501", "permission denied for table x", fsm.IssuePermissionDenied},
		{"08006", "could not connect to the publisher: connection refused", fsm.IssuePublisherUnreachable},
		{"XX000", "something else", fsm.IssueApplyError},
	} {
		if got := classifyWorkerError(c.state, c.msg); got != c.want {
			t.Errorf("%s %q: %s, want %s", c.state, c.msg, got, c.want)
		}
	}
	if lsn, ok := parseLSN("16/B374D848"); !ok || lsn != 0x16<<32|0xB374D848 {
		t.Fatalf("lsn %x %v", lsn, ok)
	}
	if !sameSource("host=h port=1 dbname=d user=a passfile=x", "host=h port=1 dbname=d user=b passfile=y") ||
		sameSource("host=h port=1 dbname=d user=a", "host=g port=1 dbname=d user=a") {
		t.Fatal("sameSource must compare host, port and database only")
	}
}

func TestLogTailAttributesErrorsToItsSubscription(t *testing.T) {
	l := newLogTail("af_t_acme_1_b")
	l.origin = "pg_16400"
	log := `{"timestamp":"2026-01-02 03:04:05.678 UTC","pid":10,"error_severity":"LOG","message":"logical replication apply worker for subscription \"af_t_acme_1_b\" has started"}
{"timestamp":"2026-01-02 03:04:05.900 UTC","pid":11,"error_severity":"LOG","message":"logical replication apply worker for subscription \"other\" has started"}
{"timestamp":"2026-01-02 03:04:06.000 UTC","pid":11,"error_severity":"ERROR","state_code":"23505","message":"duplicate key of another subscription"}
{"timestamp":"2026-01-02 03:04:06.100 UTC","pid":10,"error_severity":"ERROR","state_code":"23505","message":"duplicate key value violates unique constraint \"orders_pkey\"","detail":"Key (tenant_id, id)=(acme, 5) already exists."}
not json
`
	l.scan([]byte(log))
	if l.last == nil || l.last.Code != fsm.IssueConflict || !strings.Contains(l.last.Message, "(acme, 5)") {
		t.Fatalf("last error: %+v", l.last)
	}
	if at := time.Unix(0, l.last.At).UTC(); at.Format("15:04:05.000") != "03:04:06.100" {
		t.Fatalf("error time %s", at)
	}
	l.scan([]byte(`{"pid":12,"error_severity":"ERROR","message":"could not apply","context":"processing remote data for replication origin \"pg_16400\" during message type \"INSERT\""}` + "\n"))
	if l.last.Message != "could not apply" {
		t.Fatalf("an error naming the subscription's origin was not attributed: %+v", l.last)
	}
}

func TestConfigKeepsSecretsOutOfErrors(t *testing.T) {
	c := Config{DSN: "postgres://u:s3cret-pw@host:bad/db", ReplicationPassfile: "/x"}
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("a bad DSN: %v", err)
	}
	c = Config{DSN: "host=db.example port=5433 dbname=app user=u password=s3cret-pw", ReplicationPassfile: "/x"}
	ep, err := c.Endpoint()
	if err != nil || ep.Host != "db.example" || ep.Port != 5433 || ep.Database != "app" {
		t.Fatalf("endpoint %+v %v", ep, err)
	}
	c.Advertise = "10.0.0.9:6432"
	if ep, _ := c.Endpoint(); ep.Host != "10.0.0.9" || ep.Port != 6432 {
		t.Fatalf("advertised endpoint %+v", ep)
	}
	c.ReplicationUser = "bad user"
	if c.Validate() == nil {
		t.Fatal("a replication user that would break a connection string was accepted")
	}
	c = Config{DSN: "host=/var/run/postgresql dbname=app", ReplicationPassfile: "/x"}
	if _, err := c.Endpoint(); err == nil {
		t.Fatal("a unix socket cannot be shared with other regions")
	}
}

func TestConfigChecksTheReplicationCA(t *testing.T) {
	dsn := "host=db.example dbname=app user=u"
	for _, ca := range []string{"/nonexistent/ca.pem", "/etc/hostname"} {
		c := Config{DSN: dsn, ReplicationCA: ca}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--replication-ca") {
			t.Fatalf("CA %s: %v, want an error naming --replication-ca", ca, err)
		}
	}
	c := Config{DSN: dsn, ReplicationCA: "/etc/ca'.pem"}
	if err := c.Validate(); err == nil {
		t.Fatal("a CA path that would break a connection string was accepted")
	}
	s := sourceConnString(&fsm.DatabaseEndpoint{Host: "db.eu.example", Port: 5432, Database: "app"},
		&Config{ReplicationUser: "r", ReplicationPassfile: "/p", ReplicationCA: "/etc/atomfed/pg ca.pem"})
	if want := "host=db.eu.example port=5432 dbname=app user=r passfile=/p sslmode=verify-full sslrootcert='/etc/atomfed/pg ca.pem' connect_timeout=10"; s != want {
		t.Fatalf("connection string %q, want %q", s, want)
	}
}

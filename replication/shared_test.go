package replication_test

import (
	"errors"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestMirrorKeepsPIIColumnOfAHomeTable: b's orders table is the home table
// of initech (not registered yet, so b publishes nothing) when acme starts
// mirroring into it. The subscriber must not take initech's email column
// for a PII column of its own mirror table and drop it: it clears acme's
// values and keeps the column and initech's data. The chaos suite's
// data-plane run found this when two tenants were registered at once.
func TestMirrorKeepsPIIColumnOfAHomeTable(t *testing.T) {
	f := newFed(t, "a", "b")
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'n', 'x' || g || '@acme.test' FROM generate_series(1, 50) g`)
	f.exec("b", ordersDDL, `INSERT INTO orders SELECT 'initech', g, g, 'home', 'i' || g || '@initech.test' FROM generate_series(1, 20) g`)
	f.putTenant(acme("b"))
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
	if !hasColumn(f, "b", "orders", "email") {
		t.Fatal("the subscriber dropped the email column of initech's home table in b")
	}
	if n := f.mustValue("b", `SELECT count(*)::text FROM orders WHERE tenant_id = 'initech' AND email LIKE '%@initech.test'`); n != "20" {
		t.Fatalf("initech's home rows in b have %s emails, want 20", n)
	}
	if n := f.mustValue("b", `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND email IS NOT NULL`); n != "0" {
		t.Fatalf("%s of acme's mirrored rows in b hold an email", n)
	}
}

// TestMirrorKeepsPIIColumnOfAnEmptyTableItDidNotCreate: b's orders table
// was made by the operator for a tenant homed in b that has no rows and no
// publication yet. Nothing tells the subscriber it is a home table but the
// table's origin: the replicator drops PII columns only from tables it
// created as mirrors, so the column must survive many intervals after the
// mirror streams.
func TestMirrorKeepsPIIColumnOfAnEmptyTableItDidNotCreate(t *testing.T) {
	f := newFed(t, "a", "b")
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'n', 'x' || g || '@acme.test' FROM generate_series(1, 50) g`)
	f.exec("b", ordersDDL)
	f.putTenant(acme("b"))
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
	// The subscriber would drop a column two intervals after the mirror
	// caught up; watch for six.
	deadline := time.Now().Add(6 * interval)
	for time.Now().Before(deadline) {
		if !hasColumn(f, "b", "orders", "email") {
			t.Fatal("the subscriber dropped the email column of a table it did not create")
		}
		time.Sleep(interval / 5)
	}
	if n := f.mustValue("b", `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND email IS NOT NULL`); n != "0" {
		t.Fatalf("%s of acme's mirrored rows in b hold an email", n)
	}
}

// TestMirrorDropsPIIColumnOfItsOwnTable: a mirror table the replicator
// created loses a column newly marked PII.
func TestMirrorDropsPIIColumnOfItsOwnTable(t *testing.T) {
	f := newFed(t, "a", "b")
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'n', 'x' || g || '@acme.test' FROM generate_series(1, 20) g`)
	tn := acme("b")
	f.putTenant(tn)
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
	if c := f.mustValue("b", `SELECT coalesce(obj_description('orders'::regclass, 'pg_class'), '')`); c == "" {
		t.Fatal("the mirror table the replicator created carries no marker")
	}
	tn.Tables[0].PIIColumns = append(tn.Tables[0].PIIColumns, "note")
	f.putTenant(tn)
	testutil.Eventually(t, 60*time.Second, func() error {
		if hasColumn(f, "b", "orders", "note") {
			return errors.New("note is still a column of b's mirror table")
		}
		return nil
	})
}

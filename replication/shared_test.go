package replication_test

import (
	"testing"
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

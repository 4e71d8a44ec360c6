package replication_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestMirrorResyncsWhenTheSourceLostItsSlot: a home rebuilt from a
// physical backup has no replication slot; the mirror's subscription can
// never stream from it again. The subscriber finds the slot gone, drops
// the subscription, purges the tenant's rows and subscribes again with a
// fresh copy: the rows written at the home meanwhile and afterwards reach
// the mirror.
func TestMirrorResyncsWhenTheSourceLostItsSlot(t *testing.T) {
	f := newFed(t, "a", "b")
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'n', 'e@x' FROM generate_series(1, 100) g`)
	f.putTenant(acme("b"))
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")

	slot := fsm.TenantSubscription("acme", "b")
	// What a rebuild leaves: no slot at the home.
	testutil.Eventually(t, 30*time.Second, func() error {
		f.exec("a", `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '`+slot+`' AND active_pid IS NOT NULL`)
		_, err := f.value("a", `SELECT pg_drop_replication_slot('`+slot+`')`)
		return err
	})
	f.exec("a", `INSERT INTO orders SELECT 'acme', g, g, 'after', 'e@x' FROM generate_series(101, 150) g`)
	testutil.Eventually(t, 60*time.Second, func() error {
		if got := f.mustValue("a", `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '`+slot+`'`); got != "1" {
			return fmt.Errorf("the mirror's slot is not back at the home (%s)", got)
		}
		if got := f.mustValue("b", `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme'`); got != "150" {
			return fmt.Errorf("the mirror holds %s rows of acme, want 150", got)
		}
		return nil
	})
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
}

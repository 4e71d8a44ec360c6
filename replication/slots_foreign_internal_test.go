package replication

import (
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

// TestAtomfedSlotsAreTheSubscriptionsOwn: only pgoutput slots named as
// atomfed names its subscriptions, or as PostgreSQL names a
// subscription's table copy, are atomfed's; any other plugin decodes
// whole rows whatever the slot is called.
func TestAtomfedSlotsAreTheSubscriptionsOwn(t *testing.T) {
	for _, tc := range []struct {
		name, plugin string
		want         bool
	}{
		{fsm.TenantSubscription("acme", "eu-west"), "pgoutput", true},
		{fsm.GlobalSubscription("us-east", "eu-west"), "pgoutput", true},
		{"pg_16402_sync_16390_7301234567890123456", "pgoutput", true},
		{fsm.TenantSubscription("acme", "eu-west"), "test_decoding", false},
		{"cdc_leak", "test_decoding", false},
		{"debezium", "pgoutput", false},
		{"pg_16402_sync_16390_7301234567890123456", "wal2json", false},
		{"pg_16402_sync_x", "pgoutput", false},
		{"af_t_x", "", false},
	} {
		if got := atomfedSlot(tc.name, tc.plugin); got != tc.want {
			t.Errorf("atomfedSlot(%q, %q) = %v, want %v", tc.name, tc.plugin, got, tc.want)
		}
	}
}

package replication

import (
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

// TestHandOffRecordEndsItsPlacementAndOlderOnes: a hand-off record stops
// the subscribers of the placement it ended and of older ones (an older
// epoch, an older incarnation of the tenant, a tenant from before
// epochs), never those of a newer placement (the hand-off and
// former-home subscribers, a later mirror, a re-created tenant).
func TestHandOffRecordEndsItsPlacementAndOlderOnes(t *testing.T) {
	cases := []struct {
		name           string
		rec            fsm.TaskEpoch
		created, epoch uint64
		stops          bool
	}{
		{"the ended placement", fsm.TaskEpoch{Created: 7, Epoch: 3}, 7, 3, true},
		{"an older epoch", fsm.TaskEpoch{Created: 7, Epoch: 3}, 7, 2, true},
		{"the next epoch (hand-off subscriber)", fsm.TaskEpoch{Created: 7, Epoch: 3}, 7, 4, false},
		{"an older incarnation", fsm.TaskEpoch{Created: 7, Epoch: 3}, 5, 9, true},
		{"a re-created tenant", fsm.TaskEpoch{Created: 7, Epoch: 3}, 12, 1, false},
		{"a tenant from before epochs, ended", fsm.TaskEpoch{}, 0, 0, true},
		{"a tenant from before epochs, after the commit", fsm.TaskEpoch{}, 7, 1, false},
	}
	for _, c := range cases {
		c.rec.Tenant = "acme"
		h := &handOff{Placement: c.rec}
		if got := h.covers(c.created, c.epoch); got != c.stops {
			t.Errorf("%s: a record of %s stops a subscriber of (%d, %d): %v, want %v", c.name, c.rec, c.created, c.epoch, got, c.stops)
		}
	}
}

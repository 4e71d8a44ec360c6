package fsm

import "slices"

// SnapshotPolicySet stores the snapshot policy (an operator's PUT).
type SnapshotPolicySet struct {
	Policy SnapshotPolicy `json:"policy"`
	At     int64          `json:"at"`
}

func applySnapshotPolicySet(s *State, e *Entry) (any, error) {
	cmd := body[SnapshotPolicySet](e)
	p := cmd.Policy
	p.Default = false
	if err := ValidateSnapshotPolicy(&p); err != nil {
		return nil, err
	}
	p.ModifyIndex = e.Index
	s.Snapshots.Policy = &p
	s.touch(TableSnapshots, e.Index)
	return &p, nil
}

// SnapshotShipped records a shipment by the leader: the snapshot it
// shipped, or the error that stopped it (Error set, Snapshot nil), and the
// snapshots retention deleted from the repository (Removed, by id).
type SnapshotShipped struct {
	Snapshot *ShippedSnapshot `json:"snapshot,omitempty"`
	Error    string           `json:"error,omitempty"`
	Location string           `json:"location,omitempty"`
	Node     string           `json:"node,omitempty"`
	Removed  []string         `json:"removed,omitempty"`
	At       int64            `json:"at"`
}

func applySnapshotShipped(s *State, e *Entry) (any, error) {
	cmd := body[SnapshotShipped](e)
	c := s.Snapshots
	switch {
	case (cmd.Snapshot == nil) == (cmd.Error == ""):
		return nil, invalidf("invalid_snapshot_shipment", "a shipment records either a snapshot or an error")
	case len(cmd.Error) > MaxShipErrorLen:
		return nil, invalidf("invalid_snapshot_shipment", "a shipment's error must be at most %d bytes", MaxShipErrorLen)
	case cmd.At <= 0:
		return nil, invalidf("invalid_snapshot_shipment", "a shipment needs its time")
	}
	shipped := make([]*ShippedSnapshot, 0, len(c.Shipped)+1)
	for _, sn := range c.Shipped {
		if slices.Contains(cmd.Removed, sn.ID) {
			c.Removed++
			continue
		}
		shipped = append(shipped, sn)
	}
	if sn := cmd.Snapshot; sn != nil {
		if err := validShipped(sn); err != nil {
			return nil, err
		}
		for _, old := range shipped {
			if old.ID == sn.ID {
				return nil, preconditionf("snapshot_exists", "snapshot %s is already in the catalog", sn.ID)
			}
		}
		cp := *sn
		if n := len(shipped); n > 0 && cp.At < shipped[n-1].At {
			cp.At = shipped[n-1].At // the catalog stays ordered across leader clocks
		}
		shipped = append(shipped, &cp)
		if len(shipped) > MaxShippedSnapshots {
			shipped = shipped[len(shipped)-MaxShippedSnapshots:]
		}
		c.LastFailure, c.Failures = nil, 0
	} else {
		c.LastFailure = &SnapshotShipFailure{At: cmd.At, Error: cmd.Error, Location: cmd.Location, Node: cmd.Node}
		c.Failures++
	}
	if len(shipped) == 0 {
		shipped = nil
	}
	c.Shipped = shipped
	s.Snapshots = c
	s.touch(TableSnapshots, e.Index)
	return &c, nil
}

// Package cluster runs an atomfed server: Raft (hashicorp/raft with the
// segment log of internal/raftlog, raft-boltdb/v2 for term and vote, and a
// file snapshot store) for the replicated state,
// Serf for membership and failure detection, the leader loop with its named
// leader routines, reconciliation of Serf membership into the Raft
// configuration, dead-server cleanup, and the leader-side apply and read
// barriers that httpapi builds on.
//
// Leadership follows the Consul/Nomad pattern: one goroutine watches the
// raft NotifyCh; on gaining leadership it issues a Barrier, establishes
// leadership by starting the registered routines, and only then marks the
// server ready for consistent reads. Losing leadership stops the routines.
package cluster

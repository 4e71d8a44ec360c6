// Package cluster runs an atomfed server: Raft (hashicorp/raft with the
// segment log of internal/raftlog, raft-boltdb/v2 for term and vote, and a
// file snapshot store) for the replicated state, Serf for membership and
// failure detection, the leader loop with its named leader routines,
// reconciliation of Serf membership into the Raft configuration,
// dead-server cleanup, the scheduler that places tasks on region agents,
// writes forwarded from followers to the leader, and the leader-side apply
// and read barriers that httpapi builds on.
//
// Leadership follows the Consul/Nomad pattern: one goroutine watches the
// raft NotifyCh (leader.go); on gaining leadership it issues a Barrier,
// establishes leadership by starting the registered routines, and only then
// marks the server ready for consistent reads. Losing leadership stops the
// routines. The routines are listed in one place, New in server.go
// (reconcile, dead-server-cleanup, scheduler, sync-audit, server-keys,
// approval-expiry, and the LeaderRoutines passed to New).
//
// The region agent's runtime is cluster/agent. The two share what every
// node gossips (tags, roles, the protocol version) through internal/node
// and the task types through fsm; cluster never imports cluster/agent.
//
// Files by concern: server.go (New, start-up, shutdown), config.go,
// leader*.go (leadership and the routines), scheduler*.go (desired tasks
// and their placement), serf.go and coordinates.go (membership and RTT),
// forward.go and apply.go (forwarding and commits), transport.go (Raft's
// mutual-TLS stream), logstore.go and snapshot.go (storage), protocol.go
// (versions spoken during a rolling upgrade), metrics*.go.
package cluster

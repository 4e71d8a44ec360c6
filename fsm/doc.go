// Package fsm is atomfed's replicated state machine: the federation's
// state, the commands that change it, and the views that read it.
//
// Every change is a command: one MessageType byte, one codec version byte and
// a body. Apply is deterministic: it reads nothing but the log entry (no clock,
// no randomness, no I/O); the leader stamps times into the command before it
// is logged. An entry of a known type that does not decode is refused the
// same way on every replica: it changes nothing but the audit chain, which
// records it as refused:<type>, and the FSM goes on (a leader never logs
// one: it decodes forwarded commands first, DecodeCommand). An entry of a
// type this server does not know stops it with its index, because a newer
// replica applies it and skipping it would diverge silently. A business
// rejection (a cas conflict, an unknown home region) is returned as a
// value inside ApplyResult, changes nothing, and does not extend the audit
// chain.
//
// # Where things are
//
// command.go is the command catalogue: every command type with its number
// and its name in audit entries, the number block of each area, the
// IgnoreUnknownTypeFlag rule, and the dispatch table that registers each
// type's apply function. codec.go encodes and decodes command bodies, and
// fsm.go is the raft.FSM itself (Apply, ApplyBatch, Snapshot, Restore and
// the watches that wake blocked readers).
//
// The rest is split by area under one rule: an area's state types and read
// views are in <area>.go, and its commands in <area>_apply.go, where the
// body struct of XxxType (named Xxx, but for RegionDatabaseReport and
// TenantSyncStateSet) stands just above its apply function applyXxx.
//
//   - Registry, regions and tenants: registry.go, registry_apply.go; the
//     checks of names and objects, shared with the API, in validate.go.
//   - Agents and tasks: Serf membership, scheduling plans, agent reports
//     and region health, in agents.go and agents_apply.go.
//   - Trust: members, keys, tokens, the policy and m-of-n approvals, in
//     trust.go and trust_apply.go; request signatures and replay nonces in
//     auth.go.
//   - Replication and global tables: database endpoints, sync states and
//     global tables in replication.go and replication_apply.go; the specs,
//     results and names of replication tasks in replication_tasks.go.
//   - Batch: batch_apply.go, the envelope that carries several commands in
//     one log entry. It is not a command of its own: ApplyBatch unwraps it
//     and each command it carries is dispatched and audited alone.
//   - Audit chain: audit.go, sha256(prev || index || type || body) over
//     every applied command, and the ring of recent entries.
//   - Snapshot and restore: snapshot.go, the versioned snapshot document;
//     the copy it is taken from is State.clone in state.go.
//   - Read views: state.go (State, table indexes, sorted regions and
//     tenants), the Sorted* and health views in each <area>.go, and
//     replication_view.go (a tenant's replication, global tables, drift).
//   - errors.go: the sentinel errors every rejection wraps; metrics.go:
//     apply, persist and restore timings.
//
// The package imports no network or database code, and reads the clock only
// to time its own work for metrics, never to decide anything; it is a leaf
// that cluster, httpapi and the data-plane packages read through its views.
package fsm

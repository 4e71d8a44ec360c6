// Package fsm is atomfed's replicated state machine: the region and tenant
// registry, the audit hash chain, and the commands that change them.
//
// Every change is a command: one MessageType byte, one codec version byte and
// a body. Apply is deterministic: it reads nothing but the log entry (no clock,
// no randomness, no I/O); the leader stamps times into the command before it
// is logged. An entry that cannot be decoded panics with its index, because a
// replica that skips it would silently diverge. A business rejection (a cas
// conflict, an unknown home region) is returned as a value inside
// ApplyResult, changes nothing, and does not extend the audit chain.
//
// The package imports no network, database or clock code; it is a leaf that
// cluster, httpapi and the data-plane packages read through its views.
package fsm

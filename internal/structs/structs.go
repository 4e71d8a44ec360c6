// Package structs holds the wire types and sentinel errors that the cluster,
// the HTTP API and its Go client share. It is a leaf: it imports nothing of
// atomfed, so that httpapi need not import cluster (Nomad keeps its shared
// types in a structs package for the same reason).
package structs

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors for cluster-level conditions. httpapi maps each to one
// status code.
var (
	// ErrNotLeader means this server is not the leader; nothing was applied
	// and the request may be forwarded.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader means no leader is known right now; retry shortly.
	ErrNoLeader = errors.New("no cluster leader")
	// ErrWrongAgentToken means an agent was given a token that is not an
	// agent token bound to it (an operator's, another agent's, a revoked
	// one): it refuses to use it.
	ErrWrongAgentToken = errors.New("the token is not an agent token bound to this agent")
	// ErrOutcomeUnknown means the command reached Raft but its commit could
	// not be confirmed (leadership lost, shutdown): it may or may not have
	// been applied.
	ErrOutcomeUnknown = errors.New("outcome unknown: the write may or may not have been applied")
	// ErrBusy means Raft did not accept the command; it was not applied.
	ErrBusy = errors.New("raft is busy: the command was not applied")
	// ErrShuttingDown means the server is stopping.
	ErrShuttingDown = errors.New("server is shutting down")
	// ErrFollowerBehind means a follower has not yet applied the leader's
	// read index (it learns commits with the next replication round): the
	// read should be answered by the leader instead. Nothing was read.
	ErrFollowerBehind = errors.New("this follower has not applied the leader's commit index yet")
	// ErrForwardUnsupported means the leader does not serve the forwarding
	// RPC (an older server, during a rolling upgrade): proxy the request
	// to it over HTTP instead. Nothing was sent.
	ErrForwardUnsupported = errors.New("the leader does not serve the forwarding RPC")
	// ErrUpgradeInProgress means a server of the cluster speaks an older
	// protocol that does not know the command: nothing was applied; finish
	// the rolling upgrade first.
	ErrUpgradeInProgress = errors.New("a server of this cluster is older and does not know this command yet: finish the rolling upgrade first")
	// ErrBadSnapshot marks a snapshot archive that cannot be restored.
	ErrBadSnapshot = errors.New("bad snapshot archive")
	// ErrRestoreNeedsApproval marks a restore of a snapshot that the
	// approvers have not approved (by its digest) while the trust is
	// sealed: nothing changed.
	ErrRestoreNeedsApproval = errors.New("snapshot restore needs approval")
)

// MaxSnapshotSize bounds a snapshot archive and each of its members.
const MaxSnapshotSize = 1 << 30

// Peer is one server of the Raft configuration.
type Peer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Voter    bool   `json:"voter"`
	Leader   bool   `json:"leader"`
	Suffrage string `json:"suffrage"`
	Region   string `json:"region,omitempty"`
	HTTP     string `json:"http,omitempty"`
	Status   string `json:"serf_status,omitempty"`
	// Protocol is the protocol version the server gossips (0: unknown).
	Protocol int `json:"protocol,omitempty"`
}

// Member is one Serf member: a server or a region agent.
type Member struct {
	Name   string            `json:"name"`
	Addr   string            `json:"addr"`
	Role   string            `json:"role"`
	Region string            `json:"region"`
	Status string            `json:"status"`
	Tags   map[string]string `json:"tags"`
	// Refused says why this server, as leader, did not admit the member
	// (no server identity under its name, no agent token bound to its
	// name and region); empty when admitted or not judged here.
	Refused string `json:"refused,omitempty"`
}

// ArchiveMeta describes a snapshot archive.
type ArchiveMeta struct {
	Version   int       `json:"version"`
	Node      string    `json:"node"`
	Region    string    `json:"region"`
	CreatedAt time.Time `json:"created_at"`
	AuditHead string    `json:"audit_head"`
	Index     uint64    `json:"state_index"`
	// RaftIndex, RaftTerm and Size come from the raft snapshot metadata.
	RaftIndex uint64 `json:"raft_index"`
	RaftTerm  uint64 `json:"raft_term"`
	Size      int64  `json:"size"`
	// Digest is the hex SHA-256 of the archive's state (state.bin): what
	// a restore's approval is bound to.
	Digest string `json:"digest,omitempty"`
}

// LeaderInfo answers GET /v1/status/leader.
type LeaderInfo struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	HTTP    string `json:"http,omitempty"`
}

// Health answers GET /health.
type Health struct {
	Status      string `json:"status"` // "ok", or "no_leader"
	Node        string `json:"node"`
	Region      string `json:"region"`
	Role        string `json:"role"` // "server"
	RaftState   string `json:"raft_state"`
	Leader      string `json:"leader"`
	KnownLeader bool   `json:"known_leader"`
	Index       uint64 `json:"index"`
	AppliedIdx  uint64 `json:"applied_index"`
	// Term and CommitIndex are this server's Raft term and commit index.
	Term        uint64 `json:"term"`
	CommitIndex uint64 `json:"commit_index"`
	AuditHead   string `json:"audit_head"`
	AuditIndex  uint64 `json:"audit_index"`
	Version     string `json:"version"`
	// SimulationMode is true when the node runs in SIMULATION_MODE;
	// Simulation says why and which parts are simulated.
	SimulationMode bool        `json:"simulation_mode"`
	Simulation     *Simulation `json:"simulation,omitempty"`
}

// ErrorBody is the error envelope every endpoint uses.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Coordinate is a node's Serf network coordinate (Vivaldi).
type Coordinate struct {
	Node       string    `json:"node"`
	Role       string    `json:"role"`
	Region     string    `json:"region"`
	Vec        []float64 `json:"vec"`
	Error      float64   `json:"error"`
	Adjustment float64   `json:"adjustment"`
	Height     float64   `json:"height"`
}

// RegionRTT is one region ranked by estimated round-trip time.
type RegionRTT struct {
	Region string `json:"region"`
	// RTTMillis is the estimated RTT in milliseconds, or -1 when no node
	// of the region has a coordinate yet.
	RTTMillis float64 `json:"rtt_ms"`
	// Via names the node pair the estimate comes from.
	From string `json:"from_node,omitempty"`
	To   string `json:"to_node,omitempty"`
}

// TaskStatus is what a task executor on an agent reports about its task.
type TaskStatus struct {
	Status string // "running", "failing" or "succeeded"
	Result any    // marshalled to JSON; at most 16 KiB
	Error  string
}

// Replication metric names, shared by the agents (measured) and the servers
// (exported from task results) so that one dashboard reads either.
const (
	MetricReplicationLagSeconds = "atomfed_replication_lag_seconds"
	MetricReplicationLagBytes   = "atomfed_replication_lag_bytes"
	MetricGlobalSyncLagSeconds  = "atomfed_global_sync_lag_seconds"
	MetricGlobalSyncLagBytes    = "atomfed_global_sync_lag_bytes"
	MetricReplicationError      = "atomfed_replication_error"
	MetricSchemaDrift           = "atomfed_replication_schema_drift"
)

// ForwardResult is the leader's answer to a command forwarded by a
// follower: the raft index, a business rejection, or the stored value as
// JSON.
type ForwardResult struct {
	Index uint64
	Err   error
	Value []byte
}

type callerKey struct{}

// WithCaller returns ctx carrying the bearer token of the API caller a
// write is made for: a follower forwards it with the command, so that the
// leader checks the caller's authority itself.
func WithCaller(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, callerKey{}, token)
}

// CallerOf returns the caller's token WithCaller put in ctx.
func CallerOf(ctx context.Context) (string, bool) {
	t, ok := ctx.Value(callerKey{}).(string)
	return t, ok && t != ""
}

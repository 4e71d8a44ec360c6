// Package httpapi serves atomfed's HTTP API on every server: the seed paths
// (/health, /region/register, /region/list, /global-status, /metrics) and
// everything under /v1/. docs/api.md documents it endpoint by endpoint.
//
// Where things are: api.go holds the route table (every path, its method
// and the roles it admits), Config and the Cluster interface, the only view
// the package has of the server (cluster.Server implements it). The
// handlers are grouped by resource in registry.go, agents.go, trust.go,
// replication.go, status.go and policy_status.go; query.go holds the read
// and write paths every handler goes through, forward.go the HTTP hop to
// the leader, errors.go the error mapping. agent_node.go is not this API
// but the region agent's own small router. The bodies are the types of
// httpapi/wire and internal/structs, which the Go client (httpapi/client)
// decodes too.
//
// Conventions every endpoint follows:
//   - Reads take ?consistency=linearizable (default), default or stale.
//     A linearizable read is answered by the server asked: the leader
//     after a quorum has confirmed its leadership (one round shared by
//     concurrent reads), a follower from its own state once it has
//     applied the leader's read index, which it asks for over the
//     forwarding RPC (Cluster.ConsistentRead). A follower that has not
//     applied that index within a few milliseconds, or whose leader is
//     too old to give one, hands the read to the leader. A default read
//     is answered by the leader, once its leadership is established,
//     without the quorum round; a follower hands it over. A stale read is
//     answered by any server from its local state.
//   - Responses carry X-Atomfed-Index and X-Atomfed-Served-By;
//     ?index=N&wait=30s blocks until the index of the tables the answer
//     is built from passes N. If the index goes backwards (a snapshot
//     restore), reset to 0.
//   - A write on a follower is decoded, validated and authorised there,
//     and the encoded command goes to the leader over the forwarding RPC
//     (Cluster.ForwardApply); an older leader without the RPC gets the
//     request over HTTP. Default reads and the operator endpoints that
//     need the leader are also proxied over HTTP, in one hop marked with
//     X-Atomfed-Forwarded-By and never forwarded again. With no leader,
//     a request waits up to Config.LeaderWait for one.
//   - Callers present a bearer token whose role the route admits
//     (auth.go; /health and /metrics need none, nor /region/list with
//     Config.AnonymousRegionList); registrations, agent reports, approvals and key changes
//     are also signed (signed.go), and gated actions become approvals.
//   - Errors are {"error":{"code":"...","message":"..."}}; statuses are
//     mapped from sentinel errors in exactly one place, statusFor in
//     errors.go. A write whose commit cannot be confirmed is 503
//     outcome_unknown, never a failure.
//   - Bodies are at most 1 MiB of strict JSON (decode.go): unknown fields
//     and trailing data are refused. A snapshot upload is the exception,
//     up to structs.MaxSnapshotSize.
package httpapi

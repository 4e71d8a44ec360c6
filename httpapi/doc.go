// Package httpapi serves atomfed's HTTP API: the seed paths (/health,
// /region/register, /region/list, /global-status, /metrics) and everything
// under /v1/.
//
// Conventions every endpoint follows:
//   - Reads take ?consistency=linearizable (default), default or stale.
//     Linearizable reads are answered by the leader after a quorum has
//     confirmed its leadership; default reads by the leader without that
//     round trip; stale reads by any server from its local state.
//   - Responses carry X-Atomfed-Index; ?index=N&wait=30s blocks until the
//     index passes N. If the index goes backwards (a snapshot restore), reset
//     to 0.
//   - Writes on a follower are forwarded to the leader in one hop.
//   - Errors are {"error":{"code":"...","message":"..."}}; statuses are
//     mapped from sentinel errors in exactly one place (errors.go).
//   - Bodies are at most 1 MiB of strict JSON: unknown fields and trailing
//     data are refused.
//
// The package knows the cluster only through the Cluster interface it
// declares.
package httpapi

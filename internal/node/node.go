// Package node holds what every atomfed node, server or region agent,
// shares below the server (cluster) and the agent runtime
// (cluster/agent), so that neither imports the other: the Serf tags and
// roles a node gossips, the protocol version it speaks, the Serf set-up
// (StartSerf, with outgoing connections bound to the bind address, see
// sourcebind.go) and the claim a node lays on its data directory.
package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Serf tags every atomfed node gossips. Keep them short: memberlist caps the
// whole tag set at 512 bytes.
const (
	TagRole            = "role"   // "server" or "agent"
	TagRegion          = "region" // region name
	TagRaftAddr        = "raft"   // advertised raft address (servers)
	TagHTTP            = "http"   // base URL of the HTTP API
	TagExpect          = "expect" // bootstrap-expect (servers)
	TagNonVoter        = "nv"     // "1" for a non-voter
	TagBootstrapped    = "bs"     // "1" once the server belongs to a raft cluster
	TagProtocolVersion = "vsn"    // atomfed protocol version
	TagCapabilities    = "caps"   // task types an agent runs, comma-separated
	TagCapacity        = "cap"    // how many tasks an agent takes
	TagVersion         = "ver"    // atomfed build version
	// TagPublicKey carries a server's public signing key (base64 DER); the
	// leader records it as a trust member of kind server.
	TagPublicKey = "pk"

	RoleServer = "server"
	RoleAgent  = "agent"
)

// ProtocolVersion is what this build speaks, gossiped in the "vsn" tag.
//
//	1: commands as JSON; followers proxy writes and linearizable reads to
//	   the leader over HTTP.
//	2: commands as MessagePack (fsm.CodecMsgpack); followers send writes
//	   and read-index requests to the leader over the forwarding RPC; the
//	   leader groups writes into batch entries (fsm.BatchType).
//	3: commands 80-81 (fsm.TasksRefenceType, fsm.TenantPatchType): a
//	   server of version 2 cannot apply them, so they are issued only once
//	   every server of the configuration speaks 3.
//	4: trust boundaries: commands 21-29 (approval-gated operator actions,
//	   agent identities, approval pruning) and fsm.RulesTrustBound; issued
//	   only once every server of the configuration speaks 4.
//
// During a rolling upgrade the cluster speaks the lowest version among the
// servers in its raft configuration (cluster/protocol.go): commands stay
// JSON until every server that applies the log can read MessagePack, and a
// follower uses the RPC only with a leader that serves it. So servers can
// be upgraded one at a time, in any order.
const ProtocolVersion = 4

// ClaimDataDir records which node owns a data dir and refuses to start a
// different node on it, which would corrupt both nodes' Raft or Serf
// identity.
func ClaimDataDir(dir, node string) error {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		if got := strings.TrimSpace(string(b)); got != node {
			return fmt.Errorf("data dir %s belongs to node %q, not %q: use another --data-dir or the same --node", dir, got, node)
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		return os.WriteFile(p, []byte(node+"\n"), 0o600)
	default:
		return fmt.Errorf("read %s: %w", p, err)
	}
}

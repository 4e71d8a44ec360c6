package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// auditRingSize is how many recent audit entries the state keeps for
// /v1/status/audit; the head alone proves the whole chain.
const auditRingSize = 256

// RecentAudit returns the most recent audit entries, oldest first: at most
// auditRingSize of them.
func (s *State) RecentAudit() []AuditEntry {
	if n := len(s.Audit); n > auditRingSize {
		return s.Audit[n-auditRingSize:]
	}
	return s.Audit
}

// AuditEntry is one link of the audit hash chain: the hash after applying
// the command at Index.
type AuditEntry struct {
	Index uint64 `json:"index"`
	Type  string `json:"type"`
	Hash  string `json:"hash"` // hex sha256(prev || index || type || body)
	At    int64  `json:"at,omitempty"`
	// Note says what the entry did beyond its command, when that matters
	// to an auditor: the trust sealed, approvals pruned, a snapshot
	// restored over the chain (previous and restored heads, approvers).
	Note string `json:"note,omitempty"`
}

// GenesisHash is the audit head of an empty state.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// chainHash returns sha256(prev || index || type || body), hex encoded.
// prev is the previous head in hex; index is big-endian uint64.
func chainHash(prevHex string, index uint64, t MessageType, body []byte) string {
	prev, err := hex.DecodeString(prevHex)
	if err != nil || len(prev) != sha256.Size {
		prev = make([]byte, sha256.Size)
	}
	h := sha256.New()
	h.Write(prev)
	var ib [8]byte
	binary.BigEndian.PutUint64(ib[:], index)
	h.Write(ib[:])
	h.Write([]byte{byte(t)})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

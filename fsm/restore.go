package fsm

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// SnapshotRestore is the approvable restore of the snapshot whose state
// (state.bin) has the hex SHA-256 Digest. It applies only through its
// approval, and records the grant that the leader's restore of that very
// snapshot then consumes (cluster.Server.RestoreSnapshot, PrepareRestore).
type SnapshotRestore struct {
	Digest    string `json:"digest"`
	AuditHead string `json:"audit_head"`  // the snapshot's audit head
	Index     uint64 `json:"state_index"` // the snapshot's state index
	At        int64  `json:"at"`
}

func applySnapshotRestore(s *State, e *Entry) (any, error) {
	cmd := body[SnapshotRestore](e)
	if !e.Approved || e.approval == nil {
		return nil, forbiddenf("approval_required", "a snapshot restore is approved through its approval (PUT /v1/snapshot answers 202 with it)")
	}
	if !sha256Re.MatchString(cmd.Digest) {
		return nil, invalidf("invalid_digest", "snapshot digest %q is not a hex SHA-256", cmd.Digest)
	}
	g := RestoreGrant{Digest: cmd.Digest, Approval: e.approval.ID, At: cmd.At}
	for _, v := range e.approval.Votes {
		g.Approvers = append(g.Approvers, v.Approver)
		g.At = max(g.At, v.At)
	}
	g.ExpiresAt = g.At + s.trustRule(ActionRestoreSnapshot).TTLSeconds*1e9
	grants := slices.DeleteFunc(slices.Clone(s.Trust.RestoreGrants), func(o RestoreGrant) bool { return o.Digest == cmd.Digest || o.ExpiresAt < g.At })
	s.Trust.RestoreGrants = append(grants, g)
	s.touch(TablePolicy, e.Index)
	return &g, nil
}

// RestoreGrantFor returns the approved, not yet used restore of the
// snapshot with digest that is still valid at time at, or nil.
func (s *State) RestoreGrantFor(digest string, at int64) *RestoreGrant {
	for i := range s.Trust.RestoreGrants {
		if g := s.Trust.RestoreGrants[i]; g.Digest == digest && at <= g.ExpiresAt {
			return &g
		}
	}
	return nil
}

// RestoreRecord is what the audit chain records of a snapshot restore:
// the live head it continues from, the head of the snapshot restored, and
// who approved it.
type RestoreRecord struct {
	PreviousHead string   `json:"previous_head"`
	RestoredHead string   `json:"restored_head"`
	Digest       string   `json:"digest"`
	Approval     string   `json:"approval,omitempty"`
	Approvers    []string `json:"approvers,omitempty"`
	RequestedBy  string   `json:"requested_by"`
	At           int64    `json:"at"`
}

// PrepareRestore builds, from a user's snapshot, the state a running
// federation whose live state is cur installs on every server (the
// leader builds it once; raft ships it), so that a restore can bring back
// data but never take the trust backwards:
//
//   - MarkRestored's changes (tasks refenced, replication torn down);
//   - the nonce store is the union of both, each nonce kept until the
//     later of its expiries: a request signed before the restore is
//     still refused after it;
//   - once cur's trust is sealed, tokens, the policy, approvals and the
//     trust facts are the live ones (no revoked token comes back, the
//     bootstrap token stays retired, the trust stays sealed), less the
//     grant consumed; trust members other than regions' are the live
//     ones; a region's is the live one too, or, for a region only the
//     snapshot has, the snapshot's with every key revoked in cur still
//     revoked (mergeTrust);
//   - in the bootstrap window (cur not sealed: a new federation the
//     operator recovers into), the snapshot's trust is adopted, without
//     dropping what cur has (adoptTrust);
//   - the shipped-snapshot policy and catalog are the live ones: the
//     repository still holds what it held (carrySnapshotCatalog);
//   - the audit chain continues from cur's head with one entry of type
//     snapshot_restore, whose hash covers rec and whose note says it.
func PrepareRestore(snapshot []byte, cur *State, rec RestoreRecord) ([]byte, error) {
	marked, err := MarkRestored(snapshot, cur)
	if err != nil {
		return nil, err
	}
	s, err := ReadSnapshot(bytes.NewReader(marked))
	if err != nil {
		return nil, err
	}
	rec.PreviousHead, rec.RestoredHead = cur.AuditHead, s.AuditHead
	if cur.TrustSealed() {
		mergeTrust(s, cur, rec.Digest)
	} else {
		adoptTrust(s, cur)
	}
	mergeNonces(s, cur)
	carrySnapshotCatalog(s, cur)
	index := max(cur.Index, s.Index) + 1
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	s.AuditHead = chainHash(cur.AuditHead, index, SnapshotRestoreType, body)
	s.Audit = append(append([]AuditEntry(nil), cur.RecentAudit()...), AuditEntry{Index: index, Type: SnapshotRestoreType.String(),
		Hash: s.AuditHead, At: rec.At, Note: restoreNote(&rec)})
	s.Index = index
	for k := range cur.Indexes {
		s.Indexes[k] = index
	}
	for k := range s.Indexes {
		s.Indexes[k] = index
	}
	var b bytes.Buffer
	if err := WriteSnapshot(&b, s); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func restoreNote(r *RestoreRecord) string {
	by := "not sealed: restored by " + r.RequestedBy + " in the bootstrap window"
	if r.Approval != "" {
		by = "approved in " + r.Approval + " by " + strings.Join(r.Approvers, ", ") + ", requested by " + r.RequestedBy
	}
	return fmt.Sprintf("restored snapshot %s (its audit head %s) over audit head %s; %s", r.Digest, r.RestoredHead, r.PreviousHead, by)
}

// mergeTrust keeps cur's trust in s (see PrepareRestore).
func mergeTrust(s, cur *State, digest string) {
	revoked := revokedKeys(cur)
	members := map[string]*Member{}
	for id, m := range cur.Members {
		if m.Kind != MemberRegion {
			members[id] = m
		}
	}
	for id, m := range s.Members {
		if m.Kind != MemberRegion || members[id] != nil {
			continue
		}
		if cm := cur.Members[id]; cm != nil && cm.Kind == MemberRegion {
			members[id] = cm // its keys as they are now
			continue
		}
		members[id] = withRevoked(m, revoked)
	}
	s.Members = members
	s.Tokens = map[string]*Token{}
	for k, t := range cur.Tokens {
		s.Tokens[k] = t
	}
	s.Approvals = map[string]*Approval{}
	for k, a := range cur.Approvals {
		s.Approvals[k] = a
	}
	s.Policy = cur.Policy
	s.TrustSeq = max(s.TrustSeq, cur.TrustSeq) + 1
	s.Trust = cur.Trust
	s.Trust.RestoreGrants = slices.DeleteFunc(slices.Clone(cur.Trust.RestoreGrants), func(g RestoreGrant) bool { return g.Digest == digest })
	s.reindexTrust()
}

// adoptTrust takes the snapshot's trust into a federation whose own is not
// sealed (disaster recovery into new servers): the snapshot's members,
// tokens, policy and approvals, plus cur's members and tokens the
// snapshot does not have (the new servers' keys, the operator's token);
// keys revoked in cur stay revoked, and the seal and the bootstrap
// token's retirement hold if either side has them. No restore grant
// survives.
func adoptTrust(s, cur *State) {
	revoked := revokedKeys(cur)
	members := map[string]*Member{}
	for id, m := range s.Members {
		members[id] = withRevoked(m, revoked)
	}
	owners := map[string]bool{}
	for _, m := range members {
		for _, k := range m.Keys {
			owners[k.KeyID] = true
		}
	}
	for id, m := range cur.Members {
		if members[id] == nil && !slices.ContainsFunc(m.Keys, func(k MemberKey) bool { return owners[k.KeyID] }) {
			members[id] = m
		}
	}
	s.Members = members
	hashes := map[string]bool{}
	for _, t := range s.Tokens {
		hashes[t.SecretHash] = true
	}
	for k, t := range cur.Tokens {
		if s.Tokens[k] == nil && !hashes[t.SecretHash] {
			s.Tokens[k] = t
		}
	}
	s.TrustSeq = max(s.TrustSeq, cur.TrustSeq) + 1
	s.Trust.Sealed = s.Trust.Sealed || cur.Trust.Sealed
	s.Trust.BootstrapRetired = s.Trust.BootstrapRetired || cur.Trust.BootstrapRetired
	s.Trust.RestoreGrants = nil
	s.reindexTrust()
}

// revokedKeys returns the keys revoked in st, with when.
func revokedKeys(st *State) map[string]int64 {
	revoked := map[string]int64{}
	for _, m := range st.Members {
		for _, k := range m.Keys {
			if k.Revoked {
				revoked[k.KeyID] = k.RevokedAt
			}
		}
	}
	return revoked
}

// withRevoked returns m with every key in revoked marked revoked.
func withRevoked(m *Member, revoked map[string]int64) *Member {
	if !slices.ContainsFunc(m.Keys, func(k MemberKey) bool { _, ok := revoked[k.KeyID]; return ok && !k.Revoked }) {
		return m
	}
	c := *m
	c.Keys = slices.Clone(m.Keys)
	for i := range c.Keys {
		if at, ok := revoked[c.Keys[i].KeyID]; ok && !c.Keys[i].Revoked {
			c.Keys[i].Revoked, c.Keys[i].RevokedAt = true, at
		}
	}
	return &c
}

// mergeNonces makes s remember every nonce either state remembers, until
// the later of its expiries, in expiry order.
func mergeNonces(s, cur *State) {
	exp := map[string]int64{}
	for _, st := range []*State{s, cur} {
		for _, n := range st.liveNonces() {
			exp[n.Nonce] = max(exp[n.Nonce], n.Expires)
		}
	}
	q := make([]nonceEntry, 0, len(exp))
	for n, e := range exp {
		q = append(q, nonceEntry{Nonce: n, Expires: e})
	}
	slices.SortFunc(q, func(a, b nonceEntry) int {
		if a.Expires != b.Expires {
			return cmp.Compare(a.Expires, b.Expires)
		}
		return strings.Compare(a.Nonce, b.Nonce)
	})
	s.Nonces, s.nonceQueue = exp, q
}

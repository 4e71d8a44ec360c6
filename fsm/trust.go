package fsm

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/atomcloud/atomfed/internal/signing"
)

// Member kinds: who a key belongs to.
const (
	MemberRegion   = "region"   // a region's registration key
	MemberAgent    = "agent"    // a region agent's key
	MemberApprover = "approver" // a person or system that approves actions
	MemberServer   = "server"   // an atomfed server's key (signs trust bundles)
)

var validMemberKind = map[string]bool{MemberRegion: true, MemberAgent: true, MemberApprover: true, MemberServer: true}

// Token roles. operator may do everything; approver may read and vote on
// approvals; agent may read and do what agents do (report, leave, register
// its own key); reader may only read.
const (
	RoleOperator = "operator"
	RoleApprover = "approver"
	RoleAgent    = "agent"
	RoleReader   = "reader"
)

// ValidRole reports whether r is a token role.
func ValidRole(r string) bool {
	return r == RoleOperator || r == RoleApprover || r == RoleAgent || r == RoleReader
}

// Table names of the trust state.
const (
	TableMembers   = "members"
	TableTokens    = "tokens"
	TableApprovals = "approvals"
	TablePolicy    = "policy"
)

// Member is a participant of the federation with its public keys.
type Member struct {
	ID   string      `json:"id"`
	Kind string      `json:"kind"`
	Keys []MemberKey `json:"keys"`
	// CreatedBy is the token accessor that registered the member (the
	// principal its quota counts against); empty before RulesTrustBound.
	CreatedBy   string `json:"created_by,omitempty"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// MemberKey is one public key of a member. A rotated-out key stays valid
// until NotAfter (the overlap window); a revoked key is invalid at once.
type MemberKey struct {
	KeyID     string `json:"key_id"`
	PublicKey string `json:"public_key"` // PEM
	AddedAt   int64  `json:"added_at"`
	NotAfter  int64  `json:"not_after,omitempty"`
	Revoked   bool   `json:"revoked,omitempty"`
	RevokedAt int64  `json:"revoked_at,omitempty"`
}

// ValidAt reports whether the key may sign at time at (unix ns).
func (k *MemberKey) ValidAt(at int64) bool {
	return !k.Revoked && (k.NotAfter == 0 || at <= k.NotAfter)
}

// Key returns the member's key with id, or nil.
func (m *Member) Key(id string) *MemberKey {
	for i := range m.Keys {
		if m.Keys[i].KeyID == id {
			return &m.Keys[i]
		}
	}
	return nil
}

// Token is an API token. Only the SHA-256 of its secret is stored.
type Token struct {
	Accessor    string `json:"accessor"`
	SecretHash  string `json:"secret_hash"`
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
	// Node and Region bind an agent token to one agent node of one
	// region (RulesTrustBound): the leader admits a Serf member as an
	// agent only when a token is bound to its name and region, and the
	// token reports, watches tasks and registers keys only as Node and
	// sets only Region's database. Empty on other roles, and on agent
	// tokens made before protocol 4 (which agent routes refuse).
	Node        string `json:"node,omitempty"`
	Region      string `json:"region,omitempty"`
	CreatedAt   int64  `json:"created_at"`
	CreateIndex uint64 `json:"create_index"`
}

// Approvable actions.
const (
	ActionRegisterProductionRegion = "region.register.production"
	ActionDeregisterRegion         = "region.deregister"
	ActionFailover                 = "failover"
	ActionRevokeKey                = "key.revoke"

	// Trust actions (RulesTrustBound): once the federation's first
	// approvers are registered (the trust is sealed, trust_seal.go), these
	// always need approvals; their rules cannot require fewer than one.
	ActionRegisterApprover = "member.register.approver"
	ActionSetPolicy        = "policy.set"
	ActionDeleteMember     = "member.delete"
	ActionRestoreSnapshot  = "snapshot.restore"
)

// ApprovableActions lists every action a policy can gate.
var ApprovableActions = []string{ActionRegisterProductionRegion, ActionDeregisterRegion, ActionFailover, ActionRevokeKey,
	ActionRegisterApprover, ActionSetPolicy, ActionDeleteMember, ActionRestoreSnapshot}

// TrustActions are the approvable actions that guard the approvals
// themselves: who approves, how many must, what is trusted, and the
// state as a whole.
var TrustActions = []string{ActionRegisterApprover, ActionSetPolicy, ActionDeleteMember, ActionRestoreSnapshot}

// IsTrustAction reports whether action is one of TrustActions.
func IsTrustAction(action string) bool { return slices.Contains(TrustActions, action) }

// Policy is the federation's trust and approval policy.
type Policy struct {
	// Rules says, per action, how many distinct approvers must approve it.
	Rules map[string]ApprovalRule `json:"rules"`
	// SkewSeconds bounds how far a signed request's timestamp may be from
	// the leader's clock; nonces are remembered for twice as long.
	SkewSeconds int64 `json:"skew_seconds"`
	// RotationOverlapSeconds is how long a rotated-out key stays valid.
	RotationOverlapSeconds int64 `json:"rotation_overlap_seconds"`
	// MaxPendingApprovals bounds the pending approvals one principal (a
	// token, or the member that signed the request) may have open at once;
	// 0 is DefaultMaxPendingApprovals.
	MaxPendingApprovals int `json:"max_pending_approvals_per_principal,omitempty"`
	// MaxMembers bounds the trust members one token may register; 0 is
	// DefaultMaxMembers.
	MaxMembers int `json:"max_members_per_principal,omitempty"`
	// ApprovalRetentionSeconds is how long a closed (applied, failed or
	// expired) approval is kept before the leader prunes it; its audit
	// entries stay. 0 is DefaultApprovalRetention.
	ApprovalRetentionSeconds int64 `json:"approval_retention_seconds,omitempty"`
}

// Quota and retention defaults (a policy field left at 0).
const (
	DefaultMaxPendingApprovals = 16
	DefaultMaxMembers          = 64
	DefaultApprovalRetention   = 7 * 86400 // seconds
)

// PendingApprovalQuota returns the effective per-principal pending
// approvals quota.
func (p *Policy) PendingApprovalQuota() int {
	return cmp.Or(p.MaxPendingApprovals, DefaultMaxPendingApprovals)
}

// MemberQuota returns the effective per-principal members quota.
func (p *Policy) MemberQuota() int { return cmp.Or(p.MaxMembers, DefaultMaxMembers) }

// ApprovalRetention returns the effective retention of closed approvals,
// in nanoseconds.
func (p *Policy) ApprovalRetention() int64 {
	return cmp.Or(p.ApprovalRetentionSeconds, DefaultApprovalRetention) * 1e9
}

// ApprovalRule gates one action: Required distinct approvals (m) from the
// listed approver members (empty: any member of kind approver), within TTL.
type ApprovalRule struct {
	Required   int      `json:"required"`
	Approvers  []string `json:"approvers,omitempty"`
	TTLSeconds int64    `json:"ttl_seconds"`
}

// DefaultPolicy requires two distinct approvers for every approvable
// action, allows 5 minutes of clock skew and a 24 h rotation overlap.
func DefaultPolicy() *Policy {
	p := &Policy{Rules: map[string]ApprovalRule{}, SkewSeconds: 300, RotationOverlapSeconds: 86400}
	for _, a := range ApprovableActions {
		p.Rules[a] = ApprovalRule{Required: 2, TTLSeconds: 3600}
	}
	return p
}

// Approval statuses.
const (
	ApprovalPending = "pending"
	ApprovalApplied = "applied"
	ApprovalFailed  = "failed" // approved, but the action's preconditions no longer held
	ApprovalExpired = "expired"
)

// Approval is an action waiting for (or done with) its approvals. The
// action is a complete command, applied in the same raft entry that records
// the m-th approval, after its preconditions are checked again.
type Approval struct {
	ID          string `json:"id"`
	Action      string `json:"action"`
	Summary     string `json:"summary"`
	CommandType uint8  `json:"command_type"`
	Command     []byte `json:"command"` // the command body (codec 1)
	RequestedBy string `json:"requested_by"`
	// Token is the accessor of the token that sent a signed request, when
	// RequestedBy is its signer (RulesTrustBound): the quota counts both.
	Token       string   `json:"token,omitempty"`
	Required    int      `json:"required"`
	Approvers   []string `json:"approvers,omitempty"`
	Votes       []Vote   `json:"votes"`
	Status      string   `json:"status"`
	Result      string   `json:"result,omitempty"`
	CreatedAt   int64    `json:"created_at"`
	ExpiresAt   int64    `json:"expires_at"`
	CreateIndex uint64   `json:"create_index"`
	ModifyIndex uint64   `json:"modify_index"`
}

// ApprovalDigest is what an approver's signature binds a vote to: the hex
// SHA-256 of the approval's id, action, command type and command bytes. A
// vote's signed body names the approval (`approval`) and this digest
// (`digest`), so that a captured vote cannot be replayed onto another
// approval, nor onto the same id with another action.
func ApprovalDigest(a *Approval) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", a.ID, a.Action, a.CommandType)
	h.Write(a.Command)
	return hex.EncodeToString(h.Sum(nil))
}

// VoteBody is the body an approver signs to approve an approval: the
// envelope (key, timestamp, nonce) and what it approves.
type VoteBody struct {
	KeyID     string `json:"key_id"`
	Timestamp string `json:"timestamp"`
	Nonce     string `json:"nonce"`
	Approval  string `json:"approval"`
	Digest    string `json:"digest"`
}

// Vote is one approver's signed approval.
type Vote struct {
	Approver string `json:"approver"`
	KeyID    string `json:"key_id"`
	At       int64  `json:"at"`
}

// SortedMembers returns the members ordered by id.
func (s *State) SortedMembers() []*Member {
	out := make([]*Member, 0, len(s.Members))
	for _, m := range s.Members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Bound reports whether t is an agent token bound to a node and region.
func (t *Token) Bound() bool { return t.Role == RoleAgent && t.Node != "" && t.Region != "" }

// validateTokenBinding checks a token's node and region binding: an agent
// token names a node and a region, other roles name neither.
func validateTokenBinding(t *Token) error {
	if t.Role != RoleAgent {
		if t.Node != "" || t.Region != "" {
			return invalidf("invalid_token_binding", "only agent tokens are bound to a node and region; drop node and region for a %s token", t.Role)
		}
		return nil
	}
	switch {
	case t.Node == "" || t.Region == "":
		return invalidf("token_binding_required", "an agent token is bound to one agent node and its region: give node and region (atomfed token create --role agent --node <name> --region <region>)")
	case !ValidRegionName(t.Node):
		return invalidf("invalid_token_binding", "node %q must be a DNS label (the agent's --node)", t.Node)
	case !ValidRegionName(t.Region):
		return invalidf("invalid_token_binding", "region %q must be a DNS label (the agent's --region)", t.Region)
	}
	return nil
}

// BoundAgentToken returns a token bound to agent node in region, or nil.
func (s *State) BoundAgentToken(node, region string) *Token {
	for _, t := range s.Tokens {
		if t.Bound() && t.Node == node && t.Region == region {
			return t
		}
	}
	return nil
}

// SortedTokens returns the tokens ordered by accessor.
func (s *State) SortedTokens() []*Token {
	out := make([]*Token, 0, len(s.Tokens))
	for _, t := range s.Tokens {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Accessor < out[j].Accessor })
	return out
}

// SortedApprovals returns the approvals ordered by id.
func (s *State) SortedApprovals() []*Approval {
	out := make([]*Approval, 0, len(s.Approvals))
	for _, a := range s.Approvals {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// TokenByHash returns the token whose secret hashes to h, or nil.
func (s *State) TokenByHash(h string) *Token { return s.tokenHashes[h] }

// KeyOwner returns the member owning key id, or nil.
func (s *State) KeyOwner(id string) *Member {
	if m := s.keyOwners[id]; m != "" {
		return s.Members[m]
	}
	return nil
}

// EffectivePolicy returns the stored policy, or the default.
func (s *State) EffectivePolicy() *Policy {
	if s.Policy != nil {
		return s.Policy
	}
	return DefaultPolicy()
}

// reindexTrust rebuilds the derived key and token indexes.
func (s *State) reindexTrust() {
	s.keyOwners = map[string]string{}
	for _, m := range s.Members {
		for _, k := range m.Keys {
			s.keyOwners[k.KeyID] = m.ID
		}
	}
	s.tokenHashes = map[string]*Token{}
	for _, t := range s.Tokens {
		s.tokenHashes[t.SecretHash] = t
	}
}

// verifiers caches parsed public keys by key id: parsing is the slow part
// of a verification, and a key id is a hash of the key, so it never maps to
// another key.
var verifiers sync.Map

func verifierFor(k *MemberKey) (*signing.Verifier, error) {
	if v, ok := verifiers.Load(k.KeyID); ok {
		return v.(*signing.Verifier), nil
	}
	v, err := signing.ParsePublicKey([]byte(k.PublicKey))
	if err != nil {
		return nil, err
	}
	verifiers.Store(k.KeyID, v)
	return v, nil
}

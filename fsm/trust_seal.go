package fsm

import (
	"fmt"
	"slices"
	"strings"
)

// TrustFacts are the facts of the trust state that only ever move
// forward: a snapshot restore keeps the live ones (PrepareRestore).
type TrustFacts struct {
	// Sealed is set, for good, once the federation has as many approvers
	// as its trust rules require (TrustThreshold): from then on the trust
	// actions (TrustActions) need approvals. Before, the operator sets
	// the federation up alone (the bootstrap window).
	Sealed      bool   `json:"sealed,omitempty"`
	SealedIndex uint64 `json:"sealed_index,omitempty"`
	// BootstrapRetired is set, for good, when an operator retired the
	// servers' bootstrap token (FEDERATION_TOKEN): every server refuses it.
	BootstrapRetired      bool   `json:"bootstrap_retired,omitempty"`
	BootstrapRetiredIndex uint64 `json:"bootstrap_retired_index,omitempty"`
	// RestoreGrants are approved snapshot restores not yet carried out,
	// by snapshot digest.
	RestoreGrants []RestoreGrant `json:"restore_grants,omitempty"`
}

// RestoreGrant is an approved restore of the snapshot whose state has
// Digest (hex SHA-256 of its state.bin).
type RestoreGrant struct {
	Digest    string   `json:"digest"`
	Approval  string   `json:"approval"`
	Approvers []string `json:"approvers"`
	At        int64    `json:"at"`
	// ExpiresAt: an approved restore is carried out within the
	// snapshot.restore rule's TTL of its last vote, or approved again.
	ExpiresAt int64 `json:"expires_at"`
}

// trustRule returns the rule of a trust action: the policy's, or the
// default one (2 approvals within an hour) when the policy has none.
func (s *State) trustRule(action string) ApprovalRule {
	if r, ok := s.EffectivePolicy().Rules[action]; ok && r.Required > 0 {
		return r
	}
	return DefaultPolicy().Rules[action]
}

// TrustThreshold is how many approvers the trust rules need: the most any
// trust action requires, at least 1. The bootstrap window closes once the
// federation has that many.
func (s *State) TrustThreshold() int {
	n := 1
	for _, a := range TrustActions {
		n = max(n, s.trustRule(a).Required)
	}
	return n
}

// eligibleApprovers counts the approver members (among listed, when the
// list is not empty) that hold a key that is not revoked.
func (s *State) eligibleApprovers(listed []string) int {
	n := 0
	for _, m := range s.Members {
		if m.Kind != MemberApprover || (len(listed) > 0 && !slices.Contains(listed, m.ID)) {
			continue
		}
		if slices.ContainsFunc(m.Keys, func(k MemberKey) bool { return !k.Revoked }) {
			n++
		}
	}
	return n
}

// EligibleApprovers counts the approvers that hold a key not revoked.
func (s *State) EligibleApprovers() int { return s.eligibleApprovers(nil) }

// TrustSealed reports whether the bootstrap window is closed: sealed
// already, or enough approvers to seal it.
func (s *State) TrustSealed() bool {
	return s.Trust.Sealed || s.eligibleApprovers(nil) >= s.TrustThreshold()
}

// sealIfReady records the sealing the first time a trust command finds the
// federation has its approvers; the audit entry of that command says so.
func sealIfReady(s *State, e *Entry) {
	if s.Trust.Sealed || !s.TrustSealed() {
		return
	}
	s.Trust.Sealed, s.Trust.SealedIndex = true, e.Index
	s.auditNote = fmt.Sprintf("trust sealed: %d approvers registered (the trust rules need %d); approver registration, policy changes, member deletions and snapshot restores now need approvals",
		s.eligibleApprovers(nil), s.TrustThreshold())
	s.touch(TablePolicy, e.Index)
}

// requireTrustApproval refuses a trust action that did not come through
// its approval once the trust is sealed.
func requireTrustApproval(s *State, e *Entry, action string) error {
	if e.Approved || !s.TrustSealed() {
		return nil
	}
	return forbiddenf("approval_required", "%s needs %d approvals from the federation's approvers once its first approvers are registered: submit it as an approval (the API does this and answers 202)",
		action, s.trustRule(action).Required)
}

// checkTrustRules refuses a policy (under RulesTrustBound) that would make
// approvals meaningless or impossible: a trust rule requiring no approval,
// or, once sealed, more approvals than there are approvers to give them.
func checkTrustRules(s *State, p *Policy) error {
	for _, a := range TrustActions {
		r, ok := p.Rules[a]
		if !ok {
			continue
		}
		if r.Required < 1 {
			return invalidf("invalid_policy", "%s: required must be at least 1; approvals of the trust itself cannot be switched off", a)
		}
		if s.TrustSealed() {
			if n := s.eligibleApprovers(r.Approvers); n < r.Required {
				return preconditionf("not_enough_approvers", "%s: %d approvals required but only %d approvers could give them; register approvers first", a, r.Required, n)
			}
		}
	}
	return nil
}

// BootstrapRetire retires the servers' bootstrap token (FEDERATION_TOKEN)
// on every server, for good.
type BootstrapRetire struct {
	By string `json:"by"`
	At int64  `json:"at"`
}

func applyBootstrapRetire(s *State, e *Entry) (any, error) {
	cmd := body[BootstrapRetire](e)
	if s.Trust.BootstrapRetired {
		return nil, preconditionf("bootstrap_retired", "the bootstrap token is already retired")
	}
	if !slices.ContainsFunc(s.SortedTokens(), func(t *Token) bool { return t.Role == RoleOperator }) {
		return nil, preconditionf("no_other_operator", "the bootstrap token is the only operator credential: create an operator token first (atomfed token create --role operator), then retire the bootstrap token with it")
	}
	s.Trust.BootstrapRetired, s.Trust.BootstrapRetiredIndex = true, e.Index
	s.touch(TableTokens, e.Index)
	return &Deleted{Kind: "token", Name: "bootstrap", At: cmd.At}, nil
}

// lastOperatorToken refuses (under RulesTrustBound) the deletion of the
// last operator token once the bootstrap token is retired: nothing could
// administer the federation after it.
func lastOperatorToken(s *State, t *Token) error {
	if !s.Trust.BootstrapRetired || t.Role != RoleOperator {
		return nil
	}
	for _, o := range s.Tokens {
		if o.Role == RoleOperator && o.Accessor != t.Accessor {
			return nil
		}
	}
	return preconditionf("last_operator", "token %s is the last operator token and the bootstrap token is retired: create another operator token first", t.Accessor)
}

// pendingApprovalsOf counts the pending approvals principal requested, as
// signer or as the token that sent them.
func (s *State) pendingApprovalsOf(principal string) int {
	n := 0
	for _, a := range s.Approvals {
		if a.Status == ApprovalPending && (a.RequestedBy == principal || a.Token == principal) {
			n++
		}
	}
	return n
}

// memberQuotaApplies reports whether the members quota bounds the token
// with accessor acc: any token but an operator's (the bootstrap token is
// none in the state) — the quota stops an agent's token from minting
// members, not the operator from running the federation.
func (s *State) memberQuotaApplies(acc string) bool {
	t := s.Tokens[acc]
	return t != nil && t.Role != RoleOperator
}

// membersOf counts the members principal registered.
func (s *State) membersOf(principal string) int {
	n := 0
	for _, m := range s.Members {
		if m.CreatedBy == principal {
			n++
		}
	}
	return n
}

// MaxApprovalCommand bounds the command an approval stores (and its
// summary): a gated request is a few hundred bytes, and every approval is
// kept in every server's state until it is pruned.
const (
	MaxApprovalCommand = 16 << 10
	maxApprovalSummary = 512
)

// ApprovalPrune removes closed approvals whose retention has passed. Only
// the leader issues it; the audit entries of the approvals stay.
type ApprovalPrune struct {
	IDs []string `json:"ids"`
	At  int64    `json:"at"`
}

// ApprovalClosedAt returns when a closed approval closed (its last vote,
// or its expiry), or 0 for a pending one.
func ApprovalClosedAt(a *Approval) int64 {
	switch {
	case a.Status == ApprovalPending:
		return 0
	case a.Status == ApprovalExpired || len(a.Votes) == 0:
		return a.ExpiresAt
	}
	return a.Votes[len(a.Votes)-1].At
}

// PrunableApprovals returns the ids of the closed approvals whose
// retention has passed at time at, in id order.
func (s *State) PrunableApprovals(at int64) []string {
	keep := s.EffectivePolicy().ApprovalRetention()
	var out []string
	for _, a := range s.SortedApprovals() {
		if c := ApprovalClosedAt(a); c != 0 && c+keep < at {
			out = append(out, a.ID)
		}
	}
	return out
}

func applyApprovalPrune(s *State, e *Entry) (any, error) {
	cmd := body[ApprovalPrune](e)
	keep := s.EffectivePolicy().ApprovalRetention()
	var pruned []string
	for _, id := range cmd.IDs {
		a := s.Approvals[id]
		if a == nil {
			continue
		}
		if c := ApprovalClosedAt(a); c != 0 && c+keep < cmd.At {
			delete(s.Approvals, id)
			pruned = append(pruned, id)
		}
	}
	if len(pruned) == 0 {
		return nil, preconditionf("nothing_to_prune", "no approval among %v is closed and past its retention", cmd.IDs)
	}
	s.auditNote = "pruned approvals " + strings.Join(pruned, ", ")
	s.touch(TableApprovals, e.Index)
	return map[string]int{"pruned": len(pruned)}, nil
}

// extendNonces keeps the replay protection whole when the skew window
// grows (RulesTrustBound): a request signed before the change may now be
// accepted for longer, so every remembered nonce is kept for as much
// longer. Entries keep their order: the queue stays sorted.
func extendNonces(s *State, oldSkew, newSkew int64) {
	if newSkew <= oldSkew {
		return
	}
	d := 2 * (newSkew - oldSkew) * 1e9
	for i := range s.nonceQueue {
		n := &s.nonceQueue[i]
		if s.Nonces[n.Nonce] == n.Expires {
			s.Nonces[n.Nonce] = n.Expires + d
		}
		n.Expires += d
	}
}

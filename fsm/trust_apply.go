package fsm

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
)

// ServerKeySet records a server's public key (the key it signs trust
// bundles with), as the server gossips it. Only the leader issues it, from
// Serf membership, which is authenticated by the gossip encryption key.
type ServerKeySet struct {
	ID        string `json:"id"`
	PublicKey string `json:"public_key"`
	At        int64  `json:"at"`
}

func applyServerKeySet(s *State, e *Entry) (any, error) {
	cmd := body[ServerKeySet](e)
	key, err := newKey(cmd.PublicKey, cmd.At)
	if err != nil {
		return nil, err
	}
	if !memberIDRe.MatchString(cmd.ID) {
		return nil, invalidf("invalid_member", "server id %q is malformed", cmd.ID)
	}
	if owner := s.KeyOwner(key.KeyID); owner != nil && owner.ID != cmd.ID {
		return nil, preconditionf("key_in_use", "key %s already belongs to %s %s", key.KeyID, owner.Kind, owner.ID)
	}
	old := s.Members[cmd.ID]
	if old != nil && old.Kind != MemberServer {
		return nil, preconditionf("member_exists", "%q is a %s member, not a server", cmd.ID, old.Kind)
	}
	if old != nil && len(old.Keys) == 1 && old.Keys[0].KeyID == key.KeyID {
		return nil, preconditionf("unchanged", "server %s already has this key", cmd.ID)
	}
	if old != nil {
		for _, k := range old.Keys {
			delete(s.keyOwners, k.KeyID)
		}
	}
	m := &Member{ID: cmd.ID, Kind: MemberServer, Keys: []MemberKey{*key}, CreateIndex: e.Index, ModifyIndex: e.Index}
	if old != nil {
		m.CreateIndex = old.CreateIndex
	}
	s.Members[m.ID] = m
	s.keyOwners[key.KeyID] = m.ID
	touchTrust(s, e)
	return m, nil
}

var (
	memberIDRe   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	accessorRe   = regexp.MustCompile(`^[a-f0-9]{32}$`)
	secretHashRe = regexp.MustCompile(`^[a-f0-9]{64}$`)
	approvalIDRe = regexp.MustCompile(`^[a-z0-9-]{8,64}$`)
	sha256Re     = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

func validateMember(m *Member) error {
	if !memberIDRe.MatchString(m.ID) {
		return invalidf("invalid_member", "member id %q must be 1-63 lower-case letters, digits, '.', '_' or '-'", m.ID)
	}
	if !validMemberKind[m.Kind] {
		return invalidf("invalid_member", "member kind %q must be region, agent, approver or server", m.Kind)
	}
	if len(m.Keys) == 0 || len(m.Keys) > 16 {
		return invalidf("invalid_member", "member %q must have 1 to 16 keys", m.ID)
	}
	return nil
}

// validatePolicy checks a policy under rules: the trust actions and the
// quota fields exist from RulesTrustBound.
func validatePolicy(p *Policy, rules int) error {
	switch {
	case p.MaxPendingApprovals < 0 || p.MaxPendingApprovals > 1000:
		return invalidf("invalid_policy", "max_pending_approvals_per_principal %d must be between 1 and 1000 (0: the default, %d)", p.MaxPendingApprovals, DefaultMaxPendingApprovals)
	case p.MaxMembers < 0 || p.MaxMembers > 10000:
		return invalidf("invalid_policy", "max_members_per_principal %d must be between 1 and 10000 (0: the default, %d)", p.MaxMembers, DefaultMaxMembers)
	case p.ApprovalRetentionSeconds != 0 && (p.ApprovalRetentionSeconds < 3600 || p.ApprovalRetentionSeconds > 365*86400):
		return invalidf("invalid_policy", "approval_retention_seconds must be between 1 hour and 365 days (0: the default, %d)", DefaultApprovalRetention)
	}
	if p.SkewSeconds < 5 || p.SkewSeconds > 3600 {
		return invalidf("invalid_policy", "skew_seconds %d must be between 5 and 3600", p.SkewSeconds)
	}
	if p.RotationOverlapSeconds < 0 || p.RotationOverlapSeconds > 90*86400 {
		return invalidf("invalid_policy", "rotation_overlap_seconds must be between 0 and 90 days")
	}
	for action, r := range p.Rules {
		known := false
		for _, a := range ApprovableActions {
			known = known || (a == action && (rules >= RulesTrustBound || !IsTrustAction(a)))
		}
		switch {
		case !known:
			return invalidf("invalid_policy", "unknown action %q; approvable actions are %v", action, ApprovableActions)
		case r.Required < 0 || r.Required > 16:
			return invalidf("invalid_policy", "%s: required %d must be between 0 and 16", action, r.Required)
		case r.Required > 0 && (r.TTLSeconds < 60 || r.TTLSeconds > 30*86400):
			return invalidf("invalid_policy", "%s: ttl_seconds must be between 60 and 30 days", action)
		case len(r.Approvers) > 0 && len(r.Approvers) < r.Required:
			return invalidf("invalid_policy", "%s: %d approvals required but only %d approvers listed", action, r.Required, len(r.Approvers))
		}
	}
	return nil
}

// touchTrust records a change of the trusted keys.
func touchTrust(s *State, e *Entry) {
	s.TrustSeq++
	s.touch(TableMembers, e.Index)
}

// MemberRegister adds an agent, approver or server member with its first
// key. Auth must be signed by that key (proof of possession).
//
// Under RulesTrustBound: once the trust is sealed, an approver or server
// member is registered only through its approval
// (ActionRegisterApprover); the member records the token that registered
// it (RequestedBy), and each token may register at most the policy's
// member quota.
type MemberRegister struct {
	ID        string      `json:"id"`
	Kind      string      `json:"kind"`
	PublicKey string      `json:"public_key"`
	Auth      *SignedAuth `json:"auth"`
	At        int64       `json:"at"`
	// RequestedBy is the accessor of the token that sent the request.
	RequestedBy string `json:"requested_by,omitempty"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

// MemberRegisterAction returns the approvable action registering a member
// of kind is: an approver or a server (whose key signs trust bundles) is
// a change of who is trusted; any other kind needs no approval ("").
func MemberRegisterAction(kind string, rules int) string {
	if rules >= RulesTrustBound && (kind == MemberApprover || kind == MemberServer) {
		return ActionRegisterApprover
	}
	return ""
}

func applyMemberRegister(s *State, e *Entry) (any, error) {
	cmd := body[MemberRegister](e)
	if cmd.Kind == MemberRegion {
		return nil, invalidf("invalid_member", "regions get their key by registering (POST /region/register with public_key)")
	}
	key, err := newKey(cmd.PublicKey, cmd.At)
	if err != nil {
		return nil, err
	}
	m := &Member{ID: cmd.ID, Kind: cmd.Kind, Keys: []MemberKey{*key}, CreateIndex: e.Index, ModifyIndex: e.Index}
	if err := validateMember(m); err != nil {
		return nil, err
	}
	if _, _, err := verifyAuth(s, cmd.Auth, cmd.At, !e.Approved, key); err != nil {
		return nil, err
	}
	if cmd.Auth.KeyID != key.KeyID {
		return nil, forbiddenf("wrong_signer", "a new member proves possession of its key: sign with the key being registered (%s)", key.KeyID)
	}
	if old := s.Members[cmd.ID]; old != nil {
		if old.Kind == cmd.Kind && old.Key(key.KeyID) != nil {
			if !e.Approved {
				recordNonce(s, cmd.Auth, cmd.At)
			}
			return old, nil // already registered with this key
		}
		return nil, preconditionf("member_exists", "member %q already exists with other keys; rotate its key instead", cmd.ID)
	}
	if owner := s.KeyOwner(key.KeyID); owner != nil {
		return nil, preconditionf("key_in_use", "key %s already belongs to %s %s", key.KeyID, owner.Kind, owner.ID)
	}
	if cmd.Rules >= RulesTrustBound {
		if action := MemberRegisterAction(cmd.Kind, cmd.Rules); action != "" {
			if err := requireTrustApproval(s, e, action); err != nil {
				return nil, err
			}
		}
		if q := s.EffectivePolicy().MemberQuota(); s.memberQuotaApplies(cmd.RequestedBy) && s.membersOf(cmd.RequestedBy) >= q {
			return nil, tooManyf("member_quota", "token %s has registered %d members, its quota (policy max_members_per_principal); delete unused members or raise the quota", cmd.RequestedBy, q)
		}
		m.CreatedBy = cmd.RequestedBy
	}
	s.Members[m.ID] = m
	s.keyOwners[key.KeyID] = m.ID
	if !e.Approved {
		recordNonce(s, cmd.Auth, cmd.At)
	}
	touchTrust(s, e)
	if cmd.Rules >= RulesTrustBound {
		sealIfReady(s, e)
	}
	return m, nil
}

// KeyRotate announces a member's new key, signed by one of its current
// keys; the signing key stays valid for the policy's overlap window.
type KeyRotate struct {
	Member    string      `json:"member"`
	PublicKey string      `json:"public_key"`
	Auth      *SignedAuth `json:"auth"`
	At        int64       `json:"at"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

func applyKeyRotate(s *State, e *Entry) (any, error) {
	cmd := body[KeyRotate](e)
	old := s.Members[cmd.Member]
	if old == nil {
		return nil, notFoundf("member_not_found", "member %q does not exist", cmd.Member)
	}
	signer, signKey, err := verifyAuth(s, cmd.Auth, cmd.At, !e.Approved, nil)
	if err != nil {
		return nil, err
	}
	if signer.ID != old.ID {
		return nil, forbiddenf("wrong_signer", "a key rotation of %s must be signed by one of its own current keys, not by %s %s", old.ID, signer.Kind, signer.ID)
	}
	if action := KeyRotateAction(s, cmd.Member, cmd.Rules); action != "" {
		if err := requireApproval(s, e, action); err != nil {
			return nil, err
		}
	}
	key, err := newKey(cmd.PublicKey, cmd.At)
	if err != nil {
		return nil, err
	}
	if s.KeyOwner(key.KeyID) != nil {
		return nil, preconditionf("key_in_use", "key %s is already registered", key.KeyID)
	}
	if len(old.Keys) >= 16 {
		return nil, preconditionf("too_many_keys", "member %s has 16 keys; revoke old ones first", old.ID)
	}
	m := *old
	m.Keys = append([]MemberKey(nil), old.Keys...)
	overlap := s.EffectivePolicy().RotationOverlapSeconds * 1e9
	for i := range m.Keys {
		if m.Keys[i].KeyID == signKey.KeyID && m.Keys[i].NotAfter == 0 {
			m.Keys[i].NotAfter = cmd.At + overlap
		}
	}
	m.Keys = append(m.Keys, *key)
	m.ModifyIndex = e.Index
	s.Members[m.ID] = &m
	s.keyOwners[key.KeyID] = m.ID
	if !e.Approved {
		recordNonce(s, cmd.Auth, cmd.At)
	}
	touchTrust(s, e)
	return &m, nil
}

// KeyRevoke revokes a key at once, on every server, when committed.
type KeyRevoke struct {
	Member string `json:"member"`
	KeyID  string `json:"key_id"`
	At     int64  `json:"at"`
}

func applyKeyRevoke(s *State, e *Entry) (any, error) {
	cmd := body[KeyRevoke](e)
	old := s.Members[cmd.Member]
	if old == nil || old.Key(cmd.KeyID) == nil {
		return nil, notFoundf("key_not_found", "member %q has no key %q", cmd.Member, cmd.KeyID)
	}
	if err := requireApproval(s, e, ActionRevokeKey); err != nil {
		return nil, err
	}
	m := *old
	m.Keys = append([]MemberKey(nil), old.Keys...)
	for i := range m.Keys {
		if m.Keys[i].KeyID == cmd.KeyID && !m.Keys[i].Revoked {
			m.Keys[i].Revoked, m.Keys[i].RevokedAt = true, cmd.At
		}
	}
	m.ModifyIndex = e.Index
	s.Members[m.ID] = &m
	touchTrust(s, e)
	return &m, nil
}

// MemberDelete removes an agent, approver or server member and its keys.
//
// Under RulesTrustBound: once the trust is sealed, only through its
// approval (ActionDeleteMember), and never an approver the trust rules
// still need.
type MemberDelete struct {
	ID string `json:"id"`
	At int64  `json:"at"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

func applyMemberDelete(s *State, e *Entry) (any, error) {
	cmd := body[MemberDelete](e)
	old := s.Members[cmd.ID]
	if old == nil {
		return nil, notFoundf("member_not_found", "member %q does not exist", cmd.ID)
	}
	if old.Kind == MemberRegion {
		return nil, preconditionf("region_member", "%s is a region's key: deregister the region instead", cmd.ID)
	}
	if cmd.Rules >= RulesTrustBound {
		if err := requireTrustApproval(s, e, ActionDeleteMember); err != nil {
			return nil, err
		}
		if old.Kind == MemberApprover && s.TrustSealed() && s.eligibleApprovers(nil)-1 < s.TrustThreshold() {
			return nil, preconditionf("not_enough_approvers", "deleting approver %s would leave fewer approvers than the trust rules need (%d): register its successor first", cmd.ID, s.TrustThreshold())
		}
		sealIfReady(s, e) // before the count goes down: the window stays closed
	}
	deleteMember(s, e, old)
	return &Deleted{Kind: "member", Name: cmd.ID, At: cmd.At}, nil
}

func deleteMember(s *State, e *Entry, m *Member) {
	for _, k := range m.Keys {
		delete(s.keyOwners, k.KeyID)
	}
	delete(s.Members, m.ID)
	touchTrust(s, e)
}

// TokenCreate stores a new API token (only its secret's SHA-256).
//
// Under RulesTrustBound an agent token must be bound to a node and a
// region and other tokens must not be; under older rules a token carries
// no binding (servers of older releases would drop it and hold another
// state).
type TokenCreate struct {
	Token Token `json:"token"`
	At    int64 `json:"at"`
	Rules int   `json:"rules,omitempty"`
}

func applyTokenCreate(s *State, e *Entry) (any, error) {
	cmd := body[TokenCreate](e)
	t := cmd.Token
	switch {
	case !accessorRe.MatchString(t.Accessor) || !secretHashRe.MatchString(t.SecretHash):
		return nil, invalidf("invalid_token", "token accessor and secret hash are malformed")
	case !ValidRole(t.Role):
		return nil, invalidf("invalid_role", "role %q must be operator, approver, agent or reader", t.Role)
	case len(t.Description) > 256:
		return nil, invalidf("invalid_token", "description is longer than 256 bytes")
	case s.Tokens[t.Accessor] != nil || s.tokenHashes[t.SecretHash] != nil:
		return nil, preconditionf("token_exists", "a token with this accessor or secret exists")
	}
	if cmd.Rules >= RulesTrustBound {
		if err := validateTokenBinding(&t); err != nil {
			return nil, err
		}
	} else if t.Node != "" || t.Region != "" {
		return nil, invalidf("token_binding_unsupported", "binding a token to a node and region needs every server at protocol %d: finish the upgrade first", RulesTrustBound)
	}
	t.CreatedAt, t.CreateIndex = cmd.At, e.Index
	s.Tokens[t.Accessor] = &t
	s.tokenHashes[t.SecretHash] = &t
	s.touch(TableTokens, e.Index)
	return &t, nil
}

// TokenDelete revokes a token.
//
// Under RulesTrustBound, the last operator token cannot be revoked once
// the bootstrap token is retired.
type TokenDelete struct {
	Accessor string `json:"accessor"`
	At       int64  `json:"at"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

func applyTokenDelete(s *State, e *Entry) (any, error) {
	cmd := body[TokenDelete](e)
	t := s.Tokens[cmd.Accessor]
	if t == nil {
		return nil, notFoundf("token_not_found", "no token with accessor %q", cmd.Accessor)
	}
	if cmd.Rules >= RulesTrustBound {
		if err := lastOperatorToken(s, t); err != nil {
			return nil, err
		}
	}
	delete(s.Tokens, cmd.Accessor)
	delete(s.tokenHashes, t.SecretHash)
	s.touch(TableTokens, e.Index)
	return &Deleted{Kind: "token", Name: cmd.Accessor, At: cmd.At}, nil
}

// Under RulesTrustBound: once the trust is sealed, only through its
// approval (ActionSetPolicy); a trust action's rule requires at least one
// approval and no more than there are approvers; and a larger skew window
// keeps the remembered nonces for as much longer (extendNonces), so that
// a request signed before the change cannot be replayed after it.
type PolicySet struct {
	Policy Policy `json:"policy"`
	At     int64  `json:"at"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

func applyPolicySet(s *State, e *Entry) (any, error) {
	cmd := body[PolicySet](e)
	p := cmd.Policy
	if p.Rules == nil {
		p.Rules = map[string]ApprovalRule{}
	}
	if err := validatePolicy(&p, cmd.Rules); err != nil {
		return nil, err
	}
	if cmd.Rules >= RulesTrustBound {
		if err := checkTrustRules(s, &p); err != nil {
			return nil, err
		}
		if err := requireTrustApproval(s, e, ActionSetPolicy); err != nil {
			return nil, err
		}
		extendNonces(s, s.EffectivePolicy().SkewSeconds, p.SkewSeconds)
	}
	s.Policy = &p
	if cmd.Rules >= RulesTrustBound {
		sealIfReady(s, e)
	}
	s.touch(TablePolicy, e.Index)
	return &p, nil
}

// ApprovalRuleFor returns the rule gating action and whether it needs any
// approval at all.
func (s *State) ApprovalRuleFor(action string) (ApprovalRule, bool) {
	if IsTrustAction(action) {
		return s.trustRule(action), true
	}
	r, ok := s.EffectivePolicy().Rules[action]
	return r, ok && r.Required > 0
}

// requireApproval refuses a gated action that did not come through its
// approval.
func requireApproval(s *State, e *Entry, action string) error {
	if e.Approved {
		return nil
	}
	if r, gated := s.ApprovalRuleFor(action); gated {
		return forbiddenf("approval_required", "%s needs %d approvals: submit it as an approval (the API does this and answers 202)", action, r.Required)
	}
	return nil
}

// approvalChecks verify, at creation, an approval's embedded command and
// return its requester: the command decodes, is the gated action it claims
// to be, and its own signature (if it carries one) is fresh, so that its
// nonce is spent now.
var approvalChecks = map[MessageType]func(s *State, at int64, body []byte, rules int) (action, requester string, auth *SignedAuth, err error){
	RegionUpsertType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c RegionUpsert
		if err := decodeBody(codecJSON, body, &c); err != nil {
			return "", "", nil, invalidf("invalid_approval", "embedded command does not decode: %v", err)
		}
		signer, err := regionSigner(s, &c, at, true)
		return RegionUpsertAction(s, &c.Region, rules), signer, c.Auth, err
	},
	RegionDeleteType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c RegionDelete
		if err := decodeBody(codecJSON, body, &c); err != nil {
			return "", "", nil, invalidf("invalid_approval", "embedded command does not decode: %v", err)
		}
		return ActionDeregisterRegion, "", nil, nil
	},
	FailoverStartType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c FailoverStart
		if err := decodeBody(codecJSON, body, &c); err != nil {
			return "", "", nil, invalidf("invalid_approval", "embedded command does not decode: %v", err)
		}
		// A failover that could not start now is refused before anyone
		// is asked to approve it (and checked again once approved).
		_, err := FailoverStartCheck(s, &c)
		return ActionFailover, "", nil, err
	},
	KeyRotateType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c KeyRotate
		if err := decodeBody(codecJSON, body, &c); err != nil {
			return "", "", nil, invalidf("invalid_approval", "embedded command does not decode: %v", err)
		}
		signer, _, err := verifyAuth(s, c.Auth, at, true, nil)
		if err != nil {
			return "", "", nil, err
		}
		if signer.ID != c.Member {
			return "", "", nil, forbiddenf("wrong_signer", "a key rotation of %s must be signed by one of its own current keys, not by %s %s", c.Member, signer.Kind, signer.ID)
		}
		if rules < RulesApprovalBound {
			return "", "", nil, invalidf("invalid_approval", "a key rotation needs no approval under rules %d", rules)
		}
		return KeyRotateAction(s, c.Member, rules), signer.ID, c.Auth, nil
	},
	KeyRevokeType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c KeyRevoke
		if err := decodeBody(codecJSON, body, &c); err != nil {
			return "", "", nil, invalidf("invalid_approval", "embedded command does not decode: %v", err)
		}
		return ActionRevokeKey, "", nil, nil
	},
	MemberRegisterType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c MemberRegister
		if err := decodeBody(codecJSON, body, &c); err != nil || rules < RulesTrustBound || c.Rules < RulesTrustBound {
			return "", "", nil, invalidf("invalid_approval", "embedded member registration does not decode or predates rules %d", RulesTrustBound)
		}
		key, err := newKey(c.PublicKey, at)
		if err != nil {
			return "", "", nil, err
		}
		if _, _, err := verifyAuth(s, c.Auth, at, true, key); err != nil {
			return "", "", nil, err
		}
		return MemberRegisterAction(c.Kind, c.Rules), "", c.Auth, nil
	},
	PolicySetType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c PolicySet
		if err := decodeBody(codecJSON, body, &c); err != nil || rules < RulesTrustBound || c.Rules < RulesTrustBound {
			return "", "", nil, invalidf("invalid_approval", "embedded policy does not decode or predates rules %d", RulesTrustBound)
		}
		if err := validatePolicy(&c.Policy, c.Rules); err != nil {
			return "", "", nil, err
		}
		return ActionSetPolicy, "", nil, checkTrustRules(s, &c.Policy)
	},
	MemberDeleteType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c MemberDelete
		if err := decodeBody(codecJSON, body, &c); err != nil || rules < RulesTrustBound || c.Rules < RulesTrustBound {
			return "", "", nil, invalidf("invalid_approval", "embedded member deletion does not decode or predates rules %d", RulesTrustBound)
		}
		if m := s.Members[c.ID]; m == nil || m.Kind == MemberRegion {
			return "", "", nil, notFoundf("member_not_found", "member %q does not exist or is a region's key", c.ID)
		}
		return ActionDeleteMember, "", nil, nil
	},
	SnapshotRestoreType: func(s *State, at int64, body []byte, rules int) (string, string, *SignedAuth, error) {
		var c SnapshotRestore
		if err := decodeBody(codecJSON, body, &c); err != nil || rules < RulesTrustBound || !sha256Re.MatchString(c.Digest) {
			return "", "", nil, invalidf("invalid_approval", "embedded snapshot restore does not decode or names no snapshot digest")
		}
		return ActionRestoreSnapshot, "", nil, nil
	},
}

// ApprovalCreate records a gated action as a pending approval.
type ApprovalCreate struct {
	ID          string `json:"id"`
	Action      string `json:"action"`
	Summary     string `json:"summary"`
	CommandType uint8  `json:"command_type"`
	Command     []byte `json:"command"`
	RequestedBy string `json:"requested_by"`
	At          int64  `json:"at"`
	// Rules the command was logged under (rules.go); the approval checks
	// its embedded command under them.
	Rules int `json:"rules,omitempty"`
}

func applyApprovalCreate(s *State, e *Entry) (any, error) {
	cmd := body[ApprovalCreate](e)
	if !approvalIDRe.MatchString(cmd.ID) || s.Approvals[cmd.ID] != nil {
		return nil, invalidf("invalid_approval", "approval id %q is malformed or taken", cmd.ID)
	}
	check := approvalChecks[MessageType(cmd.CommandType)]
	if check == nil {
		return nil, invalidf("invalid_approval", "command %s cannot be approved", MessageType(cmd.CommandType))
	}
	action, signer, auth, err := check(s, cmd.At, cmd.Command, cmd.Rules)
	if err != nil {
		return nil, err
	}
	if action != cmd.Action {
		return nil, invalidf("invalid_approval", "the command is %q, not %q", action, cmd.Action)
	}
	rule, gated := s.ApprovalRuleFor(action)
	if !gated {
		return nil, preconditionf("not_gated", "%s needs no approval under the current policy; send it directly", action)
	}
	requester := cmd.RequestedBy
	if signer != "" {
		requester = signer
	}
	if cmd.Rules >= RulesTrustBound {
		if len(cmd.Command) > MaxApprovalCommand || len(cmd.Summary) > maxApprovalSummary {
			return nil, invalidf("approval_too_large", "a request that needs approval is at most %d bytes (its summary %d): send only the object's fields", MaxApprovalCommand, maxApprovalSummary)
		}
		q := s.EffectivePolicy().PendingApprovalQuota()
		for _, p := range []string{requester, cmd.RequestedBy} {
			if p != "" && s.pendingApprovalsOf(p) >= q {
				return nil, tooManyf("approval_quota", "%s has %d pending approvals, its quota (policy max_pending_approvals_per_principal): wait for them to be approved or to expire", p, q)
			}
		}
	}
	if auth != nil {
		recordNonce(s, auth, cmd.At)
	}
	a := &Approval{
		ID: cmd.ID, Action: action, Summary: cmd.Summary, CommandType: cmd.CommandType, Command: cmd.Command,
		RequestedBy: requester, Required: rule.Required, Approvers: rule.Approvers, Votes: []Vote{},
		Status: ApprovalPending, CreatedAt: cmd.At, ExpiresAt: cmd.At + rule.TTLSeconds*1e9,
		CreateIndex: e.Index, ModifyIndex: e.Index,
	}
	if cmd.Rules >= RulesTrustBound && requester != cmd.RequestedBy {
		a.Token = cmd.RequestedBy
	}
	s.Approvals[a.ID] = a
	s.touch(TableApprovals, e.Index)
	return a, nil
}

// countingVotes counts the votes whose key is still trusted: a vote made
// with a key revoked since no longer counts towards m of n.
func countingVotes(s *State, votes []Vote) int {
	n := 0
	for _, v := range votes {
		if m := s.KeyOwner(v.KeyID); m != nil {
			if k := m.Key(v.KeyID); k != nil && !k.Revoked {
				n++
			}
		}
	}
	return n
}

// ApprovalVote is an approver's signed approval of a pending action.
type ApprovalVote struct {
	ID   string      `json:"id"`
	Auth *SignedAuth `json:"auth"`
	At   int64       `json:"at"`
	// Rules the command was logged under (rules.go).
	Rules int `json:"rules,omitempty"`
}

func applyApprovalVote(s *State, e *Entry) (any, error) {
	cmd := body[ApprovalVote](e)
	old := s.Approvals[cmd.ID]
	switch {
	case old == nil:
		return nil, notFoundf("approval_not_found", "approval %q does not exist", cmd.ID)
	case old.Status != ApprovalPending:
		return nil, preconditionf("approval_closed", "approval %s is %s", cmd.ID, old.Status)
	case cmd.At > old.ExpiresAt:
		return nil, forbiddenf("approval_expired", "approval %s expired at %d; request the action again", cmd.ID, old.ExpiresAt)
	}
	signer, key, err := verifyAuth(s, cmd.Auth, cmd.At, true, nil)
	if err != nil {
		return nil, err
	}
	if cmd.Rules >= RulesApprovalBound {
		var vb VoteBody
		if json.Unmarshal(cmd.Auth.Body, &vb) != nil || vb.Approval != old.ID {
			return nil, forbiddenf("wrong_approval", "the signed body approves %q, not %s: sign a body that names the approval (approval) and its digest", vb.Approval, old.ID)
		}
		if want := ApprovalDigest(old); vb.Digest != want {
			return nil, forbiddenf("wrong_digest", "the signed digest %q is not approval %s's (%s): the action changed, or the vote was made for another", vb.Digest, old.ID, want)
		}
	}
	if signer.Kind != MemberApprover {
		return nil, forbiddenf("not_an_approver", "%s %s is not an approver", signer.Kind, signer.ID)
	}
	if len(old.Approvers) > 0 && !slices.Contains(old.Approvers, signer.ID) {
		return nil, forbiddenf("not_an_approver", "approver %s is not among the approvers of %s (%v)", signer.ID, old.Action, old.Approvers)
	}
	for _, v := range old.Votes {
		if v.Approver == signer.ID {
			return nil, forbiddenf("duplicate_approval", "approver %s already approved %s; it needs %d distinct approvers", signer.ID, old.ID, old.Required)
		}
	}
	a := *old
	a.Votes = append(append([]Vote(nil), old.Votes...), Vote{Approver: signer.ID, KeyID: key.KeyID, At: cmd.At})
	a.ModifyIndex = e.Index
	recordNonce(s, cmd.Auth, cmd.At)
	counted := len(a.Votes)
	if cmd.Rules >= RulesApprovalBound {
		counted = countingVotes(s, a.Votes)
	}
	if counted >= a.Required {
		if cmd.Rules >= RulesTrustBound {
			// A federation sealed by its count alone (its approvers were
			// registered before the seal existed) records it before an
			// approved action lowers the count.
			sealIfReady(s, e)
		}
		_, err := commands[MessageType(a.CommandType)].apply(s, &Entry{Index: e.Index, Term: e.Term, Version: codecJSON, Body: a.Command, Approved: true, approval: &a})
		if err != nil {
			a.Status, a.Result = ApprovalFailed, err.Error()
		} else {
			a.Status, a.Result = ApprovalApplied, fmt.Sprintf("applied at index %d", e.Index)
		}
	}
	s.Approvals[a.ID] = &a
	s.touch(TableApprovals, e.Index)
	return &a, nil
}

// ApprovalExpire marks pending approvals whose time has passed as expired.
type ApprovalExpire struct {
	IDs []string `json:"ids"`
	At  int64    `json:"at"`
}

func applyApprovalExpire(s *State, e *Entry) (any, error) {
	cmd := body[ApprovalExpire](e)
	n := 0
	for _, id := range cmd.IDs {
		old := s.Approvals[id]
		if old == nil || old.Status != ApprovalPending || old.ExpiresAt >= cmd.At {
			continue
		}
		a := *old
		a.Status, a.ModifyIndex = ApprovalExpired, e.Index
		s.Approvals[id] = &a
		n++
	}
	if n == 0 {
		return nil, preconditionf("nothing_expired", "no pending approval among %v has expired", cmd.IDs)
	}
	s.touch(TableApprovals, e.Index)
	return map[string]int{"expired": n}, nil
}

// KeyRotateAction returns the approvable action a key rotation of member
// is: a new key of a production region is a change of what approvers
// approved (RegionUpsertAction), so it needs the same approvals; any other
// rotation needs none ("").
func KeyRotateAction(s *State, member string, rules int) string {
	if rules < RulesApprovalBound {
		return ""
	}
	if m := s.Members[member]; m == nil || m.Kind != MemberRegion {
		return ""
	}
	if r := s.Regions[member]; r != nil && r.Tier == TierProduction {
		return ActionRegisterProductionRegion
	}
	return ""
}

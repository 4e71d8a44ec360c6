package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// trustHarness is a harness whose trust commands are logged under
// RulesTrustBound, as a protocol 4 leader logs them.
type trustHarness struct {
	*harness
	at int64
}

func newTrustHarness(t *testing.T) *trustHarness {
	return &trustHarness{harness: newHarness(t), at: 1_000_000e9}
}

// tick moves the leader's clock by a second and returns it.
func (h *trustHarness) tick() int64 { h.at += 1e9; return h.at }

func (h *trustHarness) registerMember(id, kind, by string) *ApplyResult {
	h.t.Helper()
	at := h.tick()
	return h.apply(MemberRegisterType, h.memberRegister(id, kind, by, at))
}

func (h *trustHarness) memberRegister(id, kind, by string, at int64) MemberRegister {
	return MemberRegister{ID: id, Kind: kind, PublicKey: string(h.key(id).PublicPEM), Auth: h.sign(id, []byte("register "+id), at),
		At: at, RequestedBy: by, Rules: RulesTrustBound}
}

// approve submits cmd as approval id and has voters approve it; it returns
// the approval after the last vote (or the refusal of its creation).
func (h *trustHarness) approve(id, action string, typ MessageType, cmd any, voters ...string) (*Approval, error) {
	h.t.Helper()
	data, err := EncodeJSON(typ, cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	res := h.apply(ApprovalCreateType, ApprovalCreate{ID: id, Action: action, CommandType: uint8(typ), Command: data[2:],
		RequestedBy: "op", At: h.tick(), Rules: RulesTrustBound})
	if res.Err != nil {
		return nil, res.Err
	}
	a := res.Value.(*Approval)
	for _, v := range voters {
		at := h.tick()
		a = h.mustApply(ApprovalVoteType, ApprovalVote{ID: id, Auth: h.voteAuth(v, id, at), At: at, Rules: RulesTrustBound}).Value.(*Approval)
	}
	return a, nil
}

func (h *trustHarness) state() (out struct {
	head    string
	members int
	policy  *Policy
}) {
	h.f.Read(func(s *State) { out.head, out.members, out.policy = s.AuditHead, len(s.Members), s.Policy })
	return out
}

// TestTrustSealsOnceTheFirstApproversAreRegistered: the operator
// registers the first approvers alone; once there are as many as the
// trust rules need, registering an approver, changing the policy and
// deleting a member are refused without the approvers' votes (state and
// audit head unchanged), and work with them.
func TestTrustSealsOnceTheFirstApproversAreRegistered(t *testing.T) {
	h := newTrustHarness(t)
	h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300}, At: h.tick(), Rules: RulesTrustBound})
	if res := h.registerMember("alice", MemberApprover, "op"); res.Err != nil {
		t.Fatal(res.Err)
	}
	h.f.Read(func(s *State) {
		if s.TrustSealed() || s.TrustThreshold() != 2 {
			t.Fatalf("sealed with one approver of the two the default trust rules need (threshold %d)", s.TrustThreshold())
		}
	})
	if res := h.registerMember("bob", MemberApprover, "op"); res.Err != nil {
		t.Fatal(res.Err)
	}
	h.f.Read(func(s *State) {
		last := s.Audit[len(s.Audit)-1]
		if !s.Trust.Sealed || s.Trust.SealedIndex != h.index || last.Type != "member_register" || !strings.Contains(last.Note, "trust sealed") {
			t.Fatalf("not sealed by the second approver: %+v, audit %+v", s.Trust, last)
		}
	})

	before := h.state()
	refused := []struct {
		name string
		typ  MessageType
		cmd  any
		code string
	}{
		{"an approver registered by the operator alone", MemberRegisterType, h.memberRegister("mallory", MemberApprover, "op", h.tick()), "approval_required"},
		{"a server key registered by the operator alone", MemberRegisterType, h.memberRegister("fake-server", MemberServer, "op", h.tick()), "approval_required"},
		{"the policy changed by the operator alone", PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300}, At: h.tick(), Rules: RulesTrustBound}, "approval_required"},
		{"approvals of the trust switched off", PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300, Rules: map[string]ApprovalRule{ActionSetPolicy: {Required: 0}}}, At: h.tick(), Rules: RulesTrustBound}, "invalid_policy"},
		{"a member deleted by the operator alone", MemberDeleteType, MemberDelete{ID: "alice", At: h.tick(), Rules: RulesTrustBound}, "approval_required"},
	}
	for _, c := range refused {
		if res := h.apply(c.typ, c.cmd); codeOf(res.Err) != c.code {
			t.Errorf("%s: %v, want %s", c.name, res.Err, c.code)
		}
	}
	if after := h.state(); after.head != before.head || after.members != before.members || after.policy != before.policy {
		t.Fatalf("refused trust changes changed the state: %+v -> %+v", before, after)
	}
	// An agent's key needs no approval.
	if res := h.registerMember("agent-1", MemberAgent, "agent-token"); res.Err != nil {
		t.Fatalf("agent member: %v", res.Err)
	}
	// An approval that could never be given is refused when requested.
	if _, err := h.approve("appr-impossible", ActionSetPolicy, PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300,
		Rules: map[string]ApprovalRule{ActionDeleteMember: {Required: 3, TTLSeconds: 600}}}, Rules: RulesTrustBound}); codeOf(err) != "not_enough_approvers" {
		t.Fatalf("a trust rule needing 3 of 2 approvers: %v", err)
	}

	// With the approvers' votes each works.
	a, err := h.approve("appr-carol", ActionRegisterApprover, MemberRegisterType, h.memberRegister("carol", MemberApprover, "op", h.at), "alice")
	if err != nil || a.Status != ApprovalPending {
		t.Fatalf("one vote of two: %+v %v", a, err)
	}
	at := h.tick()
	a = h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-carol", Auth: h.voteAuth("bob", "appr-carol", at), At: at, Rules: RulesTrustBound}).Value.(*Approval)
	if a.Status != ApprovalApplied {
		t.Fatalf("approved approver registration: %+v", a)
	}
	if a, err := h.approve("appr-policy", ActionSetPolicy, PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 120}, Rules: RulesTrustBound}, "alice", "carol"); err != nil || a.Status != ApprovalApplied {
		t.Fatalf("approved policy: %+v %v", a, err)
	}
	if a, err := h.approve("appr-delete", ActionDeleteMember, MemberDeleteType, MemberDelete{ID: "carol", Rules: RulesTrustBound}, "alice", "bob"); err != nil || a.Status != ApprovalApplied {
		t.Fatalf("approved deletion: %+v %v", a, err)
	}
	h.f.Read(func(s *State) {
		if s.Members["carol"] != nil || s.EffectivePolicy().SkewSeconds != 120 {
			t.Fatalf("approved changes not applied: carol %+v, policy %+v", s.Members["carol"], s.Policy)
		}
	})
	// Deleting an approver the trust rules still need is refused even
	// when approved: the approval records the failure.
	if a, err := h.approve("appr-delete-bob", ActionDeleteMember, MemberDeleteType, MemberDelete{ID: "bob", Rules: RulesTrustBound}, "alice", "bob"); err != nil || a.Status != ApprovalFailed || !strings.Contains(a.Result, "fewer approvers") {
		t.Fatalf("deleting a needed approver: %+v %v", a, err)
	}
	// Entries logged under the older rules replay as they applied then.
	if res := h.apply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300}, At: h.tick()}); res.Err != nil {
		t.Fatalf("an entry of the older rules: %v", res.Err)
	}
}

// TestBootstrapTokenRetirement: refused while no other operator token
// exists, then recorded for good; the last operator token cannot be
// revoked after it; a snapshot carries it.
func TestBootstrapTokenRetirement(t *testing.T) {
	h := newTrustHarness(t)
	h.mustApply(TokenCreateType, TokenCreate{Token: tokenFor("reader", RoleReader), At: h.tick()})
	if res := h.apply(BootstrapRetireType, BootstrapRetire{By: "bootstrap", At: h.tick()}); codeOf(res.Err) != "no_other_operator" {
		t.Fatalf("retired with no other operator token: %v", res.Err)
	}
	op := tokenFor("operator", RoleOperator)
	h.mustApply(TokenCreateType, TokenCreate{Token: op, At: h.tick()})
	h.mustApply(BootstrapRetireType, BootstrapRetire{By: "bootstrap", At: h.tick()})
	if res := h.apply(BootstrapRetireType, BootstrapRetire{By: op.Accessor, At: h.tick()}); codeOf(res.Err) != "bootstrap_retired" {
		t.Fatalf("retired twice: %v", res.Err)
	}
	if res := h.apply(TokenDeleteType, TokenDelete{Accessor: op.Accessor, At: h.tick(), Rules: RulesTrustBound}); codeOf(res.Err) != "last_operator" {
		t.Fatalf("revoked the last operator token: %v", res.Err)
	}
	restored := New(nil, nil)
	if err := restored.Restore(ioNopCloser{bytes.NewReader(snapshotBytes(t, h.f))}); err != nil {
		t.Fatal(err)
	}
	restored.Read(func(s *State) {
		if !s.Trust.BootstrapRetired {
			t.Fatal("the snapshot lost the retirement")
		}
	})
}

// TestRaisingSkewKeepsNoncesForTheLongerWindow (issue 16, item 10): a
// request signed before the skew window grows cannot be replayed after
// its nonce would have been forgotten under the old window. Under the
// older rules it could: the test shows both.
func TestRaisingSkewKeepsNoncesForTheLongerWindow(t *testing.T) {
	for _, rules := range []int{RulesApprovalBound, RulesTrustBound} {
		h := newTrustHarness(t)
		h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300}, At: h.at, Rules: rules})
		signed := h.memberRegister("agent-1", MemberAgent, "", h.at)
		signed.Rules = rules
		h.mustApply(MemberRegisterType, signed)
		h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 3600}, At: h.at + 1e9, Rules: rules})
		// 700 s later: past the 600 s the nonce was first kept for, well
		// within the new 3600 s skew of the request's timestamp.
		replay := signed
		replay.At = h.at + 700e9
		res := h.apply(MemberRegisterType, replay)
		switch {
		case rules >= RulesTrustBound && codeOf(res.Err) != "replayed_nonce":
			t.Fatalf("replayed after the skew was raised: %v, want replayed_nonce", res.Err)
		case rules < RulesTrustBound && res.Err != nil:
			t.Fatalf("under rules %d the replay was accepted (the flaw this fixes); now: %v", rules, res.Err)
		}
	}
}

// TestApprovalAndMemberQuotas: per principal, over quota is ErrTooMany
// with a code; another principal is not affected; an oversized approval
// is refused.
func TestApprovalAndMemberQuotas(t *testing.T) {
	h := newTrustHarness(t)
	h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300, MaxPendingApprovals: 2, MaxMembers: 1,
		Rules: map[string]ApprovalRule{ActionRevokeKey: {Required: 2, TTLSeconds: 600}, ActionRegisterProductionRegion: {Required: 2, TTLSeconds: 600}}},
		At: h.tick(), Rules: RulesTrustBound})
	revoke, _ := EncodeJSON(KeyRevokeType, KeyRevoke{Member: "x", KeyID: "y"})
	create := func(id, by, summary string) error {
		return h.apply(ApprovalCreateType, ApprovalCreate{ID: id, Action: ActionRevokeKey, Summary: summary, CommandType: uint8(KeyRevokeType),
			Command: revoke[2:], RequestedBy: by, At: h.tick(), Rules: RulesTrustBound}).Err
	}
	for _, id := range []string{"appr-q-0001", "appr-q-0002"} {
		if err := create(id, "tok-a", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := create("appr-q-0003", "tok-a", ""); codeOf(err) != "approval_quota" || !errors.Is(err, ErrTooMany) {
		t.Fatalf("third pending approval: %v", err)
	}
	// A signed request counts against its signer and against the token
	// that sent it: fresh keys do not get around the token's quota.
	r := testRegion("prod-1")
	r.Tier = TierProduction
	at := h.tick()
	ru := h.autosign(RegionUpsert{Region: r, At: at, Rules: RulesTrustBound}).(RegionUpsert)
	data, _ := EncodeJSON(RegionUpsertType, ru)
	if err := h.apply(ApprovalCreateType, ApprovalCreate{ID: "appr-q-0006", Action: ActionRegisterProductionRegion, CommandType: uint8(RegionUpsertType),
		Command: data[2:], RequestedBy: "tok-a", At: at, Rules: RulesTrustBound}).Err; codeOf(err) != "approval_quota" || !strings.Contains(err.Error(), "tok-a") {
		t.Fatalf("a signed request sent with a token over quota: %v", err)
	}
	if err := create("appr-q-0004", "tok-b", ""); err != nil {
		t.Fatalf("another principal: %v", err)
	}
	if err := create("appr-q-0005", "tok-c", strings.Repeat("x", 1000)); codeOf(err) != "approval_too_large" {
		t.Fatalf("oversized approval: %v", err)
	}
	agentA, agentB, op := tokenFor("agent-a", RoleAgent), tokenFor("agent-b", RoleAgent), tokenFor("op", RoleOperator)
	for _, tok := range []Token{agentA, agentB, op} {
		h.mustApply(TokenCreateType, TokenCreate{Token: tok, At: h.tick()})
	}
	if res := h.registerMember("agent-1", MemberAgent, agentA.Accessor); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := h.registerMember("agent-2", MemberAgent, agentA.Accessor); codeOf(res.Err) != "member_quota" || !errors.Is(res.Err, ErrTooMany) {
		t.Fatalf("second member of an agent token with quota 1: %v", res.Err)
	}
	if res := h.registerMember("agent-2", MemberAgent, agentB.Accessor); res.Err != nil {
		t.Fatalf("another token's member: %v", res.Err)
	}
	// The operator (its tokens, the bootstrap token) runs the federation:
	// the members quota does not bound it.
	for _, id := range []string{"agent-3", "agent-4"} {
		if res := h.registerMember(id, MemberAgent, op.Accessor); res.Err != nil {
			t.Fatalf("operator token's member %s: %v", id, res.Err)
		}
	}
	if res := h.registerMember("agent-5", MemberAgent, "bootstrap"); res.Err != nil {
		t.Fatalf("bootstrap token's member: %v", res.Err)
	}
}

// TestClosedApprovalsArePrunedAndTheChainStillVerifies: a closed approval
// is kept for the retention period, then pruned; every audit entry of it
// stays, and the chain links from entry to entry over the log.
func TestClosedApprovalsArePrunedAndTheChainStillVerifies(t *testing.T) {
	h := newTrustHarness(t)
	h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300, ApprovalRetentionSeconds: 3600,
		Rules: map[string]ApprovalRule{ActionRevokeKey: {Required: 2, TTLSeconds: 600}}}, At: h.tick(), Rules: RulesTrustBound})
	revoke, _ := EncodeJSON(KeyRevokeType, KeyRevoke{Member: "x", KeyID: "y"})
	h.mustApply(ApprovalCreateType, ApprovalCreate{ID: "appr-old-1", Action: ActionRevokeKey, CommandType: uint8(KeyRevokeType),
		Command: revoke[2:], RequestedBy: "op", At: h.tick(), Rules: RulesTrustBound})
	h.mustApply(ApprovalCreateType, ApprovalCreate{ID: "appr-new-1", Action: ActionRevokeKey, CommandType: uint8(KeyRevokeType),
		Command: revoke[2:], RequestedBy: "op", At: h.at + 3000e9, Rules: RulesTrustBound})
	expiredAt := h.at + 601e9
	h.mustApply(ApprovalExpireType, ApprovalExpire{IDs: []string{"appr-old-1"}, At: expiredAt})
	var ids []string
	h.f.Read(func(s *State) { ids = s.PrunableApprovals(expiredAt + 3000e9) })
	if len(ids) != 0 {
		t.Fatalf("prunable within retention: %v", ids)
	}
	if res := h.apply(ApprovalPruneType, ApprovalPrune{IDs: []string{"appr-old-1"}, At: expiredAt + 3000e9}); codeOf(res.Err) != "nothing_to_prune" {
		t.Fatalf("pruned within retention: %v", res.Err)
	}
	later := expiredAt + 3601e9 + 600e9 // the newer one is pending: never pruned
	h.f.Read(func(s *State) { ids = s.PrunableApprovals(later) })
	if len(ids) != 1 || ids[0] != "appr-old-1" {
		t.Fatalf("prunable after retention: %v", ids)
	}
	h.mustApply(ApprovalPruneType, ApprovalPrune{IDs: ids, At: later})
	h.f.Read(func(s *State) {
		if s.Approvals["appr-old-1"] != nil || s.Approvals["appr-new-1"] == nil {
			t.Fatalf("after prune: %v", s.Approvals)
		}
		types := map[string]bool{}
		for _, e := range s.Audit {
			types[e.Type] = true
		}
		if !types["approval_create"] || !types["approval_expire"] || !types["approval_prune"] || !strings.Contains(s.Audit[len(s.Audit)-1].Note, "appr-old-1") {
			t.Fatalf("audit after prune: %+v", s.Audit)
		}
		verifyChain(t, h.harness, s)
	})
}

// verifyChain checks every link of s's audit ring against the log the
// harness applied: each hash is sha256(previous hash, index, type, body).
func verifyChain(t *testing.T, h *harness, s *State) {
	t.Helper()
	byIndex := map[uint64][]byte{}
	for _, l := range h.log {
		byIndex[l.Index] = l.Data
	}
	prev := GenesisHash
	for i, e := range s.Audit {
		data := byIndex[e.Index]
		if data == nil {
			t.Fatalf("audit entry %d names index %d, which is not in the log", i, e.Index)
		}
		if got := chainHash(prev, e.Index, MessageType(data[0]), data[1:]); got != e.Hash {
			t.Fatalf("audit entry %d (%s at %d) does not link: %s, want %s", i, e.Type, e.Index, e.Hash, got)
		}
		prev = e.Hash
	}
	if prev != s.AuditHead {
		t.Fatalf("the ring ends at %s, the head is %s", prev, s.AuditHead)
	}
}

// TestPrepareRestoreNeverTakesTheTrustBackwards: restoring an old
// snapshot keeps the live nonces, tokens, policy and trust facts, uses up
// the grant, and continues the audit chain from the live head with an
// entry that names both heads and the approvers.
func TestPrepareRestoreNeverTakesTheTrustBackwards(t *testing.T) {
	h := newTrustHarness(t)
	h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300}, At: h.tick(), Rules: RulesTrustBound})
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: h.tick()})
	old := snapshotBytes(t, h.f)
	var oldHead string
	h.f.Read(func(s *State) { oldHead = s.AuditHead })

	op := tokenFor("operator", RoleOperator)
	h.mustApply(TokenCreateType, TokenCreate{Token: op, At: h.tick()})
	h.mustApply(BootstrapRetireType, BootstrapRetire{By: "bootstrap", At: h.tick()})
	signed := h.memberRegister("agent-1", MemberAgent, op.Accessor, h.tick())
	h.mustApply(MemberRegisterType, signed)
	for _, a := range []string{"alice", "bob"} {
		h.registerMember(a, MemberApprover, op.Accessor)
	}
	digest := strings.Repeat("d", 64)
	if _, err := h.approve("appr-restore", ActionRestoreSnapshot, SnapshotRestoreType, SnapshotRestore{Digest: digest}, "alice", "bob"); err != nil {
		t.Fatal(err)
	}
	var out []byte
	var cur *State
	h.f.Read(func(s *State) {
		cur = s.clone()
		g := s.RestoreGrantFor(digest, h.at)
		if g == nil || g.Approval != "appr-restore" || strings.Join(g.Approvers, ",") != "alice,bob" || g.ExpiresAt != h.at+3600e9 {
			t.Fatalf("grant: %+v", g)
		}
		if late := s.RestoreGrantFor(digest, g.ExpiresAt+1); late != nil {
			t.Fatalf("a grant used after its approval's TTL: %+v", late)
		}
		var err error
		out, err = PrepareRestore(old, s, RestoreRecord{Digest: digest, Approval: g.Approval, Approvers: g.Approvers, RequestedBy: op.Accessor, At: h.tick()})
		if err != nil {
			t.Fatal(err)
		}
	})
	f := New(nil, nil)
	if err := f.Restore(ioNopCloser{bytes.NewReader(out)}); err != nil {
		t.Fatal(err)
	}
	f.Read(func(s *State) {
		switch {
		case !s.Trust.Sealed || !s.Trust.BootstrapRetired || s.RestoreGrantFor(digest, h.at) != nil:
			t.Fatalf("trust facts after restore: %+v", s.Trust)
		case s.Tokens[op.Accessor] == nil || s.Members["alice"] == nil || s.Members["agent-1"] == nil || s.Regions["us-east"] == nil:
			t.Fatalf("restored state lost live trust or the snapshot's data: tokens %v members %v", s.Tokens, s.Members)
		case s.Nonces[signed.Auth.Nonce] == 0:
			t.Fatal("a nonce remembered before the restore was forgotten")
		}
		last := s.Audit[len(s.Audit)-1]
		rec, _ := json.Marshal(RestoreRecord{PreviousHead: cur.AuditHead, RestoredHead: oldHead, Digest: digest, Approval: "appr-restore",
			Approvers: []string{"alice", "bob"}, RequestedBy: op.Accessor, At: h.at})
		if want := chainHash(cur.AuditHead, last.Index, SnapshotRestoreType, rec); last.Type != "snapshot_restore" || last.Hash != want || s.AuditHead != want ||
			!strings.Contains(last.Note, cur.AuditHead) || !strings.Contains(last.Note, oldHead) || !strings.Contains(last.Note, "alice, bob") {
			t.Fatalf("restore audit entry %+v (head %s), want hash %s continuing %s", last, s.AuditHead, want, cur.AuditHead)
		}
		if s.Audit[len(s.Audit)-2].Hash != cur.AuditHead {
			t.Fatal("the audit ring does not continue the live one")
		}
		// The request signed before the restore is refused after it.
		replay := signed
		replay.At = h.at + 1e9
		if _, _, err := VerifyAuth(s, replay.Auth, replay.At); codeOf(err) != "replayed_nonce" {
			t.Fatalf("a request signed before the restore: %v", err)
		}
	})
}

// TestAFederationSealedByItsCountStaysSealed: approvers registered before
// the seal existed seal the federation by their number; an approved
// action that lowers it (a revoked approver key) records the seal first,
// so the bootstrap window does not open again.
func TestAFederationSealedByItsCountStaysSealed(t *testing.T) {
	h := newTrustHarness(t)
	for _, a := range []string{"alice", "bob"} {
		at := h.tick()
		h.mustApply(MemberRegisterType, MemberRegister{ID: a, Kind: MemberApprover, PublicKey: string(h.key(a).PublicPEM), Auth: h.sign(a, []byte("register "+a), at), At: at})
	}
	h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300, Rules: map[string]ApprovalRule{ActionRevokeKey: {Required: 2, TTLSeconds: 600}}}, At: h.tick()})
	h.f.Read(func(s *State) {
		if s.Trust.Sealed || !s.TrustSealed() {
			t.Fatalf("before: flag %v, sealed by count %v", s.Trust.Sealed, s.TrustSealed())
		}
	})
	if a, err := h.approve("appr-revoke-bob", ActionRevokeKey, KeyRevokeType, KeyRevoke{Member: "bob", KeyID: h.key("bob").KeyID}, "alice", "bob"); err != nil || a.Status != ApprovalApplied {
		t.Fatalf("revoke bob's key: %+v %v", a, err)
	}
	h.f.Read(func(s *State) {
		if !s.Trust.Sealed || s.EligibleApprovers() != 1 {
			t.Fatalf("after: %+v, %d approvers", s.Trust, s.EligibleApprovers())
		}
	})
	if res := h.registerMember("mallory", MemberApprover, "op"); codeOf(res.Err) != "approval_required" {
		t.Fatalf("an approver registered alone after the count went down: %v", res.Err)
	}
}

// TestRestoreIntoANewFederationAdoptsTheSnapshotsTrust: recovering into
// new servers (their trust not sealed) brings the snapshot's approvers,
// tokens and seal, keeps the new servers' keys and the operator's token,
// and still keeps both sides' nonces.
func TestRestoreIntoANewFederationAdoptsTheSnapshotsTrust(t *testing.T) {
	old := newTrustHarness(t)
	oldTok := tokenFor("old-operator", RoleOperator)
	old.mustApply(TokenCreateType, TokenCreate{Token: oldTok, At: old.tick()})
	for _, a := range []string{"alice", "bob"} {
		old.registerMember(a, MemberApprover, oldTok.Accessor)
	}
	old.mustApply(BootstrapRetireType, BootstrapRetire{By: oldTok.Accessor, At: old.tick()})
	archive := snapshotBytes(t, old.f)

	fresh := newTrustHarness(t)
	fresh.at = old.at
	newTok := tokenFor("new-operator", RoleOperator)
	fresh.mustApply(TokenCreateType, TokenCreate{Token: newTok, At: fresh.tick()})
	fresh.mustApply(ServerKeySetType, ServerKeySet{ID: "s1", PublicKey: string(fresh.key("s1").PublicPEM), At: fresh.tick()})
	signed := fresh.memberRegister("agent-1", MemberAgent, newTok.Accessor, fresh.tick())
	fresh.mustApply(MemberRegisterType, signed)
	var out []byte
	fresh.f.Read(func(s *State) {
		var err error
		if out, err = PrepareRestore(archive, s, RestoreRecord{Digest: strings.Repeat("e", 64), RequestedBy: "bootstrap", At: fresh.tick()}); err != nil {
			t.Fatal(err)
		}
	})
	f := New(nil, nil)
	if err := f.Restore(ioNopCloser{bytes.NewReader(out)}); err != nil {
		t.Fatal(err)
	}
	f.Read(func(s *State) {
		switch {
		case !s.Trust.Sealed || !s.Trust.BootstrapRetired:
			t.Fatalf("trust facts: %+v", s.Trust)
		case s.Members["alice"] == nil || s.Members["bob"] == nil || s.Members["s1"] == nil || s.Members["agent-1"] == nil:
			t.Fatalf("members: %v", s.Members)
		case s.Tokens[oldTok.Accessor] == nil || s.Tokens[newTok.Accessor] == nil:
			t.Fatalf("tokens: %v", s.Tokens)
		case s.Nonces[signed.Auth.Nonce] == 0:
			t.Fatal("the new federation's nonce was forgotten")
		case !strings.Contains(s.Audit[len(s.Audit)-1].Note, "bootstrap window"):
			t.Fatalf("restore note: %+v", s.Audit[len(s.Audit)-1])
		}
	})
}

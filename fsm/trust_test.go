package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func tokenFor(secret, role string) Token {
	sum := sha256.Sum256([]byte(secret))
	acc := sha256.Sum256([]byte("acc" + secret))
	return Token{Accessor: hex.EncodeToString(acc[:16]), SecretHash: hex.EncodeToString(sum[:]), Role: role}
}

// voteAuth signs, as member, a vote for approval id as it is now.
func (h *harness) voteAuth(member, id string, at int64) *SignedAuth {
	h.t.Helper()
	var digest string
	h.f.Read(func(s *State) {
		if a := s.Approvals[id]; a != nil {
			digest = ApprovalDigest(a)
		}
	})
	b, _ := json.Marshal(VoteBody{Approval: id, Digest: digest})
	return h.sign(member, b, at)
}

// register makes an approver (or agent, server) member with its harness key.
func (h *harness) register(id, kind string, at int64) *ApplyResult {
	h.t.Helper()
	body := []byte("register " + id)
	return h.apply(MemberRegisterType, MemberRegister{ID: id, Kind: kind, PublicKey: string(h.key(id).PublicPEM), Auth: h.sign(id, body, at), At: at})
}

// trustRoundTrips exercises every trust command; called from
// TestCommandRoundTrip. It leaves a policy that gates nothing.
func trustRoundTrips(t *testing.T, h *harness, check func(MessageType, any, func(*State, *ApplyResult))) {
	check(MemberRegisterType, MemberRegister{ID: "alice", Kind: MemberApprover, PublicKey: string(h.key("alice").PublicPEM),
		Auth: h.sign("alice", []byte("hi"), 20), At: 20}, func(s *State, res *ApplyResult) {
		if m := s.Members["alice"]; m == nil || m.Kind != MemberApprover || s.KeyOwner(h.key("alice").KeyID) != m || s.TrustSeq == 0 {
			t.Fatalf("approver after register: %+v", m)
		}
	})
	check(MemberRegisterType, MemberRegister{ID: "bob", Kind: MemberApprover, PublicKey: string(h.key("bob").PublicPEM),
		Auth: h.sign("bob", []byte("hi"), 21), At: 21}, func(s *State, res *ApplyResult) {})
	check(TokenCreateType, TokenCreate{Token: tokenFor("s1", RoleReader), At: 22}, func(s *State, res *ApplyResult) {
		if s.TokenByHash(tokenFor("s1", RoleReader).SecretHash) == nil {
			t.Fatal("token not found by its hash")
		}
	})
	check(TokenDeleteType, TokenDelete{Accessor: tokenFor("s1", RoleReader).Accessor, At: 23}, func(s *State, res *ApplyResult) {
		if len(s.Tokens) != 0 || s.TokenByHash(tokenFor("s1", RoleReader).SecretHash) != nil {
			t.Fatal("token still there after delete")
		}
	})
	old := h.key("alice")
	newKeySigner := h.key("alice-2")
	check(KeyRotateType, KeyRotate{Member: "alice", PublicKey: string(newKeySigner.PublicPEM), Auth: h.sign("alice", []byte("rotate"), 24), At: 24},
		func(s *State, res *ApplyResult) {
			m := s.Members["alice"]
			if len(m.Keys) != 2 || m.Key(old.KeyID).NotAfter != 24+86400e9 || s.KeyOwner(newKeySigner.KeyID) != m {
				t.Fatalf("after rotation: %+v", m)
			}
		})
	check(PolicySetType, PolicySet{Policy: Policy{Rules: map[string]ApprovalRule{ActionRevokeKey: {Required: 2, TTLSeconds: 60}}, SkewSeconds: 300}, At: 25},
		func(s *State, res *ApplyResult) {
			if r, gated := s.ApprovalRuleFor(ActionRevokeKey); !gated || r.Required != 2 {
				t.Fatalf("policy: %+v", s.Policy)
			}
		})
	revoke, _ := EncodeJSON(KeyRevokeType, KeyRevoke{Member: "alice", KeyID: old.KeyID, At: 26})
	check(ApprovalCreateType, ApprovalCreate{ID: "appr-0001", Action: ActionRevokeKey, CommandType: uint8(KeyRevokeType), Command: revoke[2:], At: 26},
		func(s *State, res *ApplyResult) {
			if a := s.Approvals["appr-0001"]; a == nil || a.Status != ApprovalPending || a.Required != 2 || a.ExpiresAt != 26+60e9 {
				t.Fatalf("approval: %+v", a)
			}
		})
	check(ApprovalVoteType, ApprovalVote{ID: "appr-0001", Auth: h.voteAuth("bob", "appr-0001", 27), At: 27}, func(s *State, res *ApplyResult) {
		if a := s.Approvals["appr-0001"]; len(a.Votes) != 1 || a.Status != ApprovalPending {
			t.Fatalf("after one vote: %+v", a)
		}
	})
	// alice votes with her new key; that is the second distinct approver.
	h.keys["alice"] = newKeySigner
	check(ApprovalVoteType, ApprovalVote{ID: "appr-0001", Auth: h.voteAuth("alice", "appr-0001", 28), At: 28}, func(s *State, res *ApplyResult) {
		a := s.Approvals["appr-0001"]
		if a.Status != ApprovalApplied || !s.Members["alice"].Key(old.KeyID).Revoked {
			t.Fatalf("after the second vote: %+v", a)
		}
	})
	check(ApprovalCreateType, ApprovalCreate{ID: "appr-0002", Action: ActionRevokeKey, CommandType: uint8(KeyRevokeType), Command: revoke[2:], At: 29},
		func(s *State, res *ApplyResult) {})
	check(ApprovalExpireType, ApprovalExpire{IDs: []string{"appr-0002"}, At: 29 + 61e9}, func(s *State, res *ApplyResult) {
		if s.Approvals["appr-0002"].Status != ApprovalExpired {
			t.Fatal("approval not expired")
		}
	})
	check(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300}, At: 30}, func(s *State, res *ApplyResult) {})
	check(KeyRevokeType, KeyRevoke{Member: "alice", KeyID: newKeySigner.KeyID, At: 31}, func(s *State, res *ApplyResult) {
		if !s.Members["alice"].Key(newKeySigner.KeyID).Revoked {
			t.Fatal("key not revoked")
		}
	})
	check(ServerKeySetType, ServerKeySet{ID: "s1", PublicKey: string(h.key("s1").PublicPEM), At: 31}, func(s *State, res *ApplyResult) {
		if m := s.Members["s1"]; m == nil || m.Kind != MemberServer || s.KeyOwner(h.key("s1").KeyID) != m {
			t.Fatalf("server member: %+v", m)
		}
	})
	check(MemberDeleteType, MemberDelete{ID: "bob", At: 32}, func(s *State, res *ApplyResult) {
		if s.Members["bob"] != nil || s.KeyOwner(h.key("bob").KeyID) != nil {
			t.Fatal("member still there after delete")
		}
	})
	check(TokenCreateType, TokenCreate{Token: tokenFor("op", RoleOperator), At: 33}, func(s *State, res *ApplyResult) {})
	check(BootstrapRetireType, BootstrapRetire{By: "bootstrap", At: 34}, func(s *State, res *ApplyResult) {
		if !s.Trust.BootstrapRetired || s.Trust.BootstrapRetiredIndex != res.Index {
			t.Fatalf("bootstrap not retired: %+v", s.Trust)
		}
	})
	check(SnapshotRestoreType, SnapshotRestore{Digest: strings.Repeat("ab", 32), At: 35}, func(s *State, res *ApplyResult) {})
	// appr-0002 expired at 29+60e9; the default retention is a week.
	check(ApprovalPruneType, ApprovalPrune{IDs: []string{"appr-0002"}, At: 29 + 61e9 + DefaultApprovalRetention*1e9}, func(s *State, res *ApplyResult) {
		if s.Approvals["appr-0002"] != nil || s.Approvals["appr-0001"] == nil {
			t.Fatalf("prune: %v", s.Approvals)
		}
	})
}

// TestSignatureChecks sends every kind of bad signature: each is refused
// with the code of the check that failed, and the state is unchanged.
func TestSignatureChecks(t *testing.T) {
	const now = int64(1_000_000e9)
	h := newHarness(t)
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: now})
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("eu-west"), At: now})
	region := func(auth *SignedAuth, pub string) RegionUpsert {
		r := testRegion("us-east")
		r.Labels = map[string]string{"v": "2"}
		return RegionUpsert{Region: r, At: now + 1e9, Auth: auth, PublicKey: pub}
	}
	body := []byte(`{"name":"us-east"}`)
	good := func() *SignedAuth { return h.sign("us-east", body, now+1e9) }
	replayed := good()
	h.mustApply(RegionUpsertType, region(replayed, ""))
	cases := []struct {
		name string
		cmd  RegionUpsert
		code string
	}{
		{"unsigned", region(&SignedAuth{KeyID: h.key("us-east").KeyID, Body: body}, ""), "unsigned"},
		{"forged signature", region(func() *SignedAuth { a := good(); a.Body = []byte(`{"name":"evil"}`); return a }(), ""), "bad_signature"},
		{"another member's key", region(h.sign("eu-west", body, now+1e9), ""), "wrong_signer"},
		{"unknown key", region(h.sign("stranger", body, now+1e9), ""), "unknown_key"},
		{"replayed nonce", region(replayed, ""), "replayed_nonce"},
		{"stale timestamp", region(h.sign("us-east", body, now-10*60e9), ""), "stale_timestamp"},
		{"future timestamp", region(h.sign("us-east", body, now+10*60e9), ""), "stale_timestamp"},
		{"bad nonce", region(func() *SignedAuth { a := good(); a.Nonce = "x"; return a }(), ""), "bad_nonce"},
		{"first registration without key", RegionUpsert{Region: testRegion("ap-south"), At: now, Auth: h.sign("ap-south", body, now)}, "public_key_required"},
		{"first registration signed by another key", RegionUpsert{Region: testRegion("ap-south"), At: now, Auth: h.sign("eu-west", body, now),
			PublicKey: string(h.key("ap-south").PublicPEM)}, "wrong_signer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotBytes(t, h.f)
			res := h.apply(RegionUpsertType, tc.cmd)
			if res.Err == nil || codeOf(res.Err) != tc.code || !errors.Is(res.Err, ErrForbidden) && tc.code != "public_key_required" {
				t.Fatalf("got %v (code %q), want %q", res.Err, codeOf(res.Err), tc.code)
			}
			if string(before) != string(snapshotBytes(t, h.f)) {
				t.Fatal("a refused request changed the state")
			}
		})
	}
}

// TestKeyRotationOverlapAndRevocation: the old key works through the
// overlap window, not after; a revoked key stops at once.
func TestKeyRotationOverlapAndRevocation(t *testing.T) {
	const now = int64(2_000_000e9)
	h := newHarness(t)
	h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300, RotationOverlapSeconds: 3600}, At: now})
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: now})
	oldKey := h.key("us-east")
	next := h.key("us-east-next")
	h.mustApply(KeyRotateType, KeyRotate{Member: "us-east", PublicKey: string(next.PublicPEM), Auth: h.sign("us-east", []byte("rot"), now), At: now})
	update := func(at int64) *ApplyResult {
		return h.apply(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: at, Auth: h.sign("us-east", []byte("u"), at)})
	}
	if res := update(now + 1800e9); res.Err != nil {
		t.Fatalf("old key refused inside the overlap window: %v", res.Err)
	}
	if res := update(now + 3601e9); codeOf(res.Err) != "expired_key" {
		t.Fatalf("old key after the overlap window: %v", res.Err)
	}
	h.keys["us-east"] = next
	if res := update(now + 3602e9); res.Err != nil {
		t.Fatalf("new key refused: %v", res.Err)
	}
	h.mustApply(KeyRevokeType, KeyRevoke{Member: "us-east", KeyID: next.KeyID, At: now + 3603e9})
	if res := update(now + 3604e9); codeOf(res.Err) != "revoked_key" {
		t.Fatalf("revoked key: %v", res.Err)
	}
	_ = oldKey
}

// TestApprovalFlow: a production registration stays pending until the
// m-th distinct approval, and is applied in that same entry; bad votes are
// refused without changing anything.
func TestApprovalFlow(t *testing.T) {
	const now = int64(3_000_000e9)
	h := newHarness(t)
	for _, a := range []string{"alice", "bob", "carol"} {
		if res := h.register(a, MemberApprover, now); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if res := h.register("mallory", MemberAgent, now); res.Err != nil {
		t.Fatal(res.Err)
	}
	prod := testRegion("prod-1")
	prod.Tier = TierProduction
	direct := h.apply(RegionUpsertType, RegionUpsert{Region: prod, At: now})
	if codeOf(direct.Err) != "approval_required" {
		t.Fatalf("a production registration without approval: %v", direct.Err)
	}
	cmd := h.autosign(RegionUpsert{Region: prod, At: now}).(RegionUpsert)
	data, _ := EncodeJSON(RegionUpsertType, cmd)
	h.mustApply(ApprovalCreateType, ApprovalCreate{ID: "appr-prod-1", Action: ActionRegisterProductionRegion, Summary: "register prod-1",
		CommandType: uint8(RegionUpsertType), Command: data[2:], At: now})
	vote := func(who string, at int64) *ApplyResult {
		return h.apply(ApprovalVoteType, ApprovalVote{ID: "appr-prod-1", Auth: h.voteAuth(who, "appr-prod-1", at), At: at})
	}
	if res := vote("alice", now+1e9); res.Err != nil {
		t.Fatal(res.Err)
	}
	regionExists := func() bool {
		var ok bool
		h.f.Read(func(s *State) { ok = s.Regions["prod-1"] != nil })
		return ok
	}
	if regionExists() {
		t.Fatal("registered after one of two approvals")
	}
	for _, bad := range []struct {
		who  string
		at   int64
		code string
	}{
		{"alice", now + 2e9, "duplicate_approval"},
		{"mallory", now + 2e9, "not_an_approver"},
		{"bob", now + 2*3600e9, "approval_expired"},
	} {
		before := snapshotBytes(t, h.f)
		if res := vote(bad.who, bad.at); codeOf(res.Err) != bad.code {
			t.Fatalf("%s: %v, want %s", bad.who, res.Err, bad.code)
		}
		if string(before) != string(snapshotBytes(t, h.f)) {
			t.Fatalf("a refused vote (%s) changed the state", bad.code)
		}
	}
	headBefore, _ := h.f.AuditHead()
	res := vote("bob", now+3e9)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	a := res.Value.(*Approval)
	if a.Status != ApprovalApplied || !regionExists() {
		t.Fatalf("after the second approval: %+v", a)
	}
	var recent []AuditEntry
	h.f.Read(func(s *State) { recent = s.RecentAudit() })
	last := recent[len(recent)-1]
	if last.Type != "approval_vote" || last.Index != res.Index || recent[len(recent)-2].Hash != headBefore {
		t.Fatalf("the approval and the registration must be one audit entry: %+v", recent[len(recent)-2:])
	}
	if res := vote("carol", now+4e9); codeOf(res.Err) != "approval_closed" {
		t.Fatalf("vote on an applied approval: %v", res.Err)
	}
}

// TestApprovalRechecksPreconditions: an approved action whose precondition
// no longer holds fails, visibly, instead of being applied.
func TestApprovalRechecksPreconditions(t *testing.T) {
	const now = int64(4_000_000e9)
	h := newHarness(t)
	seed(h)
	for _, a := range []string{"alice", "bob"} {
		h.register(a, MemberApprover, now)
	}
	del, _ := EncodeJSON(RegionDeleteType, RegionDelete{Name: "eu-west", At: now})
	h.mustApply(ApprovalCreateType, ApprovalCreate{ID: "appr-del-1", Action: ActionDeregisterRegion, CommandType: uint8(RegionDeleteType), Command: del[2:], At: now})
	h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-del-1", Auth: h.voteAuth("alice", "appr-del-1", now), At: now})
	res := h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-del-1", Auth: h.voteAuth("bob", "appr-del-1", now), At: now})
	a := res.Value.(*Approval)
	if a.Status != ApprovalFailed || !strings.Contains(a.Result, "mirrors tenant") {
		t.Fatalf("approved deletion of a region in use: %+v", a)
	}
	var exists bool
	h.f.Read(func(s *State) { exists = s.Regions["eu-west"] != nil })
	if !exists {
		t.Fatal("the region in use was deleted")
	}
}

func TestNoncesArePrunedAfterTheirWindow(t *testing.T) {
	const now = int64(5_000_000e9)
	h := newHarness(t)
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: now})
	for i := int64(1); i <= 5; i++ {
		h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: now + i*400e9,
			Auth: h.sign("us-east", []byte("u"), now+i*400e9)})
	}
	var n int
	h.f.Read(func(s *State) { n = len(s.Nonces) })
	if n > 2 {
		t.Fatalf("%d nonces remembered; those older than twice the skew (600 s) must be forgotten", n)
	}
}

// TestProductionRegionChangesNeedApproval: once approvers approved a
// production region, its own key cannot change what they approved (tier,
// URL, status, key) without the same approvals; other fields (labels)
// stay the region's to change.
func TestProductionRegionChangesNeedApproval(t *testing.T) {
	const now = int64(5_000_000e9)
	h := newHarness(t)
	for _, a := range []string{"alice", "bob"} {
		if res := h.register(a, MemberApprover, now); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	n := 0
	approve := func(typ MessageType, cmd any, at int64) *ApplyResult {
		t.Helper()
		n++
		id := fmt.Sprintf("appr-change-%d", n)
		data, _ := EncodeJSON(typ, h.autosign(cmd))
		h.mustApply(ApprovalCreateType, ApprovalCreate{ID: id, Action: ActionRegisterProductionRegion, Summary: "change prod-1",
			CommandType: uint8(typ), Command: data[2:], At: at, Rules: RulesApprovalBound})
		h.mustApply(ApprovalVoteType, ApprovalVote{ID: id, Auth: h.voteAuth("alice", id, at), At: at, Rules: RulesApprovalBound})
		return h.mustApply(ApprovalVoteType, ApprovalVote{ID: id, Auth: h.voteAuth("bob", id, at), At: at, Rules: RulesApprovalBound})
	}
	prod := testRegion("prod-1")
	prod.Tier = TierProduction
	if a := approve(RegionUpsertType, RegionUpsert{Region: prod, At: now}, now).Value.(*Approval); a.Status != ApprovalApplied {
		t.Fatalf("production registration: %+v", a)
	}
	update := func(r Region, at int64) *ApplyResult {
		return h.apply(RegionUpsertType, RegionUpsert{Region: r, At: at, Auth: h.sign("prod-1", []byte("update"), at), Rules: RulesApprovalBound})
	}
	for i, change := range []struct {
		field string
		edit  func(r *Region)
	}{
		{"tier", func(r *Region) { r.Tier = TierStaging }},
		{"url", func(r *Region) { r.URL = "https://elsewhere.example.com:8401" }},
		{"status", func(r *Region) { r.Status = RegionDraining }},
	} {
		r := prod
		change.edit(&r)
		before := snapshotBytes(t, h.f)
		at := now + int64(i+1)*1e9
		res := update(r, at)
		if codeOf(res.Err) != "approval_required" || !strings.Contains(res.Err.Error(), ActionRegisterProductionRegion) {
			t.Fatalf("%s of a production region with its own key: %v, want approval_required naming %s", change.field, res.Err, ActionRegisterProductionRegion)
		}
		if string(before) != string(snapshotBytes(t, h.f)) {
			t.Fatalf("a refused %s change changed the state", change.field)
		}
		var s0 *State
		h.f.Read(func(s *State) { s0 = s })
		if got := RegionUpsertChange(s0, &r); !strings.HasPrefix(got, change.field+" ") {
			t.Fatalf("the change is described as %q, want it to name %s", got, change.field)
		}
	}
	labels := prod
	labels.Labels = map[string]string{"env": "prod", "team": "edge"}
	if res := update(labels, now+10e9); res.Err != nil {
		t.Fatalf("a label change needs no approval: %v", res.Err)
	}

	next := h.key("prod-1-next")
	rotate := KeyRotate{Member: "prod-1", PublicKey: string(next.PublicPEM), Auth: h.sign("prod-1", []byte("rotate"), now+11e9), At: now + 11e9, Rules: RulesApprovalBound}
	if res := h.apply(KeyRotateType, rotate); codeOf(res.Err) != "approval_required" {
		t.Fatalf("a production region's key rotation without approval: %v", res.Err)
	}
	rotate.Auth = h.sign("prod-1", []byte("rotate"), now+12e9)
	rotate.At = now + 12e9
	if a := approve(KeyRotateType, rotate, now+12e9).Value.(*Approval); a.Status != ApprovalApplied {
		t.Fatalf("approved key rotation: %+v", a)
	}
	h.f.Read(func(s *State) {
		if s.KeyOwner(next.KeyID) == nil || s.KeyOwner(next.KeyID).ID != "prod-1" {
			t.Fatal("the approved rotation did not add the key")
		}
	})
	staging := prod
	staging.Tier = TierStaging
	staging.Labels = labels.Labels
	if a := approve(RegionUpsertType, RegionUpsert{Region: staging, At: now + 13e9, Auth: h.sign("prod-1", []byte("down"), now+13e9), Rules: RulesApprovalBound}, now+13e9).Value.(*Approval); a.Status != ApprovalApplied {
		t.Fatalf("approved downgrade: %+v", a)
	}
	h.f.Read(func(s *State) {
		if s.Regions["prod-1"].Tier != TierStaging {
			t.Fatal("the approved downgrade was not applied")
		}
	})
}

// TestVotesAreBoundToTheirApproval: a vote's signature names the approval
// and its digest, so a captured vote does not count for another approval
// or for a changed action, and a vote whose key is revoked before the
// approval applies no longer counts.
func TestVotesAreBoundToTheirApproval(t *testing.T) {
	const now = int64(6_000_000e9)
	h := newHarness(t)
	for _, a := range []string{"alice", "bob", "carol"} {
		if res := h.register(a, MemberApprover, now); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	create := func(id, region string) {
		t.Helper()
		r := testRegion(region)
		r.Tier = TierProduction
		data, _ := EncodeJSON(RegionUpsertType, h.autosign(RegionUpsert{Region: r, At: now}))
		h.mustApply(ApprovalCreateType, ApprovalCreate{ID: id, Action: ActionRegisterProductionRegion, Summary: "register " + region,
			CommandType: uint8(RegionUpsertType), Command: data[2:], At: now, Rules: RulesApprovalBound})
	}
	create("appr-one-0001", "prod-1")
	create("appr-two-0002", "prod-2")

	// Alice's vote for approval one, replayed onto approval two.
	auth := h.voteAuth("alice", "appr-one-0001", now+1e9)
	if res := h.apply(ApprovalVoteType, ApprovalVote{ID: "appr-two-0002", Auth: auth, At: now + 1e9, Rules: RulesApprovalBound}); codeOf(res.Err) != "wrong_approval" {
		t.Fatalf("a vote for one approval replayed onto another: %v, want wrong_approval", res.Err)
	}
	// A vote naming the approval with a digest of another action.
	b, _ := json.Marshal(VoteBody{Approval: "appr-two-0002", Digest: strings.Repeat("0", 64)})
	if res := h.apply(ApprovalVoteType, ApprovalVote{ID: "appr-two-0002", Auth: h.sign("alice", b, now+2e9), At: now + 2e9, Rules: RulesApprovalBound}); codeOf(res.Err) != "wrong_digest" {
		t.Fatalf("a vote with another digest: %v, want wrong_digest", res.Err)
	}

	// Alice votes for approval one, then her key is revoked: Bob's vote
	// is the second, but only one of the two counts.
	h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-one-0001", Auth: h.voteAuth("alice", "appr-one-0001", now+3e9), At: now + 3e9, Rules: RulesApprovalBound})
	h.mustApply(PolicySetType, PolicySet{Policy: Policy{SkewSeconds: 300, RotationOverlapSeconds: 3600, Rules: map[string]ApprovalRule{
		ActionRegisterProductionRegion: {Required: 2, TTLSeconds: 3600}}}, At: now + 3e9})
	h.mustApply(KeyRevokeType, KeyRevoke{Member: "alice", KeyID: h.key("alice").KeyID, At: now + 4e9})
	res := h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-one-0001", Auth: h.voteAuth("bob", "appr-one-0001", now+5e9), At: now + 5e9, Rules: RulesApprovalBound})
	if a := res.Value.(*Approval); a.Status != ApprovalPending {
		t.Fatalf("applied with a revoked approver's vote counted: %+v", a)
	}
	res = h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-one-0001", Auth: h.voteAuth("carol", "appr-one-0001", now+6e9), At: now + 6e9, Rules: RulesApprovalBound})
	if a := res.Value.(*Approval); a.Status != ApprovalApplied {
		t.Fatalf("two valid votes did not apply it: %+v", a)
	}
}

// TestEntriesReplayUnderTheRulesTheyWereLoggedUnder: an entry logged
// before RulesApprovalBound (no rules field) applies as it did then, so a
// server replaying an old log, or one of the previous release applying a
// new entry, comes to the same state as every other: a production region
// downgraded by its own key, and a vote signed over any body.
func TestEntriesReplayUnderTheRulesTheyWereLoggedUnder(t *testing.T) {
	const now = int64(7_000_000e9)
	h := newHarness(t)
	for _, a := range []string{"alice", "bob"} {
		if res := h.register(a, MemberApprover, now); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	prod := testRegion("prod-1")
	prod.Tier = TierProduction
	data, _ := EncodeJSON(RegionUpsertType, h.autosign(RegionUpsert{Region: prod, At: now}))
	h.mustApply(ApprovalCreateType, ApprovalCreate{ID: "appr-old-0001", Action: ActionRegisterProductionRegion, Summary: "register prod-1",
		CommandType: uint8(RegionUpsertType), Command: data[2:], At: now})
	for _, who := range []string{"alice", "bob"} {
		h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-old-0001", Auth: h.sign(who, []byte("approve"), now+1e9), At: now + 1e9})
	}
	staging := prod
	staging.Tier = TierStaging
	if res := h.apply(RegionUpsertType, RegionUpsert{Region: staging, At: now + 2e9, Auth: h.sign("prod-1", []byte("down"), now+2e9)}); res.Err != nil {
		t.Fatalf("an old-rules downgrade (as logged before the rule): %v", res.Err)
	}
	h.f.Read(func(s *State) {
		if s.Regions["prod-1"].Tier != TierStaging {
			t.Fatal("the old-rules downgrade did not apply")
		}
	})
}

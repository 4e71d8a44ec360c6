package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// signed builds a signed raw request body for member with an explicit
// timestamp and nonce, so tests can forge every part of it.
func signed(t *testing.T, key *signing.Signer, payload map[string]any, ts time.Time, nonce string) ([]byte, string) {
	t.Helper()
	m := map[string]any{}
	for k, v := range payload {
		m[k] = v
	}
	m["key_id"], m["timestamp"], m["nonce"] = key.KeyID, ts.UTC().Format(time.RFC3339Nano), nonce
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := key.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, sig
}

func sigHeader(sig string) http.Header { return http.Header{"X-Atomfed-Signature": {sig}} }

// attack sends a request that must be refused with status and code, and
// checks on every server that neither the state nor the audit head moved.
func attack(t *testing.T, c *testcluster.Cluster, n *testcluster.Node, method, path string, body any, hdr http.Header, status int, code string) {
	t.Helper()
	before := stateOf(t, c.WaitLeader(), "")
	r := n.Do(t, method, path, body, hdr)
	wantError(t, r, status, code)
	for _, s := range c.Running() {
		if after := stateOf(t, s, "stale"); !after.equal(before) {
			t.Fatalf("%s: the refused request changed the state:\nbefore %v\nafter  %v", s.ID, before, after)
		}
	}
}

// TestSecurityAttacks runs every attack the trust policy must stop
// against a three-server cluster over TLS, through a follower (so the
// request is also forwarded), and checks each is refused with the check
// that failed and changes nothing anywhere.
func TestSecurityAttacks(t *testing.T) {
	var skew atomic.Int64 // moves the servers' clock for the expiry case
	c := testcluster.New(t, testcluster.Options{GatedPolicy: true, Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	l := c.WaitLeader()
	f := c.Followers()[0]
	ctx := testcluster.Ctx(t, time.Minute)
	c.RegisterRegion(&fsm.Region{Name: "us-east", URL: "https://us-east.example.com"})
	c.RegisterRegion(&fsm.Region{Name: "eu-west", URL: "https://eu-west.example.com"})
	for _, a := range []string{"alice", "bob"} {
		if _, err := c.NewClient(l, client.WithSigner(c.Signer(a))).RegisterMember(ctx, a, fsm.MemberApprover); err != nil {
			t.Fatal(err)
		}
	}
	c.Settle()
	us := c.Signer("us-east")
	update := map[string]any{"name": "us-east", "url": "https://us-east-2.example.com"}

	t.Run("forged signature", func(t *testing.T) {
		b, _ := signed(t, us, update, time.Now(), "forged-00001")
		_, other := signed(t, us, map[string]any{"name": "us-east", "url": "https://evil.example.com"}, time.Now(), "forged-00001")
		attack(t, c, f, http.MethodPost, "/region/register", b, sigHeader(other), 403, "bad_signature")
	})
	t.Run("unsigned", func(t *testing.T) {
		attack(t, c, f, http.MethodPost, "/region/register", update, nil, 403, "unsigned")
	})
	t.Run("another member's key", func(t *testing.T) {
		b, sig := signed(t, c.Signer("eu-west"), update, time.Now(), "other-000001")
		attack(t, c, f, http.MethodPost, "/region/register", b, sigHeader(sig), 403, "wrong_signer")
	})
	t.Run("unknown key", func(t *testing.T) {
		b, sig := signed(t, c.Signer("stranger"), update, time.Now(), "unknown-0001")
		attack(t, c, f, http.MethodPost, "/region/register", b, sigHeader(sig), 403, "unknown_key")
	})
	t.Run("replayed request", func(t *testing.T) {
		b, sig := signed(t, us, update, time.Now(), "replay-00001")
		if r := do(t, f, http.MethodPost, "/region/register", b, sigHeader(sig)); r.Status != http.StatusOK {
			t.Fatalf("first send: %d %s", r.Status, r.Body)
		}
		c.Settle()
		attack(t, c, f, http.MethodPost, "/region/register", b, sigHeader(sig), 403, "replayed_nonce")
	})
	t.Run("stale timestamp", func(t *testing.T) {
		b, sig := signed(t, us, update, time.Now().Add(-10*time.Minute), "stale-000001")
		attack(t, c, f, http.MethodPost, "/region/register", b, sigHeader(sig), 403, "stale_timestamp")
	})
	t.Run("tenant write with a reader token", func(t *testing.T) {
		tok, err := l.Client.CreateToken(ctx, fsm.RoleReader, "read only")
		if err != nil {
			t.Fatal(err)
		}
		c.Settle()
		hdr := http.Header{"Authorization": {"Bearer " + tok.Secret}}
		if r := do(t, f, http.MethodGet, "/v1/tenants", nil, hdr); r.Status != http.StatusOK {
			t.Fatalf("a reader may read: %d %s", r.Status, r.Body)
		}
		attack(t, c, f, http.MethodPut, "/v1/tenants/acme", tenantJSON("acme", "us-east"), hdr, 403, "forbidden_role")
	})
	t.Run("no token", func(t *testing.T) {
		attack(t, c, f, http.MethodPut, "/v1/tenants/acme", tenantJSON("acme", "us-east"), http.Header{"Authorization": {""}}, 401, "unauthenticated")
		attack(t, c, f, http.MethodGet, "/v1/tenants", nil, http.Header{"Authorization": {""}}, 401, "unauthenticated")
		attack(t, c, f, http.MethodGet, "/v1/tenants", nil, http.Header{"Authorization": {"Bearer atf_made_up"}}, 401, "invalid_token")
	})

	// A pending production registration for the approval attacks.
	prodKey := c.Signer("prod-1")
	pb, psig := signed(t, prodKey, map[string]any{"name": "prod-1", "url": "https://prod-1.example.com", "tier": "production",
		"public_key": string(prodKey.PublicPEM)}, time.Now(), "prod-1-register")
	r := do(t, f, http.MethodPost, "/region/register", pb, sigHeader(psig))
	if r.Status != http.StatusAccepted {
		t.Fatalf("production registration: %d %s, want 202", r.Status, r.Body)
	}
	var pending fsm.Approval
	r.JSON(t, &pending)
	c.Settle()
	approvePath := "/v1/approvals/" + pending.ID + "/approve"
	vote := func(who string, ts time.Time, nonce string) ([]byte, http.Header) {
		b, sig := signed(t, c.Signer(who), map[string]any{"approval": pending.ID, "digest": fsm.ApprovalDigest(&pending)}, ts, nonce)
		return b, sigHeader(sig)
	}
	t.Run("vote bound to another approval", func(t *testing.T) {
		b, sig := signed(t, c.Signer("alice"), map[string]any{"approval": "appr-0000000000000000", "digest": fsm.ApprovalDigest(&pending)}, time.Now(), "other-appr-01")
		attack(t, c, f, http.MethodPost, approvePath, b, sigHeader(sig), 400, "wrong_approval")
		b, sig = signed(t, c.Signer("alice"), map[string]any{"approval": pending.ID, "digest": strings.Repeat("0", 64)}, time.Now(), "other-digest-01")
		attack(t, c, f, http.MethodPost, approvePath, b, sigHeader(sig), 403, "wrong_digest")
	})
	t.Run("approval by a non-approver", func(t *testing.T) {
		b, h := vote("us-east", time.Now(), "nonappr-0001")
		attack(t, c, f, http.MethodPost, approvePath, b, h, 403, "not_an_approver")
	})
	t.Run("double approval", func(t *testing.T) {
		b, h := vote("alice", time.Now(), "alice-vote-1")
		if r := do(t, f, http.MethodPost, approvePath, b, h); r.Status != http.StatusOK {
			t.Fatalf("first vote: %d %s", r.Status, r.Body)
		}
		c.Settle()
		b, h = vote("alice", time.Now(), "alice-vote-2")
		attack(t, c, f, http.MethodPost, approvePath, b, h, 403, "duplicate_approval")
	})
	t.Run("expired approval", func(t *testing.T) {
		skew.Store(int64(2 * time.Hour)) // past the default one-hour TTL
		defer skew.Store(0)
		b, h := vote("bob", time.Now().Add(2*time.Hour), "bob-vote-late")
		attack(t, c, f, http.MethodPost, approvePath, b, h, 403, "approval_expired")
	})
}

// TestProductionRegistrationNeedsTwoApprovals: the registration stays
// pending until the second distinct approval, then appears on every server,
// and the approval and the registration are one audit entry.
func TestProductionRegistrationNeedsTwoApprovals(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{GatedPolicy: true})
	l := c.WaitLeader()
	ctx := testcluster.Ctx(t, time.Minute)
	for _, a := range []string{"alice", "bob"} {
		if _, err := c.NewClient(l, client.WithSigner(c.Signer(a))).RegisterMember(ctx, a, fsm.MemberApprover); err != nil {
			t.Fatal(err)
		}
	}
	reg, pending, err := c.RegionClient(c.Followers()[0], "prod-1").RegisterRegionGated(ctx,
		&fsm.Region{Name: "prod-1", URL: "https://prod-1.example.com", Tier: fsm.TierProduction}, nil)
	if err != nil || reg != nil || pending == nil || pending.Status != fsm.ApprovalPending || pending.Required != 2 {
		t.Fatalf("production registration: region %+v approval %+v err %v", reg, pending, err)
	}
	onEveryServer := func(want bool) error {
		for _, n := range c.Running() {
			_, _, err := n.Client.Region(ctx, "prod-1", &client.QueryOptions{Consistency: "stale"})
			if got := err == nil; got != want {
				return fmt.Errorf("%s: prod-1 registered=%v, want %v (%v)", n.ID, got, want, err)
			}
		}
		return nil
	}
	if _, err := c.NewClient(l, client.WithSigner(c.Signer("alice"))).Approve(ctx, pending.ID); err != nil {
		t.Fatal(err)
	}
	c.Settle()
	if err := onEveryServer(false); err != nil {
		t.Fatalf("after one approval: %v", err)
	}
	before, err := l.Client.Audit(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.NewClient(c.Followers()[0], client.WithSigner(c.Signer("bob"))).Approve(ctx, pending.ID)
	if err != nil || a.Status != fsm.ApprovalApplied {
		t.Fatalf("second approval: %+v %v", a, err)
	}
	testutil.Eventually(t, 10*time.Second, func() error { return onEveryServer(true) })
	after, err := c.WaitLeader().Client.Audit(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var entries []fsm.AuditEntry
	for _, e := range after.Recent {
		if e.Index > before.Index && e.Type != "task_plan" && e.Type != "server_key_set" {
			entries = append(entries, e)
		}
	}
	if len(entries) != 1 || entries[0].Type != "approval_vote" {
		t.Fatalf("audit entries after the second approval: %+v, want one approval_vote", entries)
	}

	// The region's own key cannot undo the approval: a downgrade to
	// staging, like a key rotation, becomes a pending approval that names
	// the change, and the region stays production everywhere.
	rc := c.RegionClient(c.Followers()[0], "prod-1")
	reg, pending, err = rc.RegisterRegionGated(ctx, &fsm.Region{Name: "prod-1", URL: "https://prod-1.example.com", Tier: fsm.TierStaging}, nil)
	if err != nil || reg != nil || pending == nil || !strings.Contains(pending.Summary, "tier production -> staging") {
		t.Fatalf("downgrade with the region's own key: region %+v approval %+v err %v", reg, pending, err)
	}
	next, err := signing.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	if m, pending, err := rc.RotateKey(ctx, "prod-1", next.PublicPEM); err != nil || m != nil || pending == nil || pending.Action != fsm.ActionRegisterProductionRegion {
		t.Fatalf("key rotation of a production region: member %+v approval %+v err %v", m, pending, err)
	}
	for _, n := range c.Running() {
		r, _, err := n.Client.Region(ctx, "prod-1", &client.QueryOptions{Consistency: "stale"})
		if err != nil || r.Tier != fsm.TierProduction {
			t.Fatalf("%s: prod-1 after the refused downgrade: %+v %v", n.ID, r, err)
		}
	}
}

// TestKeyRotationOverlap: after a rotation the region keeps working with
// both keys through the overlap window, and the old key is refused after.
func TestKeyRotationOverlap(t *testing.T) {
	var skew atomic.Int64
	c := testcluster.New(t, testcluster.Options{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	l := c.WaitLeader()
	ctx := testcluster.Ctx(t, time.Minute)
	if _, err := l.Client.SetPolicy(ctx, &fsm.Policy{SkewSeconds: 300, RotationOverlapSeconds: 600}); err != nil {
		t.Fatal(err)
	}
	c.RegisterRegion(&fsm.Region{Name: "us-east", URL: "https://us-east.example.com"})
	old := c.Signer("us-east")
	next, err := signing.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.RegionClient(l, "us-east").RotateKey(ctx, "us-east", next.PublicPEM); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	update := func(key *signing.Signer, at time.Time, nonce string) *testcluster.Response {
		b, sig := signed(t, key, map[string]any{"name": "us-east", "url": "https://us-east.example.com", "labels": map[string]string{"n": nonce}}, at, nonce)
		return do(t, c.Followers()[0], http.MethodPost, "/region/register", b, sigHeader(sig))
	}
	if r := update(old, time.Now(), "old-in-window"); r.Status != http.StatusOK {
		t.Fatalf("old key inside the overlap window: %d %s", r.Status, r.Body)
	}
	if r := update(next, time.Now(), "new-in-window"); r.Status != http.StatusOK {
		t.Fatalf("new key: %d %s", r.Status, r.Body)
	}
	skew.Store(int64(11 * time.Minute)) // past the 10-minute overlap
	late := time.Now().Add(11 * time.Minute)
	r := update(old, late, "old-after-window")
	wantError(t, r, http.StatusForbidden, "expired_key")
	if r := update(next, late, "new-after-window"); r.Status != http.StatusOK {
		t.Fatalf("new key after the window: %d %s", r.Status, r.Body)
	}
	if !strings.Contains(string(r.Body), "us-east") {
		t.Fatalf("unexpected answer: %s", r.Body)
	}
}

// TestRevocationTakesEffectEverywhere: once a revocation is committed, a
// request signed with the revoked key is refused by every server.
func TestRevocationTakesEffectEverywhere(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	c.RegisterRegion(&fsm.Region{Name: "us-east", URL: "https://us-east.example.com"})
	key := c.Signer("us-east")
	ctx := testcluster.Ctx(t, time.Minute)
	if _, _, err := c.WaitLeader().Client.RevokeKey(ctx, "us-east", key.KeyID); err != nil {
		t.Fatal(err)
	}
	c.Settle()
	for i, n := range c.Running() {
		b, sig := signed(t, key, map[string]any{"name": "us-east", "url": "https://x.example.com"}, time.Now(), fmt.Sprintf("revoked-%04d", i))
		attack(t, c, n, http.MethodPost, "/region/register", b, sigHeader(sig), 403, "revoked_key")
	}
}

// TestTrustBundleVerifies fetches the bundle from a follower and checks its
// signature and that it lists the regions' and servers' keys.
func TestTrustBundleVerifies(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	c.RegisterRegion(&fsm.Region{Name: "us-east", URL: "https://us-east.example.com"})
	ctx := testcluster.Ctx(t, time.Minute)
	b, err := c.Followers()[0].Client.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, k := range b.Keys {
		kinds[k.Kind]++
	}
	if kinds[fsm.MemberRegion] != 1 || kinds[fsm.MemberServer] != 3 || b.Sequence == 0 {
		t.Fatalf("bundle: %+v", b)
	}
	if _, err := c.Followers()[0].Client.TrustBundle(ctx, "not-a-pinned-key"); err == nil {
		t.Fatal("a bundle signed by an unpinned key was accepted")
	}
}

// TestNewTokenWorksAtOnceOnEveryServer: a token is usable on the next
// request to any server once its creator has been told it exists
// (read-your-writes across servers): a follower that does not know it yet
// catches up with the leader's commit index before refusing it.
func TestNewTokenWorksAtOnceOnEveryServer(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	ctx := testcluster.Ctx(t, 2*time.Minute)
	followers := c.Followers()
	for i := 0; i < 100; i++ {
		tok, err := l.Client.CreateToken(ctx, fsm.RoleReader, fmt.Sprintf("rw-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range followers {
			if _, _, err := c.NewClient(f, client.WithToken(tok.Secret)).Regions(ctx, &client.QueryOptions{Consistency: "stale"}); err != nil {
				t.Fatalf("token %d used on %s right after it was created: %v", i, f.ID, err)
			}
		}
	}
	// An unknown token is still refused, after the catch-up.
	_, _, err := c.NewClient(followers[0], client.WithToken("atf_not_a_token")).Regions(ctx, nil)
	if client.StatusOf(err) != http.StatusUnauthorized || !client.IsCode(err, "invalid_token") {
		t.Fatalf("an unknown token on a follower: %v, want 401 invalid_token", err)
	}
}

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// trustView is what an operator's attack on the trust must not change on
// any server: the members, the policy, the regions and the trust facts.
func trustView(t *testing.T, c *client.Client) string {
	t.Helper()
	cx := ctx(t, 10*time.Second)
	stale := &client.QueryOptions{Consistency: "stale"}
	ms, err := c.TrustMembers(cx, "")
	if err != nil {
		t.Fatal(err)
	}
	var members []string
	for _, m := range ms {
		if m.Kind != fsm.MemberServer {
			members = append(members, m.Kind+":"+m.ID)
		}
	}
	var policy json.RawMessage
	if _, err := c.Do(cx, http.MethodGet, "/v1/policy/approvals", nil, nil, &policy); err != nil {
		t.Fatal(err)
	}
	regions, _, err := c.Regions(cx, stale)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range regions {
		names = append(names, r.Name+"="+r.URL)
	}
	st, err := c.TrustStatus(cx)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("members %v\npolicy %s\nregions %v\nsealed %v retired %v", members, policy, names, st.Sealed, st.BootstrapRetired)
}

// auditSince returns the types of the audit entries after head on s.
func auditSince(t *testing.T, s *procs.ServerProc, head string) []string {
	t.Helper()
	a, err := s.Client.Audit(ctx(t, 10*time.Second), &client.QueryOptions{Consistency: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Head == head {
		return nil
	}
	var out []string
	seen := false
	for _, e := range a.Recent {
		if seen {
			out = append(out, e.Type)
		}
		seen = seen || e.Hash == head
	}
	if !seen {
		t.Fatalf("%s: audit trail lacks %s", s.ID(), head)
	}
	return out
}

// settled waits until every server has the leader's audit head and
// returns it.
func settled(t *testing.T, c *procs.Cluster) string {
	t.Helper()
	cx := ctx(t, 20*time.Second)
	for _, s := range c.Running() {
		if err := c.WaitCaughtUp(cx, s); err != nil {
			t.Fatal(err)
		}
	}
	head, _, err := headOf(cx, c.Running()[0])
	if err != nil {
		t.Fatal(err)
	}
	return head
}

func headOf(cx context.Context, s *procs.ServerProc) (string, uint64, error) {
	a, err := s.Client.Audit(cx, &client.QueryOptions{Consistency: "stale"})
	if err != nil {
		return "", 0, err
	}
	return a.Head, a.Index, nil
}

// unchangedEverywhere asserts that every server shows want and that the
// audit trail after head holds exactly the entries wantEntries.
func unchangedEverywhere(t *testing.T, c *procs.Cluster, want, head string, wantEntries ...string) {
	t.Helper()
	settled(t, c)
	for _, s := range c.Running() {
		if got := trustView(t, s.Client); got != want {
			t.Errorf("%s: the attack changed the state:\nbefore %s\nafter  %s", s.ID(), want, got)
		}
		if got := auditSince(t, s, head); !slices.Equal(got, wantEntries) {
			t.Errorf("%s: audit entries after the attack %v, want %v", s.ID(), got, wantEntries)
		}
	}
}

// rawRequest sends a request with token and extra headers, as an attacker
// replaying captured bytes would, and returns the status and error code.
func rawRequest(t *testing.T, c *procs.Cluster, method, url, token string, body []byte, hdr http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t, 20*time.Second), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.Sec.TLSConfig()}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e structs.ErrorBody
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Error.Code
}

// TestSecurityApprovalsBindTheOperator (issue 16, item 6) attacks a real
// three-process TLS cluster as its operator, through a follower. Once the
// first approvers are registered, the operator (bootstrap token) alone
// cannot register an approver, switch approvals off, change the policy,
// delete a member or restore a snapshot: each is refused, or waits as a
// pending approval that changes nothing, on every server; with the
// approvers' votes each works. A restored old snapshot keeps the nonces
// (a request signed before the restore is refused after it) and the audit
// chain records the restore over the live head. The bootstrap token,
// retired, is refused by every server, also after a restart.
func TestSecurityApprovalsBindTheOperator(t *testing.T) {
	c := startCluster(t)
	l := waitLeader(t, c)
	f := c.Others(l)[0]
	op := f.Client // the bootstrap token, through a follower
	cx := ctx(t, 5*time.Minute)

	// The bootstrap window: the operator registers the first approvers.
	for _, a := range []string{"alice", "bob"} {
		if _, err := c.Sec.MustSigningClient(f.URL, a).RegisterMember(cx, a, fsm.MemberApprover); err != nil {
			t.Fatalf("bootstrap approver %s: %v", a, err)
		}
	}
	if st, err := op.TrustStatus(cx); err != nil || !st.Sealed || st.Approvers != 2 {
		t.Fatalf("trust after two approvers: %+v %v", st, err)
	}
	// The bootstrap token cannot be retired while it is the only operator
	// credential.
	t.Run("retiring the only operator credential", func(t *testing.T) {
		head := settled(t, c)
		want := trustView(t, op)
		if err := op.RevokeToken(cx, "bootstrap"); client.StatusOf(err) != http.StatusConflict || !client.IsCode(err, "no_other_operator") {
			t.Fatalf("retiring the only operator credential: %v, want 409 no_other_operator", err)
		}
		unchangedEverywhere(t, c, want, head)
	})
	// Approvals were ~1.4 MB each: the signed body of the request is
	// stored with it, and JSON whitespace padded it to the body limit.
	t.Run("an approval padded to the body limit", func(t *testing.T) {
		head := settled(t, c)
		want := trustView(t, op)
		k, _, err := c.Sec.Signer("sa-east")
		if err != nil {
			t.Fatal(err)
		}
		body, _, err := client.SignBody(k, map[string]any{"name": "sa-east", "url": "https://sa-east.example.com", "tier": fsm.TierProduction},
			map[string]any{"public_key": string(k.PublicPEM)})
		if err != nil {
			t.Fatal(err)
		}
		padded := append(append(body[:len(body)-1:len(body)-1], bytes.Repeat([]byte(" "), 900<<10)...), '}')
		sig, err := k.Sign(padded)
		if err != nil {
			t.Fatal(err)
		}
		if st, code := rawRequest(t, c, http.MethodPost, f.URL+"/region/register", procs.Token, padded, http.Header{"X-Atomfed-Signature": {sig}}); st != http.StatusBadRequest || code != "approval_too_large" {
			t.Fatalf("a padded production registration: %d %s, want 400 approval_too_large", st, code)
		}
		unchangedEverywhere(t, c, want, head)
	})
	tok, err := op.CreateToken(cx, fsm.RoleOperator, "ops")
	if err != nil {
		t.Fatal(err)
	}
	opTok, err := c.Sec.Client(f.URL, client.WithToken(tok.Secret)) // an operator token, through a follower
	if err != nil {
		t.Fatal(err)
	}
	registerRegion(t, c, f, "us-east")
	var old bytes.Buffer
	if _, err := op.SnapshotSave(cx, &old); err != nil {
		t.Fatal(err)
	}
	// After the save: a signed update of us-east (captured for a replay)
	// and a new region.
	usEast, _, err := c.Sec.Signer("us-east")
	if err != nil {
		t.Fatal(err)
	}
	captured, sig, err := client.SignBody(usEast, map[string]any{"name": "us-east", "url": "http://us-east-2.example.com:8401"},
		map[string]any{"public_key": string(usEast.PublicPEM)})
	if err != nil {
		t.Fatal(err)
	}
	sigHdr := http.Header{"X-Atomfed-Signature": {sig}}
	if st, code := rawRequest(t, c, http.MethodPost, f.URL+"/region/register", procs.Token, captured, sigHdr); st != http.StatusOK {
		t.Fatalf("signed update: %d %s", st, code)
	}
	registerRegion(t, c, f, "eu-west")

	pending := map[string]*fsm.Approval{}
	expectPending := func(name string, a *fsm.Approval, err error, action string) {
		t.Helper()
		var pe *client.PendingError
		if a == nil && err != nil && errors.As(err, &pe) {
			a, err = pe.Approval, nil
		}
		if err != nil || a == nil || a.Status != fsm.ApprovalPending || a.Action != action || a.Required != 2 {
			t.Fatalf("%s: %+v %v, want a pending %s approval needing 2", name, a, err, action)
		}
		pending[action] = a
	}
	t.Run("operator alone registers an approver", func(t *testing.T) {
		head := settled(t, c)
		want := trustView(t, op)
		_, a, err := c.Sec.MustSigningClient(f.URL, "mallory").RegisterMemberGated(cx, "mallory", fsm.MemberApprover)
		expectPending("approver registration", a, err, fsm.ActionRegisterApprover)
		unchangedEverywhere(t, c, want, head, "approval_create")
	})
	t.Run("operator votes with a key of its own", func(t *testing.T) {
		// An operator may register agent keys; one of them is no approver.
		if _, err := c.Sec.MustSigningClient(f.URL, "evil").RegisterMember(cx, "evil", fsm.MemberAgent); err != nil {
			t.Fatal(err)
		}
		head := settled(t, c)
		want := trustView(t, op)
		_, err := c.Sec.MustSigningClient(f.URL, "evil").Approve(cx, pending[fsm.ActionRegisterApprover].ID)
		if !client.IsCode(err, "not_an_approver") {
			t.Fatalf("vote by an operator's agent key: %v, want not_an_approver", err)
		}
		unchangedEverywhere(t, c, want, head)
	})
	t.Run("operator alone switches approvals off", func(t *testing.T) {
		head := settled(t, c)
		want := trustView(t, op)
		p := fsm.DefaultPolicy()
		for a := range p.Rules {
			p.Rules[a] = fsm.ApprovalRule{Required: 0}
		}
		_, _, err := op.SetPolicyGated(cx, p)
		if client.StatusOf(err) != http.StatusBadRequest || !client.IsCode(err, "invalid_policy") {
			t.Fatalf("required 0: %v, want 400 invalid_policy", err)
		}
		unchangedEverywhere(t, c, want, head)
	})
	t.Run("operator alone changes the policy", func(t *testing.T) {
		head := settled(t, c)
		want := trustView(t, op)
		p := fsm.DefaultPolicy()
		p.Rules[fsm.ActionRegisterProductionRegion] = fsm.ApprovalRule{Required: 1, TTLSeconds: 600}
		p.MaxPendingApprovals = 3
		_, a, err := opTok.SetPolicyGated(cx, p)
		expectPending("policy", a, err, fsm.ActionSetPolicy)
		unchangedEverywhere(t, c, want, head, "approval_create")
	})
	t.Run("operator alone deletes a member", func(t *testing.T) {
		head := settled(t, c)
		want := trustView(t, op)
		a, err := opTok.DeleteMember(cx, "bob")
		expectPending("member deletion", a, err, fsm.ActionDeleteMember)
		unchangedEverywhere(t, c, want, head, "approval_create")
	})
	t.Run("operator alone restores a snapshot", func(t *testing.T) {
		head := settled(t, c)
		want := trustView(t, op)
		_, a, err := op.SnapshotRestoreGated(cx, bytes.NewReader(old.Bytes()))
		expectPending("restore", a, err, fsm.ActionRestoreSnapshot)
		if !strings.Contains(a.Summary, "restore snapshot") {
			t.Fatalf("restore approval summary: %q", a.Summary)
		}
		// The same upload again is the same approval.
		if _, again, err := op.SnapshotRestoreGated(cx, bytes.NewReader(old.Bytes())); err != nil || again == nil || again.ID != a.ID {
			t.Fatalf("second upload: %+v %v, want approval %s again", again, err, a.ID)
		}
		unchangedEverywhere(t, c, want, head, "approval_create")
	})

	vote := func(action string, voters ...string) *fsm.Approval {
		t.Helper()
		var a *fsm.Approval
		for _, v := range voters {
			var err error
			if a, err = c.Sec.MustSigningClient(f.URL, v).Approve(cx, pending[action].ID); err != nil {
				t.Fatalf("%s votes for %s: %v", v, action, err)
			}
		}
		if a.Status != fsm.ApprovalApplied {
			t.Fatalf("%s after %v: %+v", action, voters, a)
		}
		return a
	}
	t.Run("with the approvers' votes each works", func(t *testing.T) {
		vote(fsm.ActionRegisterApprover, "alice", "bob")
		vote(fsm.ActionSetPolicy, "alice", "bob")
		settled(t, c)
		for _, s := range c.Running() {
			view := trustView(t, s.Client)
			if !strings.Contains(view, "approver:mallory") || !strings.Contains(view, `"region.register.production":{"required":1`) {
				t.Fatalf("%s after the approved changes: %s", s.ID(), view)
			}
		}
	})
	t.Run("a token over its pending approvals quota", func(t *testing.T) {
		// The operator token has one pending approval (bob's deletion);
		// the approved policy allows it 3.
		for i := 0; i < 2; i++ {
			if a, err := opTok.DeleteMember(cx, "evil"); err != nil || a == nil {
				t.Fatalf("pending approval %d of 3: %+v %v", i+2, a, err)
			}
		}
		head := settled(t, c)
		want := trustView(t, op)
		_, err := opTok.DeleteMember(cx, "evil")
		if client.StatusOf(err) != http.StatusTooManyRequests || !client.IsCode(err, "approval_quota") {
			t.Fatalf("a fourth pending approval: %v, want 429 approval_quota", err)
		}
		unchangedEverywhere(t, c, want, head)
	})
	t.Run("an approved restore keeps the nonces and continues the audit chain", func(t *testing.T) {
		vote(fsm.ActionRestoreSnapshot, "alice", "mallory")
		head := settled(t, c)
		meta, a, err := op.SnapshotRestoreGated(cx, bytes.NewReader(old.Bytes()))
		if err != nil || a != nil || meta.Digest == "" {
			t.Fatalf("approved restore: %+v %+v %v", meta, a, err)
		}
		settled(t, c)
		for _, s := range c.Running() {
			view := trustView(t, s.Client)
			if strings.Contains(view, "eu-west") || !strings.Contains(view, "us-east=http://us-east.example.com:8401") ||
				!strings.Contains(view, "approver:mallory") || !strings.Contains(view, "sealed true") {
				t.Fatalf("%s after the restore: %s", s.ID(), view)
			}
			au, err := s.Client.Audit(cx, &client.QueryOptions{Consistency: "stale"})
			if err != nil {
				t.Fatal(err)
			}
			// The chain goes on from the live head: the restore's entry
			// follows it (the scheduler's entries may follow).
			var rec fsm.AuditEntry
			for i, e := range au.Recent {
				if e.Type == "snapshot_restore" && i > 0 && au.Recent[i-1].Hash == head {
					rec = e
				}
			}
			if !strings.Contains(rec.Note, "approved in "+pending[fsm.ActionRestoreSnapshot].ID+" by alice, mallory") ||
				!strings.Contains(rec.Note, "over audit head "+head) || !strings.Contains(rec.Note, "its audit head "+meta.AuditHead) {
				t.Fatalf("%s: audit after the restore %+v, want a snapshot_restore entry right after %s", s.ID(), au.Recent, head)
			}
		}
		// A second restore of the same snapshot needs a new approval.
		if _, again, err := op.SnapshotRestoreGated(cx, bytes.NewReader(old.Bytes())); err != nil || again == nil {
			t.Fatalf("the grant was used twice: %+v %v", again, err)
		}
		// The update signed before the restore is refused after it.
		head = settled(t, c)
		for _, s := range c.Running() {
			if st, code := rawRequest(t, c, http.MethodPost, s.URL+"/region/register", procs.Token, captured, sigHdr); st != http.StatusForbidden || code != "replayed_nonce" {
				t.Errorf("%s: replay of a request signed before the restore: %d %s, want 403 replayed_nonce", s.ID(), st, code)
			}
		}
		unchangedEverywhere(t, c, trustView(t, op), head)
	})
	t.Run("approved deletion of a member", func(t *testing.T) {
		vote(fsm.ActionDeleteMember, "alice", "mallory")
		settled(t, c)
		if view := trustView(t, op); strings.Contains(view, "approver:bob") {
			t.Fatalf("bob after the approved deletion: %s", view)
		}
	})
	// Last: the harness's own clients use the bootstrap token.
	t.Run("the bootstrap token is retired on every server", func(t *testing.T) {
		if err := op.RevokeToken(cx, "bootstrap"); err != nil {
			t.Fatal(err)
		}
		refusedEverywhere := func() {
			t.Helper()
			for _, s := range c.Running() {
				testutil.Eventually(t, 10*time.Second, func() error {
					if st, code := rawRequest(t, c, http.MethodGet, s.URL+"/v1/tokens", procs.Token, nil, nil); st != http.StatusUnauthorized || code != "bootstrap_retired" {
						return fmt.Errorf("%s: the bootstrap token answered %d %s, want 401 bootstrap_retired", s.ID(), st, code)
					}
					if st, code := rawRequest(t, c, http.MethodGet, s.URL+"/v1/tokens", tok.Secret, nil, nil); st != http.StatusOK {
						return fmt.Errorf("%s: the operator token answered %d %s", s.ID(), st, code)
					}
					return nil
				})
			}
		}
		refusedEverywhere()
		// Also after a restart.
		if err := f.Term(); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Wait(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := f.Restart(); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, func() error {
			h, err := f.Health(cx)
			if err != nil {
				return err
			}
			if h.Leader == "" {
				return fmt.Errorf("%s has no leader yet", f.ID())
			}
			return nil
		})
		refusedEverywhere()
	})
}

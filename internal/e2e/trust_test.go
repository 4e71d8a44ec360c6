package e2e_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// TestOnlyServersOpenTheRaftPort attacks a real three-process TLS cluster
// on its Raft port (which also carries the leader-forwarding RPC) with
// certificates of the federation's own CA: an agent's and an operator
// tool's are refused in the handshake, before a byte of Raft or of the
// forwarding RPC is read; a server's completes it.
func TestOnlyServersOpenTheRaftPort(t *testing.T) {
	c := startCluster(t)
	leader := waitLeader(t, c)
	dir := t.TempDir()
	cert := func(name string, names ...string) tlsutil.Files {
		t.Helper()
		f, err := c.Sec.CA.WriteNode(dir, name, c.Sec.CAPath, append([]string{name}, names...), []net.IP{net.ParseIP("127.0.0.1")})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	dial := func(f tlsutil.Files, addr string) error {
		cfg, err := tlsutil.ClientConfig(f, tlsutil.ServerName)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3: the server's verdict on the client certificate arrives
		// with the first read.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte{0xA7}); err != nil {
			return err
		}
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	for _, s := range c.Servers {
		for _, attacker := range []struct {
			name  string
			files tlsutil.Files
		}{
			{"an agent's certificate", cert("rogue-agent", tlsutil.AgentName)},
			{"an operator tool's certificate", cert("rogue-tool")},
		} {
			err := dial(attacker.files, s.Config.RaftAddr)
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s on %s's Raft port: %v, want the handshake refused over the certificate", attacker.name, s.ID(), err)
			}
		}
	}
	// A server's certificate completes the handshake (the forwarding RPC
	// then waits for a frame: the read times out rather than failing on
	// the certificate).
	err := dial(cert("another-server", tlsutil.ServerName), leader.Config.RaftAddr)
	if err != nil && strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server's certificate was refused: %v", err)
	}
}

// TestSecretsStayOffTheCommandLine: the gossip key is never taken from the
// command line, where every user of the host reads it (ps, /proc), and no
// secret of the environment shows in --help.
func TestSecretsStayOffTheCommandLine(t *testing.T) {
	const key = "c2VjcmV0LWdvc3NpcC1rZXktMzItYnl0ZXMtbG9uZyE="
	r := cli(t, []string{"FEDERATION_TOKEN=atf_secret_token_value"}, "server", "--encrypt", key, "--node", "n1", "--data-dir", t.TempDir())
	if r.code == 0 || !strings.Contains(r.stderr, "--encrypt-file") || strings.Contains(r.stderr, key) {
		t.Fatalf("server --encrypt KEY: exit %d, %s; want it refused, naming --encrypt-file, without echoing the key", r.code, r.stderr)
	}
	for _, args := range [][]string{{"server", "--help"}, {"agent", "--help"}, {"region", "list", "--help"}, {"report", "--help"}} {
		h := cli(t, []string{"FEDERATION_TOKEN=atf_secret_token_value", "ATOMFED_GOSSIP_KEY=" + key}, args...)
		if out := h.stdout + h.stderr; strings.Contains(out, "atf_secret_token_value") || strings.Contains(out, key) {
			t.Fatalf("atomfed %s prints a secret of the environment:\n%s", strings.Join(args, " "), out)
		}
	}
}

// TestApprovalVoteCannotBeReplayedOntoAnother attacks a real three-process
// TLS cluster with a captured approval vote: a vote an approver signed for
// one pending approval is sent to another (the URL names the other, the
// signed body names the first), then re-targeted by editing the body. Both
// are refused with a clear error; the other approval keeps no vote on any
// server and no vote enters the audit chain. The genuine vote then counts
// once, and replaying it onto its own approval is refused as a replay.
func TestApprovalVoteCannotBeReplayedOntoAnother(t *testing.T) {
	c := startCluster(t)
	leader := waitLeader(t, c)
	cx := ctx(t, time.Minute)
	for _, a := range []string{"approver-1", "approver-2"} {
		if _, err := c.Sec.MustSigningClient(leader.URL, a).RegisterMember(cx, a, fsm.MemberApprover); err != nil {
			t.Fatalf("register %s: %v", a, err)
		}
	}
	pending := map[string]*fsm.Approval{}
	for _, name := range []string{"prod-a", "prod-b"} {
		reg, a, err := c.Sec.MustSigningClient(leader.URL, name).RegisterRegionGated(cx,
			&fsm.Region{Name: name, URL: "https://" + name + ".example.com", Tier: fsm.TierProduction}, nil)
		if err != nil || reg != nil || a == nil || a.Status != fsm.ApprovalPending {
			t.Fatalf("register production region %s: region %+v approval %+v err %v", name, reg, a, err)
		}
		pending[name] = a
	}
	a, b := pending["prod-a"], pending["prod-b"]
	signer, _, err := c.Sec.Signer("approver-1")
	if err != nil {
		t.Fatal(err)
	}
	body, sig, err := client.SignBody(signer, nil, map[string]any{"approval": a.ID, "digest": fsm.ApprovalDigest(a)})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c.Sec.TLSConfig()}}
	post := func(s *procs.ServerProc, id string, body []byte, sig string) (int, structs.ErrorDetail) {
		t.Helper()
		req, err := http.NewRequestWithContext(cx, http.MethodPost, s.URL+"/v1/approvals/"+id+"/approve", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+procs.Token)
		req.Header.Set("X-Atomfed-Signature", sig)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("POST approve %s on %s: %v", id, s.ID(), err)
		}
		defer resp.Body.Close()
		var e structs.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error
	}
	op := func(s *procs.ServerProc) *client.Client {
		t.Helper()
		cl, err := c.Sec.Client(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	votes := func() (string, error) {
		for _, s := range c.Running() {
			cl := op(s)
			for _, p := range []*fsm.Approval{a, b} {
				got, err := cl.Approval(cx, p.ID)
				if err != nil {
					return "", fmt.Errorf("%s: approval %s: %v", s.ID(), p.ID, err)
				}
				if len(got.Votes) != 0 || got.Status != fsm.ApprovalPending {
					return "", fmt.Errorf("%s: approval %s has %d votes, status %s", s.ID(), p.ID, len(got.Votes), got.Status)
				}
			}
		}
		audit, err := op(leader).Audit(cx, nil)
		if err != nil {
			return "", err
		}
		for _, e := range audit.Recent {
			if e.Type == "approval_vote" {
				return "", fmt.Errorf("audit chain holds a vote: %+v", e)
			}
		}
		return audit.Head, nil
	}
	headBefore, err := votes()
	if err != nil {
		t.Fatal(err)
	}

	// The vote for prod-a, sent to prod-b's URL, on every server.
	for _, s := range c.Running() {
		if code, e := post(s, b.ID, body, sig); code != http.StatusBadRequest || e.Code != "wrong_approval" || !strings.Contains(e.Message, a.ID) {
			t.Errorf("vote for %s replayed onto %s via %s: %d %+v, want 400 wrong_approval naming the approval it was signed for", a.ID, b.ID, s.ID(), code, e)
		}
	}
	// The same body with its approval id edited no longer verifies.
	edited := bytes.Replace(body, []byte(a.ID), []byte(b.ID), 1)
	if code, e := post(leader, b.ID, edited, sig); code != http.StatusForbidden || e.Code != "bad_signature" {
		t.Errorf("re-targeted vote: %d %+v, want 403 bad_signature", code, e)
	}
	headAfter, err := votes()
	if err != nil {
		t.Fatalf("after the replays: %v", err)
	}
	if headAfter != headBefore {
		t.Errorf("audit head moved from %s to %s on refused votes", headBefore, headAfter)
	}

	// The genuine vote counts once; replayed onto its own approval it is
	// refused by its nonce.
	if code, e := post(leader, a.ID, body, sig); code != http.StatusOK {
		t.Fatalf("the genuine vote: %d %+v", code, e)
	}
	if code, e := post(c.Others(leader)[0], a.ID, body, sig); code != http.StatusForbidden || e.Code != "replayed_nonce" {
		t.Errorf("the vote replayed onto its own approval: %d %+v, want 403 replayed_nonce", code, e)
	}
	got, err := op(leader).Approval(cx, a.ID)
	if err != nil || len(got.Votes) != 1 || got.Status != fsm.ApprovalPending {
		t.Fatalf("prod-a after one vote and its replay: %+v %v, want one vote, still pending", got, err)
	}
}

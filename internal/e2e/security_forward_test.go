package e2e_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// TestLeaderRechecksForwardedCallersOverTheWire plays a compromised
// follower host against a real three-process TLS cluster: a process
// holding a valid server certificate of the federation CA dials the
// leader's Raft port and sends forwarding frames of its own making. A
// tenant write with a reader's token, a tenant write naming no caller, a
// leader-only command (an agent registry entry) with the bootstrap token
// and an agent report as another node with an agent token bound elsewhere
// are each refused with the code that says why; no server applies any of
// them, and every server's audit chain gets no entry but the operator's own
// write over the same connection (applied on every server) and the
// leader's own task plans.
func TestLeaderRechecksForwardedCallersOverTheWire(t *testing.T) {
	c := startCluster(t)
	leader := waitLeader(t, c)
	registerRegion(t, c, leader, "us-east")
	base := ctx(t, 60*time.Second)
	reader, err := leader.Client.CreateToken(base, fsm.RoleReader, "forward attack reader")
	if err != nil {
		t.Fatal(err)
	}
	agentTok, err := c.Sec.AgentToken("us-east-a1", "us-east")
	if err != nil {
		t.Fatal(err)
	}
	files, err := c.Sec.CA.WriteNode(t.TempDir(), "rogue-server", c.Sec.CAPath,
		[]string{"rogue-server", tlsutil.ServerName}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := tlsutil.ClientConfig(files, tlsutil.ServerName)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := cluster.DialForward(leader.Config.RaftAddr, tlsCfg, 5*time.Second)
	if err != nil {
		t.Fatalf("a server certificate on the leader's Raft port: %v", err)
	}
	defer fc.Close()

	audit, err := leader.Client.Audit(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	tenant := fsm.TenantUpsert{Tenant: fsm.Tenant{ID: "fwd-victim", HomeRegion: "us-east"}, At: now}
	attacks := []struct {
		name   string
		caller string
		t      fsm.MessageType
		cmd    any
		code   string
	}{
		{"a tenant write with a reader's token", reader.Secret, fsm.TenantUpsertType, tenant, "forbidden_role"},
		{"a tenant write naming no caller", "", fsm.TenantUpsertType, tenant, "no_caller"},
		{"an agent registry entry with the bootstrap token", procs.Token, fsm.AgentUpsertType,
			fsm.AgentUpsert{Agent: fsm.Agent{Node: "ghost-a1", Region: "us-east", Status: fsm.AgentAlive}, At: now}, "leader_only"},
		{"an agent report as another node", agentTok, fsm.AgentReportType, fsm.AgentReport{Node: "us-east-a2", At: now}, "token_binding"},
	}
	for _, a := range attacks {
		res, err := fc.Apply(base, a.caller, a.t, a.cmd)
		var fe *fsm.Error
		if !errors.As(err, &fe) || !errors.Is(fe.Kind, fsm.ErrForbidden) || fe.Code != a.code {
			t.Errorf("%s: %v (result %+v), want it refused as forbidden %s", a.name, err, res, a.code)
		}
	}

	// The operator's own write over the same connection goes through: the
	// refusals above are the leader's judgement of each caller.
	legit := fsm.TenantUpsert{Tenant: fsm.Tenant{ID: "fwd-legit", HomeRegion: "us-east"}, At: time.Now().UnixNano()}
	res, err := fc.Apply(base, procs.Token, fsm.TenantUpsertType, legit)
	if err != nil || res.Err != nil {
		t.Fatalf("the operator's forwarded tenant write: %v %+v", err, res)
	}
	for _, s := range c.Running() {
		if _, _, err := s.Client.Tenant(base, "fwd-legit", nil); err != nil {
			t.Errorf("%s: the operator's forwarded tenant: %v", s.ID(), err)
		}
		tenants, _, err := s.Client.Tenants(base, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range tenants {
			if tn.ID == "fwd-victim" {
				t.Errorf("%s holds the tenant a refused forwarded write made", s.ID())
			}
		}
		agents, _, err := s.Client.Agents(base, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ag := range agents {
			if ag.Node == "ghost-a1" || ag.Node == "us-east-a2" {
				t.Errorf("%s holds agent %s from a refused forwarded command", s.ID(), ag.Node)
			}
		}
		after, err := s.Client.Audit(base, nil)
		if err != nil {
			t.Fatal(err)
		}
		// After the baseline the chain holds the operator's write and
		// what the leader plans on its own (the new region's tasks), and
		// nothing else: no entry, applied or refused, of an attack.
		var tenantWrites int
		for _, e := range after.Recent {
			if e.Index <= audit.Index {
				continue
			}
			switch {
			case e.Type == fsm.TenantUpsertType.String():
				tenantWrites++ // the operator's write, once
			case e.Type == fsm.TaskPlanType.String():
			default:
				t.Errorf("%s: audit entry %d of type %s after the refused forwarded commands", s.ID(), e.Index, e.Type)
			}
		}
		if tenantWrites > 1 {
			t.Errorf("%s: %d tenant writes in the audit chain, want only the operator's", s.ID(), tenantWrites)
		}
	}
}

package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestLeaderRechecksForwardedCallers: a follower forwards its caller's
// token with each command, and the leader checks again that this caller
// may make it, as a misbehaving server would not: a reader's tenant write,
// an agent token reporting as another agent or creating a token, an
// operator's forwarded agent registry change or approval prune (leader-only
// commands), a reader retiring the bootstrap token, a command naming
// another requester than its caller and a command that names no caller are
// refused, and none is applied.
func TestLeaderRechecksForwardedCallers(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	base := testcluster.Ctx(t, 30*time.Second)
	c.RegisterRegion(&fsm.Region{Name: "home", URL: "https://home.example:8443", Tier: fsm.TierStaging})
	reader, err := l.Client.CreateToken(base, fsm.RoleReader, "forward test")
	if err != nil {
		t.Fatal(err)
	}
	agentTok := c.AgentToken("home-a1", "home")
	c.Settle()
	as := func(token string) context.Context { return structs.WithCaller(base, token) }
	tenant := fsm.TenantUpsert{Tenant: fsm.Tenant{ID: "t1", HomeRegion: "home"}, At: time.Now().UnixNano()}
	before := l.Server.FSM().AppliedIndex()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		t    fsm.MessageType
		cmd  any
		code string
	}{
		{"a reader writes a tenant", as(reader.Secret), fsm.TenantUpsertType, tenant, "forbidden_role"},
		{"an unknown token", as("atf_not_a_token"), fsm.TenantUpsertType, tenant, "invalid_token"},
		{"an agent token reports as another agent", as(agentTok), fsm.AgentReportType, fsm.AgentReport{Node: "other-a1", At: time.Now().UnixNano()}, "token_binding"},
		{"an agent token makes a token", as(agentTok), fsm.TokenCreateType, fsm.TokenCreate{Token: fsm.Token{Accessor: "00112233445566778899aabbccddeeff", SecretHash: httpapi.HashToken("x"), Role: fsm.RoleOperator}, At: time.Now().UnixNano()}, "forbidden_role"},
		{"an operator forwards a leader-only command", as(testcluster.Token), fsm.AgentUpsertType, fsm.AgentUpsert{Agent: fsm.Agent{Node: "ghost", Region: "home", Status: fsm.AgentAlive}, At: time.Now().UnixNano()}, "leader_only"},
		{"no caller", base, fsm.TenantUpsertType, tenant, "no_caller"},
		{"an operator forwards a leader-only approval prune", as(testcluster.Token), fsm.ApprovalPruneType, fsm.ApprovalPrune{IDs: []string{"appr-0001"}, At: time.Now().UnixNano()}, "leader_only"},
		{"a reader retires the bootstrap token", as(reader.Secret), fsm.BootstrapRetireType, fsm.BootstrapRetire{By: reader.Accessor, At: time.Now().UnixNano()}, "forbidden_role"},
		{"an operator retires it in another's name", as(testcluster.Token), fsm.BootstrapRetireType, fsm.BootstrapRetire{By: reader.Accessor, At: time.Now().UnixNano()}, "requested_by"},
		{"an operator forwards a backup record (leader only)", as(testcluster.Token), fsm.BackupRecordType, fsm.BackupRecord{Backup: "home-1", Region: "home", Generation: 1, Agent: "home-a1", At: time.Now().UnixNano()}, "leader_only"},
		{"an agent asks for a backup", as(agentTok), fsm.BackupRequestType, fsm.BackupRequest{Region: "home", Type: fsm.BackupFull, Reason: fsm.BackupReasonManual, At: time.Now().UnixNano()}, "forbidden_role"},
		{"an operator forwards the schedule's backup request", as(testcluster.Token), fsm.BackupRequestType, fsm.BackupRequest{Region: "home", Type: fsm.BackupFull, Reason: fsm.BackupReasonSchedule, At: time.Now().UnixNano()}, "requested_by"},
		{"an operator forwards a rebuild record (leader only)", as(testcluster.Token), fsm.RebuildRecordType, fsm.RebuildRecord{Rebuild: "home-r1", Region: "home", Generation: 1, Agent: "home-a1", At: time.Now().UnixNano()}, "leader_only"},
		{"an agent asks for a rebuild", as(agentTok), fsm.RebuildRequestType, fsm.RebuildRequest{Region: "home", At: time.Now().UnixNano()}, "forbidden_role"},
		{"an operator asks for a rebuild in another's name", as(testcluster.Token), fsm.RebuildRequestType, fsm.RebuildRequest{Region: "home", RequestedBy: reader.Accessor, At: time.Now().UnixNano()}, "requested_by"},
		{"an operator forwards a divergence count (leader only)", as(testcluster.Token), fsm.DivergenceRecordType, fsm.DivergenceRecord{Tenant: "t1", Region: "home", Tables: map[string]int64{"public.orders": 1}, At: time.Now().UnixNano()}, "leader_only"},
		{"a divergence resolve in another's name", as(testcluster.Token), fsm.DivergenceRecordType, fsm.DivergenceRecord{Tenant: "t1", Region: "home", Resolve: true, RequestedBy: reader.Accessor, At: time.Now().UnixNano()}, "requested_by"},
		{"a reader resolves a divergence", as(reader.Secret), fsm.DivergenceRecordType, fsm.DivergenceRecord{Tenant: "t1", Region: "home", Resolve: true, RequestedBy: reader.Accessor, At: time.Now().UnixNano()}, "forbidden_role"},
		{"an approval in another requester's name", as(testcluster.Token), fsm.ApprovalCreateType, fsm.ApprovalCreate{ID: "appr-0000000000000001", Action: fsm.ActionRegisterProductionRegion, RequestedBy: reader.Accessor, At: time.Now().UnixNano()}, "requested_by"},
	} {
		_, err := f.Server.ForwardApply(tc.ctx, tc.t, tc.cmd, time.Now().UnixNano())
		var fe *fsm.Error
		if !errors.As(err, &fe) || !errors.Is(fe.Kind, fsm.ErrForbidden) || fe.Code != tc.code {
			t.Errorf("%s: %v, want forbidden %s", tc.name, err, tc.code)
		}
	}
	if after := l.Server.FSM().AppliedIndex(); after != before {
		var tenants, agents int
		l.Server.FSM().Read(func(s *fsm.State) { tenants, agents = len(s.Tenants), len(s.Agents) })
		if tenants != 0 || agents != 0 {
			t.Fatalf("a refused forwarded command was applied: %d tenants, %d agents", tenants, agents)
		}
	}
	// The operator's forwarded write goes through.
	res, err := f.Server.ForwardApply(as(testcluster.Token), fsm.TenantUpsertType, tenant, time.Now().UnixNano())
	if err != nil || res.Err != nil {
		t.Fatalf("an operator's forwarded tenant write: %v %v", err, res)
	}
}

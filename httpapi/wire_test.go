package httpapi_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestClientDecodesEveryAnswerStrictly: the Go client, refusing unknown
// fields, reads every answer the server gives it about a federation with
// every kind of object (regions with a reported database, agents and their
// tasks, tenants, a global table, members, a token, a pending approval).
// A field the server sends and the client's types lack fails the call:
// that is how the client's own copy of the region view, which lacked the
// database, would have been caught. The calls go to a follower, so the
// answers that cross the forwarding RPC or are proxied are covered too.
func TestClientDecodesEveryAnswerStrictly(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{GatedPolicy: true})
	l := c.WaitLeader()
	f := c.Followers()[0]
	ctx := testcluster.Ctx(t, 2*time.Minute)
	strict := func(opts ...client.Option) *client.Client {
		return c.NewClient(f, append(opts, client.WithStrictDecoding())...)
	}
	api := strict()

	c.RegisterRegion(&fsm.Region{Name: "us-east", URL: "https://us-east.example.com"})
	c.RegisterRegion(&fsm.Region{Name: "eu-west", URL: "https://eu-west.example.com"})
	ep := fsm.DatabaseEndpoint{Host: "10.1.2.3", Port: 5432, Database: "atomfed"}
	c.AddAgentWith("eu-west-a1", "eu-west", testcluster.AgentOptions{Database: &ep})
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err := strict(client.WithSigner(c.Signer("alice"))).RegisterMember(ctx, "alice", fsm.MemberApprover)
	must("register an approver", err)
	_, pending, err := strict(client.WithSigner(c.Signer("prod-1"))).RegisterRegionGated(ctx,
		&fsm.Region{Name: "prod-1", URL: "https://prod-1.example.com", Tier: fsm.TierProduction}, nil)
	must("register a production region", err)
	if pending == nil || pending.ID == "" {
		t.Fatalf("a production registration under the gated policy answered no pending approval: %+v", pending)
	}
	_, err = api.PutTenant(ctx, &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"}}, nil)
	must("put a tenant", err)
	_, err = api.PutGlobalTable(ctx, &fsm.GlobalTable{Name: "public.currencies", WriterRegion: "us-east"}, nil)
	must("put a global table", err)
	_, err = api.CreateToken(ctx, fsm.RoleReader, "strict decoding")
	must("create a token", err)
	testutil.Eventually(t, 30*time.Second, func() error {
		v, _, err := api.RegionView(ctx, "eu-west", nil)
		if err != nil {
			return err
		}
		if v.Database == nil || *v.Database != ep || v.Health.AgentsTotal == 0 {
			return fmt.Errorf("eu-west without its agent's database report: %+v", v)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := api.NearestRegions(ctx, l.ID)
		return err // until the leader has a Serf coordinate
	})
	c.Settle()

	views, _, err := api.RegionViews(ctx, nil)
	must("region views", err)
	withDB := 0
	for _, v := range views {
		if v.Database != nil {
			withDB++
		}
	}
	if len(views) != 2 || withDB != 1 {
		t.Fatalf("region views: %d regions, %d with a database; want 2 and 1: %+v", len(views), withDB, views)
	}
	regions, _, err := api.Regions(ctx, nil)
	must("regions", err)
	agents, _, err := api.Agents(ctx, "", nil)
	must("agents", err)
	tasks, _, err := api.Tasks(ctx, "", "", "", nil)
	must("tasks", err)
	_, _, err = api.AgentTasks(ctx, "eu-west-a1", 0, 0)
	must("agent tasks", err)
	tenants, _, err := api.Tenants(ctx, "", nil)
	must("tenants", err)
	_, _, err = api.Tenant(ctx, "acme", nil)
	must("tenant", err)
	_, _, err = api.TenantReplication(ctx, "acme", nil)
	must("tenant replication", err)
	_, err = api.Replication(ctx, nil)
	must("replication summary", err)
	rt, _, err := api.Route(ctx, client.RouteRequest{Tenant: "acme", Op: "read", From: "eu-west"}, nil)
	must("route", err)
	if rt.Region == "" || len(rt.Alternatives) == 0 {
		t.Errorf("route decoded empty: %+v", rt)
	}
	_, err = api.RegionDatabase(ctx, "eu-west", nil)
	must("region database", err)
	members, err := api.TrustMembers(ctx, "")
	must("trust members", err)
	bundle, err := api.TrustBundle(ctx)
	must("trust bundle", err)
	tokens, err := api.ListTokens(ctx)
	must("tokens", err)
	approvals, err := api.Approvals(ctx, "")
	must("approvals", err)
	_, err = api.Approval(ctx, pending.ID)
	must("approval", err)
	_, err = api.Policy(ctx)
	must("approval policy", err)
	audit, err := api.Audit(ctx, nil)
	must("audit", err)
	_, err = api.Health(ctx)
	must("health", err)
	_, err = api.Leader(ctx)
	must("leader", err)
	_, err = api.Peers(ctx)
	must("peers", err)
	_, err = api.Members(ctx)
	must("serf members", err)
	servers, err := api.RaftConfiguration(ctx, nil)
	must("raft configuration", err)
	_, err = api.Coordinates(ctx)
	must("coordinates", err)
	_, err = api.PolicyStatus(ctx)
	must("policy status", err)
	for what, n := range map[string]int{"regions": len(regions), "agents": len(agents), "tasks": len(tasks), "tenants": len(tenants),
		"members": len(members), "bundle keys": len(bundle.Keys), "tokens": len(tokens), "approvals": len(approvals),
		"audit entries": len(audit.Recent), "servers": len(servers)} {
		if n == 0 {
			t.Errorf("no %s in the answer: the strict decoding checked nothing", what)
		}
	}

	// The answers the client has no method for, decoded as strictly into
	// the types the server encodes them from.
	for path, out := range map[string]any{
		"/global-status":                      &wire.GlobalStatus{},
		"/region/list":                        &wire.RegionList{},
		"/v1/global-tables":                   &wire.GlobalTableList{},
		"/v1/global-tables/public.currencies": &wire.GlobalTableStatus{},
		"/v1/agents/eu-west-a1":               &fsm.Agent{},
		"/v1/trust/members/alice":             &fsm.Member{},
		"/v1/regions/nearest?from=" + l.ID:    &wire.NearestRegions{},
	} {
		if _, err := api.Do(ctx, http.MethodGet, path, nil, nil, out); err != nil {
			t.Errorf("GET %s: %v", path, err)
		}
	}
}

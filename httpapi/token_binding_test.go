package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestAgentTokenActsOnlyAsItsAgent: an agent token is bound to one node and
// region; it says so on /v1/token/self, acts only as that node for that
// region, and may not write regions at all. Every refusal changes nothing.
func TestAgentTokenActsOnlyAsItsAgent(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	mustWrite(t, l, http.MethodPut, "/v1/regions/us-east", regionJSON("us-east"), http.StatusCreated)
	mustWrite(t, l, http.MethodPut, "/v1/regions/eu-west", regionJSON("eu-west"), http.StatusCreated)
	ctx := testcluster.Ctx(t, time.Minute)
	if _, err := l.Client.CreateToken(ctx, fsm.RoleAgent, "unbound"); err == nil || !strings.Contains(err.Error(), "token_binding_required") {
		t.Fatalf("an unbound agent token was made under protocol 4: %v", err)
	}
	tok, err := l.Client.CreateAgentToken(ctx, "us-east-a1", "us-east", "bound")
	if err != nil {
		t.Fatal(err)
	}
	c.Settle()
	bearer := http.Header{"Authorization": {"Bearer " + tok.Secret}}

	r := do(t, f, http.MethodGet, "/v1/token/self", nil, bearer)
	var self wire.TokenInfo
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &self) != nil || self.Role != fsm.RoleAgent ||
		self.Node != "us-east-a1" || self.Region != "us-east" || self.Accessor != tok.Accessor || strings.Contains(string(r.Body), tok.Secret) {
		t.Fatalf("token self: %d %s", r.Status, r.Body)
	}
	if r := do(t, f, http.MethodGet, "/v1/agents/us-east-a1/tasks", nil, bearer); r.Status != http.StatusOK {
		t.Fatalf("an agent may watch its own tasks: %d %s", r.Status, r.Body)
	}
	db := `{"endpoint":{"host":"h","port":1,"database":"a"},"node":"us-east-a1"}`
	for _, tc := range []struct {
		name, method, path string
		body               any
		code               string
	}{
		{"watch another agent's tasks", http.MethodGet, "/v1/agents/eu-west-a1/tasks", nil, "token_binding"},
		{"report as another agent", http.MethodPost, "/v1/agents/eu-west-a1/report", `{}`, "token_binding"},
		{"leave as another agent", http.MethodPost, "/v1/agents/eu-west-a1/leave", `{}`, "token_binding"},
		{"set another region's database", http.MethodPut, "/v1/regions/eu-west/database", db, "token_binding"},
		{"register another agent's key", http.MethodPost, "/v1/trust/members", `{"id":"eu-west-a1","kind":"agent","public_key":"x"}`, "token_binding"},
		{"rotate another member's key", http.MethodPost, "/v1/trust/members/eu-west-a1/keys", `{"public_key":"x"}`, "token_binding"},
		{"register a region", http.MethodPost, "/region/register", regionJSON("ap-south"), "forbidden_role"},
		{"update its own region", http.MethodPut, "/v1/regions/us-east", regionJSON("us-east"), "forbidden_role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stateOf(t, l, "")
			wantError(t, do(t, f, tc.method, tc.path, sendable(tc.body), bearer), http.StatusForbidden, tc.code)
			if after := stateOf(t, l, ""); !after.equal(before) {
				t.Fatal("a refused request changed the state")
			}
		})
	}
}

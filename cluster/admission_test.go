package cluster_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	tu "github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestAgentAdmissionFollowsItsToken: the leader keeps an agent in the
// registry only while an agent token is bound to its name and region.
// Revoking the token removes it (so it holds no task) and lists it as
// refused; a new bound token admits it again.
func TestAgentAdmissionFollowsItsToken(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	c.AddAgent("us-east-a1", "us-east")
	registered := func(want bool) func() error {
		return func() error {
			var got bool
			c.WaitLeader().Server.FSM().Read(func(s *fsm.State) { got = s.Agents["us-east-a1"] != nil })
			if got != want {
				return fmt.Errorf("agent in the registry: %v, want %v", got, want)
			}
			return nil
		}
	}
	refusal := func() string {
		for _, m := range c.WaitLeader().Server.Members() {
			if m.Name == "us-east-a1" {
				return m.Refused
			}
		}
		return ""
	}
	tu.Eventually(t, 15*time.Second, registered(true))
	if r := refusal(); r != "" {
		t.Fatalf("an agent with its bound token is refused: %s", r)
	}

	ctx := testcluster.Ctx(t, 20*time.Second)
	l := c.WaitLeader()
	toks, err := l.Client.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.Node == "us-east-a1" {
			if err := l.Client.RevokeToken(ctx, tk.Accessor); err != nil {
				t.Fatal(err)
			}
		}
	}
	tu.Eventually(t, 15*time.Second, registered(false))
	if r := refusal(); !strings.Contains(r, "no agent token is bound to node \"us-east-a1\" in region \"us-east\"") {
		t.Fatalf("refusal of the agent whose token was revoked: %q", r)
	}

	c.AgentToken("us-east-a1", "us-east")
	tu.Eventually(t, 15*time.Second, registered(true))
	if r := refusal(); r != "" {
		t.Fatalf("the agent is still refused with a bound token: %s", r)
	}
}

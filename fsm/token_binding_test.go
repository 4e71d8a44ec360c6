package fsm

import (
	"bytes"
	"strings"
	"testing"
)

// TestAgentTokenBinding: under RulesTrustBound an agent token must name
// its node and region and other roles must not; under older rules no token
// carries a binding, so an old entry replays as it applied.
func TestAgentTokenBinding(t *testing.T) {
	h := newHarness(t)
	bound := tokenFor("a1", RoleAgent)
	bound.Node, bound.Region = "us-east-a1", "us-east"
	cases := []struct {
		name  string
		tok   Token
		rules int
		code  string
	}{
		{"unbound agent token under protocol 4", tokenFor("a0", RoleAgent), RulesTrustBound, "token_binding_required"},
		{"agent token without a region", func() Token { t := tokenFor("a2", RoleAgent); t.Node = "n1"; return t }(), RulesTrustBound, "token_binding_required"},
		{"agent token with a bad node", func() Token { t := tokenFor("a3", RoleAgent); t.Node, t.Region = "Bad_Node", "us-east"; return t }(), RulesTrustBound, "invalid_token_binding"},
		{"bound operator token", func() Token { t := tokenFor("o1", RoleOperator); t.Node, t.Region = "n1", "us-east"; return t }(), RulesTrustBound, "invalid_token_binding"},
		{"binding under older rules", bound, RulesApprovalBound, "token_binding_unsupported"},
	}
	for _, c := range cases {
		res := h.apply(TokenCreateType, TokenCreate{Token: c.tok, At: 1, Rules: c.rules})
		if e, ok := res.Err.(*Error); !ok || e.Code != c.code {
			t.Fatalf("%s: got %v, want code %s", c.name, res.Err, c.code)
		}
	}
	h.f.Read(func(s *State) {
		if len(s.Tokens) != 0 {
			t.Fatalf("a refused token was stored: %+v", s.Tokens)
		}
	})
	// An agent token made before protocol 4 still applies unbound.
	if res := h.apply(TokenCreateType, TokenCreate{Token: tokenFor("old", RoleAgent), At: 2}); res.Err != nil {
		t.Fatalf("old unbound agent token: %v", res.Err)
	}
	if res := h.apply(TokenCreateType, TokenCreate{Token: bound, At: 3, Rules: RulesTrustBound}); res.Err != nil {
		t.Fatalf("bound agent token: %v", res.Err)
	}
	var snap bytes.Buffer
	h.f.Read(func(s *State) {
		if got := s.BoundAgentToken("us-east-a1", "us-east"); got == nil || got.Accessor != bound.Accessor {
			t.Fatalf("bound token not found by node and region: %+v", got)
		}
		if s.BoundAgentToken("us-east-a1", "eu-west") != nil || s.BoundAgentToken("old", "") != nil {
			t.Fatal("a token was found for another binding")
		}
		_ = WriteSnapshot(&snap, s)
	})
	back, err := ReadSnapshot(bytes.NewReader(snap.Bytes()))
	if err != nil || back.BoundAgentToken("us-east-a1", "us-east") == nil {
		t.Fatalf("binding lost in a snapshot: %v", err)
	}
	bad := strings.Replace(snap.String(), `"node":"us-east-a1"`, `"node":"Not A Label"`, 1)
	if _, err := ReadSnapshot(strings.NewReader(bad)); err == nil {
		t.Fatal("a snapshot with an invalid binding was restored")
	}
}

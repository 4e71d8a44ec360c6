package cluster

import (
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// A Serf tag is not authority: anyone holding the gossip key can join the
// pool with any name and tags. The leader therefore admits a member only
// on an identity the federation issued: a voter must present, on its Raft
// address, a server certificate naming it (under TLS; in plaintext mode
// there is no identity and the gossip key is trusted, which is why
// plaintext is for local experiments only), and an agent must have an
// agent token bound to its node name and region tag (fsm.Token). Refused
// members are logged once, counted in atomfed_serf_members_refused_total
// and listed with the reason in /v1/members.

// Refusal reasons, the metric's label values.
const (
	refusedServerIdentity = "server_identity"
	refusedAgentUnbound   = "agent_unbound"
)

// serverVerifyTimeout bounds the handshake that checks a server's identity.
const serverVerifyTimeout = 3 * time.Second

// refusals are the members this server, as leader, refused, by name.
type refusals struct {
	mu sync.Mutex
	m  map[string]string // member -> reason text
}

// refuse records that member is refused for reason (a label) with a text
// saying what to fix; a new refusal of a member is logged and counted, a
// repeated one is not.
func (s *Server) refuse(member, reason, text string) {
	r := &s.refused
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]string{}
	}
	prev, seen := r.m[member]
	r.m[member] = text
	r.mu.Unlock()
	if seen && prev == text {
		return
	}
	s.logger.Warn("refusing serf member", "member", member, "reason", reason, "detail", text)
	if s.metrics != nil {
		s.metrics.membersRefused.WithLabelValues(reason).Inc()
	}
}

// admit forgets a member's refusal.
func (s *Server) admit(member string) {
	s.refused.mu.Lock()
	delete(s.refused.m, member)
	s.refused.mu.Unlock()
}

// refusal returns why member is refused, or "".
func (s *Server) refusal(member string) string {
	s.refused.mu.Lock()
	defer s.refused.mu.Unlock()
	return s.refused.m[member]
}

// verifyServer checks, under TLS, that a member tagged role=server is a
// server of the federation: its Raft address completes a handshake with a
// server certificate of the CA whose name is the member's (and, since the
// Raft port accepts only server certificates, ours is checked too). In
// plaintext mode there is nothing to check.
func (s *Server) verifyServer(sm serverMember) error {
	if s.stream.tls == nil {
		return nil
	}
	c, raw, err := s.stream.dialStream(sm.RaftAddr, serverVerifyTimeout)
	if err != nil {
		return fmt.Errorf("no server certificate on its raft address %s: %w", sm.RaftAddr, err)
	}
	defer raw.Close()
	tc, ok := c.(*tls.Conn)
	if !ok {
		return fmt.Errorf("raft address %s is not TLS", sm.RaftAddr)
	}
	st := tc.ConnectionState()
	if !tlsutil.PeerIsServer(&st) {
		return fmt.Errorf("the certificate on raft address %s is not a server's", sm.RaftAddr)
	}
	leaf := st.VerifiedChains[0][0]
	if leaf.Subject.CommonName != sm.ID && !slices.Contains(leaf.DNSNames, sm.ID) {
		return fmt.Errorf("the server certificate on raft address %s names %q %v, not the member %q", sm.RaftAddr, leaf.Subject.CommonName, leaf.DNSNames, sm.ID)
	}
	return nil
}

// agentBound reports whether an agent member may be admitted: a token is
// bound to its node name and region. Before the whole cluster speaks
// protocol 4, no token can carry a binding and agents are admitted on
// their tags as before.
func (s *Server) agentBound(a *fsm.Agent) error {
	if min, _ := s.protocols(); min < fsm.RulesTrustBound {
		return nil
	}
	var ok bool
	s.fsm.Read(func(st *fsm.State) { ok = st.BoundAgentToken(a.Node, a.Region) != nil })
	if !ok {
		return fmt.Errorf("no agent token is bound to node %q in region %q: make one with `atomfed token create --role agent --node %s --region %s` and start the agent with it",
			a.Node, a.Region, a.Node, a.Region)
	}
	return nil
}

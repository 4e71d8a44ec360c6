package cluster

import (
	"context"
	"net"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/node"
)

// agentFromMember reads an agent record from a Serf member's tags.
func agentFromMember(m serf.Member) fsm.Agent {
	status := fsm.AgentAlive
	switch m.Status {
	case serf.StatusFailed:
		status = fsm.AgentFailed
	case serf.StatusLeft, serf.StatusLeaving:
		status = fsm.AgentLeft
	}
	var caps []string
	for _, c := range strings.Split(m.Tags[node.TagCapabilities], ",") {
		if c = strings.TrimSpace(c); c != "" {
			caps = append(caps, c)
		}
	}
	sort.Strings(caps)
	capacity, _ := strconv.Atoi(m.Tags[node.TagCapacity])
	return fsm.Agent{
		Node:         m.Name,
		Region:       m.Tags[node.TagRegion],
		Addr:         net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))),
		HTTP:         m.Tags[node.TagHTTP],
		Version:      m.Tags[node.TagVersion],
		Capabilities: caps,
		Capacity:     capacity,
		Status:       status,
	}
}

// sameAgent reports whether the registry already says what Serf says.
func sameAgent(cur *fsm.Agent, want fsm.Agent) bool {
	return cur.Status == want.Status && cur.Region == want.Region && cur.Addr == want.Addr &&
		cur.HTTP == want.HTTP && cur.Version == want.Version && cur.Capacity == want.Capacity &&
		reflect.DeepEqual(cur.Capabilities, want.Capabilities)
}

// reconcileAgent commits a Serf agent member's state to the agent registry
// when it differs, and forgets agents Serf has reaped.
func (s *Server) reconcileAgent(m serf.Member, reaped bool) error {
	var cur *fsm.Agent
	s.fsm.Read(func(st *fsm.State) { cur = st.Agents[m.Name] })
	ctx, cancel := context.WithTimeout(s.shutdownCtx, configChangeTimeout)
	defer cancel()
	if reaped {
		s.admit(m.Name)
		if cur == nil {
			return nil
		}
		return s.applyQuiet(ctx, fsm.AgentDeleteType, fsm.AgentDelete{Node: m.Name, At: time.Now().UnixNano()})
	}
	want := agentFromMember(m)
	if err := s.agentBound(&want); err != nil {
		// Tags are not authority: without a token bound to this name and
		// region the member gets no registry entry, hence no tasks; one
		// admitted before (its token since revoked) is forgotten.
		s.refuse(m.Name, refusedAgentUnbound, err.Error())
		if cur == nil {
			return nil
		}
		return s.applyQuiet(ctx, fsm.AgentDeleteType, fsm.AgentDelete{Node: m.Name, At: time.Now().UnixNano()})
	}
	s.admit(m.Name)
	if cur != nil && sameAgent(cur, want) {
		return nil
	}
	if cur == nil && want.Status == fsm.AgentLeft {
		return nil // never registered, already gone
	}
	if err := fsm.ValidateAgent(&want); err != nil {
		s.logger.Warn("ignoring agent with bad tags", "member", m.Name, "error", err)
		return nil
	}
	if cur == nil || cur.Status != want.Status {
		s.logger.Info("agent status", "agent", m.Name, "region", want.Region, "status", want.Status)
	}
	return s.applyQuiet(ctx, fsm.AgentUpsertType, fsm.AgentUpsert{Agent: want, At: time.Now().UnixNano()})
}

// forgetReapedAgents deletes registry agents that Serf no longer knows at
// all (reaped while there was no leader to see it).
func (s *Server) forgetReapedAgents(known map[string]bool) error {
	var gone []string
	s.fsm.Read(func(st *fsm.State) {
		for _, a := range st.SortedAgents() {
			if !known[a.Node] {
				gone = append(gone, a.Node)
			}
		}
	})
	for _, n := range gone {
		ctx, cancel := context.WithTimeout(s.shutdownCtx, configChangeTimeout)
		err := s.applyQuiet(ctx, fsm.AgentDeleteType, fsm.AgentDelete{Node: n, At: time.Now().UnixNano()})
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// applyQuiet applies a leader-issued command and folds a business rejection
// into the error.
func (s *Server) applyQuiet(ctx context.Context, t fsm.MessageType, body any) error {
	res, err := s.Apply(ctx, t, body)
	if err != nil {
		return err
	}
	return res.Err
}

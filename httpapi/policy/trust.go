package policy

import (
	"context"
	"fmt"
	"strings"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// SignedEvidence is P2's evidence.
type SignedEvidence struct {
	Enforcement      Capability `json:"enforcement"`
	Regions          int        `json:"regions"`
	RegionsWithKey   int        `json:"regions_with_key"`
	AgentsAlive      int        `json:"agents_alive"`
	AgentsWithKey    int        `json:"agents_alive_with_key"`
	ServersWithKey   int        `json:"servers_with_key"`
	RevokedKeys      int        `json:"revoked_keys"`
	RememberedNonces int        `json:"remembered_nonces"`
	Unsigned         []string   `json:"unsigned,omitempty"`
}

// SignedRequests is P2: every region registration and every agent-to-server
// write is signed. Enforcement is in the FSM (every server re-verifies the
// signature it applies); the state is checked for what could still be
// unsigned: a region without a registered key (restored from an old
// snapshot), or an alive agent that never registered one.
func SignedRequests(ctx context.Context, in *Input) structs.PolicyResult {
	ev := SignedEvidence{Enforcement: Capability{InPlace: true,
		What: "region registrations, agent reports and leaves, member registrations, key rotations and approvals must carry an ECDSA P-256 signature " +
			"over the exact body (cosign sign-blob compatible) by a valid member key, a fresh timestamp and an unused nonce; every server verifies it again when it applies the entry",
		Where: []string{"fsm.VerifyAuth", "X-Atomfed-Signature", "httpapi: TestSecurityAttacks"}}}
	in.Source.FSM().Read(func(s *fsm.State) {
		ev.RememberedNonces = len(s.Nonces)
		for _, r := range s.SortedRegions() {
			ev.Regions++
			if m := s.Members[r.Name]; m != nil && m.Kind == fsm.MemberRegion && len(m.Keys) > 0 {
				ev.RegionsWithKey++
			} else {
				ev.Unsigned = append(ev.Unsigned, "region "+r.Name+" has no registered key")
			}
		}
		for _, a := range s.SortedAgents() {
			if a.Status != fsm.AgentAlive {
				continue
			}
			ev.AgentsAlive++
			if m := s.Members[a.Node]; m != nil && m.Kind == fsm.MemberAgent {
				ev.AgentsWithKey++
			} else {
				ev.Unsigned = append(ev.Unsigned, "agent "+a.Node+" is alive without a registered key: its reports cannot be accepted")
			}
		}
		for _, m := range s.Members {
			if m.Kind == fsm.MemberServer {
				ev.ServersWithKey++
			}
			for _, k := range m.Keys {
				if k.Revoked {
					ev.RevokedKeys++
				}
			}
		}
	})
	if len(ev.Unsigned) > 0 {
		return structs.PolicyResult{Status: structs.PolicyBlock, Reason: strings.Join(ev.Unsigned, "; "), Evidence: ev}
	}
	return structs.PolicyResult{Status: structs.PolicyPass, Evidence: ev,
		Reason: fmt.Sprintf("signatures are enforced; all %d regions and %d alive agents hold registered keys", ev.Regions, ev.AgentsAlive)}
}

// ApprovalEvidence is P3's evidence.
type ApprovalEvidence struct {
	Rules     map[string]fsm.ApprovalRule `json:"rules"`
	Approvers int                         `json:"approvers"`
	Pending   int                         `json:"pending"`
	Applied   int                         `json:"applied"`
	Failed    int                         `json:"failed"`
	Expired   int                         `json:"expired"`
	Problems  []string                    `json:"problems,omitempty"`
}

// Approvals is P3: production region additions and failovers need m-of-n
// approvals. It blocks when the policy does not gate them, or gates them
// with more approvals than there are approvers to give them.
func Approvals(ctx context.Context, in *Input) structs.PolicyResult {
	var ev ApprovalEvidence
	in.Source.FSM().Read(func(s *fsm.State) {
		p := s.EffectivePolicy()
		ev.Rules = p.Rules
		approvers := map[string]bool{}
		for _, m := range s.Members {
			if m.Kind == fsm.MemberApprover {
				ev.Approvers++
				approvers[m.ID] = true
			}
		}
		for _, a := range s.Approvals {
			switch a.Status {
			case fsm.ApprovalPending:
				ev.Pending++
			case fsm.ApprovalApplied:
				ev.Applied++
			case fsm.ApprovalFailed:
				ev.Failed++
			case fsm.ApprovalExpired:
				ev.Expired++
			}
		}
		for _, action := range []string{fsm.ActionRegisterProductionRegion, fsm.ActionFailover} {
			r, gated := s.ApprovalRuleFor(action)
			if !gated {
				ev.Problems = append(ev.Problems, action+" needs no approval under the current policy")
				continue
			}
			able := ev.Approvers
			if len(r.Approvers) > 0 {
				able = 0
				for _, id := range r.Approvers {
					if approvers[id] {
						able++
					}
				}
			}
			if able < r.Required {
				ev.Problems = append(ev.Problems, fmt.Sprintf("%s needs %d approvals but only %d approvers are registered", action, r.Required, able))
			}
		}
	})
	if len(ev.Problems) > 0 {
		return structs.PolicyResult{Status: structs.PolicyBlock, Reason: strings.Join(ev.Problems, "; "), Evidence: ev}
	}
	return structs.PolicyResult{Status: structs.PolicyPass, Evidence: ev,
		Reason: fmt.Sprintf("production registrations and failovers need m-of-n approvals and %d approvers can give them", ev.Approvers)}
}

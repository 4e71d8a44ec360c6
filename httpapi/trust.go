package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// writeGated commits cmd directly, or, when the policy gates its action,
// records it as a pending approval and answers 202 Accepted with the
// approval. action derives the gated action from the state ("" = none) and
// the approval's summary: what approvers are asked to approve.
func (a *API) writeGated(w http.ResponseWriter, r *http.Request, body []byte, t fsm.MessageType, cmd any,
	action func(*fsm.State) (act, summary string), auth *fsm.SignedAuth, at int64, ok func(*fsm.ApplyResult)) {
	if auth != nil {
		if err := a.precheckAuth(auth, at); err != nil {
			writeError(w, err)
			return
		}
	}
	var act, summary string
	gated := false
	a.c.FSM().Read(func(s *fsm.State) {
		if act, summary = action(s); act != "" {
			_, gated = s.ApprovalRuleFor(act)
		}
	})
	if !gated {
		a.write(w, r, body, t, cmd, ok)
		return
	}
	// The approved command carries the rules it is checked under, as the
	// approval does (stamped when it is logged).
	if r, ok := cmd.(fsm.Ruled); ok {
		rules, _ := a.c.Protocols()
		cmd = r.WithRules(rules)
	}
	data, err := fsm.EncodeJSON(t, cmd)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(data)-2 > fsm.MaxApprovalCommand {
		// Every server keeps an approval until it is pruned: refused
		// before it reaches the log (the FSM refuses it too).
		writeError(w, badRequest("approval_too_large", fmt.Sprintf("a request that needs approval is at most %d bytes once encoded (this one is %d): send only the object's fields, without padding", fsm.MaxApprovalCommand, len(data)-2)))
		return
	}
	ac := fsm.ApprovalCreate{ID: "appr-" + randomHex(8), Action: act, Summary: summary, CommandType: uint8(t),
		Command: data[2:], RequestedBy: identityOf(r).Accessor, At: at}
	a.write(w, r, body, fsm.ApprovalCreateType, ac, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusAccepted, res.Value)
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// memberInput registers an agent, approver or server key.
type memberInput struct {
	wire.MemberRequest
	wire.Envelope
}

func (a *API) registerMember(w http.ResponseWriter, r *http.Request) {
	var in memberInput
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	if identityOf(r).Role == fsm.RoleAgent && in.Kind != fsm.MemberAgent {
		writeError(w, forbidden("forbidden_role", "an agent token may only register agent keys"))
		return
	}
	if err := actsAs(identityOf(r), in.ID); err != nil {
		writeError(w, err)
		return
	}
	auth, err := signedAuth(r, body, in.Envelope)
	if err != nil {
		writeError(w, err)
		return
	}
	at := a.stamp()
	cmd := fsm.MemberRegister{ID: in.ID, Kind: in.Kind, PublicKey: in.PublicKey, Auth: auth, At: at, RequestedBy: identityOf(r).Accessor}
	rules, _ := a.c.Protocols()
	action := func(s *fsm.State) (string, string) {
		return trustAction(s, fsm.MemberRegisterAction(in.Kind, rules)), "register " + in.Kind + " member " + in.ID
	}
	a.writeGated(w, r, body, fsm.MemberRegisterType, cmd, action, auth, at, func(res *fsm.ApplyResult) {
		m := res.Value.(*fsm.Member)
		writeJSON(w, createdOrOK(m.CreateIndex, res.Index), m)
	})
}

func (a *API) listMembers(w http.ResponseWriter, r *http.Request) {
	kind := r.URL.Query().Get("kind")
	a.read(w, r, func(s *view) (any, uint64, error) {
		out := []*fsm.Member{}
		for _, m := range s.SortedMembers() {
			if kind == "" || m.Kind == kind {
				out = append(out, m)
			}
		}
		return wire.MemberList{Members: out}, s.TableIndex(fsm.TableMembers), nil
	})
}

func (a *API) getMember(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		m := s.Members[id]
		if m == nil {
			return nil, s.TableIndex(fsm.TableMembers), notFound("member_not_found", "member "+quote(id)+" does not exist")
		}
		return m, s.TableIndex(fsm.TableMembers), nil
	})
}

// rotateInput announces a member's new key, signed by a current one.
type rotateInput struct {
	wire.KeyRotateRequest
	wire.Envelope
}

func (a *API) rotateKey(w http.ResponseWriter, r *http.Request) {
	if err := actsAs(identityOf(r), mux.Vars(r)["id"]); err != nil {
		writeError(w, err)
		return
	}
	var in rotateInput
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	auth, err := signedAuth(r, body, in.Envelope)
	if err != nil {
		writeError(w, err)
		return
	}
	at := a.stamp()
	cmd := fsm.KeyRotate{Member: mux.Vars(r)["id"], PublicKey: in.PublicKey, Auth: auth, At: at}
	rules, _ := a.c.Protocols()
	action := func(s *fsm.State) (string, string) {
		return fsm.KeyRotateAction(s, cmd.Member, rules), "new key for production region " + cmd.Member
	}
	a.writeGated(w, r, body, fsm.KeyRotateType, cmd, action, auth, at, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value)
	})
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	at := a.stamp()
	cmd := fsm.KeyRevoke{Member: v["id"], KeyID: v["key"], At: at}
	action := func(*fsm.State) (string, string) {
		return fsm.ActionRevokeKey, "revoke key " + v["key"] + " of " + v["id"]
	}
	a.writeGated(w, r, nil, fsm.KeyRevokeType, cmd, action, nil, at, func(res *fsm.ApplyResult) { writeJSON(w, http.StatusOK, res.Value) })
}

func (a *API) deleteMember(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	action := func(s *fsm.State) (string, string) {
		return trustAction(s, fsm.ActionDeleteMember), "delete member " + id
	}
	at := a.stamp()
	a.writeGated(w, r, nil, fsm.MemberDeleteType, fsm.MemberDelete{ID: id, At: at}, action, nil, at, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, wire.DeleteResponse{Deleted: "member", Name: id, Index: res.Index})
	})
}

// trustAction is action once the trust is sealed (the federation has its
// approvers), and "" (direct, the bootstrap window) before: the leader's
// FSM decides again when it applies the command.
func trustAction(s *fsm.State, action string) string {
	if action == "" || !s.TrustSealed() {
		return ""
	}
	return action
}

// trustBundle serves the currently trusted keys, signed by this server's
// key (itself in the bundle), so a region can verify what it fetched.
func (a *API) trustBundle(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Signer == nil {
		writeError(w, unavailable("no_server_key", "this server has no signing key"))
		return
	}
	now := a.now().UnixNano()
	a.read(w, r, func(s *view) (any, uint64, error) {
		b := wire.TrustBundle{Sequence: s.TrustSeq, IssuedAt: time.Unix(0, now).UTC(), Issuer: a.c.NodeID(), Keys: []wire.BundleKey{}}
		for _, m := range s.SortedMembers() {
			for _, k := range m.Keys {
				if k.ValidAt(now) {
					b.Keys = append(b.Keys, wire.BundleKey{Member: m.ID, Kind: m.Kind, KeyID: k.KeyID, PublicKey: k.PublicKey, NotAfter: k.NotAfter})
				}
			}
		}
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, 0, err
		}
		sig, err := a.cfg.Signer.Sign(raw)
		if err != nil {
			return nil, 0, err
		}
		return wire.SignedBundle{Bundle: raw, Signature: sig, KeyID: a.cfg.Signer.KeyID, PublicKey: string(a.cfg.Signer.PublicPEM)}, s.TableIndex(fsm.TableMembers), nil
	})
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) {
	var in wire.TokenRequest
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	if !fsm.ValidRole(in.Role) {
		writeError(w, badRequest("invalid_role", "role "+quote(in.Role)+" must be operator, approver, agent or reader"))
		return
	}
	secret := "atf_" + randomHex(32)
	tok := fsm.Token{Accessor: randomHex(16), SecretHash: HashToken(secret), Role: in.Role, Description: in.Description, Node: in.Node, Region: in.Region}
	a.write(w, r, body, fsm.TokenCreateType, fsm.TokenCreate{Token: tok, At: a.stamp()}, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusCreated, wire.TokenSecret{Accessor: tok.Accessor, Secret: secret, Role: tok.Role, Description: tok.Description, Node: tok.Node, Region: tok.Region})
	})
}

// tokenSelf is GET /v1/token/self: what the caller's token is (accessor,
// role, binding; never the secret), so that an agent can check at start
// that it was given a token bound to it, and an operator what a token is.
func (a *API) tokenSelf(w http.ResponseWriter, r *http.Request) {
	id := identityOf(r)
	out := wire.TokenInfo{Accessor: id.Accessor, Role: id.Role, Node: id.Node, Region: id.Region}
	if id.Accessor != BootstrapAccessor {
		a.c.FSM().Read(func(s *fsm.State) {
			if t := s.Tokens[id.Accessor]; t != nil {
				out.Description, out.CreatedAt = t.Description, t.CreatedAt
			}
		})
	} else {
		out.Description = "the servers' FEDERATION_TOKEN"
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		out := wire.TokenList{Tokens: []wire.TokenInfo{}}
		for _, t := range s.SortedTokens() {
			out.Tokens = append(out.Tokens, wire.TokenInfo{Accessor: t.Accessor, Role: t.Role, Description: t.Description, Node: t.Node, Region: t.Region, CreatedAt: t.CreatedAt})
		}
		return out, s.TableIndex(fsm.TableTokens), nil
	})
}

func (a *API) deleteToken(w http.ResponseWriter, r *http.Request) {
	acc := mux.Vars(r)["accessor"]
	if acc == BootstrapAccessor {
		// The servers' FEDERATION_TOKEN: retired on every server, for good.
		a.write(w, r, nil, fsm.BootstrapRetireType, fsm.BootstrapRetire{By: identityOf(r).Accessor, At: a.stamp()}, func(res *fsm.ApplyResult) {
			writeJSON(w, http.StatusOK, wire.DeleteResponse{Deleted: "token", Name: acc, Index: res.Index})
		})
		return
	}
	a.write(w, r, nil, fsm.TokenDeleteType, fsm.TokenDelete{Accessor: acc, At: a.stamp()}, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, wire.DeleteResponse{Deleted: "token", Name: acc, Index: res.Index})
	})
}

// trustStatus answers GET /v1/trust/status: whether the bootstrap window
// is closed and the bootstrap token retired.
func (a *API) trustStatus(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		return wire.TrustStatus{Sealed: s.TrustSealed(), SealedIndex: s.Trust.SealedIndex, ApproversNeeded: s.TrustThreshold(),
				Approvers: s.EligibleApprovers(), BootstrapRetired: s.Trust.BootstrapRetired, BootstrapRetiredIndex: s.Trust.BootstrapRetiredIndex,
				RestoreGrants: s.Trust.RestoreGrants},
			max(s.TableIndex(fsm.TablePolicy), s.TableIndex(fsm.TableMembers), s.TableIndex(fsm.TableTokens), s.TableIndex(fsm.TableApprovals)), nil
	})
}

func (a *API) getPolicy(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		return s.EffectivePolicy(), s.TableIndex(fsm.TablePolicy), nil
	})
}

func (a *API) putPolicy(w http.ResponseWriter, r *http.Request) {
	var p fsm.Policy
	body, _, err := decodeWrite(w, r, &p)
	if err != nil {
		writeError(w, err)
		return
	}
	action := func(s *fsm.State) (string, string) {
		return trustAction(s, fsm.ActionSetPolicy), "set the approval policy"
	}
	at := a.stamp()
	a.writeGated(w, r, body, fsm.PolicySetType, fsm.PolicySet{Policy: p, At: at}, action, nil, at, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value)
	})
}

func (a *API) listApprovals(w http.ResponseWriter, r *http.Request) {
	status := r.URL.Query().Get("status")
	a.read(w, r, func(s *view) (any, uint64, error) {
		out := []*fsm.Approval{}
		for _, ap := range s.SortedApprovals() {
			if status == "" || ap.Status == status {
				out = append(out, ap)
			}
		}
		return wire.ApprovalList{Approvals: out}, s.TableIndex(fsm.TableApprovals), nil
	})
}

func (a *API) getApproval(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		ap := s.Approvals[id]
		if ap == nil {
			return nil, s.TableIndex(fsm.TableApprovals), notFound("approval_not_found", "approval "+quote(id)+" does not exist")
		}
		return ap, s.TableIndex(fsm.TableApprovals), nil
	})
}

// approve records an approver's signed approval; the m-th one applies the
// action in the same raft entry.
func (a *API) approve(w http.ResponseWriter, r *http.Request) {
	var vote wire.VoteRequest
	body, _, err := decodeWrite(w, r, &vote)
	if err != nil {
		writeError(w, err)
		return
	}
	if vote.Approval != mux.Vars(r)["id"] {
		writeError(w, badRequest("wrong_approval", "the body approves "+quote(vote.Approval)+" but the path names "+quote(mux.Vars(r)["id"])+": sign a body with approval and digest as GET /v1/approvals/{id} shows them"))
		return
	}
	auth, err := signedAuth(r, body, vote.Envelope)
	if err != nil {
		writeError(w, err)
		return
	}
	at := a.stamp()
	cmd := fsm.ApprovalVote{ID: mux.Vars(r)["id"], Auth: auth, At: at}
	a.writeSigned(w, r, body, fsm.ApprovalVoteType, cmd, auth, at, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value)
	})
}

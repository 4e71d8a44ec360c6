package httpapi

import (
	"crypto/subtle"
	"errors"
	"slices"
	"strings"

	"github.com/atomcloud/atomfed/fsm"
)

// A follower checks a request's token, role and binding, then forwards
// only the command to the leader. The leader does not take the follower's
// word for it: the follower forwards its caller's token too, and the
// leader checks again here that this caller may make this command, with
// the role sets and bindings of the routes that make it. Commands only the
// leader issues (agent registry, task plans, server keys, expiries, sync
// states, refences) are never accepted from a forwarder.

// forwardedRoles is, per command an API route makes, the roles its routes
// accept. A command not listed here is checked only for a valid token of a
// role that writes (writers): list every new command an API route makes,
// with its routes' roles and, in authorizeCommand, its binding.
var forwardedRoles = map[fsm.MessageType][]string{
	fsm.RegionUpsertType:      operators,
	fsm.RegionDeleteType:      operators,
	fsm.TenantUpsertType:      operators,
	fsm.TenantDeleteType:      operators,
	fsm.TenantPatchType:       operators,
	fsm.GlobalTableUpsertType: operators,
	fsm.GlobalTableDeleteType: operators,
	fsm.MemberDeleteType:      operators,
	fsm.KeyRevokeType:         operators,
	fsm.TokenCreateType:       operators,
	fsm.TokenDeleteType:       operators,
	fsm.PolicySetType:         operators,
	fsm.AgentReportType:       agents,
	fsm.AgentLeaveType:        agents,
	fsm.RegionDatabaseType:    agents,
	fsm.MemberRegisterType:    agents,
	fsm.KeyRotateType:         signers,
	fsm.ApprovalVoteType:      approvers,
	fsm.ApprovalCreateType:    anyRole, // checked as the action it wraps
	fsm.BootstrapRetireType:   operators,
	fsm.SnapshotRestoreType:   operators, // only ever inside an approval
	fsm.SwitchoverStartType:   operators,
	fsm.SwitchoverAbortType:   operators,
	fsm.DivergenceRecordType:  operators, // only a resolve; the leader records counts itself
	fsm.FailoverStartType:     operators,
	fsm.BackupPolicySetType:   operators,
	fsm.BackupRequestType:     operators,
	fsm.DrillRequestType:      operators,
	fsm.RebuildRequestType:    operators,
}

// writers are the roles that make some write; a reader makes none.
var writers = []string{fsm.RoleOperator, fsm.RoleApprover, fsm.RoleAgent}

// leaderOnly are the commands the leader issues itself.
var leaderOnly = map[fsm.MessageType]bool{
	fsm.AgentUpsertType: true, fsm.AgentDeleteType: true, fsm.TaskPlanType: true, fsm.ServerKeySetType: true,
	fsm.ApprovalExpireType: true, fsm.TenantSyncStateType: true, fsm.TasksRefenceType: true, fsm.BatchType: true,
	fsm.ApprovalPruneType: true, fsm.SwitchoverAdvanceType: true, fsm.FailoverAutoType: true, fsm.FailoverHoldType: true, fsm.BackupRecordType: true, fsm.DrillRecordType: true,
	fsm.RebuildRecordType: true,
}

// AuthorizeForwarded is the leader's check of a forwarded command
// (cluster.ForwardAuthorizer): the caller's token must be valid here, its
// role one the command's routes accept, and an agent token bound to the
// node and region the command acts for.
func (a *API) AuthorizeForwarded(token string, t fsm.MessageType, cmd any) error {
	id, ok := a.identityOfToken(token)
	if !ok {
		return forbiddenCmd("invalid_token", "the caller's token is unknown or was revoked on the leader")
	}
	return a.authorizeCommand(id, t, cmd, 0)
}

func (a *API) identityOfToken(secret string) (identity, bool) {
	if b := a.cfg.BootstrapToken; b != "" && secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(b)) == 1 {
		// A follower a moment behind the retirement may still take it;
		// the leader does not.
		return identity{Accessor: BootstrapAccessor, Role: fsm.RoleOperator}, !a.c.FSM().BootstrapRetired()
	}
	var t *fsm.Token
	a.c.FSM().Read(func(s *fsm.State) { t = s.TokenByHash(HashToken(secret)) })
	if t == nil || secret == "" {
		return identity{}, false
	}
	return identity{Accessor: t.Accessor, Role: t.Role, Node: t.Node, Region: t.Region}, true
}

func (a *API) authorizeCommand(id identity, t fsm.MessageType, cmd any, depth int) error {
	if leaderOnly[t] {
		return forbiddenCmd("leader_only", t.String()+" is issued by the leader itself, never forwarded")
	}
	roles, ok := forwardedRoles[t]
	if !ok {
		roles = writers
	}
	if !slices.Contains(roles, id.Role) {
		return forbiddenCmd("forbidden_role", "a "+id.Role+" token may not make "+t.String()+"; it needs one of: "+strings.Join(roles, ", "))
	}
	var err error
	switch c := cmd.(type) {
	case *fsm.AgentReport:
		err = actsAs(id, c.Node)
	case *fsm.AgentLeave:
		err = actsAs(id, c.Node)
	case *fsm.RegionDatabaseReport:
		err = actsFor(id, c.Region)
	case *fsm.MemberRegister:
		switch {
		case id.Role == fsm.RoleAgent && c.Kind != fsm.MemberAgent:
			err = forbidden("forbidden_role", "an agent token may only register agent keys")
		case c.RequestedBy != "" && c.RequestedBy != id.Accessor:
			err = requestedBy(c.RequestedBy)
		default:
			err = actsAs(id, c.ID)
		}
	case *fsm.BootstrapRetire:
		if c.By != id.Accessor {
			err = requestedBy(c.By)
		}
	case *fsm.BackupRequest:
		if c.Reason != fsm.BackupReasonManual || c.RequestedBy != id.Accessor {
			err = forbidden("requested_by", "a forwarded backup request must be a manual one requested by the caller")
		}
	case *fsm.DrillRequest:
		if c.Reason != fsm.BackupReasonManual || c.RequestedBy != id.Accessor {
			err = forbidden("requested_by", "a forwarded drill request must be a manual one requested by the caller")
		}
	case *fsm.RebuildRequest:
		if c.RequestedBy != id.Accessor {
			err = requestedBy(c.RequestedBy)
		}
	case *fsm.KeyRotate:
		err = actsAs(id, c.Member)
	case *fsm.SwitchoverStart:
		if c.RequestedBy != id.Accessor {
			err = requestedBy(c.RequestedBy)
		}
	case *fsm.SwitchoverAbort:
		if c.RequestedBy != id.Accessor {
			err = requestedBy(c.RequestedBy)
		}
	case *fsm.DivergenceRecord:
		switch {
		case !c.Resolve:
			err = forbidden("leader_only", "divergence counts are recorded by the leader from the old home's report, never forwarded; an operator may only mark them reconciled")
		case c.RequestedBy != id.Accessor:
			err = requestedBy(c.RequestedBy)
		}
	case *fsm.FailoverStart:
		if c.RequestedBy != id.Accessor {
			err = requestedBy(c.RequestedBy)
		}
	case *fsm.ApprovalCreate:
		// Checked as the action it would apply: whoever may request it.
		if depth > 0 {
			return forbiddenCmd("invalid_command", "an approval cannot wrap an approval")
		}
		if c.RequestedBy != id.Accessor {
			return forbiddenCmd("requested_by", "the approval names "+c.RequestedBy+" as its requester, not the caller")
		}
		wt, wrapped, derr := fsm.DecodeCommand(append([]byte{c.CommandType, fsm.CodecJSON}, c.Command...))
		if derr != nil {
			return derr
		}
		if wt == fsm.ApprovalCreateType {
			return forbiddenCmd("invalid_command", "an approval cannot wrap an approval")
		}
		return a.authorizeCommand(id, wt, wrapped, depth+1)
	}
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return forbiddenCmd(ae.code, ae.message)
		}
		return err
	}
	return nil
}

// requestedBy refuses a command that names another requester than the
// caller whose token came with it (quotas and the audit count requesters).
func requestedBy(named string) error {
	return forbidden("requested_by", "the command names "+named+" as its requester, not the caller")
}

// forbiddenCmd is a refusal that crosses the forwarding RPC (an fsm.Error)
// and reaches the caller as a 403.
func forbiddenCmd(code, msg string) error {
	return &fsm.Error{Kind: fsm.ErrForbidden, Code: code, Message: msg}
}

package fsm

import "fmt"

// This file is the command catalogue: every command type, its number, its
// name and the function that applies it. Numbers are written into raft
// logs and snapshots on disk, so a number is never changed or reused;
// a retired type keeps its line here, marked retired.

// MessageType identifies a command in the Raft log: the first byte of
// every command entry.
type MessageType uint8

// IgnoreUnknownTypeFlag marks a command that a server which does not know
// it may skip. Commands without the flag panic on an older server, which is
// the safe choice for anything that changes state others depend on. A
// skippable command is numbered IgnoreUnknownTypeFlag | n, with n taken
// from its area's block below, so numbers 128-255 mirror the blocks of
// 0-127 and never need blocks of their own.
const IgnoreUnknownTypeFlag MessageType = 128

// typeBlock is a block of command numbers reserved for one area.
type typeBlock struct {
	first, last MessageType
	area        string
}

// typeBlocks are the number blocks, one per area, so that work on
// different areas never picks the same number. Every command type (with
// IgnoreUnknownTypeFlag cleared) lies in the block of its area, and 0 is
// never a command (TestCommandCatalogue checks every constant against
// this table). Numbers 80-127 belong to no area yet: a new area, or an
// area whose block is full (1-9 is), takes its next block from there.
//
// 40 was first filed under disaster recovery and failover, but BatchType
// took it and it is on disk; that area moved to 60-79, which nothing had
// used.
var typeBlocks = []typeBlock{
	{1, 9, "registry (regions, tenants), agents and tasks"},
	{10, 29, "trust: members, keys, tokens, policy and approvals"},
	{30, 39, "replication and federation sync"},
	{40, 49, "log envelopes: entries that carry other commands"},
	{50, 59, "compliance and reports"},
	{60, 79, "switchover, failover and disaster recovery"},
	{80, 89, "registry, agents and tasks, continued (1-9 is full)"},
}

// Command types, by block.
const (
	// 1-9: registry, agents and tasks (registry_apply.go, agents_apply.go).
	RegionUpsertType MessageType = 1
	RegionDeleteType MessageType = 2
	TenantUpsertType MessageType = 3
	TenantDeleteType MessageType = 4
	AgentUpsertType  MessageType = 5
	AgentDeleteType  MessageType = 6
	TaskPlanType     MessageType = 7
	AgentReportType  MessageType = 8
	AgentLeaveType   MessageType = 9

	// 10-29: trust, tokens and approvals (trust_apply.go).
	MemberRegisterType MessageType = 10
	KeyRotateType      MessageType = 11
	KeyRevokeType      MessageType = 12
	MemberDeleteType   MessageType = 13
	TokenCreateType    MessageType = 14
	TokenDeleteType    MessageType = 15
	PolicySetType      MessageType = 16
	ApprovalCreateType MessageType = 17
	ApprovalVoteType   MessageType = 18
	ApprovalExpireType MessageType = 19
	ServerKeySetType   MessageType = 20
	// 21-25: the trust bound to its approvers (trust_seal.go, restore.go).
	BootstrapRetireType MessageType = 21
	SnapshotRestoreType MessageType = 22
	ApprovalPruneType   MessageType = 23

	// 30-39: replication and federation sync (replication_apply.go).
	RegionDatabaseType    MessageType = 30
	TenantSyncStateType   MessageType = 31
	GlobalTableUpsertType MessageType = 32
	GlobalTableDeleteType MessageType = 33

	// 60-69: switchover and failover (switchover_apply.go). A tenant's
	// epoch is kept by TenantUpsert and TenantPatch, and bumped by the
	// commit of a switchover (SwitchoverAdvance to committed).
	SwitchoverStartType   MessageType = 60
	SwitchoverAdvanceType MessageType = 61
	SwitchoverAbortType   MessageType = 62
	// 67: divergence of an old home back after a failover (divergence_apply.go).
	DivergenceRecordType MessageType = 67
	// 63-66: unplanned failover (failover_apply.go): 63 an operator's
	// (approved) failover of one tenant or of a region's tenants, 64 the
	// leader's automatic one.
	FailoverStartType MessageType = 63
	FailoverAutoType  MessageType = 64
	// 65: the leader records that an automatic failover waits, and why.
	FailoverHoldType MessageType = 65

	// 70-79: backups and restore drills (backup_apply.go, drill.go).
	BackupPolicySetType MessageType = 70
	BackupRequestType   MessageType = 71
	BackupRecordType    MessageType = 72
	DrillRequestType    MessageType = 73
	DrillRecordType     MessageType = 74

	// 77-79: rebuilds of a lost region (rebuild.go).
	RebuildRequestType MessageType = 77
	RebuildRecordType  MessageType = 78

	// 80-89: registry, agents and tasks, continued (agents_apply.go,
	// registry_apply.go).
	TasksRefenceType MessageType = 80
	TenantPatchType  MessageType = 81
)

// BatchType is a log entry that carries several commands, committed
// together: the leader groups concurrent writes of different objects into
// one entry, so that one raft round (one fsync on each server, one
// AppendEntries) carries them all. The commands apply in order at the
// entry's index; each has its own result, and a rejected one changes
// nothing while the others apply. Every command in a batch has the same
// raft index, so the leader never puts two commands for the same object in
// one batch (BatchKey): an object's modify index still changes with every
// write to it. It is an envelope, not a command: it is not in the dispatch
// table, and the commands it carries are audited one by one, never the
// batch itself (batch_apply.go).
const BatchType MessageType = 40

// typeNames are the names of the command types, as they appear in audit
// entries and metrics labels. A name, like a number, never changes: audit
// entries already written carry it.
var typeNames = map[MessageType]string{
	RegionUpsertType: "region_upsert",
	RegionDeleteType: "region_delete",
	TenantUpsertType: "tenant_upsert",
	TenantDeleteType: "tenant_delete",
	AgentUpsertType:  "agent_upsert",
	AgentDeleteType:  "agent_delete",
	TaskPlanType:     "task_plan",
	AgentReportType:  "agent_report",
	AgentLeaveType:   "agent_leave",

	MemberRegisterType: "member_register",
	KeyRotateType:      "key_rotate",
	KeyRevokeType:      "key_revoke",
	MemberDeleteType:   "member_delete",
	TokenCreateType:    "token_create",
	TokenDeleteType:    "token_delete",
	PolicySetType:      "policy_set",
	ApprovalCreateType: "approval_create",
	ApprovalVoteType:   "approval_vote",
	ApprovalExpireType: "approval_expire",
	ServerKeySetType:   "server_key_set",

	BootstrapRetireType: "bootstrap_retire",
	SnapshotRestoreType: "snapshot_restore",
	ApprovalPruneType:   "approval_prune",

	RegionDatabaseType:    "region_database",
	TenantSyncStateType:   "tenant_sync_state",
	GlobalTableUpsertType: "global_table_upsert",
	GlobalTableDeleteType: "global_table_delete",

	SwitchoverStartType:   "switchover_start",
	SwitchoverAdvanceType: "switchover_advance",
	SwitchoverAbortType:   "switchover_abort",
	DivergenceRecordType:  "divergence_record",
	FailoverStartType:     "failover_start",
	FailoverAutoType:      "failover_auto",
	FailoverHoldType:      "failover_hold",
	BackupPolicySetType:   "backup_policy_set",
	BackupRequestType:     "backup_request",
	BackupRecordType:      "backup_record",
	DrillRequestType:      "drill_request",
	DrillRecordType:       "drill_record",
	RebuildRequestType:    "rebuild_request",
	RebuildRecordType:     "rebuild_record",

	TasksRefenceType: "tasks_refence",
	TenantPatchType:  "tenant_patch",

	BatchType: "batch",
}

// String returns the command's name as it appears in audit entries.
func (t MessageType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// The dispatch table: which function applies each command type. Every
// named type but BatchType is here; ApplyBatch unwraps a batch and
// dispatches the commands it carries through this same table.
func init() {
	registerCommand[RegionUpsert](RegionUpsertType, applyRegionUpsert)
	registerCommand[RegionDelete](RegionDeleteType, applyRegionDelete)
	registerCommand[TenantUpsert](TenantUpsertType, applyTenantUpsert)
	registerCommand[TenantDelete](TenantDeleteType, applyTenantDelete)
	registerCommand[AgentUpsert](AgentUpsertType, applyAgentUpsert)
	registerCommand[AgentDelete](AgentDeleteType, applyAgentDelete)
	registerCommand[TaskPlan](TaskPlanType, applyTaskPlan)
	registerCommand[AgentReport](AgentReportType, applyAgentReport)
	registerCommand[AgentLeave](AgentLeaveType, applyAgentLeave)

	registerCommand[MemberRegister](MemberRegisterType, applyMemberRegister)
	registerCommand[KeyRotate](KeyRotateType, applyKeyRotate)
	registerCommand[KeyRevoke](KeyRevokeType, applyKeyRevoke)
	registerCommand[MemberDelete](MemberDeleteType, applyMemberDelete)
	registerCommand[TokenCreate](TokenCreateType, applyTokenCreate)
	registerCommand[TokenDelete](TokenDeleteType, applyTokenDelete)
	registerCommand[PolicySet](PolicySetType, applyPolicySet)
	registerCommand[ApprovalCreate](ApprovalCreateType, applyApprovalCreate)
	registerCommand[ApprovalVote](ApprovalVoteType, applyApprovalVote)
	registerCommand[ApprovalExpire](ApprovalExpireType, applyApprovalExpire)
	registerCommand[ServerKeySet](ServerKeySetType, applyServerKeySet)
	registerCommand[BootstrapRetire](BootstrapRetireType, applyBootstrapRetire)
	registerCommand[SnapshotRestore](SnapshotRestoreType, applySnapshotRestore)
	registerCommand[ApprovalPrune](ApprovalPruneType, applyApprovalPrune)

	registerCommand[RegionDatabaseReport](RegionDatabaseType, applyRegionDatabase)
	registerCommand[TenantSyncStateSet](TenantSyncStateType, applyTenantSyncState)
	registerCommand[GlobalTableUpsert](GlobalTableUpsertType, applyGlobalTableUpsert)
	registerCommand[GlobalTableDelete](GlobalTableDeleteType, applyGlobalTableDelete)

	registerCommand[SwitchoverStart](SwitchoverStartType, applySwitchoverStart)
	registerCommand[SwitchoverAdvance](SwitchoverAdvanceType, applySwitchoverAdvance)
	registerCommand[SwitchoverAbort](SwitchoverAbortType, applySwitchoverAbort)
	registerCommand[DivergenceRecord](DivergenceRecordType, applyDivergenceRecord)
	registerCommand[FailoverStart](FailoverStartType, applyFailoverStart)
	registerCommand[FailoverAutoStart](FailoverAutoType, applyFailoverAuto)
	registerCommand[FailoverHold](FailoverHoldType, applyFailoverHold)
	registerCommand[BackupPolicySet](BackupPolicySetType, applyBackupPolicySet)
	registerCommand[BackupRequest](BackupRequestType, applyBackupRequest)
	registerCommand[BackupRecord](BackupRecordType, applyBackupRecord)
	registerCommand[DrillRequest](DrillRequestType, applyDrillRequest)
	registerCommand[DrillRecord](DrillRecordType, applyDrillRecord)
	registerCommand[RebuildRequest](RebuildRequestType, applyRebuildRequest)
	registerCommand[RebuildRecord](RebuildRecordType, applyRebuildRecord)

	registerCommand[TasksRefence](TasksRefenceType, applyTasksRefence)
	registerCommand[TenantPatch](TenantPatchType, applyTenantPatch)
}

// applyFn applies one command entry to s. A returned error must be an
// *Error and means s was left unchanged.
type applyFn func(s *State, e *Entry) (any, error)

// command is an entry of the dispatch table: how to apply the command, and
// a new value of its body type (to check a body decodes before it is
// logged).
type command struct {
	apply applyFn
	body  func() any
}

var commands = map[MessageType]command{}

// registerCommand adds a command with body type C to the dispatch table; it
// panics on a duplicate so that two commands can never share a number.
func registerCommand[C any](t MessageType, fn applyFn) {
	if _, dup := commands[t]; dup {
		panic(fmt.Sprintf("fsm: command type %d registered twice", t))
	}
	commands[t] = command{apply: fn, body: func() any { return new(C) }}
}

// DecodeCommand checks that data is a command of this FSM's dispatch
// table whose body decodes as that command, and returns its type and body.
// The leader runs it on every command a follower forwards, before it is
// logged, so that nothing a server cannot decode reaches the log that way.
// A batch envelope is not a command: only the leader makes batches.
func DecodeCommand(data []byte) (MessageType, any, error) {
	if len(data) < 2 {
		return 0, nil, invalidf("invalid_command", "a command is at least 2 bytes (type and codec); got %d", len(data))
	}
	t := MessageType(data[0])
	c, ok := commands[t]
	if !ok {
		return t, nil, invalidf("invalid_command", "command type %s is not one this server applies", t)
	}
	body := c.body()
	if err := decodeBody(data[1], data[2:], body); err != nil {
		return t, nil, invalidf("invalid_command", "the body of %s does not decode: %v", t, err)
	}
	return t, body, nil
}

// RegisteredTypes returns every command type in the dispatch table.
func RegisteredTypes() []MessageType {
	out := make([]MessageType, 0, len(commands))
	for t := range commands {
		out = append(out, t)
	}
	return out
}

// ResultValue returns a pointer to a zero value of the type Apply returns
// for a command of type t, for decoding a result that crossed the network
// (a follower forwarding to the leader).
func ResultValue(t MessageType) any {
	switch t {
	case RegionUpsertType:
		return &Region{}
	case TenantUpsertType, TenantPatchType:
		return &Tenant{}
	case RegionDeleteType, TenantDeleteType, AgentDeleteType, MemberDeleteType, TokenDeleteType, BootstrapRetireType:
		return &Deleted{}
	case AgentUpsertType:
		return &Agent{}
	case AgentReportType:
		return &ReportResult{}
	case MemberRegisterType, KeyRotateType, KeyRevokeType, ServerKeySetType:
		return &Member{}
	case TokenCreateType:
		return &Token{}
	case PolicySetType:
		return &Policy{}
	case ApprovalCreateType, ApprovalVoteType:
		return &Approval{}
	case SnapshotRestoreType:
		return &RestoreGrant{}
	case RegionDatabaseType:
		return &RegionDatabase{}
	case TenantSyncStateType:
		return &TenantSyncState{}
	case GlobalTableUpsertType:
		return &GlobalTable{}
	case GlobalTableDeleteType:
		return &Deleted{}
	case SwitchoverStartType, SwitchoverAdvanceType, SwitchoverAbortType:
		return &Switchover{}
	case DivergenceRecordType:
		return &Divergence{}
	case FailoverStartType, FailoverAutoType:
		return &FailoverStarted{}
	case FailoverHoldType:
		return &FailoverHoldState{}
	case BackupPolicySetType:
		return &BackupPolicy{}
	case BackupRequestType, BackupRecordType:
		return &Backup{}
	case DrillRequestType, DrillRecordType:
		return &Drill{}
	case RebuildRequestType, RebuildRecordType:
		return &Rebuild{}
	}
	return &map[string]any{}
}

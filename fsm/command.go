package fsm

import (
	"encoding/json"
	"fmt"
	"github.com/hashicorp/go-msgpack/v2/codec"
)

// MessageType identifies a command in the Raft log. Numbers are never reused;
// retired types stay reserved in this list.
type MessageType uint8

// IgnoreUnknownTypeFlag marks a command that a server which does not know it
// may skip. Commands without the flag panic on an older server, which is the
// safe choice for anything that changes state others depend on.
const IgnoreUnknownTypeFlag MessageType = 128

// Command types. Blocks of numbers are reserved per area so that work on
// different areas never collides: 1-9 registry, agents and tasks; 10-29
// trust, tokens and approvals; 30-39 replication and federation sync;
// 40-49 disaster recovery and failover; 50-59 compliance and reports.
const (
	RegionUpsertType MessageType = 1
	RegionDeleteType MessageType = 2
	TenantUpsertType MessageType = 3
	TenantDeleteType MessageType = 4
	AgentUpsertType  MessageType = 5
	AgentDeleteType  MessageType = 6
	TaskPlanType     MessageType = 7
	AgentReportType  MessageType = 8
	AgentLeaveType   MessageType = 9

	RegionDatabaseType    MessageType = 30
	TenantSyncStateType   MessageType = 31
	GlobalTableUpsertType MessageType = 32
	GlobalTableDeleteType MessageType = 33
)

// Body codec versions. Commands are written as MessagePack (smaller, and
// three times faster to decode than JSON, which every server does for
// every entry); JSON bodies from older logs still apply, and approvals
// keep their embedded command as JSON so that the API can show it.
const (
	CodecJSON    byte = 1
	CodecMsgpack byte = 2

	codecJSON    = CodecJSON
	codecMsgpack = CodecMsgpack
)

// msgpackHandle encodes with the json field names, byte slices as binary,
// and map keys sorted, so that the same command always encodes the same.
var msgpackHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{WriteExt: true}
	h.Canonical = true
	h.ErrorIfNoField = false
	return h
}()

// String returns the command's name as it appears in audit entries.
func (t MessageType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

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

	RegionDatabaseType:    "region_database",
	TenantSyncStateType:   "tenant_sync_state",
	GlobalTableUpsertType: "global_table_upsert",
	GlobalTableDeleteType: "global_table_delete",
}

// Encode builds a log entry: the type byte, the codec version byte, then
// the MessagePack body.
func Encode(t MessageType, body any) ([]byte, error) {
	return EncodeWith(CodecMsgpack, t, body)
}

// EncodeWith builds a log entry with the given body codec: CodecJSON while
// some server of the cluster is too old to read CodecMsgpack.
func EncodeWith(codecVersion byte, t MessageType, body any) ([]byte, error) {
	if codecVersion == CodecJSON {
		return EncodeJSON(t, body)
	}
	var b []byte
	if err := codec.NewEncoderBytes(&b, msgpackHandle).Encode(body); err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	out := make([]byte, 0, len(b)+2)
	out = append(out, byte(t), CodecMsgpack)
	return append(out, b...), nil
}

// EncodeJSON is Encode with a JSON body, for commands embedded where people
// read them (an approval's command).
func EncodeJSON(t MessageType, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	out := make([]byte, 0, len(b)+2)
	out = append(out, byte(t), codecJSON)
	return append(out, b...), nil
}

// MarshalResult encodes an apply's result value for the trip from the
// leader to the follower that forwarded the command (MessagePack).
func MarshalResult(v any) ([]byte, error) {
	var b []byte
	err := codec.NewEncoderBytes(&b, msgpackHandle).Encode(v)
	return b, err
}

// UnmarshalResult decodes what MarshalResult encoded into v (a pointer
// from ResultValue).
func UnmarshalResult(data []byte, v any) error {
	return codec.NewDecoderBytes(data, msgpackHandle).Decode(v)
}

// decodeBody parses a command body of codec version v into out.
func decodeBody(v byte, body []byte, out any) error {
	switch v {
	case codecMsgpack:
		return codec.NewDecoderBytes(body, msgpackHandle).Decode(out)
	case codecJSON:
		return json.Unmarshal(body, out)
	}
	return fmt.Errorf("unknown codec version %d", v)
}

// ResultValue returns a pointer to a zero value of the type Apply returns
// for a command of type t, for decoding a result that crossed the network
// (a follower forwarding to the leader).
func ResultValue(t MessageType) any {
	switch t {
	case RegionUpsertType:
		return &Region{}
	case TenantUpsertType:
		return &Tenant{}
	case RegionDeleteType, TenantDeleteType, AgentDeleteType, MemberDeleteType, TokenDeleteType:
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
	case RegionDatabaseType:
		return &RegionDatabase{}
	case TenantSyncStateType:
		return &TenantSyncState{}
	case GlobalTableUpsertType:
		return &GlobalTable{}
	case GlobalTableDeleteType:
		return &Deleted{}
	}
	return &map[string]any{}
}

package fsm

// Trust, token and approval commands (numbers 10-29).
const (
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
)

func init() {
	for t, n := range map[MessageType]string{
		MemberRegisterType: "member_register", KeyRotateType: "key_rotate", KeyRevokeType: "key_revoke",
		MemberDeleteType: "member_delete", TokenCreateType: "token_create", TokenDeleteType: "token_delete",
		PolicySetType: "policy_set", ApprovalCreateType: "approval_create", ApprovalVoteType: "approval_vote",
		ApprovalExpireType: "approval_expire", ServerKeySetType: "server_key_set",
	} {
		typeNames[t] = n
	}
}

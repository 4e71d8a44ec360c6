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

// MemberRegister adds an agent, approver or server member with its first
// key. Auth must be signed by that key (proof of possession).
type MemberRegister struct {
	ID        string      `json:"id"`
	Kind      string      `json:"kind"`
	PublicKey string      `json:"public_key"`
	Auth      *SignedAuth `json:"auth"`
	At        int64       `json:"at"`
}

// KeyRotate announces a member's new key, signed by one of its current
// keys; the signing key stays valid for the policy's overlap window.
type KeyRotate struct {
	Member    string      `json:"member"`
	PublicKey string      `json:"public_key"`
	Auth      *SignedAuth `json:"auth"`
	At        int64       `json:"at"`
}

// KeyRevoke revokes a key at once, on every server, when committed.
type KeyRevoke struct {
	Member string `json:"member"`
	KeyID  string `json:"key_id"`
	At     int64  `json:"at"`
}

// MemberDelete removes an agent, approver or server member and its keys.
type MemberDelete struct {
	ID string `json:"id"`
	At int64  `json:"at"`
}

// TokenCreate stores a new API token (only its secret's SHA-256).
type TokenCreate struct {
	Token Token `json:"token"`
	At    int64 `json:"at"`
}

// TokenDelete revokes a token.
type TokenDelete struct {
	Accessor string `json:"accessor"`
	At       int64  `json:"at"`
}

// PolicySet replaces the trust and approval policy.
type PolicySet struct {
	Policy Policy `json:"policy"`
	At     int64  `json:"at"`
}

// ApprovalCreate records a gated action as a pending approval.
type ApprovalCreate struct {
	ID          string `json:"id"`
	Action      string `json:"action"`
	Summary     string `json:"summary"`
	CommandType uint8  `json:"command_type"`
	Command     []byte `json:"command"`
	RequestedBy string `json:"requested_by"`
	At          int64  `json:"at"`
}

// ApprovalVote is an approver's signed approval of a pending action.
type ApprovalVote struct {
	ID   string      `json:"id"`
	Auth *SignedAuth `json:"auth"`
	At   int64       `json:"at"`
}

// ApprovalExpire marks pending approvals whose time has passed as expired.
type ApprovalExpire struct {
	IDs []string `json:"ids"`
	At  int64    `json:"at"`
}

// ServerKeySet records a server's public key (the key it signs trust
// bundles with), as the server gossips it. Only the leader issues it, from
// Serf membership, which is authenticated by the gossip encryption key.
type ServerKeySet struct {
	ID        string `json:"id"`
	PublicKey string `json:"public_key"`
	At        int64  `json:"at"`
}

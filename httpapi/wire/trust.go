package wire

import (
	"encoding/json"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// Envelope is what a signed body declares besides its payload: the signing
// key, an RFC 3339 timestamp and a fresh nonce. The server embeds it in the
// request types of every signed endpoint; the client adds it to the payload
// it signs.
type Envelope struct {
	KeyID     string `json:"key_id,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
	Nonce     string `json:"nonce,omitempty"`
}

// VoteRequest is the body of POST /v1/approvals/{id}/approve: the
// envelope and what the approver approves, the approval's id and its
// digest (fsm.ApprovalDigest, served as the approval's "digest"), so that
// the signature holds for this approval only.
type VoteRequest struct {
	Envelope
	Approval string `json:"approval"`
	Digest   string `json:"digest"`
}

// MemberRequest is the body of POST /v1/trust/members: it registers an
// agent, approver or server key and must be signed by that key (proof of
// possession).
type MemberRequest struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	PublicKey string `json:"public_key"`
}

// MemberList answers GET /v1/trust/members.
type MemberList struct {
	Members []*fsm.Member `json:"members"`
}

// KeyRotateRequest is the body of POST /v1/trust/members/{id}/keys: the
// member's new key, signed by a current one.
type KeyRotateRequest struct {
	PublicKey string `json:"public_key"`
}

// BundleKey is one trusted key in the trust bundle.
type BundleKey struct {
	Member    string `json:"member"`
	Kind      string `json:"kind"`
	KeyID     string `json:"key_id"`
	PublicKey string `json:"public_key"`
	NotAfter  int64  `json:"not_after,omitempty"`
}

// TrustBundle is the set of keys trusted at Sequence.
type TrustBundle struct {
	Sequence uint64      `json:"sequence"`
	IssuedAt time.Time   `json:"issued_at"`
	Issuer   string      `json:"issuer"`
	Keys     []BundleKey `json:"keys"`
}

// SignedBundle answers GET /v1/trust/bundle: the bundle's exact JSON bytes
// and the serving server's signature over them, so that a region can
// verify what it fetched before it decodes it.
type SignedBundle struct {
	Bundle    json.RawMessage `json:"bundle"`
	Signature string          `json:"signature"`
	KeyID     string          `json:"key_id"`
	PublicKey string          `json:"public_key"`
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
	// Node and Region bind an agent token to one agent node and its
	// region (required for agent tokens from protocol 4 on).
	Node   string `json:"node,omitempty"`
	Region string `json:"region,omitempty"`
}

// TokenSecret answers POST /v1/tokens: the only time the secret is shown.
type TokenSecret struct {
	Accessor    string `json:"accessor"`
	Secret      string `json:"secret"`
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
	Node        string `json:"node,omitempty"`
	Region      string `json:"region,omitempty"`
}

// TokenInfo is a token as listed (GET /v1/tokens) or as it sees itself
// (GET /v1/token/self): never its secret or its hash.
type TokenInfo struct {
	Accessor    string `json:"accessor"`
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
	Node        string `json:"node,omitempty"`
	Region      string `json:"region,omitempty"`
	CreatedAt   int64  `json:"created_at"`
}

// TokenList answers GET /v1/tokens.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// ApprovalList answers GET /v1/approvals.
type ApprovalList struct {
	Approvals []*fsm.Approval `json:"approvals"`
}

// TrustStatus answers GET /v1/trust/status.
type TrustStatus struct {
	// Sealed: the federation has its first approvers, and approver
	// registration, policy changes, member deletions and snapshot restores
	// need their approvals.
	Sealed      bool   `json:"sealed"`
	SealedIndex uint64 `json:"sealed_index,omitempty"`
	// Approvers holding a key that is not revoked, and how many the trust
	// rules need (the bootstrap window closes when Approvers reaches it).
	Approvers       int `json:"approvers"`
	ApproversNeeded int `json:"approvers_needed"`
	// BootstrapRetired: every server refuses the bootstrap token.
	BootstrapRetired      bool   `json:"bootstrap_retired"`
	BootstrapRetiredIndex uint64 `json:"bootstrap_retired_index,omitempty"`
	// RestoreGrants are approved snapshot restores not yet carried out.
	RestoreGrants []fsm.RestoreGrant `json:"restore_grants,omitempty"`
}

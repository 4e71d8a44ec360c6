package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/signing"
)

// ErrNoSigner means a request that must be signed was made by a client
// without a key.
var ErrNoSigner = errors.New("this request must be signed: give the client a key (COSIGN_KEY_PATH, or --key)")

// SignBody adds the signed-request envelope (wire.Envelope: key_id, an
// RFC 3339 timestamp, a random nonce) to payload, an object, and returns
// the exact body bytes and their base64 signature for X-Atomfed-Signature.
func SignBody(s *signing.Signer, payload any, extra map[string]any) ([]byte, string, error) {
	fields := map[string]any{}
	if err := addFields(fields, payload); err != nil {
		return nil, "", fmt.Errorf("signed payload must be a JSON object: %w", err)
	}
	for k, v := range extra {
		fields[k] = v
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, "", err
	}
	env := wire.Envelope{KeyID: s.KeyID, Timestamp: time.Now().UTC().Format(time.RFC3339Nano), Nonce: hex.EncodeToString(nonce)}
	if err := addFields(fields, env); err != nil {
		return nil, "", err
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return nil, "", err
	}
	sig, err := s.Sign(body)
	return body, sig, err
}

// addFields adds the fields of v, which encodes as a JSON object, to fields.
func addFields(fields map[string]any, v any) error {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // keep large integers (indexes, generations) exact
	return dec.Decode(&fields)
}

// signedDo sends payload (plus extra fields) signed with the client's key.
func (c *Client) signedDo(ctx context.Context, method, path string, query url.Values, payload any, extra map[string]any, out any) (*Meta, error) {
	if c.signer == nil {
		return c.do(ctx, method, path, query, merge(payload, extra), out, nil)
	}
	body, sig, err := SignBody(c.signer, payload, extra)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, method, path, query, body, out, http.Header{"X-Atomfed-Signature": {sig}})
}

// merge returns payload with extra fields added, unsigned.
func merge(payload any, extra map[string]any) any {
	if len(extra) == 0 {
		if payload == nil {
			return map[string]any{}
		}
		return payload
	}
	fields := map[string]any{}
	if payload != nil {
		b, _ := json.Marshal(payload)
		_ = json.Unmarshal(b, &fields)
	}
	for k, v := range extra {
		fields[k] = v
	}
	return fields
}

// RegisterMember registers the client's key as member id of kind (agent,
// approver or server), signed by that key (proof of possession).
//
// Once the federation has its approvers, registering an approver answers
// with a pending approval: RegisterMember returns it as a *PendingError.
func (c *Client) RegisterMember(ctx context.Context, id, kind string) (*fsm.Member, error) {
	m, a, err := c.RegisterMemberGated(ctx, id, kind)
	return m, pendingErr(a, err)
}

// RegisterMemberGated is RegisterMember that returns a pending approval
// as such.
func (c *Client) RegisterMemberGated(ctx context.Context, id, kind string) (*fsm.Member, *fsm.Approval, error) {
	if c.signer == nil {
		return nil, nil, ErrNoSigner
	}
	var raw json.RawMessage
	m, err := c.signedDo(ctx, http.MethodPost, "/v1/trust/members", nil,
		wire.MemberRequest{ID: id, Kind: kind, PublicKey: string(c.signer.PublicPEM)}, nil, &raw)
	return gated[fsm.Member](c, m, raw, err)
}

// DeleteMember deletes a trust member; once the federation has its
// approvers, the answer is a pending approval (nil member deleted yet).
func (c *Client) DeleteMember(ctx context.Context, id string) (*fsm.Approval, error) {
	var raw json.RawMessage
	m, err := c.Do(ctx, http.MethodDelete, "/v1/trust/members/"+url.PathEscape(id), nil, nil, &raw)
	_, a, err := gated[wire.DeleteResponse](c, m, raw, err)
	return a, err
}

// TrustStatus returns whether the bootstrap window is closed and the
// bootstrap token retired.
func (c *Client) TrustStatus(ctx context.Context) (*wire.TrustStatus, error) {
	var out wire.TrustStatus
	_, err := c.Do(ctx, http.MethodGet, "/v1/trust/status", nil, nil, &out)
	return &out, err
}

// PendingError is the answer of a call whose request now waits for
// approvals (202 Accepted): nothing changed yet.
type PendingError struct{ Approval *fsm.Approval }

func (e *PendingError) Error() string {
	return fmt.Sprintf("pending approval %s (%s): it needs %d approvals (atomfed approve %s)", e.Approval.ID, e.Approval.Action, e.Approval.Required, e.Approval.ID)
}

func pendingErr(a *fsm.Approval, err error) error {
	if err == nil && a != nil {
		return &PendingError{Approval: a}
	}
	return err
}

// gated decodes an answer that is either T or, with 202, a pending
// approval.
func gated[T any](c *Client, m *Meta, raw json.RawMessage, err error) (*T, *fsm.Approval, error) {
	if err != nil {
		return nil, nil, err
	}
	if m.Status == http.StatusAccepted {
		var a fsm.Approval
		return nil, &a, c.decode(bytes.NewReader(raw), &a)
	}
	var out T
	return &out, nil, c.decode(bytes.NewReader(raw), &out)
}

// TrustMembers lists the trust members, optionally of one kind.
func (c *Client) TrustMembers(ctx context.Context, kind string) ([]*fsm.Member, error) {
	var out wire.MemberList
	v := url.Values{}
	if kind != "" {
		v.Set("kind", kind)
	}
	_, err := c.Do(ctx, http.MethodGet, "/v1/trust/members", v, nil, &out)
	return out.Members, err
}

// RotateKey announces newPub as member's new key, signed by the client's
// (current) key.
func (c *Client) RotateKey(ctx context.Context, member string, newPub []byte) (*fsm.Member, *fsm.Approval, error) {
	if c.signer == nil {
		return nil, nil, ErrNoSigner
	}
	var raw json.RawMessage
	m, err := c.signedDo(ctx, http.MethodPost, "/v1/trust/members/"+url.PathEscape(member)+"/keys", nil,
		wire.KeyRotateRequest{PublicKey: string(newPub)}, nil, &raw)
	if err != nil {
		return nil, nil, err
	}
	if m.Status == http.StatusAccepted {
		var a fsm.Approval
		return nil, &a, c.decode(bytes.NewReader(raw), &a)
	}
	var out fsm.Member
	return &out, nil, c.decode(bytes.NewReader(raw), &out)
}

// RevokeKey revokes a member's key; under the default policy it becomes a
// pending approval (returned).
func (c *Client) RevokeKey(ctx context.Context, member, keyID string) (*fsm.Member, *fsm.Approval, error) {
	var raw json.RawMessage
	m, err := c.Do(ctx, http.MethodPost, "/v1/trust/members/"+url.PathEscape(member)+"/keys/"+url.PathEscape(keyID)+"/revoke", nil, nil, &raw)
	if err != nil {
		return nil, nil, err
	}
	if m.Status == http.StatusAccepted {
		var a fsm.Approval
		return nil, &a, c.decode(bytes.NewReader(raw), &a)
	}
	var out fsm.Member
	return &out, nil, c.decode(bytes.NewReader(raw), &out)
}

// DeleteRegionGated deregisters a region; under the default policy the
// answer is a pending approval.
func (c *Client) DeleteRegionGated(ctx context.Context, name string, cas *uint64) (*fsm.Approval, error) {
	var raw json.RawMessage
	m, err := c.Do(ctx, http.MethodDelete, "/v1/regions/"+url.PathEscape(name), casQuery(cas), nil, &raw)
	if err != nil || m.Status != http.StatusAccepted {
		return nil, err
	}
	var a fsm.Approval
	return &a, c.decode(bytes.NewReader(raw), &a)
}

// Approve signs and sends an approval of a pending action with the
// client's key (an approver's).
func (c *Client) Approve(ctx context.Context, id string) (*fsm.Approval, error) {
	if c.signer == nil {
		return nil, ErrNoSigner
	}
	// The signature binds the vote to this approval as it stands: its id
	// and the digest of its action.
	a, err := c.Approval(ctx, id)
	if err != nil {
		return nil, err
	}
	var out fsm.Approval
	_, err = c.signedDo(ctx, http.MethodPost, "/v1/approvals/"+url.PathEscape(id)+"/approve", nil, nil,
		map[string]any{"approval": id, "digest": fsm.ApprovalDigest(a)}, &out)
	return &out, err
}

// Approvals lists approvals, optionally with one status.
func (c *Client) Approvals(ctx context.Context, status string) ([]*fsm.Approval, error) {
	var out wire.ApprovalList
	v := url.Values{}
	if status != "" {
		v.Set("status", status)
	}
	_, err := c.Do(ctx, http.MethodGet, "/v1/approvals", v, nil, &out)
	return out.Approvals, err
}

// Approval reads one approval.
func (c *Client) Approval(ctx context.Context, id string) (*fsm.Approval, error) {
	var out fsm.Approval
	_, err := c.Do(ctx, http.MethodGet, "/v1/approvals/"+url.PathEscape(id), nil, nil, &out)
	return &out, err
}

// Policy reads the approval and trust policy.
func (c *Client) Policy(ctx context.Context) (*fsm.Policy, error) {
	var out fsm.Policy
	_, err := c.Do(ctx, http.MethodGet, "/v1/policy/approvals", nil, nil, &out)
	return &out, err
}

// SetPolicy replaces the approval and trust policy.
//
// Once the federation has its approvers, the answer is a pending
// approval, returned as a *PendingError.
func (c *Client) SetPolicy(ctx context.Context, p *fsm.Policy) (*fsm.Policy, error) {
	out, a, err := c.SetPolicyGated(ctx, p)
	return out, pendingErr(a, err)
}

// SetPolicyGated is SetPolicy that returns a pending approval as such.
func (c *Client) SetPolicyGated(ctx context.Context, p *fsm.Policy) (*fsm.Policy, *fsm.Approval, error) {
	var raw json.RawMessage
	m, err := c.Do(ctx, http.MethodPut, "/v1/policy/approvals", nil, p, &raw)
	return gated[fsm.Policy](c, m, raw, err)
}

// CreateToken makes a token with role; the answer's Secret is shown only
// once.
func (c *Client) CreateToken(ctx context.Context, role, description string) (*wire.TokenSecret, error) {
	var out wire.TokenSecret
	_, err := c.Do(ctx, http.MethodPost, "/v1/tokens", nil, wire.TokenRequest{Role: role, Description: description}, &out)
	return &out, err
}

// CreateAgentToken makes an agent token bound to one agent node and its
// region; the answer's Secret is shown only once.
func (c *Client) CreateAgentToken(ctx context.Context, node, region, description string) (*wire.TokenSecret, error) {
	var out wire.TokenSecret
	req := wire.TokenRequest{Role: fsm.RoleAgent, Node: node, Region: region, Description: description}
	_, err := c.Do(ctx, http.MethodPost, "/v1/tokens", nil, req, &out)
	return &out, err
}

// TokenSelf returns what the client's own token is: its accessor, role and
// binding (never its secret).
func (c *Client) TokenSelf(ctx context.Context) (*wire.TokenInfo, error) {
	var out wire.TokenInfo
	_, err := c.Do(ctx, http.MethodGet, "/v1/token/self", nil, nil, &out)
	return &out, err
}

// ListTokens lists tokens (never their secrets).
func (c *Client) ListTokens(ctx context.Context) ([]wire.TokenInfo, error) {
	var out wire.TokenList
	_, err := c.Do(ctx, http.MethodGet, "/v1/tokens", nil, nil, &out)
	return out.Tokens, err
}

// RevokeToken deletes a token by accessor.
func (c *Client) RevokeToken(ctx context.Context, accessor string) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(accessor), nil, nil, nil)
	return err
}

// ErrBundleSignature means a fetched trust bundle failed verification.
var ErrBundleSignature = errors.New("trust bundle signature does not verify")

// TrustBundle fetches the trust bundle and verifies it: the signature over
// the bundle's exact bytes, by a server key that the bundle itself lists.
// pinned, when not empty, is the set of server key ids to accept.
func (c *Client) TrustBundle(ctx context.Context, pinned ...string) (*wire.TrustBundle, error) {
	var sb wire.SignedBundle
	if _, err := c.Do(ctx, http.MethodGet, "/v1/trust/bundle", nil, nil, &sb); err != nil {
		return nil, err
	}
	v, err := signing.ParsePublicKey([]byte(sb.PublicKey))
	if err != nil || v.KeyID != sb.KeyID {
		return nil, fmt.Errorf("%w: the signer's key does not match its id", ErrBundleSignature)
	}
	if err := v.Verify(sb.Bundle, sb.Signature); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundleSignature, err)
	}
	var b wire.TrustBundle
	if err := c.decode(bytes.NewReader(sb.Bundle), &b); err != nil {
		return nil, fmt.Errorf("decode the trust bundle: %w", err)
	}
	listed := slices.ContainsFunc(b.Keys, func(k wire.BundleKey) bool { return k.KeyID == sb.KeyID && k.Kind == fsm.MemberServer })
	if !listed {
		return nil, fmt.Errorf("%w: key %s is not a server key of the bundle", ErrBundleSignature, sb.KeyID)
	}
	if len(pinned) > 0 {
		if !slices.Contains(pinned, sb.KeyID) {
			return nil, fmt.Errorf("%w: signed by %s, not a pinned server key", ErrBundleSignature, sb.KeyID)
		}
	}
	return &b, nil
}

package fsm

import (
	"regexp"

	"github.com/atomcloud/atomfed/internal/signing"
)

// SignedAuth is the proof a signed request carries into the log: the exact
// body bytes that were signed, the signature (base64, as in the
// X-Atomfed-Signature header), and the envelope fields the body declared.
// Apply verifies it again, so a key revoked between the HTTP check and the
// commit still refuses the request, and the audit chain covers exactly what
// the signer signed.
type SignedAuth struct {
	KeyID     string `json:"key_id"`
	Signature string `json:"signature"`
	Body      []byte `json:"body"`
	Nonce     string `json:"nonce"`
	Timestamp int64  `json:"timestamp"` // unix ns, from the body's RFC 3339 timestamp
}

var nonceRe = regexp.MustCompile(`^[A-Za-z0-9._-]{8,128}$`)

// ValidNonce reports whether n is an acceptable nonce: 8 to 128 letters,
// digits, '.', '_' or '-'.
func ValidNonce(n string) bool { return nonceRe.MatchString(n) }

// VerifyAuth checks a signed request against the state at time at (the
// leader's clock): a signature by a known key that is valid at that time,
// a timestamp within the policy's skew, and a nonce not seen within the
// window. It returns the signing member and key. It changes nothing.
func VerifyAuth(s *State, a *SignedAuth, at int64) (*Member, *MemberKey, error) {
	return verifyAuth(s, a, at, true, nil)
}

// verifyAuth is VerifyAuth; fresh=false skips the timestamp and nonce checks
// (an approved action re-verifies its requester's signature when it is
// finally applied, long after the request), and candidate is a key that is
// not in the state yet but may sign (proof of possession at registration).
func verifyAuth(s *State, a *SignedAuth, at int64, fresh bool, candidate *MemberKey) (*Member, *MemberKey, error) {
	if a == nil || a.Signature == "" {
		return nil, nil, forbiddenf("unsigned", "the request is not signed: send the signature of the exact body in X-Atomfed-Signature, and key_id, timestamp and nonce in the body")
	}
	var m *Member
	var k *MemberKey
	switch {
	case candidate != nil && candidate.KeyID == a.KeyID:
		k = candidate
	default:
		if m = s.KeyOwner(a.KeyID); m != nil {
			k = m.Key(a.KeyID)
		}
	}
	if k == nil {
		return nil, nil, forbiddenf("unknown_key", "key %q is not a trusted key of any member", a.KeyID)
	}
	if k.Revoked {
		return nil, nil, forbiddenf("revoked_key", "key %s of %s was revoked", a.KeyID, memberName(m))
	}
	if !k.ValidAt(at) {
		return nil, nil, forbiddenf("expired_key", "key %s of %s was rotated out and its overlap window has ended", a.KeyID, memberName(m))
	}
	v, err := verifierFor(k)
	if err != nil {
		return nil, nil, forbiddenf("unknown_key", "key %s cannot be used: %v", a.KeyID, err)
	}
	if err := v.Verify(a.Body, a.Signature); err != nil {
		return nil, nil, forbiddenf("bad_signature", "the signature does not verify against key %s over the exact request body", a.KeyID)
	}
	if fresh {
		skew := s.EffectivePolicy().SkewSeconds * 1e9
		if d := at - a.Timestamp; d > skew || d < -skew {
			return nil, nil, forbiddenf("stale_timestamp", "timestamp is %ds from the server's clock; at most %ds is allowed", d/1e9, skew/1e9)
		}
		if !ValidNonce(a.Nonce) {
			return nil, nil, forbiddenf("bad_nonce", "nonce must be 8-128 letters, digits, '.', '_' or '-'")
		}
		if exp, seen := s.Nonces[a.Nonce]; seen && exp >= at {
			return nil, nil, forbiddenf("replayed_nonce", "nonce %q was already used; sign every request with a new nonce", a.Nonce)
		}
	}
	return m, k, nil
}

func memberName(m *Member) string {
	if m == nil {
		return "the new member"
	}
	return m.Kind + " " + m.ID
}

// recordNonce remembers a used nonce for twice the skew window and forgets
// the ones whose window has passed. Entries are queued in order, so pruning
// costs only what it removes.
func recordNonce(s *State, a *SignedAuth, at int64) {
	for len(s.nonceQueue) > 0 && s.nonceQueue[0].Expires < at {
		n := s.nonceQueue[0]
		if s.Nonces[n.Nonce] == n.Expires {
			delete(s.Nonces, n.Nonce)
		}
		s.nonceQueue = s.nonceQueue[1:]
	}
	exp := at + 2*s.EffectivePolicy().SkewSeconds*1e9
	s.Nonces[a.Nonce] = exp
	s.nonceQueue = append(s.nonceQueue, nonceEntry{Nonce: a.Nonce, Expires: exp})
}

// liveNonces returns the remembered nonces in queue order.
func (s *State) liveNonces() []nonceEntry {
	out := make([]nonceEntry, 0, len(s.nonceQueue))
	for _, n := range s.nonceQueue {
		if s.Nonces[n.Nonce] == n.Expires {
			out = append(out, n)
		}
	}
	return out
}

// newKey builds a member key from a PEM public key, checking it parses as
// an ECDSA P-256 key.
func newKey(pem string, at int64) (*MemberKey, error) {
	v, err := signing.ParsePublicKey([]byte(pem))
	if err != nil {
		return nil, invalidf("invalid_public_key", "public_key must be a PEM ECDSA P-256 public key (as written by atomfed keygen or cosign generate-key-pair): %v", err)
	}
	return &MemberKey{KeyID: v.KeyID, PublicKey: pem, AddedAt: at}, nil
}

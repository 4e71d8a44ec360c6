package httpapi

import (
	"net/http"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// HeaderSignature carries the base64 ECDSA signature of the exact request
// body, as `cosign sign-blob --key` prints it.
const HeaderSignature = "X-Atomfed-Signature"

// signedAuth builds the proof a signed request carries into the log. A
// request with no signature at all still gets one (with an empty
// signature), so that the FSM refuses it as unsigned, with the same answer
// everywhere.
func signedAuth(r *http.Request, body []byte, env wire.Envelope) (*fsm.SignedAuth, error) {
	a := &fsm.SignedAuth{KeyID: env.KeyID, Signature: r.Header.Get(HeaderSignature), Body: body, Nonce: env.Nonce}
	if env.Timestamp != "" {
		ts, err := time.Parse(time.RFC3339Nano, env.Timestamp)
		if err != nil {
			return nil, badRequest("invalid_timestamp", "timestamp "+quote(env.Timestamp)+" must be RFC 3339, e.g. 2026-11-26T10:00:00Z")
		}
		a.Timestamp = ts.UnixNano()
	}
	return a, nil
}

// precheckAuth refuses, before anything is logged, a signed request that the
// FSM would refuse anyway: this keeps forged and replayed requests out of
// the raft log. The FSM checks again when it applies the command.
func (a *API) precheckAuth(auth *fsm.SignedAuth, at int64) error {
	var err error
	a.c.FSM().Read(func(s *fsm.State) {
		_, _, err = fsm.VerifyAuth(s, auth, at)
	})
	if err == nil {
		return nil
	}
	// An unknown key may be a member's first registration, which brings its
	// key along: the FSM decides that case.
	if codeOf(err) == "unknown_key" {
		return nil
	}
	a.metrics.authFailures.WithLabelValues("signature").Inc()
	return err
}

func codeOf(err error) string {
	_, code := statusFor(err)
	return code
}

// writeSigned is write for signed commands: it prechecks the signature
// against this server's state first (the leader's FSM checks it again).
func (a *API) writeSigned(w http.ResponseWriter, r *http.Request, body []byte, t fsm.MessageType, cmd any, auth *fsm.SignedAuth, at int64, ok func(*fsm.ApplyResult)) {
	if err := a.precheckAuth(auth, at); err != nil {
		writeError(w, err)
		return
	}
	a.write(w, r, body, t, cmd, ok)
}

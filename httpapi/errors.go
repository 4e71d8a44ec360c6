package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Request-level sentinel errors of this package. Each is a kind of failure
// that arises here rather than in the FSM or the cluster (decoding,
// parameters, authentication, routing); statusFor maps each to its status.
var (
	// errBadRequest is a request this server cannot read: a malformed
	// body or parameter, or plain HTTP on a TLS port. 400.
	errBadRequest = errors.New("bad request")
	// errUnauthenticated is a request without a valid token. 401.
	errUnauthenticated = errors.New("unauthenticated")
	// errForbidden is a valid token whose role may not do this. 403.
	errForbidden = errors.New("forbidden")
	// errNotFound is a read of an object that does not exist. 404.
	errNotFound = errors.New("not found")
	// errUnavailable is a request this server cannot serve now (it has no
	// signing key); another server may. 503.
	errUnavailable = errors.New("unavailable")
	// errBodyTooLarge is a body over the limit. 413 body_too_large.
	errBodyTooLarge = errors.New("request body too large")
	// errMethod is a known path with a method it does not serve. 405
	// method_not_allowed.
	errMethod = errors.New("method not allowed")
	// errRoute is a path no route serves. 404 no_such_endpoint.
	errRoute = errors.New("no such endpoint")
	// errInternal is a handler that panicked. 500 internal.
	errInternal = errors.New("internal error")
)

// apiError is one of the request-level sentinels above with the stable
// code and the message the caller sees; it is to this package what
// fsm.Error is to the FSM. It carries no status: statusFor derives that
// from kind.
type apiError struct {
	kind    error
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

// Unwrap returns the sentinel the error is a kind of.
func (e *apiError) Unwrap() error { return e.kind }

func badRequest(code, msg string) error {
	return &apiError{kind: errBadRequest, code: code, message: msg}
}

func unauthenticated(code, msg string) error {
	return &apiError{kind: errUnauthenticated, code: code, message: msg}
}

func forbidden(code, msg string) error {
	return &apiError{kind: errForbidden, code: code, message: msg}
}

func notFound(code, msg string) error {
	return &apiError{kind: errNotFound, code: code, message: msg}
}

func unavailable(code, msg string) error {
	return &apiError{kind: errUnavailable, code: code, message: msg}
}

// statusFor maps an error to its HTTP status and code. It is the only place
// where errors become statuses: handlers, middleware and the agent's own
// router return sentinels (wrapped or inside an fsm.Error or apiError, whose
// code wins over the default one here) and writeError asks this function.
func statusFor(err error) (int, string) {
	code := ""
	var fe *fsm.Error
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		code = ae.code
	case errors.As(err, &fe):
		code = fe.Code
	}
	switch {
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest, orCode(code, "bad_request")
	case errors.Is(err, errUnauthenticated):
		return http.StatusUnauthorized, orCode(code, "unauthenticated")
	case errors.Is(err, errForbidden):
		return http.StatusForbidden, orCode(code, "forbidden")
	case errors.Is(err, errNotFound):
		return http.StatusNotFound, orCode(code, "not_found")
	case errors.Is(err, errUnavailable):
		return http.StatusServiceUnavailable, orCode(code, "unavailable")
	case errors.Is(err, fsm.ErrInvalid):
		return http.StatusBadRequest, orCode(code, "invalid")
	case errors.Is(err, fsm.ErrNotFound):
		return http.StatusNotFound, orCode(code, "not_found")
	case errors.Is(err, fsm.ErrConflict):
		return http.StatusConflict, orCode(code, "cas_conflict")
	case errors.Is(err, fsm.ErrFailedPrecondition):
		return http.StatusConflict, orCode(code, "failed_precondition")
	case errors.Is(err, fsm.ErrForbidden):
		return http.StatusForbidden, orCode(code, "forbidden")
	case errors.Is(err, fsm.ErrTooMany):
		return http.StatusTooManyRequests, orCode(code, "over_quota")
	case errors.Is(err, structs.ErrBadSnapshot):
		return http.StatusBadRequest, "bad_snapshot"
	case errors.Is(err, structs.ErrUpgradeInProgress):
		return http.StatusConflict, "upgrade_in_progress"
	case errors.Is(err, errTooManyRequests):
		return http.StatusTooManyRequests, orCode(code, "too_many_requests")
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "body_too_large"
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed, "method_not_allowed"
	case errors.Is(err, errRoute):
		return http.StatusNotFound, "no_such_endpoint"
	case errors.Is(err, structs.ErrOutcomeUnknown):
		return http.StatusServiceUnavailable, "outcome_unknown"
	case errors.Is(err, structs.ErrNotLeader), errors.Is(err, structs.ErrNoLeader):
		return http.StatusServiceUnavailable, "no_leader"
	case errors.Is(err, structs.ErrBusy), errors.Is(err, structs.ErrFollowerBehind):
		return http.StatusServiceUnavailable, "busy"
	case errors.Is(err, structs.ErrShuttingDown):
		return http.StatusServiceUnavailable, "shutting_down"
	case errors.Is(err, context.Canceled):
		// The request's context ended before anything was applied (a
		// forward that may have applied is outcome_unknown, see forward):
		// the server is stopping, so the client should retry elsewhere.
		return http.StatusServiceUnavailable, "shutting_down"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "busy"
	case errors.Is(err, errInternal):
		return http.StatusInternalServerError, "internal"
	}
	return http.StatusInternalServerError, "internal"
}

func orCode(code, def string) string {
	if code != "" {
		return code
	}
	return def
}

// writeError writes the error envelope. Retryable 503s carry Retry-After;
// an unknown outcome does not, because blindly retrying a write whose first
// attempt may have landed is the caller's decision.
func writeError(w http.ResponseWriter, err error) {
	status, code := statusFor(err)
	if status == http.StatusServiceUnavailable && code != "outcome_unknown" {
		w.Header().Set("Retry-After", "1")
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", blockingRetryAfter)
	}
	msg := err.Error()
	if status == http.StatusInternalServerError && !errors.Is(err, errInternal) {
		msg = "internal error: " + msg
	}
	writeJSON(w, status, structs.ErrorBody{Error: structs.ErrorDetail{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

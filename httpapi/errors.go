package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Request-level sentinel errors of this package.
var (
	errBodyTooLarge = errors.New("request body too large")
	errMethod       = errors.New("method not allowed")
	errRoute        = errors.New("no such endpoint")
)

// apiError is an error with an explicit status and code, for failures that
// arise in this package (decoding, parameters).
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

func badRequest(code, msg string) error {
	return &apiError{status: http.StatusBadRequest, code: code, message: msg}
}

// statusFor maps an error to its HTTP status and code. It is the only place
// where errors become statuses.
func statusFor(err error) (int, string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.code
	}
	code := ""
	var fe *fsm.Error
	if errors.As(err, &fe) {
		code = fe.Code
	}
	switch {
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
	case errors.Is(err, structs.ErrBadSnapshot):
		return http.StatusBadRequest, "bad_snapshot"
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
	msg := err.Error()
	if status == http.StatusInternalServerError {
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

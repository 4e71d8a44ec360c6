package fsm

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every rejection the FSM or its validators return wraps
// exactly one of these, so that httpapi can map it to a status code in one
// place.
var (
	// ErrInvalid marks input that is malformed or out of range.
	ErrInvalid = errors.New("invalid input")
	// ErrNotFound marks a read or delete of an object that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict marks a failed compare-and-set: the object's modify index
	// differs from the one the caller expected (or it exists on cas=0).
	ErrConflict = errors.New("conflict")
	// ErrFailedPrecondition marks a write that is well formed but refused by
	// the current state, such as a tenant whose home region is unknown or
	// the deletion of a region that tenants still use.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrForbidden marks a request whose signature, signer or approval does
	// not allow what it asks: unsigned, a bad signature, an unknown, revoked
	// or expired key, a stale timestamp, a replayed nonce, the wrong signer,
	// or an approval refused. The code says which check failed.
	ErrForbidden = errors.New("forbidden")
	// ErrTooMany marks a write refused because its principal is over a
	// quota of the policy (pending approvals, members).
	ErrTooMany = errors.New("over quota")
)

// Error is a rejection with a stable machine-readable code and a message for
// the operator. It unwraps to one of the package's sentinel errors.
type Error struct {
	Kind    error  // one of the sentinels above
	Code    string // stable code, e.g. "cas_conflict"
	Message string // human-readable, says what to fix
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel the error is a kind of.
func (e *Error) Unwrap() error { return e.Kind }

func invalidf(code, format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Code: code, Message: fmt.Sprintf(format, args...)}
}

func notFoundf(code, format string, args ...any) *Error {
	return &Error{Kind: ErrNotFound, Code: code, Message: fmt.Sprintf(format, args...)}
}

func conflictf(format string, args ...any) *Error {
	return &Error{Kind: ErrConflict, Code: "cas_conflict", Message: fmt.Sprintf(format, args...)}
}

func preconditionf(code, format string, args ...any) *Error {
	return &Error{Kind: ErrFailedPrecondition, Code: code, Message: fmt.Sprintf(format, args...)}
}

func tooManyf(code, format string, args ...any) *Error {
	return &Error{Kind: ErrTooMany, Code: code, Message: fmt.Sprintf(format, args...)}
}

func forbiddenf(code, format string, args ...any) *Error {
	return &Error{Kind: ErrForbidden, Code: code, Message: fmt.Sprintf(format, args...)}
}

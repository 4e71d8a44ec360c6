package chaos

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/atomcloud/atomfed/httpapi/client"
)

// TestClassifyWriteErrors: the workload sorts a failed write by what the
// server's error means (httpapi/errors.go): a write that may have been
// applied is a "maybe" in the history, one that certainly was not is left
// out, and a refused cas is a definite answer.
func TestClassifyWriteErrors(t *testing.T) {
	apiErr := func(status int, code string) error { return &client.Error{Status: status, Code: code} }
	wrapped := func(op string, err error) error {
		return &url.Error{Op: "Put", URL: "https://127.20.1.10:8401/v1/tenants/k1", Err: &net.OpError{Op: op, Net: "tcp", Err: err}}
	}
	for _, tc := range []struct {
		name   string
		err    error
		want   Result
		failed bool
	}{
		{"commit not confirmed", apiErr(503, "outcome_unknown"), ResUnknown, false},
		{"no leader (nothing applied)", apiErr(503, "no_leader"), 0, true},
		{"raft refused the entry before the log", apiErr(503, "busy"), 0, true},
		{"server stopping before anything was sent", apiErr(503, "shutting_down"), 0, true},
		{"cas refused", apiErr(409, "cas_conflict"), ResConflict, false},
		{"failed precondition", apiErr(409, "failed_precondition"), ResConflict, false},
		{"unmapped server error", apiErr(500, "internal"), ResUnknown, false},
		{"bad gateway from a proxy", apiErr(502, ""), ResUnknown, false},
		{"bad request", apiErr(400, "invalid"), 0, true},
		{"no token", apiErr(401, "unauthenticated"), 0, true},
		{"wrong role", apiErr(403, "forbidden_role"), 0, true},
		{"too many requests", apiErr(429, "rate_limited"), 0, true},
		{"connection refused", wrapped("dial", syscall.ECONNREFUSED), 0, true},
		{"reset after sending", wrapped("read", syscall.ECONNRESET), ResUnknown, false},
		{"client timeout", &url.Error{Op: "Put", URL: "https://x/", Err: context.DeadlineExceeded}, ResUnknown, false},
		{"EOF after sending", &url.Error{Op: "Put", URL: "https://x/", Err: io.EOF}, ResUnknown, false},
		{"TLS handshake cut", &url.Error{Op: "Put", URL: "https://x/", Err: errors.New("remote error: tls: bad record MAC")}, ResUnknown, false},
	} {
		got, failed := classify(tc.err)
		if failed != tc.failed || (!failed && got != tc.want) {
			t.Errorf("%s (%v): got %v failed=%v, want %v failed=%v", tc.name, tc.err, got, failed, tc.want, tc.failed)
		}
	}
}

package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// TestStatusFor pins the one mapping from errors to statuses and codes:
// this package's request-level errors (which carry a kind and a code, never
// a status), the FSM's and the cluster's sentinels, wrapped or not. The
// statuses and codes are the API (docs/api.md).
func TestStatusFor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"bad request", badRequest("invalid_cas", "cas"), 400, "invalid_cas"},
		{"plain HTTP on a TLS port", badRequest("tls_required", "use https"), 400, "tls_required"},
		{"no token", unauthenticated("unauthenticated", "no token"), 401, "unauthenticated"},
		{"unknown token", unauthenticated("invalid_token", "unknown"), 401, "invalid_token"},
		{"role", forbidden("forbidden_role", "role"), 403, "forbidden_role"},
		{"missing object", notFound("tenant_not_found", "none"), 404, "tenant_not_found"},
		{"no server key", unavailable("no_server_key", "no key"), 503, "no_server_key"},
		{"wrapped request error", fmt.Errorf("context: %w", notFound("region_not_found", "none")), 404, "region_not_found"},
		{"fsm error", &fsm.Error{Kind: fsm.ErrConflict, Code: "region_in_use", Message: "in use"}, 409, "region_in_use"},
		{"fsm sentinel", fmt.Errorf("x: %w", fsm.ErrInvalid), 400, "invalid"},
		{"body too large", fmt.Errorf("%w: 2 MiB", errBodyTooLarge), 413, "body_too_large"},
		{"method", errMethod, 405, "method_not_allowed"},
		{"route", errRoute, 404, "no_such_endpoint"},
		{"unknown outcome", structs.ErrOutcomeUnknown, 503, "outcome_unknown"},
		{"no leader", fmt.Errorf("%w: none elected", structs.ErrNoLeader), 503, "no_leader"},
		{"panic", errInternal, 500, "internal"},
		{"anything else", errors.New("boom"), 500, "internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, code := statusFor(tc.err); status != tc.status || code != tc.code {
				t.Fatalf("statusFor(%v) = %d %q, want %d %q", tc.err, status, code, tc.status, tc.code)
			}
			rec := httptest.NewRecorder()
			writeError(rec, tc.err)
			var body structs.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != tc.status || body.Error.Code != tc.code {
				t.Fatalf("writeError: %d %s, want %d with code %q", rec.Code, rec.Body, tc.status, tc.code)
			}
			retry := rec.Header().Get("Retry-After") != ""
			if want := tc.status == http.StatusServiceUnavailable && tc.code != "outcome_unknown"; retry != want {
				t.Fatalf("Retry-After set: %v, want %v", retry, want)
			}
		})
	}
	rec := httptest.NewRecorder()
	writeError(rec, errInternal)
	if want := `{"error":{"code":"internal","message":"internal error"}}` + "\n"; rec.Body.String() != want {
		t.Fatalf("a panic answers %s, want %s", rec.Body, want)
	}
}

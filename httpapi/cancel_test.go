package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// leaderless is a follower that knows no leader; every other Cluster
// method panics if called.
type leaderless struct{ Cluster }

func (leaderless) NodeID() string                  { return "s1" }
func (leaderless) State() string                   { return "Follower" }
func (leaderless) IsLeader() bool                  { return false }
func (leaderless) Leader() (string, string)        { return "", "" }
func (leaderless) LeaderChangeCh() <-chan struct{} { return make(chan struct{}) }
func (leaderless) LeaderHTTP() (string, error)     { return "", structs.ErrNoLeader }

// FSM is an empty state: the bootstrap token is checked against it (not
// retired).
func (leaderless) FSM() *fsm.FSM { return fsm.New(nil, nil) }

// ForwardApply answers as a follower that knows no leader does: nothing was
// sent.
func (leaderless) ForwardApply(context.Context, fsm.MessageType, any, int64) (*structs.ForwardResult, error) {
	return nil, structs.ErrNoLeader
}

// TestRequestEndedByShutdownIsRetryable: a write, or a read the follower
// hands to the leader, whose context ends while it waits for a leader — as
// every in-flight request's does when the server stops after a graceful
// leave — is answered 503 shutting_down with Retry-After (nothing was
// applied), not 500 internal. The chaos suite's rolling restarts found the
// 500s.
func TestRequestEndedByShutdownIsRetryable(t *testing.T) {
	const token = "atf_cancel_test_token"
	a := New(Config{Cluster: leaderless{}, BootstrapToken: token})
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPut, "/v1/tenants/t1", `{"home_region":"us-east"}`},
		{http.MethodGet, "/v1/tenants/t1?consistency=default", ""},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the server's base context ended
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)).WithContext(ctx)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, req)
		var body structs.ErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusServiceUnavailable || body.Error.Code != "shutting_down" || rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s %s with an ended context: %d %q (Retry-After %q), want 503 shutting_down with Retry-After: %s",
				tc.method, tc.path, rec.Code, body.Error.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
	}
	if status, code := statusFor(context.DeadlineExceeded); status != http.StatusServiceUnavailable || code != "busy" {
		t.Errorf("a deadline maps to %d %q, want 503 busy", status, code)
	}
}

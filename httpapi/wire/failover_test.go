package wire

import (
	"encoding/json"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

// A failover request answers either the approval itself (gated, as every
// gated request) or the failovers started: the client reads both.
func TestFailoverAnswerReadsBothAnswers(t *testing.T) {
	b, _ := json.Marshal(&fsm.Approval{ID: "appr-1", Action: fsm.ActionFailover, Status: fsm.ApprovalPending, Required: 2, Summary: "fail over"})
	var a FailoverAnswer
	if err := json.Unmarshal(b, &a); err != nil || a.Approval == nil || a.Approval.ID != "appr-1" || a.Approval.Required != 2 || a.Failovers != nil {
		t.Fatalf("approval answer: %+v %v", a, err)
	}
	b, _ = json.Marshal(FailoverStarted{Failovers: []SwitchoverStatus{{Switchover: fsm.Switchover{ID: 7, Tenant: "acme", Kind: fsm.FailoverKind}}},
		Skipped: []FailoverSkipped{{Tenant: "bare", Reason: "not replicated"}}})
	a = FailoverAnswer{}
	if err := json.Unmarshal(b, &a); err != nil || a.Approval != nil || len(a.Failovers) != 1 || a.Failovers[0].ID != 7 || len(a.Skipped) != 1 {
		t.Fatalf("failovers answer: %+v %v", a, err)
	}
	if err := json.Unmarshal([]byte(`[1]`), &a); err == nil {
		t.Fatal("a non-object answer decoded")
	}
}

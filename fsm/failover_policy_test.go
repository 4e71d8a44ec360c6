package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func TestTenantFailoverPolicyIsValidated(t *testing.T) {
	h := newHarness(t)
	seed(h)
	auto := Tenant{ID: "auto", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Failover: &FailoverPolicy{Mode: FailoverAuto, RPOBudgetMS: 2000}}
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: auto})
	h.f.Read(func(s *State) {
		got := s.Tenants["auto"]
		if got.FailoverMode() != FailoverAuto || got.Failover.RPOBudgetMS != 2000 {
			t.Fatalf("policy not stored: %+v", got.Failover)
		}
	})
	cases := []struct {
		name string
		typ  MessageType
		body any
		code string
	}{
		{"bad mode", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Failover: &FailoverPolicy{Mode: "sometimes"}}}, "invalid_failover_mode"},
		{"negative budget", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Failover: &FailoverPolicy{Mode: FailoverAuto, RPOBudgetMS: -1}}}, "invalid_rpo_budget"},
		{"huge budget", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Failover: &FailoverPolicy{RPOBudgetMS: MaxRPOBudgetMS + 1}}}, "invalid_rpo_budget"},
		{"patch bad mode", TenantPatchType, TenantPatch{ID: "auto", Patch: json.RawMessage(`{"failover":{"mode":"AUTO"}}`)}, "invalid_failover_mode"},
		{"patch negative budget", TenantPatchType, TenantPatch{ID: "auto", Patch: json.RawMessage(`{"failover":{"rpo_budget_ms":-5}}`)}, "invalid_rpo_budget"},
		{"patch unknown field", TenantPatchType, TenantPatch{ID: "auto", Patch: json.RawMessage(`{"failover":{"budget":5}}`)}, "bad_patch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotBytes(t, h.f)
			res := h.apply(tc.typ, tc.body)
			if res == nil || res.Err == nil {
				t.Fatalf("accepted: %+v", res)
			}
			var fe *Error
			if !errors.As(res.Err, &fe) || !errors.Is(res.Err, ErrInvalid) || fe.Code != tc.code {
				t.Fatalf("got %v (code %q), want %q", res.Err, codeOf(res.Err), tc.code)
			}
			if after := snapshotBytes(t, h.f); !bytes.Equal(before, after) {
				t.Fatal("a refused command changed the state")
			}
		})
	}
	// A patch may drop the policy again (merge patch null).
	h.mustApply(TenantPatchType, TenantPatch{ID: "auto", Patch: json.RawMessage(`{"failover":null}`)})
	h.f.Read(func(s *State) {
		if s.Tenants["auto"].Failover != nil || s.Tenants["auto"].FailoverMode() != FailoverManual {
			t.Fatalf("policy kept: %+v", s.Tenants["auto"].Failover)
		}
	})
}

func TestSnapshotAcceptsAFailoverKindAndRefusesAnUnknownOne(t *testing.T) {
	w := &Switchover{ID: 5, Tenant: "acme", Kind: FailoverKind, Mode: FailoverManual, From: "us-east", To: "eu-west", FromEpoch: 1, NewEpoch: 2,
		Phase: PhasePromoting, Steps: []SwitchoverStep{{Phase: PhasePromoting, Index: 5}}}
	if err := validateSwitchover(w); err != nil {
		t.Fatalf("failover refused: %v", err)
	}
	w.Kind = "crash"
	if err := validateSwitchover(w); err == nil {
		t.Fatal("an unknown kind was accepted")
	}
}

package fsm

import (
	"bytes"
	"testing"

	"github.com/hashicorp/raft"
)

// TestBatchEntry applies a batch entry: every command applies at the
// entry's index in order, a rejected one changes nothing and leaves the
// others applied, and each command links into the audit chain.
func TestBatchEntry(t *testing.T) {
	h := newHarness(t)
	seed(h)
	enc := func(typ MessageType, body any) []byte {
		d, err := Encode(typ, body)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	cmds := [][]byte{
		enc(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "b1", HomeRegion: "us-east"}, At: 10}),
		enc(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "b2", HomeRegion: "nowhere"}, At: 10}), // rejected
		enc(TenantDeleteType, TenantDelete{ID: "acme", At: 10}),
	}
	h.index++
	idx := h.index
	headBefore, _ := h.f.AuditHead()
	out := h.f.ApplyBatch([]*raft.Log{{Index: idx, Type: raft.LogCommand, Data: EncodeBatch(cmds)}})
	br, ok := out[0].(*BatchResult)
	if !ok || len(br.Results) != 3 {
		t.Fatalf("batch answered %#v", out[0])
	}
	for i, r := range br.Results {
		if r.Index != idx {
			t.Errorf("command %d applied at %d, want the entry's index %d", i, r.Index, idx)
		}
	}
	if br.Results[0].Err != nil || br.Results[2].Err != nil || br.Results[1].Err == nil {
		t.Fatalf("results: %v / %v / %v; want ok, rejected, ok", br.Results[0].Err, br.Results[1].Err, br.Results[2].Err)
	}
	h.f.Read(func(s *State) {
		if s.Tenants["b1"] == nil || s.Tenants["b1"].ModifyIndex != idx || s.Tenants["b2"] != nil || s.Tenants["acme"] != nil {
			t.Fatalf("state after the batch: b1 %v b2 %v acme %v", s.Tenants["b1"], s.Tenants["b2"], s.Tenants["acme"])
		}
		// Two commands applied: two links, both at idx, chained from the
		// previous head.
		want := chainHash(chainHash(headBefore, idx, TenantUpsertType, cmds[0][1:]), idx, TenantDeleteType, cmds[2][1:])
		if s.AuditHead != want {
			t.Fatalf("audit head %s, want %s", s.AuditHead, want)
		}
	})
	if h.f.AppliedIndex() != idx {
		t.Fatalf("applied index %d, want %d", h.f.AppliedIndex(), idx)
	}
}

// TestBatchEntryRefusesWhatItCannotCarry: a batch holding a command that
// is not batchable, or malformed, is refused whole, the same way on every
// replica: nothing in it applies, the audit chain records the refusal,
// and the FSM goes on.
func TestBatchEntryRefusesWhatItCannotCarry(t *testing.T) {
	plan, _ := Encode(TaskPlanType, TaskPlan{})
	tenant, _ := Encode(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "x", HomeRegion: "us-east"}})
	for name, data := range map[string][]byte{
		"not batchable": EncodeBatch([][]byte{tenant, plan}),
		"empty":         EncodeBatch(nil),
		"truncated":     EncodeBatch([][]byte{tenant})[:20],
		"trailing":      append(EncodeBatch([][]byte{tenant}), 0),
		"nested":        EncodeBatch([][]byte{EncodeBatch([][]byte{tenant, tenant})}),
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			seed(h)
			before := stateWithoutAudit(t, h.f)
			res, ok := h.f.Apply(&raft.Log{Index: h.index + 1, Type: raft.LogCommand, Data: data}).(*ApplyResult)
			if !ok || codeOf(res.Err) != "undecodable_command" {
				t.Fatalf("a malformed batch entry: %+v, want it refused", res)
			}
			if stateWithoutAudit(t, h.f) != before {
				t.Fatal("a refused batch changed the state")
			}
			var recent []AuditEntry
			h.f.Read(func(s *State) { recent = s.RecentAudit() })
			if last := recent[len(recent)-1]; last.Type != "refused:batch" {
				t.Fatalf("the audit chain records %+v, want refused:batch", last)
			}
		})
	}
}

// FuzzDecodeBatch: the batch decoder never panics, and what it accepts
// survives a round trip through EncodeBatch.
func FuzzDecodeBatch(f *testing.F) {
	tenant, _ := Encode(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "x", HomeRegion: "us-east"}})
	del, _ := Encode(TenantDeleteType, TenantDelete{ID: "x"})
	f.Add(EncodeBatch([][]byte{tenant, del})[2:])
	f.Add([]byte{1, 2, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, body []byte) {
		cmds, err := decodeBatch(batchCodec, body)
		if err != nil {
			return
		}
		again, err := decodeBatch(batchCodec, EncodeBatch(cmds)[2:])
		if err != nil || len(again) != len(cmds) {
			t.Fatalf("re-encoded batch of %d commands: %d, %v", len(cmds), len(again), err)
		}
		for i := range cmds {
			if !bytes.Equal(again[i], cmds[i]) {
				t.Fatalf("command %d changed in a round trip", i)
			}
		}
	})
}

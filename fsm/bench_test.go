package fsm

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkApplyTenantUpsert measures the FSM apply path of the hottest
// command: decode, validate, update the tables and indexes, extend the
// audit chain. One entry per Apply, and batches of 64 through ApplyBatch
// (what raft hands a busy FSM). Compare runs with benchstat.
func BenchmarkApplyTenantUpsert(b *testing.B) {
	label := strings.Repeat("x", 256)
	encoded := func(i int) []byte {
		data, err := Encode(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: fmt.Sprintf("t-%05d", i%10000),
			HomeRegion: "us-east", Labels: map[string]string{"v": label}}, At: int64(i)})
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	// Encoding is the follower's or leader's cost, not the FSM's: done up
	// front.
	entries := make([][]byte, 10000)
	for i := range entries {
		entries[i] = encoded(i)
	}
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			h := newHarness(b)
			h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: 1})
			index := h.index
			logs := make([]*raft.Log, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				for j := range logs {
					index++
					logs[j] = &raft.Log{Index: index, Type: raft.LogCommand, Data: entries[(i+j)%len(entries)]}
				}
				for _, r := range h.f.ApplyBatch(logs) {
					if res := r.(*ApplyResult); res.Err != nil {
						b.Fatal(res.Err)
					}
				}
			}
		})
	}
}

// BenchmarkEncodeTenantUpsert measures encoding a command for the log.
func BenchmarkEncodeTenantUpsert(b *testing.B) {
	cmd := TenantUpsert{Tenant: Tenant{ID: "t-00001", HomeRegion: "us-east", Labels: map[string]string{"v": strings.Repeat("x", 256)}}, At: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(TenantUpsertType, cmd); err != nil {
			b.Fatal(err)
		}
	}
}

package chaos

import (
	"slices"
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/procs"
)

func auditNode(id string) *Node {
	return &Node{ServerProc: &procs.ServerProc{Config: procs.ServerConfig{Node: id}}}
}

func ring(from, to uint64, hash func(i uint64) string, skip ...uint64) []fsm.AuditEntry {
	var out []fsm.AuditEntry
	for i := from; i <= to; i++ {
		if !slices.Contains(skip, i) {
			out = append(out, fsm.AuditEntry{Index: i, Type: "tenant_upsert", Hash: hash(i)})
		}
	}
	return out
}

// divergence must point at the first index where the chains part: a
// different hash there, or a command applied on one server and not on
// another; and say when the rings hold no difference at all.
func TestDivergenceNamesTheFirstDifferingEntry(t *testing.T) {
	c := &Cluster{Nodes: []*Node{auditNode("s1"), auditNode("s2"), auditNode("s3")}}
	same := func(i uint64) string { return strings.Repeat(string(rune('a'+i%26)), 16) }
	forked := func(at uint64) func(uint64) string {
		return func(i uint64) string {
			if i >= at {
				return "f" + same(i)
			}
			return same(i)
		}
	}
	for _, tc := range []struct {
		name  string
		heads map[string]*wire.AuditStatus
		want  []string
	}{
		{"hash differs", map[string]*wire.AuditStatus{
			"s1": {Recent: ring(10, 40, same)},
			"s2": {Recent: ring(12, 40, same)},
			"s3": {Recent: ring(10, 40, forked(25))},
		}, []string{"at index 25:", "s3 tenant_upsert f"}},
		{"applied on one server only", map[string]*wire.AuditStatus{
			"s1": {Recent: ring(10, 40, same)},
			"s2": {Recent: ring(10, 40, same, 31)},
			"s3": {Recent: ring(10, 40, same)},
		}, []string{"at index 31:", "s2 (nothing applied)"}},
		{"parted before the rings", map[string]*wire.AuditStatus{
			"s1": {Recent: ring(10, 40, same)},
			"s2": {Recent: ring(20, 40, same)},
			"s3": {Recent: ring(15, 40, same)},
		}, []string{"differ before index 20"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := divergence(c, tc.heads)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Fatalf("divergence = %q, want it to say %q", got, w)
				}
			}
		})
	}
}

package chaos

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op builds an operation on key "k" between call and ret (ret < 0:
// unknown outcome).
func op(client int, in Input, call int64, out Output, ret int64) porcupine.Operation {
	in.Key = "k"
	if out.Result == ResUnknown {
		ret = 1 << 40
	}
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func put(v string) Input { return Input{Kind: OpPut, Value: v} }
func read() Input        { return Input{Kind: OpRead} }
func cas(expV string, expI uint64, v string) Input {
	return Input{Kind: OpCAS, Value: v, ExpExists: expV != "", ExpValue: expV, ExpIndex: expI}
}
func ok(i uint64) Output            { return Output{Result: ResOK, Index: i} }
func got(v string, i uint64) Output { return Output{Result: ResOK, Value: v, Index: i} }
func unknown() Output               { return Output{Result: ResUnknown} }
func conflict() Output              { return Output{Result: ResConflict} }
func notFound() Output              { return Output{Result: ResNotFound} }
func check(ops ...porcupine.Operation) porcupine.CheckResult {
	return porcupine.CheckOperationsTimeout(RegisterModel, ops, 10*time.Second)
}

// TestModelAcceptsLinearizableHistories: concurrent writes in either order,
// cas chains, and writes of unknown outcome that did or did not happen.
func TestModelAcceptsLinearizableHistories(t *testing.T) {
	cases := map[string][]porcupine.Operation{
		"sequential": {
			op(0, read(), 0, notFound(), 1),
			op(0, put("a"), 2, ok(5), 3),
			op(1, read(), 4, got("a", 5), 5),
			op(1, cas("a", 5, "b"), 6, ok(7), 7),
			op(0, cas("a", 5, "c"), 8, conflict(), 9),
			op(0, read(), 10, got("b", 7), 11),
		},
		"concurrent writes, read sees the later one": {
			op(0, put("a"), 0, ok(5), 10),
			op(1, put("b"), 1, ok(6), 9),
			op(2, read(), 11, got("b", 6), 12),
		},
		"create only": {
			op(0, cas("", 0, "a"), 0, ok(3), 1),
			op(1, cas("", 0, "b"), 2, conflict(), 3),
		},
		"unknown write that happened, index learnt by a read": {
			op(0, put("a"), 0, ok(5), 1),
			op(1, put("b"), 2, unknown(), -1),
			op(0, read(), 10, got("b", 8), 11),
			op(0, cas("b", 8, "c"), 12, ok(9), 13),
		},
		"unknown write that never happened": {
			op(0, put("a"), 0, ok(5), 1),
			op(1, put("b"), 2, unknown(), -1),
			op(0, read(), 10, got("a", 5), 11),
		},
		"unknown cas whose expectation failed": {
			op(0, put("a"), 0, ok(5), 1),
			op(0, put("b"), 2, ok(6), 3),
			op(1, cas("a", 5, "c"), 4, unknown(), -1),
			op(0, read(), 10, got("b", 6), 11),
		},
	}
	for name, h := range cases {
		if res := check(h...); res != porcupine.Ok {
			t.Errorf("%s: verdict %s, want ok", name, res)
		}
	}
}

// TestModelRejectsViolations: the bugs the suite exists to find.
func TestModelRejectsViolations(t *testing.T) {
	cases := map[string][]porcupine.Operation{
		"stale read after an acknowledged write": {
			op(0, put("a"), 0, ok(5), 1),
			op(0, put("b"), 2, ok(6), 3),
			op(1, read(), 4, got("a", 5), 5),
		},
		"lost acknowledged write": {
			op(0, put("a"), 0, ok(5), 1),
			op(1, read(), 2, notFound(), 3),
		},
		"value nobody wrote": {
			op(0, put("a"), 0, ok(5), 1),
			op(1, read(), 2, got("z", 9), 3),
		},
		"write reported failed but applied": {
			op(0, put("a"), 0, ok(5), 1),
			op(1, read(), 4, got("b", 6), 5),
		},
		"cas succeeded against a moved version": {
			op(0, put("a"), 0, ok(5), 1),
			op(0, put("b"), 2, ok(6), 3),
			op(1, cas("a", 5, "c"), 4, ok(7), 5),
		},
		"cas refused although the version matched": {
			op(0, put("a"), 0, ok(5), 1),
			op(1, cas("a", 5, "c"), 2, conflict(), 3),
		},
		"index went backwards": {
			op(0, put("a"), 0, ok(5), 1),
			op(0, put("b"), 2, ok(4), 3),
		},
		"same value read at two indexes": {
			op(0, put("a"), 0, unknown(), -1),
			op(1, read(), 2, got("a", 5), 3),
			op(1, read(), 4, got("a", 6), 5),
		},
		"index learnt for an unknown write is below an earlier version": {
			op(0, put("a"), 0, ok(10), 1),
			op(1, put("b"), 2, unknown(), -1),
			op(0, read(), 3, got("b", 5), 4),
		},
		"index below an earlier version after an unknown write": {
			op(0, put("a"), 0, ok(10), 1),
			op(1, put("b"), 2, unknown(), -1),
			op(0, put("c"), 3, ok(8), 4),
		},
		"read goes back in time": {
			op(0, put("a"), 0, ok(5), 1),
			op(0, put("b"), 2, ok(6), 10),
			op(1, read(), 3, got("b", 6), 4),
			op(2, read(), 5, got("a", 5), 6),
		},
	}
	for name, h := range cases {
		if res := check(h...); res != porcupine.Illegal {
			t.Errorf("%s: verdict %s, want illegal", name, res)
		}
	}
}

// TestCheckLinearizableWritesVisualisation: a violation is reported per
// key and its visualisation is written; a clean key is not.
func TestCheckLinearizableWritesVisualisation(t *testing.T) {
	dir := t.TempDir()
	bad := []porcupine.Operation{
		op(0, put("a"), 0, ok(5), 1),
		op(0, put("b"), 2, ok(6), 3),
		op(1, read(), 4, got("a", 5), 5),
	}
	good := op(2, put("x"), 0, ok(7), 1)
	good.Input = Input{Kind: OpPut, Key: "other", Value: "x"}
	vs := CheckLinearizable(append(bad, good), 10*time.Second, dir)
	if len(vs) != 2 {
		t.Fatalf("got %d verdicts, want one per key: %+v", len(vs), vs)
	}
	for _, v := range vs {
		switch v.Key {
		case "k":
			if v.Result != porcupine.Illegal || v.HTML == "" {
				t.Fatalf("key k: %+v, want illegal with a visualisation", v)
			}
			if st, err := os.Stat(v.HTML); err != nil || st.Size() == 0 {
				t.Fatalf("visualisation %s: %v", v.HTML, err)
			}
		case "other":
			if v.Result != porcupine.Ok || v.HTML != "" {
				t.Fatalf("key other: %+v, want ok without a visualisation", v)
			}
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.html")); len(m) != 1 {
		t.Fatalf("visualisations written: %v, want exactly one", m)
	}
}

func TestHistoryUnknownReturnsAtEnd(t *testing.T) {
	h := NewHistory()
	h.Add(0, Input{Kind: OpPut, Key: "k", Value: "a"}, 10, Output{Result: ResUnknown}, 20)
	h.Add(1, Input{Kind: OpRead, Key: "k"}, 30, Output{Result: ResNotFound}, 40)
	ops := h.Operations()
	if ops[0].Return != 41 {
		t.Fatalf("unknown write returns at %d, want after the last event (41)", ops[0].Return)
	}
}

func TestDurableWritesCheck(t *testing.T) {
	d := newDurableWrites()
	d.set("d1", ResOK)
	d.set("d2", ResOK)
	d.set("d3", ResUnknown)
	d.set("d4", ResConflict)
	found := map[string]bool{"d1": true, "d3": true, "d4": true, "d9": true, "k0": true}
	lost, phantom := d.Check(found, func(k string) bool { return k[0] == 'd' })
	if len(lost) != 1 || lost[0] != "d2" {
		t.Errorf("lost = %v, want [d2]", lost)
	}
	if len(phantom) != 2 || phantom[0] != "d4" || phantom[1] != "d9" {
		t.Errorf("phantom = %v, want [d4 d9]", phantom)
	}
}

func TestAvailabilityWindow(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	acks := []time.Time{at(0), at(10), at(20), at(700), at(710), at(2000)}
	if w := availabilityWindow(acks, at(25), at(1000)); w != 675*time.Millisecond {
		t.Errorf("window = %s, want 675ms (fault at 25 ms, next ack at 700 ms)", w)
	}
	if w := availabilityWindow(acks, at(5), at(15)); w != 5*time.Millisecond {
		t.Errorf("window = %s, want 5ms", w)
	}
	if w := availabilityWindow(acks, at(2100), at(2500)); w != 400*time.Millisecond {
		t.Errorf("window with no ack after the fault = %s, want the whole 400ms", w)
	}
}

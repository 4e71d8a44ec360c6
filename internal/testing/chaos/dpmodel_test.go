package chaos

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestDataPlaneModel checks the row model the data-plane checks compare
// the databases with: an acknowledged write leaves one state, a write of
// unknown outcome adds its result, and only rows whose state is certain
// and present are chosen for updates and deletes.
func TestDataPlaneModel(t *testing.T) {
	w := newDPWriter(DataPlaneTenant{ID: "acme", Tables: []Table{{"orders", "email"}}}, nil, 0, 1)
	ins := w.next()
	if ins.kind != "insert" || ins.key != (dpKey{"orders", 1}) {
		t.Fatalf("first write %+v, want an insert of orders/1", ins)
	}
	w.record(ins, dpAcked, nil)
	maybe := w.next()
	for maybe.kind != "insert" {
		w.record(maybe, dpAcked, nil)
		maybe = w.next()
	}
	w.record(maybe, dpMaybe, errors.New("unexpected EOF"))
	m := w.model()
	if r := m[maybe.key]; !r.allows(nil) || !r.allows(maybe.val) || len(r.poss) != 2 {
		t.Fatalf("a maybe insert allows %s, want absent or its value", possText(r))
	}
	for _, k := range w.settled {
		if k == maybe.key {
			t.Fatalf("row %v of unknown state is a candidate for updates", k)
		}
	}
	// Updates and deletes only touch settled rows; after many writes every
	// settled row is certainly present.
	for i := 0; i < 500; i++ {
		op := w.next()
		if op.kind != "insert" {
			if one, present := w.rows[op.key].certain(); !one || !present {
				t.Fatalf("%s of %v, whose state is %s", op.kind, op.key, possText(w.rows[op.key]))
			}
		}
		outcome := dpAcked
		if i%17 == 0 {
			outcome = dpMaybe
		}
		w.record(op, outcome, nil)
	}
	present, uncertain := modelSummary(w.model())
	if present == 0 || uncertain == 0 || w.Dels.Load() == 0 || w.Updates.Load() == 0 {
		t.Fatalf("present %d, uncertain %d, deletes %d, updates %d", present, uncertain, w.Dels.Load(), w.Updates.Load())
	}
}

// TestDataPlaneReport renders a data-plane run alone: the headline, the
// data-plane section and its failures, and no control-plane sections.
func TestDataPlaneReport(t *testing.T) {
	r := &DataPlaneResult{Name: "dataplane", Seed: 9, Started: time.Now(), Regions: []string{"us-east", "eu-west", "ap-south"},
		Tenants:     []DataPlaneTenant{{ID: "acme", HomeRegion: "us-east", MirrorRegions: []string{"eu-west"}, Tables: []Table{{"orders", "email"}}}},
		Events:      []Event{{Type: "pg-kill", Targets: []string{"pg/us-east"}, Start: time.Now(), Healed: time.Now(), Recovered: time.Now()}},
		WritesAcked: 100, LeakedRows: 3, ConvergeWithinS: 90, Converged: true, ConvergenceS: 0.4}
	r.fail("3 rows of tenants in regions that are neither their home nor their mirror")
	rep := NewDataPlaneReport("make chaos-dataplane DURATION=1m SEED=9", r)
	md := rep.Markdown()
	for _, want := range []string{"**FAIL**: 0 acknowledged rows lost, 3 rows leaked across tenants", "## Data plane", "| acme | us-east | eu-west | orders (email) |",
		"| pg-kill |", "Not injected in this suite: agent-kill, kill-leader.", "make chaos-dataplane DURATION=1m SEED=9", "Data plane: 3 servers"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	for _, not := range []string{"## Availability windows", "linearizability violations", "Workload: operations start"} {
		if strings.Contains(md, not) {
			t.Errorf("a data-plane report holds the control-plane part %q", not)
		}
	}
	if rep.Passed || rep.DPLeakedRows != 3 {
		t.Errorf("report passed %v with %d leaked rows", rep.Passed, rep.DPLeakedRows)
	}
}

package chaos

import (
	"errors"
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

// TestDrillRecomputationCatchesADifference: a drill recorded passed whose
// tables differ from the checker's own restore in any way (a row count, a
// checksum, a table the copy lacks) is caught; an equal one passes.
func TestDrillRecomputationCatchesADifference(t *testing.T) {
	rec := []fsm.DrillTable{
		{Database: "atomfed", Name: "public.orders", Rows: 120, Checksum: "991"},
		{Database: "atomfed", Name: "public.tickets", Rows: 7, Checksum: "12"},
	}
	same := map[string]fsm.DrillTable{
		"atomfed/public.orders":  {Database: "atomfed", Name: "public.orders", Rows: 120, Checksum: "991"},
		"atomfed/public.tickets": {Database: "atomfed", Name: "public.tickets", Rows: 7, Checksum: "12"},
	}
	if err := compareDrillTables(rec, same); err != nil {
		t.Fatalf("equal tables: %v", err)
	}
	for name, mutate := range map[string]func(map[string]fsm.DrillTable){
		"a row fewer": func(m map[string]fsm.DrillTable) {
			x := m["atomfed/public.orders"]
			x.Rows--
			m["atomfed/public.orders"] = x
		},
		"other checksum": func(m map[string]fsm.DrillTable) {
			x := m["atomfed/public.tickets"]
			x.Checksum = "13"
			m["atomfed/public.tickets"] = x
		},
		"table missing": func(m map[string]fsm.DrillTable) { delete(m, "atomfed/public.tickets") },
	} {
		got := map[string]fsm.DrillTable{}
		for k, v := range same {
			got[k] = v
		}
		mutate(got)
		if err := compareDrillTables(rec, got); err == nil {
			t.Errorf("%s: not caught", name)
		}
	}
}

// TestVerifyVerdicts reads pgbackrest verify's text output: a backup's own
// line decides; without one, the stanza's status and the exit status do.
func TestVerifyVerdicts(t *testing.T) {
	out := strings.Join([]string{
		"stanza: us-east",
		"status: error",
		"  archiveId: 15-1, total WAL checked: 9, total valid WAL: 9",
		"  backup: 20261208-030218F, status: valid, total files checked: 980, total valid files: 980",
		"  backup: 20261208-030218F_20261208-030301I, status: invalid, total files checked: 981, total valid files: 980",
	}, "\n")
	v := verifyVerdicts([]byte(out), nil)
	if !v("20261208-030218F") || v("20261208-030218F_20261208-030301I") {
		t.Error("a backup's own line does not decide")
	}
	if v("20261208-040000F") {
		t.Error("a backup not named passes though the stanza's status is error")
	}
	ok := verifyVerdicts([]byte("stanza: us-east\nstatus: ok\n"), nil)
	if !ok("20261208-040000F") {
		t.Error("a sound stanza does not vouch for a backup verify does not name")
	}
	if verifyVerdicts([]byte("stanza: us-east\nstatus: ok\n"), errors.New("exit status 104"))("20261208-040000F") {
		t.Error("a failed verify vouches for a backup")
	}
}

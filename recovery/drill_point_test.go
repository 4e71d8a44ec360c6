package recovery

import (
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

// TestDrillComparisonFailsOnAnyDifference: a restored table with a row
// more, another checksum, or missing fails the comparison, naming it.
func TestDrillComparisonFailsOnAnyDifference(t *testing.T) {
	p := &sourcePoint{Name: "atomfed-r-d1", Tables: map[string]fsm.DrillTable{
		"public.a": {Database: "atomfed", Name: "public.a", Rows: 3, Checksum: "10"},
		"public.b": {Database: "atomfed", Name: "public.b", Rows: 1, Checksum: "7"},
	}}
	same := []fsm.DrillTable{{Database: "atomfed", Name: "public.a", Rows: 3, Checksum: "10"}, {Database: "atomfed", Name: "public.b", Rows: 1, Checksum: "7"},
		{Database: "other", Name: "public.a", Rows: 99, Checksum: "1"}} // another database is not compared
	var res fsm.DrillResult
	if err := p.compare(same, &res); err != nil || res.TablesCompared != 2 {
		t.Fatalf("equal tables: %v, compared %d", err, res.TablesCompared)
	}
	for name, restored := range map[string][]fsm.DrillTable{
		"a row more":     {{Database: "atomfed", Name: "public.a", Rows: 4, Checksum: "10"}, same[1]},
		"other checksum": {{Database: "atomfed", Name: "public.a", Rows: 3, Checksum: "11"}, same[1]},
		"missing table":  {same[1]},
	} {
		var res fsm.DrillResult
		err := p.compare(restored, &res)
		if err == nil || !strings.Contains(err.Error(), "public.a") || !strings.Contains(err.Error(), "restore point") {
			t.Errorf("%s: %v, want a difference naming public.a", name, err)
		}
	}
}

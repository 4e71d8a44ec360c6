package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A go test -json recording as test2json writes it: a passing package
// with a subtest, a failing package, a package without tests, and a
// package cut off by a timeout (no final event).
const recording = `{"Time":"2026-01-01T10:00:00Z","Action":"start","Package":"github.com/atomcloud/atomfed/fsm"}
{"Time":"2026-01-01T10:00:01Z","Action":"run","Package":"github.com/atomcloud/atomfed/fsm","Test":"TestA"}
{"Time":"2026-01-01T10:00:01Z","Action":"run","Package":"github.com/atomcloud/atomfed/fsm","Test":"TestA/sub"}
{"Time":"2026-01-01T10:00:01Z","Action":"pass","Package":"github.com/atomcloud/atomfed/fsm","Test":"TestA/sub","Elapsed":0.1}
{"Time":"2026-01-01T10:00:01Z","Action":"pass","Package":"github.com/atomcloud/atomfed/fsm","Test":"TestA","Elapsed":0.2}
{"Time":"2026-01-01T10:00:01Z","Action":"skip","Package":"github.com/atomcloud/atomfed/fsm","Test":"TestB","Elapsed":0}
{"Time":"2026-01-01T10:00:02Z","Action":"pass","Package":"github.com/atomcloud/atomfed/fsm","Elapsed":1.5}
{"Time":"2026-01-01T10:00:02Z","Action":"run","Package":"github.com/atomcloud/atomfed/cluster","Test":"TestC"}
{"Time":"2026-01-01T10:00:03Z","Action":"output","Package":"github.com/atomcloud/atomfed/cluster","Test":"TestC","Output":"--- FAIL: TestC\n"}
{"Time":"2026-01-01T10:00:03Z","Action":"fail","Package":"github.com/atomcloud/atomfed/cluster","Test":"TestC","Elapsed":1}
{"Time":"2026-01-01T10:00:03Z","Action":"pass","Package":"github.com/atomcloud/atomfed/cluster","Test":"TestD","Elapsed":1}
{"Time":"2026-01-01T10:00:04Z","Action":"fail","Package":"github.com/atomcloud/atomfed/cluster","Elapsed":2}
{"Time":"2026-01-01T10:00:04Z","Action":"output","Package":"github.com/atomcloud/atomfed/httpapi/client","Output":"?   \tgithub.com/atomcloud/atomfed/httpapi/client\t[no test files]\n"}
{"Time":"2026-01-01T10:00:04Z","Action":"skip","Package":"github.com/atomcloud/atomfed/httpapi/client","Elapsed":0}
go: some line that is not JSON
{"Time":"2026-01-01T10:00:05Z","Action":"run","Package":"github.com/atomcloud/atomfed/internal/e2e","Test":"TestSlow"}
`

func writeRecording(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "go-test.json")
	if err := os.WriteFile(p, []byte(recording), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadTestRun(t *testing.T) {
	run, err := ReadTestRun(writeRecording(t))
	if err != nil {
		t.Fatal(err)
	}
	fsm := run.Packages[Module+"/fsm"]
	if fsm.Result != "pass" || fsm.Passed != 1 || fsm.Skipped != 1 || fsm.Subtests != 1 || fsm.ElapsedS != 1.5 {
		t.Errorf("fsm: %+v", fsm)
	}
	cl := run.Packages[Module+"/cluster"]
	if cl.Result != "fail" || cl.Failed != 1 || cl.Passed != 1 || len(cl.FailedTests) != 1 || cl.FailedTests[0] != "TestC" {
		t.Errorf("cluster: %+v", cl)
	}
	if c := run.Packages[Module+"/httpapi/client"]; c.Result != "skip" || !c.NoTestFiles {
		t.Errorf("client: %+v", c)
	}
	if e := run.Packages[Module+"/internal/e2e"]; e.Result != "fail" {
		t.Errorf("a package cut off before its end event: %+v, want fail", e)
	}
	if run.Total != (TestCounts{Passed: 2, Failed: 1, Skipped: 1, Subtests: 1}) {
		t.Errorf("total %+v", run.Total)
	}
	if strings.Join(run.FailedPackages, ",") != Module+"/cluster,"+Module+"/internal/e2e" {
		t.Errorf("failed packages %v", run.FailedPackages)
	}
	if len(run.SHA256) != 64 || run.Start.IsZero() || !run.End.After(run.Start) {
		t.Errorf("checksum %q, %s .. %s", run.SHA256, run.Start, run.End)
	}
	if s := run.Summary([]string{Module + "/replication"}); s[0].Result != "not_run" {
		t.Errorf("a package not in the run: %+v", s[0])
	}
	if _, err := ReadTestRun(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("a missing recording reads without error")
	}
}

// TestVerdicts: only a built component whose recorded tests passed and
// whose live verification succeeded passes; nothing else does.
func TestVerdicts(t *testing.T) {
	run, err := ReadTestRun(writeRecording(t))
	if err != nil {
		t.Fatal(err)
	}
	ok := &Verification{OK: true}
	built := Component{Task: "G.1.9", Short: "x", Built: Built, Packages: []string{"fsm"}}
	cases := []struct {
		name string
		comp Component
		run  *TestRun
		v    *Verification
		want string
	}{
		{"built, tests pass, verified", built, run, ok, "pass"},
		{"built, tests pass, verified with a part simulated", built, run, &Verification{OK: true, Simulated: []string{"replication on agent a1 of r1 (no database)"}}, VerdictPassSimulated},
		{"built, verification failed with a part simulated", built, run, &Verification{Error: "boom", Simulated: []string{"replication"}}, "fail"},
		{"built, verification failed", built, run, &Verification{Error: "boom"}, "fail"},
		{"built, no verification", built, run, nil, "fail"},
		{"built, a package fails", Component{Built: Built, Packages: []string{"fsm", "cluster"}}, run, ok, "fail"},
		{"built, no recorded run", built, nil, ok, "unverified"},
		{"built, its packages did not run", Component{Built: Built, Packages: []string{"recovery"}}, run, ok, "unverified"},
		{"built, one of its packages did not run", Component{Built: Built, Packages: []string{"fsm", "recovery"}}, run, ok, "unverified"},
		{"partly built, all green", Component{Built: PartlyBuilt, Packages: []string{"fsm"}, Missing: []string{"approvals"}}, run, ok, VerdictPartial},
		{"not built", Component{Built: NotBuilt, Packages: []string{"fsm"}, Missing: []string{"everything"}}, run, ok, VerdictNotImplemented},
	}
	for _, c := range cases {
		got := componentReport(c.comp, c.run, c.v)
		if got.Verdict != c.want || got.VerdictWhy == "" {
			t.Errorf("%s: %s (%s), want %s", c.name, got.Verdict, got.VerdictWhy, c.want)
		}
	}
}

func TestComponentsCoverThePhase(t *testing.T) {
	comps := Components()
	seen := map[string]bool{}
	for i, c := range comps {
		if c.Task != "G.1."+string(rune('1'+i)) || c.Short == "" || c.Name == "" {
			t.Errorf("component %d: %+v", i, c)
		}
		if c.Built != NotBuilt && len(c.Packages) == 0 {
			t.Errorf("%s is %s but names no package", c.Task, c.Built)
		}
		if c.Built == Built && c.Verify == "" {
			t.Errorf("%s is built but has no live verification", c.Task)
		}
		if seen[c.File()] {
			t.Errorf("two components write %s", c.File())
		}
		seen[c.File()] = true
		if c.Built != Built && len(c.Missing) == 0 {
			t.Errorf("%s is not fully built but says nothing is missing", c.Task)
		}
		if _, ok := verifiers[c.Verify]; c.Verify != "" && !ok {
			t.Errorf("%s names an unknown verification %q", c.Task, c.Verify)
		}
	}
	if len(comps) != 7 {
		t.Errorf("%d components, want G.1.1-G.1.7", len(comps))
	}
}

// TestComponentPackagesExist: every package a component names is a
// package of the repository, so that a report never counts the tests of a
// package that does not exist.
func TestComponentPackagesExist(t *testing.T) {
	for _, c := range Components() {
		for _, p := range c.Packages {
			files, _ := filepath.Glob(filepath.Join("..", "..", p, "*.go"))
			if len(files) == 0 {
				t.Errorf("%s names package %s, which has no Go files", c.Task, p)
			}
		}
	}
}

func TestRelatedTests(t *testing.T) {
	run, err := ReadTestRun(writeRecording(t))
	if err != nil {
		t.Fatal(err)
	}
	got := run.related([]string{"fsm.TestA", "cluster.TestC", "recovery.TestX", "fsm.TestNone"})
	want := []string{"pass", "fail", "not_run", "not_run"}
	for i, r := range got {
		if r.Result != want[i] {
			t.Errorf("%s: %s, want %s", r.Name, r.Result, want[i])
		}
	}
}

// TestRelatedTestsExist: every related test a component names is a test
// function of the repository, so that a rename cannot turn it into a
// silent not_run.
func TestRelatedTestsExist(t *testing.T) {
	for _, c := range Components() {
		for _, r := range c.Related {
			i := strings.LastIndex(r, ".")
			files, _ := filepath.Glob(filepath.Join("..", "..", r[:i], "*_test.go"))
			found := false
			for _, f := range files {
				b, _ := os.ReadFile(f)
				if strings.Contains(string(b), "func "+r[i+1:]+"(t *testing.T)") {
					found = true
				}
			}
			if !found {
				t.Errorf("%s names %s, which is not a test of the repository", c.Task, r)
			}
		}
	}
}

package report

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// testEvent is one line of `go test -json` (test2json).
type testEvent struct {
	Time    time.Time `json:"Time"`
	Action  string    `json:"Action"`
	Package string    `json:"Package"`
	Test    string    `json:"Test"`
	Elapsed float64   `json:"Elapsed"`
	Output  string    `json:"Output"`
}

// TestRun is a recorded `go test -json` run.
type TestRun struct {
	// File is the recording and SHA256 its checksum, so a reader can tell
	// which run a report summarises.
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	// Command is how the run was made, when the caller says.
	Command string `json:"command,omitempty"`
	// Start and End are the first and last event times.
	Start    time.Time                `json:"start"`
	End      time.Time                `json:"end"`
	Packages map[string]*PackageTests `json:"-"`
	// PackageList is every package of the run, by import path.
	PackageList []*PackageTests `json:"packages"`
	// Total counts top-level tests over every package.
	Total TestCounts `json:"total"`
	// FailedPackages lists the packages that failed (a failed test, or a
	// build or timeout failure).
	FailedPackages []string `json:"failed_packages"`
}

// TestCounts counts top-level tests (subtests are counted apart).
type TestCounts struct {
	Passed   int `json:"passed"`
	Failed   int `json:"failed"`
	Skipped  int `json:"skipped"`
	Subtests int `json:"subtests"`
}

// PackageTests is one package's result in a run.
type PackageTests struct {
	Package string `json:"package"`
	// Result is pass, fail, skip (also: no test files) or not_run (the
	// package is not in the recording).
	Result      string   `json:"result"`
	NoTestFiles bool     `json:"no_test_files,omitempty"`
	ElapsedS    float64  `json:"elapsed_s"`
	Passed      int      `json:"passed"`
	Failed      int      `json:"failed"`
	Skipped     int      `json:"skipped"`
	Subtests    int      `json:"subtests"`
	FailedTests []string `json:"failed_tests,omitempty"`
	// Tests lists the top-level tests that ran, with their result.
	Tests []TestResult `json:"tests,omitempty"`
}

// TestResult is one top-level test.
type TestResult struct {
	Name     string  `json:"name"`
	Result   string  `json:"result"`
	ElapsedS float64 `json:"elapsed_s"`
}

// ReadTestRun parses a `go test -json` recording. Lines that are not JSON
// (a build error printed by go itself) are ignored; packages that print
// "FAIL ... [build failed]" still end with a fail event.
func ReadTestRun(path string) (*TestRun, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	run := &TestRun{File: path, SHA256: hex.EncodeToString(sum[:]), Packages: map[string]*PackageTests{}, FailedPackages: []string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var ev testEvent
		if json.Unmarshal(line, &ev) != nil || ev.Package == "" {
			continue
		}
		if run.Start.IsZero() || ev.Time.Before(run.Start) {
			run.Start = ev.Time
		}
		if ev.Time.After(run.End) {
			run.End = ev.Time
		}
		p := run.Packages[ev.Package]
		if p == nil {
			p = &PackageTests{Package: ev.Package, Result: "running"}
			run.Packages[ev.Package] = p
		}
		p.apply(ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(run.Packages) == 0 {
		return nil, fmt.Errorf("%s holds no go test -json events", path)
	}
	var names []string
	for n := range run.Packages {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := run.Packages[n]
		if p.Result == "running" {
			p.Result = "fail" // the run ended (killed, timed out) before the package did
		}
		if p.Result == "fail" {
			run.FailedPackages = append(run.FailedPackages, n)
		}
		run.Total.Passed += p.Passed
		run.Total.Failed += p.Failed
		run.Total.Skipped += p.Skipped
		run.Total.Subtests += p.Subtests
		sort.Slice(p.Tests, func(i, j int) bool { return p.Tests[i].Name < p.Tests[j].Name })
		run.PackageList = append(run.PackageList, p)
	}
	return run, nil
}

func (p *PackageTests) apply(ev testEvent) {
	if ev.Test == "" {
		switch ev.Action {
		case "pass", "fail", "skip":
			p.Result, p.ElapsedS = ev.Action, ev.Elapsed
		case "output":
			if strings.Contains(ev.Output, "[no test files]") {
				p.NoTestFiles = true
			}
		}
		return
	}
	if ev.Action != "pass" && ev.Action != "fail" && ev.Action != "skip" {
		return
	}
	if strings.Contains(ev.Test, "/") {
		p.Subtests++
		return
	}
	switch ev.Action {
	case "pass":
		p.Passed++
	case "fail":
		p.Failed++
		p.FailedTests = append(p.FailedTests, ev.Test)
	case "skip":
		p.Skipped++
	}
	p.Tests = append(p.Tests, TestResult{Name: ev.Test, Result: ev.Action, ElapsedS: ev.Elapsed})
}

// Summary returns the results of pkgs (import paths), each marked not_run
// when the recording does not hold it.
func (r *TestRun) Summary(pkgs []string) []*PackageTests {
	out := make([]*PackageTests, 0, len(pkgs))
	for _, name := range pkgs {
		if p := r.Packages[name]; p != nil {
			out = append(out, p)
		} else {
			out = append(out, &PackageTests{Package: name, Result: "not_run"})
		}
	}
	return out
}

// RelatedTest is the result of a test named as evidence for a component.
type RelatedTest struct {
	Name string `json:"name"` // package.TestName, package relative to Module
	// Result is pass, fail, skip or not_run.
	Result   string  `json:"result"`
	ElapsedS float64 `json:"elapsed_s,omitempty"`
}

// related looks up "package.TestName" entries in the run.
func (r *TestRun) related(names []string) []RelatedTest {
	var out []RelatedTest
	for _, n := range names {
		rt := RelatedTest{Name: n, Result: "not_run"}
		if i := strings.LastIndex(n, "."); i > 0 {
			if p := r.Packages[Module+"/"+n[:i]]; p != nil {
				for _, t := range p.Tests {
					if t.Name == n[i+1:] {
						rt.Result, rt.ElapsedS = t.Result, t.ElapsedS
					}
				}
			}
		}
		out = append(out, rt)
	}
	return out
}

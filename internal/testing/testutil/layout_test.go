package testutil

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/atomcloud/atomfed"

// deps returns, for each package pkg links, the packages it imports.
func deps(t *testing.T, pkg string) map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		m[f[0]] = f[1:]
	}
	return m
}

// TestHarnessesStayOutOfTheBinaries checks the layout DESIGN.md fixes:
// nothing under internal/testing is linked into atomfed, and no atomfed
// package that the binary or the tools link imports package testing (only
// a dependency may: hashicorp/raft's testing.go does).
func TestHarnessesStayOutOfTheBinaries(t *testing.T) {
	for p := range deps(t, module+"/cmd/atomfed") {
		if strings.Contains(p, "/internal/testing/") {
			t.Errorf("atomfed links the harness %s", p)
		}
	}
	for _, cmd := range []string{"atomfed", "atomfed-bench", "atomfed-chaos"} {
		for p, imports := range deps(t, module+"/cmd/"+cmd) {
			if !strings.HasPrefix(p, module+"/") {
				continue
			}
			for _, imp := range imports {
				if imp == "testing" {
					t.Errorf("%s links %s, which imports testing", cmd, p)
				}
			}
		}
	}
}

// TestChaosDoesNotImportBench: the chaos suite shares machine facts with
// the bench tool through package machine, not by importing the benchmark.
func TestChaosDoesNotImportBench(t *testing.T) {
	if _, ok := deps(t, module+"/internal/testing/chaos")[module+"/internal/testing/bench"]; ok {
		t.Error("internal/testing/chaos links internal/testing/bench")
	}
}

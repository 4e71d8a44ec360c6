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
		t.Fatalf("the layout checks read the import graph with the go command: %v", err)
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

// TestNothingImportsUpward checks the direction of the imports DESIGN.md
// fixes: fsm knows nothing of HTTP, PostgreSQL or the packages above it;
// replication nothing of HTTP; the server (cluster) nothing of the agent
// (cluster/agent) nor the agent of the server; the API's wire types
// nothing of the server or its client; the shared leaves nothing above
// them. A rule names what the package may not link (its own code or any
// dependency's); "x/..." is x and everything below it.
func TestNothingImportsUpward(t *testing.T) {
	m := module + "/"
	rules := map[string][]string{
		"fsm":              {m + "cluster/...", m + "httpapi/...", m + "replication", "github.com/jackc/pgx/..."},
		"replication":      {m + "cluster/...", m + "httpapi/..."},
		"cluster":          {m + "cluster/agent", m + "httpapi/...", m + "replication"},
		"cluster/agent":    {m + "cluster", m + "httpapi"},
		"httpapi/wire":     {m + "httpapi", m + "httpapi/client", m + "cluster/..."},
		"httpapi/client":   {m + "httpapi", m + "cluster/...", m + "replication"},
		"internal/node":    {m + "cluster/...", m + "fsm", m + "httpapi/..."},
		"internal/structs": {m + "..."},
	}
	// Direct imports a package may not have although a dependency of it
	// may (raft links net/http; fsm must not use it).
	direct := map[string][]string{
		"fsm":         {"net/http", "net"},
		"replication": {"net/http"},
	}
	matches := func(p, rule string) bool {
		if prefix, ok := strings.CutSuffix(rule, "/..."); ok {
			return p == prefix || strings.HasPrefix(p, prefix+"/")
		}
		return p == rule
	}
	for pkg, forbidden := range rules {
		self := m + pkg
		d := deps(t, self)
		for p := range d {
			for _, f := range forbidden {
				if p != self && matches(p, f) {
					t.Errorf("%s links %s", pkg, p)
				}
			}
		}
		for _, imp := range d[self] {
			for _, f := range direct[pkg] {
				if imp == f {
					t.Errorf("%s imports %s", pkg, imp)
				}
			}
		}
	}
}

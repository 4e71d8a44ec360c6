package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// renderComponent renders one task's Markdown report.
func renderComponent(snap *Snapshot, cr ComponentReport) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# %s %s (%s)\n\n", cr.Task, cr.Name, cr.Short)
	w("| | |\n|---|---|\n")
	w("| verdict | **%s**: %s |\n", strings.ToUpper(cr.Verdict), cell(cr.VerdictWhy))
	w("| built | %s |\n", cr.Built)
	dirty := ""
	if snap.Build.Dirty {
		dirty = " (with uncommitted changes)"
	}
	w("| commit | `%s`%s, atomfed %s |\n", snap.Build.Commit, dirty, snap.Build.Version)
	w("| generated | %s |\n", snap.GeneratedAt.Format(time.RFC3339))
	w("| SIMULATION_MODE | **%t**: %s |\n", snap.Simulation.Enabled, cell(snap.Simulation.Summary))
	w("| federation | %s (leader %s; %d servers, %d agents) |\n", snap.Federation.Addr, snap.Federation.Leader, len(snap.Federation.Servers), len(snap.Federation.Agents))
	w("| audit head | `%s` at index %d |\n", snap.Audit.Head, snap.Audit.Index)
	w("| phase snapshot | %s |\n\n", SnapshotFile)

	w("## What exists\n\n")
	if len(cr.Exists) == 0 {
		w("Nothing of this component is built yet.\n")
	}
	for _, e := range cr.Exists {
		w("- %s\n", e)
	}
	if len(cr.Missing) > 0 {
		w("\nNot built yet:\n\n")
		for _, m := range cr.Missing {
			w("- %s\n", m)
		}
	}

	w("\n## SIMULATION_MODE\n\n%s.\n", snap.Simulation.Summary)
	if len(snap.Simulation.Parts) > 0 {
		w("\nSimulated parts:\n\n")
		for _, p := range snap.Simulation.Parts {
			w("- %s\n", p)
		}
	}
	if snap.Precheck != nil {
		w("\nPrecheck (%s, %s): **%s**", precheckFile, snap.Precheck.GeneratedAt.Format(time.RFC3339), snap.Precheck.Decision)
		for _, n := range []string{"registry", "vault", "cosign", "postgres"} {
			w(", %s %s", n, snap.Precheck.Checks[n].Status)
		}
		w(".\n")
	}

	renderTests(&b, snap, cr)
	renderVerification(&b, cr)
	renderPolicies(&b, snap)
	renderAudit(&b, snap, cr)
	return b.String()
}

const precheckFile = "G.1_precheck.json"

func renderTests(b *strings.Builder, snap *Snapshot, cr ComponentReport) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("\n## Tests\n\n")
	run := snap.Tests.Run
	if run == nil {
		w("No recorded test run: %s.\n", snap.Tests.Error)
		return
	}
	how := "a `go test -json` run"
	if run.Command != "" {
		how = "`" + run.Command + "`"
	}
	w("From `%s` (sha256 `%s`), %s from %s to %s: %d passed, %d failed, %d skipped (top-level tests) over %d packages.\n\n",
		run.File, run.SHA256, how, run.Start.Format(time.RFC3339), run.End.Format(time.RFC3339), run.Total.Passed, run.Total.Failed, run.Total.Skipped, len(run.PackageList))
	if len(run.FailedPackages) > 0 {
		w("Failed packages of the run: %s.\n\n", strings.Join(run.FailedPackages, ", "))
	}
	w("This component's packages: %d passed, %d failed, %d skipped (%d subtests).\n\n", cr.TestCounts.Passed, cr.TestCounts.Failed, cr.TestCounts.Skipped, cr.TestCounts.Subtests)
	w("| package | result | passed | failed | skipped | time |\n|---|---|---|---|---|---|\n")
	for _, p := range cr.Tests {
		res := p.Result
		if p.NoTestFiles {
			res = "no test files"
		}
		if p.Result == "not_run" {
			res = "not in the run (no such package yet)"
		}
		w("| %s | %s | %d | %d | %d | %.1fs |\n", strings.TrimPrefix(p.Package, Module+"/"), res, p.Passed, p.Failed, p.Skipped, p.ElapsedS)
	}
	for _, p := range cr.Tests {
		for _, f := range p.FailedTests {
			w("\nFAILED: %s %s", strings.TrimPrefix(p.Package, Module+"/"), f)
		}
	}
	w("\n")
	if len(cr.RelatedTests) > 0 {
		w("\nRelated tests of other packages in the same run (evidence about what exists, not tests of this component):\n\n| test | result | time |\n|---|---|---|\n")
		for _, t := range cr.RelatedTests {
			w("| %s | %s | %.1fs |\n", t.Name, t.Result, t.ElapsedS)
		}
	}
}

func renderVerification(b *strings.Builder, cr ComponentReport) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("\n## Verification against the live federation\n\n")
	v := cr.Verification
	if v == nil {
		if cr.Built == NotBuilt {
			w("Not implemented: there is no status call to verify.\n")
		} else {
			w("No live verification is defined for this component.\n")
		}
		return
	}
	switch {
	case v.OK && len(v.Simulated) > 0:
		w("Succeeded, but not against real parts. Simulated:\n\n")
		for _, p := range v.Simulated {
			w("- %s\n", p)
		}
		w("\n")
	case v.OK:
		w("Succeeded, against real parts.\n\n")
	default:
		w("**Failed**: %s\n\n", v.Error)
	}
	for _, s := range v.Steps {
		status := ""
		if s.Status != 0 {
			status = fmt.Sprintf(" -> %d", s.Status)
		}
		index := ""
		if s.Index != 0 && !strings.Contains(s.Result, "index") {
			index = fmt.Sprintf(" (index %d)", s.Index)
		}
		w("- `%s`%s: %s%s\n", s.Call, status, s.Result, index)
	}
	for _, s := range v.Steps {
		if len(s.Output) == 0 {
			continue
		}
		var pretty bytes.Buffer
		if json.Indent(&pretty, s.Output, "", "  ") != nil {
			pretty.Write(s.Output)
		}
		w("\n`%s`:\n\n```json\n%s\n```\n", s.Call, pretty.String())
	}
}

func renderPolicies(b *strings.Builder, snap *Snapshot) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("\n## Policies P1-P7\n\n")
	ps := snap.Policies
	if ps == nil {
		w("GET /v1/policy/status could not be read; see the G.1.7 verification.\n")
		return
	}
	w("From GET /v1/policy/status on %s at index %d (%s): %d pass, %d block, %d not evaluated.\n\n",
		ps.Node, ps.Index, ps.GeneratedAt.Format(time.RFC3339), ps.Summary.Pass, ps.Summary.Block, ps.Summary.NotEvaluated)
	w("| policy | status | reason |\n|---|---|---|\n")
	for _, p := range ps.Policies {
		w("| %s %s | **%s** | %s |\n", p.ID, cell(p.Title), p.Status, cell(p.Reason))
	}
}

func renderAudit(b *strings.Builder, snap *Snapshot, cr ComponentReport) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("\n## Audit hash refs\n\n")
	w("Audit chain head after the verification: `%s` at index %d.\n\n", snap.Audit.Head, snap.Audit.Index)
	if len(snap.Audit.Created) == 0 {
		w("The verification created no audit entries.\n")
		return
	}
	w("Entries the verification created (shared by every report of this run):\n\n| index | command | hash | by |\n|---|---|---|---|\n")
	for _, r := range snap.Audit.Created {
		w("| %d | %s | `%s` | %s |\n", r.Index, r.Type, r.Hash, cell(r.What))
	}
	if cr.Verify == "" {
		w("\nThis component has no verification of its own.\n")
	}
}

// cell makes s safe inside a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// renderLog renders a task's log (reports/logs/G.1.x.log): the commit,
// the verdict, every step of the live verification and the result of every
// test of the component's packages in the recorded run.
func renderLog(snap *Snapshot, cr ComponentReport) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	dirty := ""
	if snap.Build.Dirty {
		dirty = "-dirty"
	}
	w("%s %s (%s)\n", cr.Task, cr.Name, cr.Short)
	w("commit %s%s, atomfed %s, generated %s\n", snap.Build.Commit, dirty, snap.Build.Version, snap.GeneratedAt.Format(time.RFC3339))
	w("federation %s, leader %s, audit head %s at index %d\n", snap.Federation.Addr, snap.Federation.Leader, snap.Audit.Head, snap.Audit.Index)
	w("verdict %s: %s\n\n", strings.ToUpper(cr.Verdict), cr.VerdictWhy)
	if v := cr.Verification; v != nil {
		w("== verification (ok=%t)\n", v.OK)
		for _, p := range v.Simulated {
			w("simulated: %s\n", p)
		}
		for _, s := range v.Steps {
			w("%s", s.Call)
			if s.Status != 0 {
				w(" -> %d", s.Status)
			}
			if s.Index != 0 {
				w(" [index %d]", s.Index)
			}
			w(": %s\n", s.Result)
		}
		if v.Error != "" {
			w("FAILED: %s\n", v.Error)
		}
		w("\n")
	}
	w("== tests of its packages\n")
	if snap.Tests.Run == nil {
		w("no recorded test run: %s\n", snap.Tests.Error)
	}
	for _, p := range cr.Tests {
		w("%s %s (%d passed, %d failed, %d skipped, %.1fs)\n", strings.ToUpper(p.Result), p.Package, p.Passed, p.Failed, p.Skipped, p.ElapsedS)
		for _, t := range p.Tests {
			w("    --- %s: %s (%.2fs)\n", strings.ToUpper(t.Result), t.Name, t.ElapsedS)
		}
	}
	for _, r := range cr.RelatedTests {
		w("related %s: %s\n", r.Name, r.Result)
	}
	return b.String()
}

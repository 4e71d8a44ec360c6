// Package report writes the phase G.1 reports: one Markdown file per task
// (G.1.1 ... G.1.7) and PhaseG.1_Snapshot.json covering all of them, from
// three sources an auditor can check independently: the build (commit), a
// recorded `go test -json` run, and a live federation, on which the
// report runs a verification that leaves audit entries it cites.
//
// A component that is not built is reported as not implemented, never as
// passed. It is test and tooling code: it imports the HTTP client, not the
// servers.
package report

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/precheck"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
)

// SnapshotFile is the phase snapshot's file name.
const SnapshotFile = "PhaseG.1_Snapshot.json"

// Config configures a report run.
type Config struct {
	// Addr is the base URL of a server of the live federation.
	Addr  string
	Token string
	// TLS, when set, verifies the federation's servers (its CA).
	TLS *tls.Config
	// OutDir receives the files.
	OutDir string
	// TestJSON is a `go test -json` recording; "" or a missing file is
	// reported as "no recorded test run".
	TestJSON string
	// TestCommand says how the recording was made (shown in the reports).
	TestCommand string
	// Commit and Version identify the build; Dirty marks uncommitted
	// changes.
	Commit  string
	Dirty   bool
	Version string
	// Settle bounds the wait for the federation to be ready (a leader,
	// and a probe result for every region) before verifying.
	Settle time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Approvers are the approver keys the policy verification approves
	// its approvals with (P3); without them that verification fails,
	// saying so.
	Approvers []*signing.Signer
	// RegionDBs are the regions' databases (region to DSN), in which the
	// replication verifications create, compare and drop their tables.
	// Never written to a report.
	RegionDBs map[string]string
	// VerifyTimeout bounds each wait of a verification (default 60 s).
	VerifyTimeout time.Duration
}

// Snapshot is PhaseG.1_Snapshot.json.
type Snapshot struct {
	Phase       string     `json:"phase"`
	GeneratedAt time.Time  `json:"generated_at"`
	Build       Build      `json:"build"`
	Federation  Federation `json:"federation"`
	Simulation  SimStatus  `json:"simulation_mode"`
	// Precheck is the decision of G.1_precheck.json in the same
	// directory, when there is one.
	Precheck   *precheck.Report      `json:"precheck,omitempty"`
	Tests      TestsRef              `json:"tests"`
	Policies   *structs.PolicyStatus `json:"policies"`
	Audit      AuditRefs             `json:"audit"`
	Components []ComponentReport     `json:"components"`
}

// Build identifies the binary that made the report.
type Build struct {
	Commit  string `json:"commit"`
	Dirty   bool   `json:"dirty"`
	Version string `json:"version"`
}

// Federation describes the live federation the report ran against.
type Federation struct {
	Addr    string     `json:"addr"`
	Leader  string     `json:"leader"`
	Index   uint64     `json:"index"`
	Servers []NodeInfo `json:"servers"`
	Agents  []NodeInfo `json:"agents"`
	// Settled says whether the federation was ready within the settle
	// time (a leader and a probe result for every region).
	Settled bool   `json:"settled"`
	Note    string `json:"note,omitempty"`
}

// NodeInfo is one node as its own /health describes it.
type NodeInfo struct {
	Node           string              `json:"node"`
	Role           string              `json:"role"`
	Region         string              `json:"region"`
	URL            string              `json:"url"`
	Version        string              `json:"version,omitempty"`
	SimulationMode *bool               `json:"simulation_mode,omitempty"`
	Simulation     *structs.Simulation `json:"simulation,omitempty"`
	Error          string              `json:"error,omitempty"`
}

// SimStatus is the federation's SIMULATION_MODE: on when any node runs
// simulated.
type SimStatus struct {
	Enabled bool `json:"enabled"`
	// Nodes lists the nodes in simulation mode; Unknown those whose
	// /health could not be read.
	Nodes   []string `json:"nodes"`
	Unknown []string `json:"unknown,omitempty"`
	// Parts lists "role: part (because)" once per distinct simulated
	// part.
	Parts   []string `json:"parts"`
	Summary string   `json:"summary"`
}

// TestsRef is the recorded test run, or why there is none.
type TestsRef struct {
	Run   *TestRun `json:"run,omitempty"`
	Error string   `json:"error,omitempty"`
}

// AuditRefs are the audit hash refs the reports cite.
type AuditRefs struct {
	// Head is the audit chain head at Index, read after the verification.
	Head  string `json:"head"`
	Index uint64 `json:"index"`
	// Created are the entries the verification created.
	Created []AuditRef `json:"created"`
}

// AuditRef is one audit chain entry.
type AuditRef struct {
	Index uint64 `json:"index"`
	Type  string `json:"type"`
	Hash  string `json:"hash"`
	What  string `json:"what"`
}

// ComponentReport is one task's report.
type ComponentReport struct {
	Component
	File string `json:"file"`
	// Verdict is pass, pass_simulated (verified, but a part it depends on
	// ran simulated), fail, unverified (no test run recorded), partial or
	// not_implemented.
	Verdict      string          `json:"verdict"`
	VerdictWhy   string          `json:"verdict_why"`
	Tests        []*PackageTests `json:"tests"`
	TestCounts   TestCounts      `json:"test_counts"`
	RelatedTests []RelatedTest   `json:"related_tests,omitempty"`
	Verification *Verification   `json:"verification"`
}

// Generate runs the verification against the live federation, gathers the
// rest and writes the eight files. It returns the snapshot and the paths
// written.
func Generate(ctx context.Context, cfg Config) (*Snapshot, []string, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Commit == "" {
		cfg.Commit = "unknown"
	}
	opts := []client.Option{client.WithToken(cfg.Token)}
	if cfg.TLS != nil {
		opts = append(opts, client.WithTLS(cfg.TLS))
	}
	c, err := client.New(cfg.Addr, opts...)
	if err != nil {
		return nil, nil, err
	}
	snap := &Snapshot{Phase: "G.1", Build: Build{Commit: cfg.Commit, Dirty: cfg.Dirty, Version: cfg.Version}}
	fed, err := settle(ctx, c, opts, cfg.Settle)
	if err != nil {
		return nil, nil, err
	}
	snap.Federation = *fed
	snap.Tests = readTests(cfg.TestJSON)
	if snap.Tests.Run != nil {
		snap.Tests.Run.Command = cfg.TestCommand
	}
	snap.Precheck = readPrecheck(cfg.OutDir)

	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = 60 * time.Second
	}
	env := &verifyEnv{c: c, opts: opts, token: cfg.Token, fed: &snap.Federation,
		approvers: cfg.Approvers, regionDBs: cfg.RegionDBs, timeout: cfg.VerifyTimeout}
	verifications := map[string]*Verification{}
	var created []AuditRef
	for _, comp := range Components() {
		if comp.Verify == "" {
			continue
		}
		vf := verifiers[comp.Verify]
		v, refs := vf.run(ctx, env)
		v.Simulated = append(v.Simulated, simulatedParts(&snap.Federation, vf.needs)...)
		verifications[comp.Verify] = v
		created = append(created, refs...)
	}
	snap.Policies = env.policy
	snap.Audit, err = auditRefs(ctx, c, created)
	if err != nil {
		return nil, nil, err
	}
	snap.Simulation = simStatus(snap.Federation)
	for _, comp := range Components() {
		snap.Components = append(snap.Components, componentReport(comp, snap.Tests.Run, verifications[comp.Verify]))
	}
	snap.GeneratedAt = cfg.Now().UTC()
	files, err := write(cfg.OutDir, snap)
	return snap, files, err
}

func readTests(path string) TestsRef {
	if path == "" {
		return TestsRef{Error: "no go test -json recording was given"}
	}
	run, err := ReadTestRun(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return TestsRef{Error: "no recorded test run at " + path + " (make reports records one)"}
		}
		return TestsRef{Error: err.Error()}
	}
	return TestsRef{Run: run}
}

func readPrecheck(dir string) *precheck.Report {
	b, err := os.ReadFile(filepath.Join(dir, precheck.ReportFile))
	if err != nil {
		return nil
	}
	var r precheck.Report
	if json.Unmarshal(b, &r) != nil {
		return nil
	}
	return &r
}

// componentReport decides a component's verdict. Only a built component
// can pass, and only when its packages' recorded tests passed (at least
// one ran) and its live verification succeeded.
func componentReport(comp Component, run *TestRun, v *Verification) ComponentReport {
	cr := ComponentReport{Component: comp, File: comp.File(), Verification: v, Tests: []*PackageTests{}}
	var pkgs []string
	for _, p := range comp.Packages {
		pkgs = append(pkgs, Module+"/"+p)
	}
	var failed, missing []string
	if run != nil {
		cr.RelatedTests = run.related(comp.Related)
		cr.Tests = run.Summary(pkgs)
		for _, p := range cr.Tests {
			cr.TestCounts.Passed += p.Passed
			cr.TestCounts.Failed += p.Failed
			cr.TestCounts.Skipped += p.Skipped
			cr.TestCounts.Subtests += p.Subtests
			switch p.Result {
			case "fail":
				failed = append(failed, p.Package)
			case "not_run":
				missing = append(missing, p.Package)
			}
		}
	}
	switch {
	case comp.Built == NotBuilt:
		cr.Verdict, cr.VerdictWhy = VerdictNotImplemented, "not built yet: "+strings.Join(comp.Missing, "; ")
	case comp.Built == PartlyBuilt:
		cr.Verdict, cr.VerdictWhy = VerdictPartial, "partly built; still missing: "+strings.Join(comp.Missing, "; ")
	case run == nil:
		cr.Verdict, cr.VerdictWhy = verdictNoRun, "no recorded test run"
	case len(failed) > 0:
		cr.Verdict, cr.VerdictWhy = verdictFail, "failing packages: "+strings.Join(failed, ", ")
	case len(missing) > 0:
		cr.Verdict, cr.VerdictWhy = verdictNoRun, "packages missing from the recorded run: "+strings.Join(missing, ", ")
	case cr.TestCounts.Passed == 0:
		cr.Verdict, cr.VerdictWhy = verdictNoRun, "no test of its packages ran in the recorded run"
	case v == nil || !v.OK:
		cr.Verdict, cr.VerdictWhy = verdictFail, "the live verification failed"
		if v != nil && v.Error != "" {
			cr.VerdictWhy += ": " + v.Error
		}
	case len(v.Simulated) > 0:
		cr.Verdict = VerdictPassSimulated
		cr.VerdictWhy = fmt.Sprintf("%d tests of its packages passed and the live verification succeeded, but not against real parts: simulated %s",
			cr.TestCounts.Passed, strings.Join(v.Simulated, "; "))
	default:
		cr.Verdict = verdictPass
		cr.VerdictWhy = fmt.Sprintf("%d tests of its packages passed and the live verification succeeded against real parts", cr.TestCounts.Passed)
	}
	return cr
}

func simStatus(f Federation) SimStatus {
	s := SimStatus{Nodes: []string{}, Parts: []string{}}
	seen := map[string]bool{}
	for _, n := range append(append([]NodeInfo{}, f.Servers...), f.Agents...) {
		switch {
		case n.SimulationMode == nil:
			s.Unknown = append(s.Unknown, n.Node)
		case *n.SimulationMode:
			s.Enabled = true
			s.Nodes = append(s.Nodes, n.Node)
			if n.Simulation != nil {
				for _, p := range n.Simulation.Simulated {
					k := n.Role + ": " + p.Part + " (" + p.Because + ")"
					if !seen[k] {
						seen[k] = true
						s.Parts = append(s.Parts, k)
					}
				}
			}
		}
	}
	total := len(f.Servers) + len(f.Agents)
	switch {
	case s.Enabled:
		s.Summary = fmt.Sprintf("SIMULATION_MODE=true on %d of %d nodes", len(s.Nodes), total)
	case len(s.Unknown) > 0:
		s.Summary = fmt.Sprintf("SIMULATION_MODE unknown on %d of %d nodes; off on the others", len(s.Unknown), total)
	default:
		s.Summary = fmt.Sprintf("SIMULATION_MODE=false on all %d nodes", total)
	}
	return s
}

// write writes the seven reports, their logs (logs/G.1.x.log) and the
// snapshot.
func write(dir string, snap *Snapshot) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, cr := range snap.Components {
		p := filepath.Join(dir, cr.File)
		if err := writeAtomic(p, []byte(renderComponent(snap, cr))); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return files, err
	}
	for _, cr := range snap.Components {
		p := filepath.Join(dir, "logs", cr.Task+".log")
		if err := writeAtomic(p, []byte(renderLog(snap, cr))); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	b, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return files, err
	}
	p := filepath.Join(dir, SnapshotFile)
	if err := writeAtomic(p, append(b, '\n')); err != nil {
		return files, err
	}
	return append(files, p), nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

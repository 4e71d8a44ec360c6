package precheck

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Output files, relative to the output directory.
const (
	ReportFile = "G.1_precheck.json"
	LogFile    = "logs/G.1_precheck.log"
)

// ExitBlock is the exit code of `atomfed precheck` when the decision is
// BLOCK. PROCEED and PROCEED_SIMULATION exit 0; 1 means the precheck itself
// failed (for example, it could not write its files).
const ExitBlock = 3

// Report is the content of G.1_precheck.json.
type Report struct {
	Phase       string    `json:"phase"`
	GeneratedAt time.Time `json:"generated_at"`
	// Version is the atomfed build that ran the checks.
	Version string `json:"version"`
	Checks  Checks `json:"checks"`
	// Decision is PROCEED, PROCEED_SIMULATION or BLOCK.
	Decision string `json:"decision"`
	// SimulationMode is true unless the decision is PROCEED.
	SimulationMode bool `json:"simulation_mode"`
	// Reasons name every check that is not healthy.
	Reasons  []string `json:"reasons"`
	ExitCode int      `json:"exit_code"`
}

// Precheck runs the four checks and decides, and reports the components'
// checks (OptionalChecks) beside them without weighing them.
func Precheck(ctx context.Context, cfg Config, version string) *Report {
	checks := Run(ctx, cfg, append(append([]string{}, AllChecks...), OptionalChecks...)...)
	decision, reasons := Decide(checks)
	r := &Report{Phase: "G.1", GeneratedAt: time.Now().UTC(), Version: version, Checks: checks,
		Decision: decision, SimulationMode: decision != Proceed, Reasons: reasons}
	if r.Reasons == nil {
		r.Reasons = []string{}
	}
	if decision == Block {
		r.ExitCode = ExitBlock
	}
	return r
}

// Warning is the line printed for PROCEED_SIMULATION, or "" for the other
// decisions.
func (r *Report) Warning() string {
	if r.Decision != ProceedSimulation {
		return ""
	}
	var parts []string
	for _, n := range AllChecks {
		if c := r.Checks[n]; !Healthy(c.Status) {
			parts = append(parts, n+" "+c.Status)
		}
	}
	return "WARNING: proceeding in SIMULATION_MODE: " + strings.Join(parts, ", ")
}

// LogLines renders the run as the lines of the log file.
func (r *Report) LogLines() []string {
	ts := r.GeneratedAt.Format(time.RFC3339)
	lines := []string{fmt.Sprintf("%s precheck phase=%s atomfed=%s", ts, r.Phase, r.Version)}
	for _, n := range append(append([]string{}, AllChecks...), OptionalChecks...) {
		c, ok := r.Checks[n]
		if !ok {
			continue
		}
		target := ""
		if c.Target != "" {
			target = " target=" + c.Target
		}
		lines = append(lines, fmt.Sprintf("%s check=%s status=%s%s duration_ms=%.1f detail=%q", ts, n, c.Status, target, c.DurationMS, c.Detail))
		for _, w := range c.Findings {
			lines = append(lines, fmt.Sprintf("%s check=%s finding=%q", ts, n, w))
		}
	}
	lines = append(lines, fmt.Sprintf("%s decision=%s simulation_mode=%t exit_code=%d", ts, r.Decision, r.SimulationMode, r.ExitCode))
	if w := r.Warning(); w != "" {
		lines = append(lines, ts+" "+w)
	}
	if r.Decision == Block {
		lines = append(lines, ts+" BLOCK: no registry answers; nothing may proceed")
	}
	return lines
}

// Write writes dir/G.1_precheck.json and dir/logs/G.1_precheck.log,
// replacing earlier runs, and returns their paths.
func (r *Report) Write(dir string) (jsonPath, logPath string, err error) {
	jsonPath, logPath = filepath.Join(dir, ReportFile), filepath.Join(dir, LogFile)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return "", "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(jsonPath, append(b, '\n')); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(logPath, []byte(strings.Join(r.LogLines(), "\n")+"\n")); err != nil {
		return "", "", err
	}
	return jsonPath, logPath, nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

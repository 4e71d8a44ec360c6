package precheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
)

// docRow is one row of the simulation table in docs/operations.md.
type docRow struct {
	role, part string
	always     bool
	missing    string // the check whose absence simulates the part
	forced     bool   // SIMULATION_MODE=true simulates it too
}

func readSimulationTable(t *testing.T) []docRow {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []docRow
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			continue
		}
		role := strings.TrimSpace(cells[1])
		if role != "server" && role != "agent" {
			continue
		}
		r := docRow{role: role, part: strings.Trim(strings.TrimSpace(cells[2]), "`")}
		when := strings.TrimSpace(cells[3])
		switch {
		case strings.HasPrefix(when, "always"):
			r.always = true
		default:
			cond, rest, _ := strings.Cut(when, ",")
			r.missing = strings.TrimSuffix(strings.TrimSpace(cond), " missing")
			r.forced = strings.Contains(rest, "SIMULATION_MODE=true")
			if !slices.Contains(AllChecks, r.missing) {
				t.Fatalf("docs row %q: %q is not a check", line, r.missing)
			}
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		t.Fatal("no simulation table in docs/operations.md")
	}
	return rows
}

// TestSimulationDocsTable evaluates each role with every combination of
// its critical inputs present or missing, with SIMULATION_MODE unset and
// true, against real inputs (a Vault health stand-in, a signing key, a
// real PostgreSQL), and checks that the parts the node lists as simulated
// are exactly the ones the docs table says.
func TestSimulationDocsTable(t *testing.T) {
	rows := readSimulationTable(t)
	vault := standIn(t, 200)
	key := writeKey(t, "pw")
	pg := pgtest.New(t, pglocal.Options{Name: "simdocs"})
	present := map[string]func(*Config){
		Vault:    func(c *Config) { c.VaultAddr = vault.URL },
		Cosign:   func(c *Config) { c.CosignKeyPath, c.CosignPassword = key, []byte("pw") },
		Postgres: func(c *Config) { c.PostgresDSN = pg.DSN(pglocal.Database) },
	}
	for _, role := range []Role{RoleServer, RoleAgent} {
		checks := CriticalChecks(role)
		for mask := 0; mask < 1<<len(checks); mask++ {
			for _, setting := range []string{"", "true"} {
				var cfg Config
				missing := map[string]bool{}
				for i, c := range checks {
					if mask&(1<<i) != 0 {
						present[c](&cfg)
					} else {
						missing[c] = true
					}
				}
				var want []string
				for _, r := range rows {
					if r.role == string(role) && (r.always || missing[r.missing] || (setting == "true" && r.forced)) {
						want = append(want, r.part)
					}
				}
				sim, err := Evaluate(ctx(t), cfg, role, setting)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, p := range sim.Simulated {
					got = append(got, p.Part)
					if p.Because == "" || p.What == "" {
						t.Errorf("%s part %s says neither what nor why: %+v", role, p.Part, p)
					}
				}
				sort.Strings(got)
				sort.Strings(want)
				what := fmt.Sprintf("%s, missing %v, SIMULATION_MODE=%q", role, keys(missing), setting)
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("%s: the node lists %v simulated, the docs say %v", what, got, want)
				}
				if wantOn := len(missing) > 0 || setting == "true"; sim.Enabled != wantOn {
					t.Errorf("%s: simulation_mode %t, want %t", what, sim.Enabled, wantOn)
				}
			}
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

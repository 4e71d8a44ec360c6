package bench

import (
	"fmt"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/machine"
)

// Goals and anchors the data-plane section reports against (issues 17
// and 18). The anchors are other systems' documented defaults, quoted,
// not measured here.
const (
	SwitchoverGoal      = 2 * time.Second
	BackupOverheadGoal  = 1.1
	switchoverAnchorTxt = "Patroni's default leader TTL is 30 s (a failover cannot start before it expires); CloudNativePG's failovers are reported at 40-55 s"
)

// DataPlaneReport is the data-plane part of `make bench`.
type DataPlaneReport struct {
	Date          time.Time
	Machine       machine.Facts
	Version       string
	Command       string
	LoadAvgEnd    string
	Setup         string
	Switchover    *SwitchoverResult
	SwitchoverErr error
	Failover      *TenantFailoverResult
	FailoverErr   error
	Backup        *BackupResult
	BackupErr     error
	Rebuild       *RebuildResult
	RebuildErr    error
}

// minMedMax are the minimum, median and maximum of ds.
func minMedMax(ds []time.Duration) (lo, med, hi time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	lo, hi = ds[0], ds[0]
	for _, d := range ds {
		lo, hi = min(lo, d), max(hi, d)
	}
	return lo, Median(ds), hi
}

func mbps(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(bytes)/(1<<20)/d.Seconds())
}

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a.Seconds()/b.Seconds())
}

// Markdown renders the section.
func (r *DataPlaneReport) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# atomfed data-plane benchmark\n\n")
	p("- Date: %s\n", r.Date.UTC().Format("2006-01-02 15:04:05 MST"))
	p("- Machine: %s, %d cores, %s RAM, Linux %s\n", r.Machine.CPU, r.Machine.Cores, r.Machine.RAM, r.Machine.Kernel)
	p("- Load average (1/5/15 min) at start: %s; at end: %s\n", r.Machine.LoadAvg, r.LoadAvgEnd)
	p("- atomfed: %s (git describe)\n", r.Version)
	p("- Command: `%s`\n", r.Command)
	p("- Setup: %s\n", r.Setup)
	if r.Switchover != nil || r.SwitchoverErr != nil {
		r.switchoverMarkdown(&b)
	}
	if r.Failover != nil || r.FailoverErr != nil {
		r.failoverMarkdown(&b)
	}
	if r.Backup != nil || r.BackupErr != nil {
		r.backupMarkdown(&b)
	}
	if r.Rebuild != nil || r.RebuildErr != nil {
		r.rebuildMarkdown(&b)
	}
	if r.Machine.Cores <= 4 {
		p("\nThis machine has %d cores shared by three servers, three PostgreSQL servers, three agents, the edge, the writer and pgBackRest "+
			"(and whatever else runs: see the load averages), so the figures are a floor.\n", r.Machine.Cores)
	}
	return b.String()
}

func (r *DataPlaneReport) switchoverMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## Planned switchover under writes through `atomfed edge`\n\n")
	s := r.Switchover
	if s != nil && len(s.Rounds) > 0 {
		p("One writer sends the tenant's inserts through the edge one at a time (%s apart); each round asks for a switchover "+
			"(`POST /v1/tenants/acme/switchover`) to the other region, alternating the direction (fail-back every other round). "+
			"Time: from the request to the first write acknowledged by the new home's application through the edge.\n\n", s.Interval)
		p("| round | from → to | request → first write at the new home | request → switchover done | writes held (503) | fenced (409) | other errors |\n")
		p("|---:|---|---:|---:|---:|---:|---:|\n")
		var first, done []time.Duration
		for i, x := range s.Rounds {
			first, done = append(first, x.ToFirstWrite), append(done, x.ToDone)
			p("| %d | %s → %s | %s | %s | %d | %d | %d |\n", i+1, x.From, x.To, fmtDur(x.ToFirstWrite), fmtDur(x.ToDone), x.Held, x.Fenced, x.Other)
		}
		lo, med, hi := minMedMax(first)
		verdict := "met"
		if med >= SwitchoverGoal {
			verdict = "NOT met"
		}
		_, dmed, _ := minMedMax(done)
		p("\nRequest → first write at the new home: median **%s** (min %s, max %s) over %d rounds; goal < %s: %s. "+
			"Request → done (hand-off subscribers streaming from the new home): median %s.\n", fmtDur(med), fmtDur(lo), fmtDur(hi), len(first), SwitchoverGoal, verdict, fmtDur(dmed))
		p("Anchors (quoted, not measured here): %s.\n", switchoverAnchorTxt)
		p("%d writes were acknowledged over the rounds; %d of them are missing at the final home.\n", s.Acked, s.Missing)
	}
	if r.SwitchoverErr != nil {
		p("\n**Switchover run failed:** `%s`\n", oneLine(r.SwitchoverErr.Error()))
	}
}

func (r *DataPlaneReport) backupMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## Backups and restores: atomfed against the same pgBackRest commands by hand\n\n")
	res := r.Backup
	if res != nil && res.Fill != nil {
		p("Database of region %s: %d tables, %d rows, **%d MiB** (`pg_database_size`), generated with `INSERT ... SELECT generate_series` in %s "+
			"(%.0f MiB/s).\n\n", res.Region, res.Fill.Tables, res.Fill.Rows, res.Fill.Bytes>>20, fmtDur(res.Fill.Duration),
			float64(res.Fill.Bytes)/(1<<20)/res.Fill.Duration.Seconds())
	}
	if res != nil && len(res.Rounds) > 0 {
		p("Each round: a full backup asked through the API (`POST /v1/regions/%s/backups`), timed from the request to the verified backup "+
			"in the catalog (leader clock: placement, stanza-create, backup, info, verify, record); a restore drill of it (`POST /v1/regions/%s/drills`; "+
			"its `restore_ms` is the agent's `pgbackrest restore`); and by hand (first in odd rounds, second in even ones), with the agent's own `pgbackrest.conf`, as the data directory's owner at "+
			"the agents' CPU priority (nice 10): `stanza-create`, `backup --type=full`, `info`, `verify`, and `restore` of that backup into a scratch directory. "+
			"Retention keeps one full backup, so each verify sees the same repository size; a first, untimed atomfed backup sets up archiving and the stanza before the rounds. lz4, one process (the agent's settings).\n\n", res.Region, res.Region)
		p("| round | atomfed backup (request → recorded) | of which placement / agent / recording | by hand (stanza-create + backup + info + verify) | of which backup | overhead | atomfed restore (drill) | by hand restore | overhead | whole drill | stored size |\n")
		p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		var ab, hb, hbk, ar, hr []time.Duration
		var size, repo int64
		for i, x := range res.Rounds {
			ab, hb, hbk = append(ab, x.AtomfedBackup), append(hb, x.HandBackupTotal()), append(hbk, x.HandBackup)
			ar, hr = append(ar, x.AtomfedRestore), append(hr, x.HandRestore)
			size, repo = x.Size, x.Repo
			p("| %d | %s | %s / %s / %s | %s | %s | %s | %s | %s | %s | %s | %d MiB |\n", i+1, fmtDur(x.AtomfedBackup),
				fmtDur(x.Placement), fmtDur(x.AgentWork), fmtDur(x.Recording), fmtDur(x.HandBackupTotal()), fmtDur(x.HandBackup),
				ratio(x.AtomfedBackup, x.HandBackupTotal()), fmtDur(x.AtomfedRestore), fmtDur(x.HandRestore), ratio(x.AtomfedRestore, x.HandRestore),
				fmtDur(x.DrillTotal), x.Repo>>20)
		}
		_, mab, _ := minMedMax(ab)
		_, mhb, _ := minMedMax(hb)
		_, mhbk, _ := minMedMax(hbk)
		_, mar, _ := minMedMax(ar)
		_, mhr, _ := minMedMax(hr)
		verdict := func(a, h time.Duration) string {
			if h > 0 && a.Seconds()/h.Seconds() <= BackupOverheadGoal {
				return "met"
			}
			return "NOT met"
		}
		p("\nMedians over %d round(s) of a %d MiB database (%d MiB stored):\n\n", len(res.Rounds), size>>20, repo>>20)
		p("- Backup: atomfed **%s** (%s MiB/s) against %s by hand (%s MiB/s; `pgbackrest backup` alone %s, %s MiB/s): overhead **%s** (goal ≤ %.1fx: %s).\n",
			fmtDur(mab), mbps(size, mab), fmtDur(mhb), mbps(size, mhb), fmtDur(mhbk), mbps(size, mhbk), ratio(mab, mhb), BackupOverheadGoal, verdict(mab, mhb))
		p("- Restore: atomfed **%s** (%s MiB/s) against %s by hand (%s MiB/s): overhead **%s** (goal ≤ %.1fx: %s). "+
			"The drill around it (restore point with checksums at the source, recovery, every row read back and compared) is the whole-drill column.\n",
			fmtDur(mar), mbps(size, mar), fmtDur(mhr), mbps(size, mhr), ratio(mar, mhr), BackupOverheadGoal, verdict(mar, mhr))
	}
	if r.BackupErr != nil {
		p("\n**Backup run failed:** `%s`\n", oneLine(r.BackupErr.Error()))
	}
}

func (r *DataPlaneReport) failoverMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## Unplanned failover with the automatic policy (home killed)\n\n")
	if f := r.Failover; f != nil && len(f.Rounds) > 0 {
		p("Each round registers a fresh tenant at home in us-east, mirrored to eu-west, with the automatic failover policy (RPO budget 60 s; eu-west passed a restore drill before the rounds), "+
			"writes it through the edge one write at a time (%s apart), then kills us-east's PostgreSQL and agent with SIGKILL. The servers run with their default detection settings "+
			"(Serf's failure detection, then `--failover-detect` 2 s). Time: from the kill to the first write acknowledged at the new home through the edge. "+
			"us-east is restarted after each round; a fresh tenant per round, so the old home's return is not part of the time.\n\n", f.Interval)
		p("| round | tenant | kill → failover started | kill → committed | kill → first write at the new home | writes acknowledged there / missing |\n|---:|---|---:|---:|---:|---:|\n")
		var ds []time.Duration
		for i, x := range f.Rounds {
			ds = append(ds, x.KillToWrite)
			p("| %d | %s | %s | %s | %s | %d / %d |\n", i+1, x.Tenant, fmtDur(x.KillToStart), fmtDur(x.KillToCommit), fmtDur(x.KillToWrite), x.Acked, x.Missing)
		}
		lo, med, hi := minMedMax(ds)
		verdict := "met"
		if med >= TenantFailoverGoal {
			verdict = "NOT met"
		}
		p("\nKill → first write at the new home: median **%s** (min %s, max %s) over %d rounds; goal < %s: %s.\n", fmtDur(med), fmtDur(lo), fmtDur(hi), len(ds), TenantFailoverGoal, verdict)
		p("Anchors (quoted, not measured here): %s.\n", switchoverAnchorTxt)
	}
	if r.FailoverErr != nil {
		p("\n**Failover run failed:** `%s`\n", oneLine(r.FailoverErr.Error()))
	}
}

func (r *DataPlaneReport) rebuildMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## Region rebuild (`atomfed dr rebuild`)\n\n")
	if x := r.Rebuild; x != nil && x.Total > 0 {
		p("%s's PostgreSQL is killed and its data directory removed; then `POST /v1/regions/%s/rebuild` (what `atomfed dr rebuild` sends) restores the newest verified backup (%s, %d MiB) "+
			"onto the data directory its agent manages (`--pg-data`) to the end of the archived WAL and starts it.\n\n", x.Region, x.Region, x.Label, x.Size>>20)
		p("| request → rebuilt (recorded) | of which pgbackrest restore | start, recovery, promotion | wipe → first query answered |\n|---:|---:|---:|---:|\n")
		p("| %s | %s | %s | %s |\n", fmtDur(x.Total), fmtDur(x.Restore), fmtDur(x.Recovery), fmtDur(x.WipeToQuery))
		if bk := r.Backup; bk != nil && len(bk.Rounds) > 0 {
			var hr []time.Duration
			for _, y := range bk.Rounds {
				hr = append(hr, y.HandRestore)
			}
			_, med, _ := minMedMax(hr)
			verdict := "met"
			if x.Total > med+RebuildSlack {
				verdict = "NOT met"
			}
			p("\nRebuild **%s** against the median restore by hand of the same database, %s: goal ≤ restore + %s = %s: %s.\n", fmtDur(x.Total), fmtDur(med), RebuildSlack, fmtDur(med+RebuildSlack), verdict)
		}
	}
	if r.RebuildErr != nil {
		p("\n**Rebuild run failed:** `%s`\n", oneLine(r.RebuildErr.Error()))
	}
}

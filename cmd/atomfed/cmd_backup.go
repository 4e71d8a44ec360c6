package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

func newBackupCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Backups of the regions' PostgreSQL (pgBackRest, run by the region agents): list, run, status, policy",
		Long: `Every region with a database and an agent with pgBackRest is backed up on the
schedule of its backup policy (the default one when none is set: a full backup a
day, an incremental one every hour, the first at once), by one agent of the
region, into the agents' repository (S3 when S3_ENDPOINT is set, else a
directory). Each backup is verified with pgbackrest verify and recorded in the
catalog with its size and WAL range. A restore drill (a day by default) restores
the newest verified backup into a scratch PostgreSQL on an agent's machine and
reads every table back.`,
	}
	cf.register(cmd)
	cmd.AddCommand(newBackupListCmd(&cf), newBackupRunCmd(&cf), newBackupStatusCmd(&cf), newBackupPolicyCmd(&cf),
		newDrillRunCmd(&cf), newDrillListCmd(&cf))
	return cmd
}

func newBackupListCmd(cf *clientFlags) *cobra.Command {
	var region string
	c := &cobra.Command{
		Use:   "list",
		Short: "List the backup catalog, the running backups and each region's backup health",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				l, _, err := c.Backups(ctx, region, cf.query())
				if err != nil {
					return err
				}
				return cf.print(l, func(w *tabwriter.Writer) { printBackupList(w, l) })
			})
		},
	}
	c.Flags().StringVar(&region, "region", "", "only this region")
	return c
}

func printBackupList(w *tabwriter.Writer, l *wire.BackupList) {
	fmt.Fprintln(w, "REGION\tLAST VERIFIED\tAGE\tLAST DRILL\tSTATUS")
	for _, h := range l.Regions {
		last, age, drill, status := "-", "-", "-", "ok"
		if h.LastVerified != nil {
			last, age = h.LastVerified.ID, (time.Duration(h.AgeSeconds) * time.Second).String()
		}
		if h.LastDrill != nil {
			drill = h.LastDrill.ID + " " + h.LastDrill.Verdict
		}
		if h.Stale {
			status = "STALE: " + h.Warning
		} else if h.DrillStale {
			status = "no restore drill passed recently"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.Region, last, age, drill, status)
	}
	if len(l.Running) > 0 {
		fmt.Fprintln(w, "\nRUNNING\tREGION\tTYPE\tSTATUS\tAGENT\tPROGRESS")
		for _, r := range l.Running {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Region, r.Type, r.Status, dash(r.Agent), progressText(&r))
		}
	}
	fmt.Fprintln(w, "\nID\tREGION\tTYPE\tSTATUS\tLABEL\tSIZE\tWAL START\tWAL STOP\tVERIFIED\tREPO")
	for _, b := range l.Backups {
		res := b.BackupResult
		if res == nil {
			res = &fsm.BackupResult{}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.Region, b.Type, b.Status, dash(res.Label), bytesText(res.Size),
			dash(res.WALStart), dash(res.WALStop), verifiedText(res), repoText(res.Repo))
	}
}

func verifiedText(r *fsm.BackupResult) string {
	switch {
	case r.Verified:
		return "yes"
	case r.VerifyError != "":
		return "FAILED"
	case r.Error != "":
		return "-"
	}
	return "no"
}

func repoText(r fsm.BackupRepo) string {
	switch r.Kind {
	case fsm.RepoS3:
		return "s3://" + r.Bucket + r.Path
	case "":
		return "-"
	}
	return r.Path
}

func bytesText(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
}

func progressText(s *wire.BackupStatus) string {
	p := s.Progress
	if p == nil {
		return "waiting for an agent"
	}
	out := p.Phase
	if p.BytesTotal > 0 {
		out += fmt.Sprintf(" %.1f%% (%s of %s)", p.Percent, bytesText(p.Bytes), bytesText(p.BytesTotal))
	}
	return out
}

func newBackupRunCmd(cf *clientFlags) *cobra.Command {
	var region, typ string
	var wait bool
	var waitFor time.Duration
	c := &cobra.Command{
		Use:     "run",
		Short:   "Back up a region now; with --wait, follow its progress until it is in the catalog",
		Example: "  atomfed backup run --region us-east --type full --wait",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := cf.ctx()
			b, err := c.RunBackup(ctx, region, typ)
			cancel()
			if err != nil {
				if client.IsCode(err, fsm.CodeBackupInProgress) {
					return fmt.Errorf("%w (atomfed backup list --region %s shows it)", err, region)
				}
				return err
			}
			if !wait {
				return cf.print(b, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "backup %s of %s asked for (%s); follow it with: atomfed backup status %s\n", b.ID, b.Region, b.Type, b.ID)
				})
			}
			fmt.Fprintf(os.Stderr, "backup %s of %s asked for (%s)\n", b.ID, b.Region, b.Type)
			wctx, wcancel := context.WithTimeout(context.Background(), waitFor)
			defer wcancel()
			st, err := followBackup(wctx, c, b.ID)
			if err != nil {
				return err
			}
			if err := cf.print(st, func(w *tabwriter.Writer) { printBackup(w, st) }); err != nil {
				return err
			}
			if st.Status != fsm.BackupSucceeded {
				return fmt.Errorf("backup %s %s", st.ID, st.Status)
			}
			return nil
		},
	}
	c.Flags().StringVar(&region, "region", "", "the region to back up")
	c.Flags().StringVar(&typ, "type", fsm.BackupFull, "full or incr")
	c.Flags().BoolVar(&wait, "wait", false, "follow the backup (phase, bytes, percent) until it is recorded")
	c.Flags().DurationVar(&waitFor, "wait-timeout", time.Hour, "how long --wait follows it")
	markRequired(c, "region")
	return c
}

// followBackup prints a backup's progress on stderr as it changes, with
// blocking queries, until it is in the catalog.
func followBackup(ctx context.Context, c *client.Client, id string) (*wire.BackupStatus, error) {
	var index uint64
	last := ""
	for {
		st, meta, err := c.Backup(ctx, id, &client.QueryOptions{Index: index, Wait: 30 * time.Second})
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("backup %s is still running after --wait-timeout; follow it with: atomfed backup status %s", id, id)
			}
			return nil, err
		}
		if st.Status != fsm.BackupPending && st.Status != fsm.BackupRunning {
			return st, nil
		}
		line := fmt.Sprintf("%s on %s: %s", st.Status, dash(st.Agent), progressText(st))
		if line != last {
			fmt.Fprintln(os.Stderr, line)
			last = line
		}
		if meta != nil && meta.Index > index {
			index = meta.Index
		}
	}
}

func newBackupStatusCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "Show one backup: progress while it runs, its catalog entry once done",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				st, _, err := c.Backup(ctx, args[0], cf.query())
				if err != nil {
					return err
				}
				return cf.print(st, func(w *tabwriter.Writer) { printBackup(w, st) })
			})
		},
	}
}

func printBackup(w *tabwriter.Writer, st *wire.BackupStatus) {
	fmt.Fprintf(w, "Backup\t%s (%s, %s)\nRegion\t%s\nStatus\t%s\n", st.ID, st.Type, st.Reason, st.Region, st.Status)
	if st.Status == fsm.BackupPending || st.Status == fsm.BackupRunning {
		fmt.Fprintf(w, "Agent\t%s\nProgress\t%s\n", dash(st.Agent), progressText(st))
		if st.TaskError != "" {
			fmt.Fprintf(w, "Error\t%s\n", st.TaskError)
		}
		return
	}
	r := st.BackupResult
	if r == nil {
		return
	}
	fmt.Fprintf(w, "Agent\t%s\nLabel\t%s\nRepository\t%s\n", dash(st.Agent), dash(r.Label), repoText(r.Repo))
	if r.Error != "" {
		fmt.Fprintf(w, "Error\t%s (phase %s)\n", r.Error, r.Phase)
		return
	}
	fmt.Fprintf(w, "Time\t%s .. %s\nSize\t%s (stored %s)\nWAL\t%s .. %s\nLSN\t%s .. %s\nVerified\t%s\n",
		time.Unix(r.Start, 0).UTC().Format(time.RFC3339), time.Unix(r.Stop, 0).UTC().Format(time.RFC3339),
		bytesText(r.Size), bytesText(r.RepoSize), r.WALStart, r.WALStop, r.LSNStart, r.LSNStop, verifiedText(r))
	if r.VerifyError != "" {
		fmt.Fprintf(w, "Verify\t%s\n", r.VerifyError)
	}
	if r.Archiving != "" {
		fmt.Fprintf(w, "Archiving\t%s\n", r.Archiving)
	}
}

func newBackupPolicyCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Show or set a region's backup policy"}
	get := &cobra.Command{
		Use:   "get REGION",
		Short: "Show a region's backup policy (the default one when none is set)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				p, err := c.BackupPolicy(ctx, args[0], cf.query())
				if err != nil {
					return err
				}
				return cf.print(p, func(w *tabwriter.Writer) { printPolicy(w, p) })
			})
		},
	}
	var full, incr, maxAge, drillEvery time.Duration
	var retention int
	var kind, path string
	var disabled bool
	set := &cobra.Command{
		Use:     "set REGION",
		Short:   "Set a region's backup policy",
		Example: "  atomfed backup policy set us-east --full-every 24h --incr-every 1h --retention-full 2 --max-age 26h",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := &fsm.BackupPolicy{Region: args[0], FullEverySeconds: int64(full / time.Second), IncrEverySeconds: int64(incr / time.Second),
				RetentionFull: retention, MaxAgeSeconds: int64(maxAge / time.Second), DrillEverySeconds: int64(drillEvery / time.Second), Disabled: disabled,
				Repository: fsm.BackupRepo{Kind: kind, Path: path}}
			return cf.do(func(ctx context.Context, c *client.Client) error {
				out, err := c.PutBackupPolicy(ctx, p)
				if err != nil {
					return err
				}
				return cf.print(out, func(w *tabwriter.Writer) { printPolicy(w, out) })
			})
		},
	}
	d := fsm.DefaultBackupPolicy("")
	f := set.Flags()
	f.DurationVar(&full, "full-every", time.Duration(d.FullEverySeconds)*time.Second, "a full backup when the newest one is older than this")
	f.DurationVar(&incr, "incr-every", time.Duration(d.IncrEverySeconds)*time.Second, "an incremental backup when the newest backup is older than this")
	f.IntVar(&retention, "retention-full", d.RetentionFull, "how many full backups the repository keeps")
	f.DurationVar(&maxAge, "max-age", time.Duration(d.MaxAgeSeconds)*time.Second, "the region's backups are stale when no verified one is younger")
	f.DurationVar(&drillEvery, "drill-every", fsm.DefaultDrillEverySeconds*time.Second, "a restore drill of the newest verified backup when the last drill is older than this")
	f.StringVar(&kind, "repo-kind", "", "posix or s3 (default: the agents' repository)")
	f.StringVar(&path, "repo-path", "", "the repository directory (posix) or path in the bucket (s3) (default: the agents')")
	f.BoolVar(&disabled, "disabled", false, "stop scheduled backups (backup run still works)")
	cmd.AddCommand(get, set)
	return cmd
}

func printPolicy(w *tabwriter.Writer, p *fsm.BackupPolicy) {
	sec := func(n int64) string { return (time.Duration(n) * time.Second).String() }
	def := ""
	if p.Default {
		def = " (default)"
	}
	fmt.Fprintf(w, "Region\t%s%s\nFull every\t%s\nIncremental every\t%s\nRetention\t%d full backups\nMax age\t%s\nDrill every\t%s\nScheduled\t%t\nRepository\t%s %s\n",
		p.Region, def, sec(p.FullEverySeconds), sec(p.IncrEverySeconds), p.RetentionFull, sec(p.MaxAgeSeconds), p.DrillEvery(), !p.Disabled,
		dash(p.Repository.Kind), dash(p.Repository.Path))
}

func newDrillRunCmd(cf *clientFlags) *cobra.Command {
	var region string
	var wait bool
	var waitFor time.Duration
	c := &cobra.Command{
		Use:     "drill",
		Short:   "Restore a region's newest verified backup in a drill now; with --wait, follow it to its verdict",
		Example: "  atomfed backup drill --region us-east --wait",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := cf.ctx()
			d, err := c.RunDrill(ctx, region)
			cancel()
			if err != nil {
				return err
			}
			if !wait {
				return cf.print(d, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "drill %s of %s (backup %s, %s) asked for; follow it with: atomfed backup drills --region %s\n", d.ID, d.Region, d.Backup, d.Label, d.Region)
				})
			}
			fmt.Fprintf(os.Stderr, "drill %s of %s asked for: restoring backup %s (%s)\n", d.ID, d.Region, d.Backup, d.Label)
			wctx, wcancel := context.WithTimeout(context.Background(), waitFor)
			defer wcancel()
			done, err := followDrill(wctx, c, region, d.ID)
			if err != nil {
				return err
			}
			if err := cf.print(done, func(w *tabwriter.Writer) { printDrill(w, done) }); err != nil {
				return err
			}
			if done.Status != fsm.DrillPassed {
				return fmt.Errorf("drill %s %s", done.ID, done.Status)
			}
			return nil
		},
	}
	c.Flags().StringVar(&region, "region", "", "the region whose newest verified backup is restored")
	c.Flags().BoolVar(&wait, "wait", false, "follow the drill (restore, start, check) until it is recorded")
	c.Flags().DurationVar(&waitFor, "wait-timeout", time.Hour, "how long --wait follows it")
	markRequired(c, "region")
	return c
}

// followDrill prints a drill's phase on stderr as it changes, with
// blocking queries, until it is recorded.
func followDrill(ctx context.Context, c *client.Client, region, id string) (*fsm.Drill, error) {
	var index uint64
	last := ""
	for {
		l, meta, err := c.Drills(ctx, region, &client.QueryOptions{Index: index, Wait: 30 * time.Second})
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("drill %s is still running after --wait-timeout; follow it with: atomfed backup drills --region %s", id, region)
			}
			return nil, err
		}
		for _, d := range l.Drills {
			if d.ID == id {
				return d, nil
			}
		}
		if r := l.Running; r != nil && r.ID == id {
			phase := "waiting for an agent"
			if r.Progress != nil {
				phase = r.Progress.Phase
			}
			if line := fmt.Sprintf("%s on %s: %s", r.Status, dash(r.Agent), phase); line != last {
				fmt.Fprintln(os.Stderr, line)
				last = line
			}
		}
		if meta != nil && meta.Index > index {
			index = meta.Index
		}
	}
}

func newDrillListCmd(cf *clientFlags) *cobra.Command {
	var region string
	c := &cobra.Command{
		Use:   "drills",
		Short: "List a region's restore drills: backup restored, duration, tables read, verdict",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				l, _, err := c.Drills(ctx, region, cf.query())
				if err != nil {
					return err
				}
				return cf.print(l, func(w *tabwriter.Writer) {
					if r := l.Running; r != nil {
						phase := "waiting for an agent"
						if r.Progress != nil {
							phase = r.Progress.Phase
						}
						fmt.Fprintf(w, "running\t%s (backup %s) on %s: %s\n\n", r.ID, r.Backup, dash(r.Agent), phase)
					}
					fmt.Fprintln(w, "ID\tBACKUP\tLABEL\tVERDICT\tDURATION\tTABLES\tAGENT\tERROR")
					for _, d := range l.Drills {
						res := d.DrillResult
						if res == nil {
							res = &fsm.DrillResult{}
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Backup, d.Label, d.Status,
							(time.Duration(res.DurationMS) * time.Millisecond).String(), res.TablesRead, dash(d.Agent), dash(res.Error))
					}
				})
			})
		},
	}
	c.Flags().StringVar(&region, "region", "", "the region")
	markRequired(c, "region")
	return c
}

func printDrill(w *tabwriter.Writer, d *fsm.Drill) {
	fmt.Fprintf(w, "Drill\t%s (%s)\nRegion\t%s\nBackup\t%s (%s)\nStatus\t%s\nAgent\t%s\n", d.ID, d.Reason, d.Region, d.Backup, d.Label, d.Status, dash(d.Agent))
	r := d.DrillResult
	if r == nil {
		return
	}
	if r.Error != "" {
		fmt.Fprintf(w, "Error\t%s (phase %s)\n", r.Error, r.Phase)
	}
	fmt.Fprintf(w, "Duration\t%s (restore %s, start %s)\nTables read\t%d\n", time.Duration(r.DurationMS)*time.Millisecond,
		time.Duration(r.RestoreMS)*time.Millisecond, time.Duration(r.StartMS)*time.Millisecond, r.TablesRead)
	for _, t := range r.Tables {
		fmt.Fprintf(w, "\t%s %s: %d rows, checksum %s\n", t.Database, t.Name, t.Rows, t.Checksum)
	}
}

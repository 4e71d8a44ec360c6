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

func newDRCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "dr",
		Short: "Disaster recovery: rebuild a lost region's PostgreSQL from its backups",
	}
	cf.register(cmd)
	cmd.AddCommand(newRebuildCmd(&cf))
	return cmd
}

func newRebuildCmd(cf *clientFlags) *cobra.Command {
	var region, toTime, backup string
	var force, noWait, status bool
	var waitFor time.Duration
	c := &cobra.Command{
		Use:   "rebuild",
		Short: "Restore a lost region's PostgreSQL from its newest verified backup (or to a point in time) and follow it",
		Long: `An agent of the region that manages its PostgreSQL (--pg-data) restores the
region's newest verified backup onto its empty data directory with pgBackRest,
replays the archived WAL to its end (or to --to-time), starts the server and
reports. The mirrors of the tenants homed in the region re-sync from it on
their own. The command shows the progress (phase, bytes and files restored,
ETA) on stderr until the rebuild is recorded, then its result.`,
		Example: `  atomfed dr rebuild --region us-east
  atomfed dr rebuild --region us-east --to-time 2026-12-08T03:04:05Z
  atomfed dr rebuild --region us-east --status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			id := ""
			if !status {
				if toTime != "" {
					if _, err := time.Parse(time.RFC3339Nano, toTime); err != nil {
						return fmt.Errorf("--to-time %q is not an RFC 3339 time (e.g. 2026-12-08T03:04:05Z)", toTime)
					}
				}
				ctx, cancel := cf.ctx()
				rb, err := c.RunRebuild(ctx, region, &wire.RebuildRunRequest{ToTime: toTime, Backup: backup, Force: force})
				cancel()
				if err != nil {
					return err
				}
				id = rb.ID
				fmt.Fprintf(os.Stderr, "rebuild %s of %s asked for: restoring backup %s (%s, %s)%s\n", rb.ID, rb.Region, rb.Backup, rb.Label,
					bytesText(rb.BytesTotal), targetText(rb.TargetTime))
				if noWait {
					return cf.print(rb, func(w *tabwriter.Writer) {
						fmt.Fprintf(w, "follow it with: atomfed dr rebuild --region %s --status\n", region)
					})
				}
			}
			wctx, wcancel := context.WithTimeout(context.Background(), waitFor)
			defer wcancel()
			st, err := followRebuild(wctx, c, region, id)
			if err != nil {
				return err
			}
			if err := cf.print(st, func(w *tabwriter.Writer) { printRebuild(w, st) }); err != nil {
				return err
			}
			if st.Status == fsm.RebuildFailed {
				return fmt.Errorf("rebuild %s failed", st.ID)
			}
			return nil
		},
	}
	c.Flags().StringVar(&region, "region", "", "the region to rebuild")
	c.Flags().StringVar(&toTime, "to-time", "", "recover to this point in time (RFC 3339) instead of the end of the archived WAL")
	c.Flags().StringVar(&backup, "backup", "", "the backup to restore (catalog id; default: the newest verified one that ended before --to-time)")
	c.Flags().BoolVar(&force, "force", false, "let the agent delete what the region's data directory holds (never a running server's)")
	c.Flags().BoolVar(&noWait, "no-wait", false, "ask for the rebuild and return")
	c.Flags().BoolVar(&status, "status", false, "show the region's newest rebuild (and follow it while it runs) instead of asking for one")
	c.Flags().DurationVar(&waitFor, "wait-timeout", 6*time.Hour, "how long to follow the rebuild")
	markRequired(c, "region")
	return c
}

func targetText(ns int64) string {
	if ns == 0 {
		return ", to the end of the archived WAL"
	}
	return ", to " + time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// followRebuild prints the rebuild's progress on stderr as it changes,
// with blocking queries, until it is recorded (id "": the newest one).
func followRebuild(ctx context.Context, c *client.Client, region, id string) (*wire.RebuildStatus, error) {
	var index uint64
	last := ""
	for {
		st, meta, err := c.Rebuild(ctx, region, &client.QueryOptions{Index: index, Wait: 30 * time.Second})
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("the rebuild of %s is still running after --wait-timeout; follow it with: atomfed dr rebuild --region %s --status", region, region)
			}
			return nil, err
		}
		if id != "" && st.ID != id {
			return nil, fmt.Errorf("rebuild %s of %s was replaced by %s", id, region, st.ID)
		}
		if !st.Active() {
			return st, nil
		}
		if line := progressLine(st); line != last {
			fmt.Fprintln(os.Stderr, line)
			last = line
		}
		if meta != nil && meta.Index > index {
			index = meta.Index
		}
	}
}

func progressLine(st *wire.RebuildStatus) string {
	if st.Agent == "" {
		return "pending: waiting for an agent of " + st.Region + " that manages its PostgreSQL (--pg-data)"
	}
	line := st.Phase + " on " + st.Agent
	if p := st.Progress; p != nil && p.Phase == fsm.RebuildPhaseRestoring && p.Files > 0 {
		line += fmt.Sprintf(": %.1f%%, %s of %s, %d", p.Percent, bytesText(p.Bytes), bytesText(p.BytesTotal), p.Files)
		if p.FilesTotal > 0 {
			line += fmt.Sprintf(" of %d", p.FilesTotal)
		}
		line += " files"
		if p.ETASeconds > 0 {
			line += fmt.Sprintf(", ETA %s", time.Duration(p.ETASeconds)*time.Second)
		}
	}
	if st.TaskError != "" {
		line += " (retrying: " + st.TaskError + ")"
	}
	return line
}

func printRebuild(w *tabwriter.Writer, st *wire.RebuildStatus) {
	fmt.Fprintf(w, "Rebuild\t%s\nRegion\t%s\nPhase\t%s\nBackup\t%s (%s)\n", st.ID, st.Region, st.Phase, st.Backup, st.Label)
	target := "end of the archived WAL"
	if st.TargetTime != 0 {
		target = time.Unix(0, st.TargetTime).UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(w, "Target\t%s\nAgent\t%s\n", target, dash(st.Agent))
	if r := st.RebuildResult; r != nil {
		fmt.Fprintf(w, "Restored\t%s, %d files into %s\n", bytesText(r.Bytes), r.Files, r.DataDir)
		fmt.Fprintf(w, "Took\trestore %s, start and recovery %s, whole %s\n", ms(r.RestoreMS), ms(r.RecoveryMS), ms(r.DurationMS))
		if r.StartedAt != 0 {
			fmt.Fprintf(w, "Started\t%s\nEnded\t%s\n", time.Unix(0, r.StartedAt).UTC().Format(time.RFC3339), time.Unix(0, r.EndedAt).UTC().Format(time.RFC3339))
		}
		if r.Timeline != 0 {
			fmt.Fprintf(w, "Timeline\t%d\n", r.Timeline)
		}
		if r.Error != "" {
			fmt.Fprintf(w, "Error\t%s (in %s)\n", r.Error, r.Phase)
		}
	}
}

func ms(n int64) string { return (time.Duration(n) * time.Millisecond).String() }

package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
)

// ExitDRStale is the exit code of `atomfed dr status` when something is
// stale (a region's backup or drill, or the shipped snapshots).
const ExitDRStale = 2

func ago(at int64) string {
	if at == 0 {
		return "-"
	}
	return time.Since(time.Unix(0, at)).Round(time.Second).String() + " ago"
}

func defaultMark(d bool) string {
	if d {
		return " (default)"
	}
	return ""
}

func secs(n int64) string { return (time.Duration(n) * time.Second).String() }

func newSnapshotListCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the control-plane snapshots shipped to the repository, the policy and whether they are on schedule",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				l, _, err := c.ShippedSnapshots(ctx, cf.query())
				if err != nil {
					return err
				}
				return cf.print(l, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "policy: every %s, keep %d%s; %d removed by retention\n", secs(l.Policy.IntervalSeconds), l.Policy.Keep,
						defaultMark(l.Policy.Default), l.Removed)
					fmt.Fprintln(w, "ID\tINDEX\tSHIPPED\tSIZE\tDIGEST\tLOCATION")
					for _, s := range l.Snapshots {
						fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\t%s\n", s.ID, s.Index, ago(s.At), s.Size, s.Digest[:16], s.Location)
					}
					if f := l.Health.LastFailure; f != nil {
						fmt.Fprintf(w, "last failure (%s, %d since the last success): %s\n", ago(f.At), l.Health.Failures, f.Error)
					}
					if l.Health.Stale {
						fmt.Fprintf(w, "STALE: %s\n", l.Health.Warning)
					}
				})
			})
		},
	}
}

func newSnapshotShipCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "ship",
		Short: "Ship a control-plane snapshot to the repository now (the leader takes and stores it, retention applies)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				s, err := c.ShipSnapshot(ctx)
				if err != nil {
					return err
				}
				return cf.print(s, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "shipped snapshot %s (state index %d, %d bytes, sha256 %s) to %s\n", s.ID, s.Index, s.Size, s.Digest, s.Location)
				})
			})
		},
	}
}

func newSnapshotPolicyCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Read or set the schedule and retention of shipped snapshots"}
	get := &cobra.Command{
		Use:  "get",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				p, err := c.SnapshotPolicy(ctx)
				if err != nil {
					return err
				}
				return cf.print(p, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "every %s, keep %d%s\n", secs(p.IntervalSeconds), p.Keep, defaultMark(p.Default))
				})
			})
		},
	}
	var every time.Duration
	var keep int
	set := &cobra.Command{
		Use:   "set",
		Short: "Set the snapshot policy: --every (a shipment when the last attempt is this old) and --keep (snapshots kept in the repository)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if every%time.Second != 0 || every <= 0 {
				return fmt.Errorf("--every %s must be a positive whole number of seconds (e.g. 15m)", every)
			}
			return cf.do(func(ctx context.Context, c *client.Client) error {
				p, err := c.PutSnapshotPolicy(ctx, &fsm.SnapshotPolicy{IntervalSeconds: int64(every / time.Second), Keep: keep})
				if err != nil {
					return err
				}
				return cf.print(p, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "snapshot policy: every %s, keep %d\n", secs(p.IntervalSeconds), p.Keep)
				})
			})
		},
	}
	set.Flags().DurationVar(&every, "every", fsm.DefaultSnapshotIntervalSeconds*time.Second, "interval between shipments")
	set.Flags().IntVar(&keep, "keep", fsm.DefaultSnapshotKeep, "how many shipped snapshots the repository keeps")
	cmd.AddCommand(get, set)
	return cmd
}

// restoreFromRepo resolves from (an id or latest) in the catalog, shows
// what it restores, and restores it through the approval gate.
func restoreFromRepo(cf *clientFlags, from string) error {
	return cf.do(func(ctx context.Context, c *client.Client) error {
		l, _, err := c.ShippedSnapshots(ctx, cf.query())
		if err != nil {
			return err
		}
		var sn *fsm.ShippedSnapshot
		for _, s := range l.Snapshots {
			if s.ID == from || from == "latest" && sn == nil {
				sn = s
			}
		}
		if sn == nil {
			if from == "latest" {
				return fmt.Errorf("no snapshot has been shipped to the repository yet: ship one with atomfed snapshot ship")
			}
			return fmt.Errorf("no shipped snapshot %q: atomfed snapshot list shows them", from)
		}
		fmt.Fprintf(os.Stderr, "restoring shipped snapshot %s: state index %d, shipped %s (%s), sha256 %s, state digest %s, from %s\n",
			sn.ID, sn.Index, time.Unix(0, sn.At).UTC().Format(time.RFC3339), ago(sn.At), sn.Digest, sn.StateDigest, sn.Location)
		// The id, not "latest": a snapshot shipped meanwhile must not
		// replace the one shown (nor the one an approval names).
		res, pending, err := c.RestoreFromRepo(ctx, sn.ID)
		if err != nil {
			return err
		}
		if pending != nil {
			if err := printApproval(cf, pending); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "once approved, run: atomfed snapshot restore --from-repo %s\n", sn.ID)
			return nil
		}
		m := res.Restored
		return cf.print(res, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "restored shipped snapshot %s: state %s taken by %s at state index %d (audit head %s)\n", sn.ID, m.Digest, m.Node, m.Index, m.AuditHead)
		})
	})
}

func newDRStatusCmd(cf *clientFlags) *cobra.Command {
	status := &cobra.Command{
		Use:   "status",
		Short: "Show each region's last verified backup and last passed drill against their bounds, what runs, and the last shipped control-plane snapshot; exits 2 when anything is stale",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				st, _, err := c.DRStatus(ctx, cf.query())
				if err != nil {
					return err
				}
				if err := cf.print(st, func(w *tabwriter.Writer) { printDRStatus(w, st) }); err != nil {
					return err
				}
				if st.Stale {
					return &exitError{code: ExitDRStale, err: fmt.Errorf("disaster recovery is not ready: %d item(s) stale", len(st.Missing))}
				}
				return nil
			})
		},
	}
	return status
}

func printDRStatus(w *tabwriter.Writer, st *fsm.DRStatus) {
	fmt.Fprintln(w, "REGION\tLAST BACKUP\tAGE/BOUND\tLAST DRILL\tAGE/WINDOW\tRUNNING\tSTATUS")
	for _, r := range st.Regions {
		backup, bage, drill, dage, running, status := "-", "-", "-", "-", "-", "ok"
		if b := r.LastBackup; b != nil {
			backup = b.ID + " (verified)"
		}
		if r.BackupAgeSeconds != nil {
			bage = secs(*r.BackupAgeSeconds) + "/" + secs(r.BackupMaxAgeSeconds)
		}
		if d := r.LastDrill; d != nil {
			drill = d.ID + " (" + d.Verdict + ")"
		}
		if r.DrillAgeSeconds != nil {
			dage = secs(*r.DrillAgeSeconds) + "/" + secs(r.DrillWindowSeconds)
		}
		switch {
		case r.RunningBackup != nil && r.RunningDrill != nil:
			running = "backup " + r.RunningBackup.ID + ", drill " + r.RunningDrill.ID
		case r.RunningBackup != nil:
			running = "backup " + r.RunningBackup.ID
		case r.RunningDrill != nil:
			running = "drill " + r.RunningDrill.ID
		}
		if rb := r.LastRebuild; rb.Active() {
			running = strings.TrimPrefix(running+", rebuild "+rb.ID, ", ")
		}
		switch {
		case r.Simulated:
			status = "simulated (no database)"
		case r.BackupStale && r.DrillStale:
			status = "STALE backup, drill"
		case r.BackupStale:
			status = "STALE backup"
		case r.DrillStale:
			status = "STALE drill"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Region, backup, bage, drill, dage, running, status)
	}
	cp := st.ControlPlane
	last, age := "-", "-"
	if cp.Last != nil {
		last = cp.Last.ID
	}
	if cp.AgeSeconds != nil {
		age = secs(*cp.AgeSeconds) + "/" + secs(2*cp.Policy.IntervalSeconds)
	}
	status := "ok"
	if cp.Stale {
		status = "STALE"
	}
	fmt.Fprintf(w, "control plane\t%s\t%s\t-\t-\t-\t%s\n", last, age, status)
	for _, m := range st.Missing {
		fmt.Fprintf(w, "missing: %s\n", m)
	}
}

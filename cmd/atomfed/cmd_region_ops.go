package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// newRegionOpsCmds are `region maintenance` and `region drain`.
func newRegionOpsCmds(cf *clientFlags) []*cobra.Command {
	var reason string
	maint := &cobra.Command{
		Use:   "maintenance REGION on|off",
		Short: "Stop (on) or allow again (off) new tenant placements in a region; the tenants there stay",
		Long: `Put a region in maintenance (on): a tenant write that would place a tenant
there, as home or mirror, is refused with 409 region_in_maintenance; the
tenants already there stay, and a drain does not pick it as a target. off
lets placements in again (refused while a drain of the region runs: stop it
first). Without on|off it shows the flag.`,
		Example: `  atomfed region maintenance us-east on --reason "kernel upgrade"
  atomfed region maintenance us-east off`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				if len(args) == 1 {
					st, _, err := c.Maintenance(ctx, args[0], cf.query())
					if err != nil {
						return err
					}
					return cf.print(st, func(w *tabwriter.Writer) { printRegionOps(w, st) })
				}
				var on bool
				switch args[1] {
				case "on":
					on = true
				case "off":
				default:
					return fmt.Errorf("the second argument is %q: give on or off", args[1])
				}
				st, err := c.SetMaintenance(ctx, args[0], on, reason)
				if err != nil {
					return err
				}
				return cf.print(st, func(w *tabwriter.Writer) { printRegionOps(w, st) })
			})
		},
	}
	maint.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit chain)")

	var detach, status, stop bool
	drain := &cobra.Command{
		Use:   "drain REGION",
		Short: "Put a region in maintenance and switch every tenant homed there onto its best mirror, one by one, with progress",
		Long: `Start a drain of the region: it goes into maintenance, and the leader moves
every tenant homed there onto its best mirror (the lowest reported lag, not
in maintenance, not down) with the planned switchover, one at a time. A
tenant without a mirror, or whose switchover rolls back, is reported and the
drain ends "partial"; otherwise "done". The region stays in maintenance
afterwards: turn it off with ` + "`atomfed region maintenance REGION off`" + `.

The command follows the drain until it ends (--detach: returns at once).
--status shows the running or last drain; --stop stops it (the switchover
running at that moment ends on its own). It exits non-zero when the drain
ends partial or stopped.`,
		Example: `  atomfed region drain us-east
  atomfed region drain us-east --status
  atomfed region drain us-east --stop`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := cf.ctx()
			var st *wire.RegionOpsStatus
			switch {
			case stop:
				st, err = c.StopDrain(ctx, args[0], reason)
			case status:
				st, _, err = c.Drain(ctx, args[0], cf.query())
			default:
				st, err = c.StartDrain(ctx, args[0])
			}
			cancel()
			if err != nil {
				return err
			}
			if detach || stop || status && !st.Active {
				return cf.print(st, func(w *tabwriter.Writer) { printRegionOps(w, st) })
			}
			return followDrain(cf, c, st)
		},
	}
	f := drain.Flags()
	f.BoolVar(&detach, "detach", false, "return once started instead of following the drain")
	f.BoolVar(&status, "status", false, "show the running or last drain (follow it while it runs, unless --detach)")
	f.BoolVar(&stop, "stop", false, "stop the running drain")
	f.StringVar(&reason, "reason", "", "with --stop: why (recorded in the audit chain)")
	drain.MarkFlagsMutuallyExclusive("status", "stop")
	return []*cobra.Command{maint, drain}
}

func printRegionOps(w *tabwriter.Writer, st *wire.RegionOpsStatus) {
	m := "off"
	if st.Maintenance {
		m = "on"
		if st.MaintenanceBy != "" {
			m += " (by " + st.MaintenanceBy + ")"
		}
	}
	fmt.Fprintf(w, "region %s\tmaintenance %s\n", st.Region, m)
	d := st.Drain
	if d == nil {
		return
	}
	fmt.Fprintf(w, "drain %d\t%s: %d tenants, %d moved, %d could not move, %d left\n", d.ID, d.State, st.Total, st.Moved, st.Failed, st.Remaining)
	for _, t := range d.Tenants {
		line := t.State
		if t.To != "" {
			line += " -> " + t.To
		}
		if t.Reason != "" {
			line += ": " + t.Reason
		}
		fmt.Fprintf(w, "  %s\t%s\n", t.Tenant, line)
	}
}

// followDrain prints a drain's progress until it ends.
func followDrain(cf *clientFlags, c *client.Client, st *wire.RegionOpsStatus) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := io.Writer(os.Stdout)
	if cf.output == "json" {
		out = io.Discard
	}
	d := st.Drain
	started := time.Unix(0, d.StartedAt)
	fmt.Fprintf(out, "drain %d of region %s: %d tenants homed there; region in maintenance\n", d.ID, st.Region, st.Total)
	seen := map[string]string{}
	var idx uint64
	for {
		for _, t := range st.Drain.Tenants {
			line := t.State
			if t.To != "" {
				line += " -> " + t.To
			}
			if t.Reason != "" {
				line += ": " + t.Reason
			}
			if seen[t.Tenant] != line {
				seen[t.Tenant] = line
				fmt.Fprintf(out, "  +%-7s %-20s %s\n", fmtElapsed(time.Since(started)), t.Tenant, line)
			}
		}
		if !st.Active {
			break
		}
		next, m, err := c.Drain(ctx, st.Region, &client.QueryOptions{Consistency: cf.consistency, Index: idx, Wait: 20 * time.Second})
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("stopped following; the drain goes on: `atomfed region drain %s --status`", st.Region)
		case err != nil:
			if client.StatusOf(err) != 0 && client.StatusOf(err) < 500 {
				return err
			}
			fmt.Fprintf(os.Stderr, "  (reading the drain failed: %v; retrying)\n", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if next.Drain == nil || next.Drain.ID != d.ID {
			return fmt.Errorf("region %s's drain %d was replaced", st.Region, d.ID)
		}
		st, idx = next, m.Index
	}
	if cf.output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	}
	took := fmtElapsed(time.Unix(0, st.Drain.EndedAt).Sub(started))
	switch st.Drain.State {
	case fsm.DrainDone:
		fmt.Fprintf(out, "drain done in %s: %d of %d tenants moved; region %s stays in maintenance (`atomfed region maintenance %s off`)\n", took, st.Moved, st.Total, st.Region, st.Region)
		return nil
	case fsm.DrainStopped:
		return errors.New("drain stopped after " + took + ": " + st.Drain.Reason)
	}
	return fmt.Errorf("drain ended partial after %s: %d of %d tenants moved, %d could not move (listed above)", took, st.Moved, st.Total, st.Failed)
}

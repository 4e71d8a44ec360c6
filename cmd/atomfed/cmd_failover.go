package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// failoverFlags are the flags of `tenant failover` and `region failover`.
type failoverFlags struct {
	force  bool
	maxLag time.Duration
	reason string
	detach bool
}

func (ff *failoverFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&ff.force, "force", false, "fail over although the home region is not down (a failover drill): writes acknowledged by the home after the target's applied position are lost")
	f.DurationVar(&ff.maxLag, "max-lag", 0, "refuse a target whose last reported lag is over this")
	f.StringVar(&ff.reason, "reason", "", "why, recorded with the failover")
	f.BoolVar(&ff.detach, "detach", false, "return once requested (or started) instead of waiting for the approval and following the failover")
}

func (ff *failoverFlags) request(cmd *cobra.Command, to string) wire.FailoverRequest {
	req := wire.FailoverRequest{To: to, Force: ff.force, Reason: ff.reason}
	if cmd.Flags().Changed("max-lag") {
		ms := ff.maxLag.Milliseconds()
		req.MaxLagMS = &ms
	}
	return req
}

const failoverLong = `The home region is presumed lost: nothing is fenced there and nothing is
caught up. The target mirror is promoted with what it has applied, then the
new home and epoch are committed in one entry (routing flips there). Writes
the old home acknowledged after the target's applied position are lost: the
request shows that data at risk (the target's last reported lag and applied
LSN); a sync tenant loses none (it goes to its most advanced mirror). When
the old home comes back it is fenced, its divergent rows are quarantined,
and it re-syncs as a mirror of the new home.

Under the default policy a failover needs two approvals ("failover" rule):
the command prints the approval (with the candidate's lag, the data at risk
and whether the target region's last restore drill passed) and waits until
it is approved, then follows the failover (--detach returns at once).
A home that is up is refused (home_is_up): use a planned switchover, or
--force for a failover drill.`

// newTenantFailoverCmds are `tenant failover` and `tenant failover-status`.
func newTenantFailoverCmds(cf *clientFlags) []*cobra.Command {
	var ff failoverFlags
	var to string
	start := &cobra.Command{
		Use:   "failover ID [--to REGION]",
		Short: "Fail a tenant over to one of its mirrors when its home region is lost (needs approval), and follow it",
		Long:  "Fail the tenant over to the mirror --to (left out: its best mirror).\n\n" + failoverLong,
		Example: `  atomfed tenant failover acme --to eu-west
  atomfed tenant failover acme                  # the best mirror
  atomfed tenant failover acme --to eu-west --force --reason "quarterly drill"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := cf.ctx()
			ans, err := c.StartFailover(ctx, args[0], ff.request(cmd, to))
			cancel()
			if err != nil {
				return err
			}
			return followFailoverAnswer(cf, c, ans, []string{args[0]}, ff.detach)
		},
	}
	start.Flags().StringVar(&to, "to", "", "the mirror region that becomes the tenant's home (default: the best mirror)")
	ff.register(start)

	status := &cobra.Command{
		Use:   "failover-status ID",
		Short: "Show what a failover of the tenant would do now (best mirror, lag, data at risk, drill), its automatic policy's decision and its last failovers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				v, _, err := c.Failover(ctx, args[0], cf.query())
				if err != nil {
					return err
				}
				return cf.print(v, func(w *tabwriter.Writer) { printFailoverView(w, v) })
			})
		},
	}
	return []*cobra.Command{start, status}
}

// newRegionFailoverCmd is `region failover`.
func newRegionFailoverCmd(cf *clientFlags) *cobra.Command {
	var ff failoverFlags
	cmd := &cobra.Command{
		Use:   "failover NAME",
		Short: "Fail every tenant homed in a lost region over to its best mirror (one approval), and follow each",
		Long:  "Fail every replicated tenant homed in the region over to its best mirror, under one approval.\n\n" + failoverLong,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := cf.ctx()
			ans, err := c.StartRegionFailover(ctx, args[0], ff.request(cmd, ""))
			cancel()
			if err != nil {
				return err
			}
			return followFailoverAnswer(cf, c, ans, nil, ff.detach)
		},
	}
	ff.register(cmd)
	return cmd
}

// followFailoverAnswer prints the approval (and waits for it unless
// detach), then follows every failover started until it ends.
func followFailoverAnswer(cf *clientFlags, c *client.Client, ans *wire.FailoverAnswer, tenants []string, detach bool) error {
	out := os.Stdout
	for _, s := range ans.Skipped {
		fmt.Fprintf(out, "skipped tenant %s: %s\n", s.Tenant, s.Reason)
	}
	if a := ans.Approval; a != nil {
		fmt.Fprintf(out, "failover needs approval %s (%d of %d): %s\napprovers run: atomfed approve %s\n", a.ID, len(a.Votes), a.Required, a.Summary, a.ID)
		if detach {
			return nil
		}
		final, err := waitApproval(c, a.ID)
		if err != nil {
			return err
		}
		switch final.Status {
		case fsm.ApprovalApplied:
			fmt.Fprintf(out, "approved by %d; the failover started (%s)\n", len(final.Votes), final.Result)
		case fsm.ApprovalFailed:
			return fmt.Errorf("approval %s was approved but the failover did not start: %s", a.ID, final.Result)
		default:
			return fmt.Errorf("approval %s is %s: the failover did not start", a.ID, final.Status)
		}
		if len(tenants) == 0 {
			// A region failover: its tenants are the approved command's.
			var cmd fsm.FailoverStart
			if err := json.Unmarshal(final.Command, &cmd); err == nil {
				for _, t := range cmd.Targets {
					tenants = append(tenants, t.Tenant)
				}
			}
		}
	} else {
		tenants = tenants[:0]
		for _, f := range ans.Failovers {
			tenants = append(tenants, f.Tenant)
		}
	}
	if detach {
		for _, t := range tenants {
			fmt.Fprintf(out, "failover of tenant %s started; follow it with `atomfed tenant switchover-status %s --wait`\n", t, t)
		}
		return nil
	}
	var errs []error
	for _, t := range tenants {
		ctx, cancel := cf.ctx()
		st, _, err := c.Switchover(ctx, t, cf.query())
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", t, err))
			continue
		}
		fmt.Fprintf(out, "failover %d of tenant %s from %s to %s:\n", st.ID, st.Tenant, st.From, st.To)
		if err := followSwitchover(cf, c, st); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitApproval polls approval id until it is no longer pending (Ctrl-C
// stops waiting, not the approval).
func waitApproval(c *client.Client, id string) (*fsm.Approval, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a, err := c.Approval(rctx, id)
		cancel()
		if err == nil && a.Status != fsm.ApprovalPending {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped waiting; approval %s stays pending: `atomfed approvals %s`", id, id)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func printFailoverView(w *tabwriter.Writer, v *wire.FailoverView) {
	budget := ""
	if v.Policy.Mode == fsm.FailoverAuto {
		budget = fmt.Sprintf(" (rpo budget %d ms)", v.Policy.RPOBudgetMS)
	}
	fmt.Fprintf(w, "Tenant\t%s\nHome\t%s (%s)\nPolicy\t%s%s\n", v.Tenant, v.Home, v.HomeHealth, v.Policy.Mode, budget)
	if c := v.Candidate; c != nil {
		fmt.Fprintf(w, "Best mirror\t%s (%s, lag %d ms reported %s, applied %s)\nData at risk\t%s\nDrill\t%s\n",
			c.Region, c.State, c.LagMS, fmtTime(c.ReportedAt), orDashStr(c.AppliedLSN), c.DataAtRisk, c.Risk.Drill)
	} else {
		fmt.Fprintf(w, "Best mirror\tnone: no mirror is up with every table copied\n")
	}
	if v.Auto != nil {
		if v.Auto.Start {
			fmt.Fprintf(w, "Automatic\tfails over to %s now: %s\n", v.Auto.To, v.Auto.Reason)
		} else {
			fmt.Fprintf(w, "Automatic\twaits (%s): %s\n", v.Auto.Wait, v.Auto.Reason)
		}
	}
	for _, h := range v.History {
		fmt.Fprintf(w, "Failover\t%s %s -> %s (%s) RTO %d ms, RPO %d ms of lag, applied %s\n", fmtTime(h.StartedAt), h.From, h.To, h.Mode, h.RTOMS, h.RPOLagMS, orDashStr(h.AppliedLSN))
	}
}

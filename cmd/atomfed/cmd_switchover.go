package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// newTenantSwitchoverCmds are `tenant switchover`, `tenant
// switchover-status` and `tenant switchover-abort`.
func newTenantSwitchoverCmds(cf *clientFlags) []*cobra.Command {
	var to string
	var timeout, maxLag time.Duration
	var detach bool
	start := &cobra.Command{
		Use:   "switchover ID --to REGION",
		Short: "Move a replicated tenant's home onto one of its mirrors without losing a row, and follow it phase by phase",
		Long: `Start a planned switchover of the tenant's home onto the mirror --to: the old
home is fenced (the tenant's writes there are refused), every mirror applies
up to the fence, the target is promoted, and the new home and epoch are
committed in one entry (routing flips there). The old home then mirrors the
new one, PII kept. Writes are answered 503 (switchover_in_progress) by GET
/v1/route and atomfed edge meanwhile.

Until the promotion starts, a switchover that does not catch up within
--timeout rolls back (the fence is lifted); so does switchover-abort. From
the promotion on it only goes forward, also across crashes.

The command follows the switchover until it ends (--detach: returns at once;
follow it with switchover-status). It exits non-zero if it was aborted.`,
		Example: `  atomfed tenant switchover acme --to eu-west
  atomfed tenant switchover acme --to eu-west --timeout 1m --detach
  atomfed tenant switchover acme --to us-east    # fail-back`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			req := wire.SwitchoverRequest{To: to, TimeoutMS: timeout.Milliseconds()}
			if cmd.Flags().Changed("max-lag") {
				ms := maxLag.Milliseconds()
				req.MaxLagMS = &ms
			}
			ctx, cancel := cf.ctx()
			st, err := c.StartSwitchover(ctx, args[0], req)
			cancel()
			if err != nil {
				return err
			}
			if detach {
				return cf.print(st, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "switchover %d of tenant %s from %s to %s started; follow it with `atomfed tenant switchover-status %s`\n", st.ID, st.Tenant, st.From, st.To, st.Tenant)
				})
			}
			if cf.output != "json" {
				fmt.Printf("switchover %d of tenant %s from %s to %s started (fencing and catch-up time out after %s)\n",
					st.ID, st.Tenant, st.From, st.To, time.Duration(st.TimeoutMS)*time.Millisecond)
			}
			return followSwitchover(cf, c, st)
		},
	}
	f := start.Flags()
	f.StringVar(&to, "to", "", "the mirror region that becomes the tenant's home")
	// Shadows the request --timeout of the other commands: this one bounds
	// the switchover's fencing and catch-up (each request still has 30 s).
	f.DurationVar(&timeout, "timeout", 0, "how long fencing and catching up may take before the switchover rolls back (default 30s)")
	f.DurationVar(&maxLag, "max-lag", 0, "refuse to start when the target's last reported lag is over this (default 10s)")
	f.BoolVar(&detach, "detach", false, "return once started instead of following the switchover")
	markRequired(start, "to")

	var wait bool
	status := &cobra.Command{
		Use:   "switchover-status ID",
		Short: "Show a tenant's running or last switchover: phase, steps with times, fenced LSN and each step's progress",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := cf.ctx()
			st, _, err := c.Switchover(ctx, args[0], cf.query())
			cancel()
			if err != nil {
				return err
			}
			if wait && st.Active {
				return followSwitchover(cf, c, st)
			}
			return cf.print(st, func(w *tabwriter.Writer) { printSwitchover(w, st) })
		},
	}
	status.Flags().BoolVar(&wait, "wait", false, "follow a running switchover until it ends")

	var reason string
	abort := &cobra.Command{
		Use:   "switchover-abort ID",
		Short: "Roll back a tenant's switchover that has not started its promotion (the fence is lifted)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				st, err := c.AbortSwitchover(ctx, args[0], reason)
				if err != nil {
					return err
				}
				return cf.print(st, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "switchover %d of tenant %s is rolling back: the fence at %s is being lifted\n", st.ID, st.Tenant, st.From)
				})
			})
		},
	}
	abort.Flags().StringVar(&reason, "reason", "", "why, recorded with the switchover")
	return []*cobra.Command{start, status, abort}
}

// followSwitchover prints each phase of st as the switchover enters it,
// and the progress of its steps, until it ends (Ctrl-C stops following,
// not the switchover). It returns an error if the switchover was aborted.
func followSwitchover(cf *clientFlags, c *client.Client, st *wire.SwitchoverStatus) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := io.Writer(os.Stdout)
	if cf.output == "json" {
		out = io.Discard
	}
	started := time.Unix(0, st.StartedAt)
	printed, progress := 0, map[string]string{}
	var idx uint64
	for {
		for ; printed < len(st.Steps); printed++ {
			s := st.Steps[printed]
			fmt.Fprintf(out, "  +%-7s %-12s %s\n", fmtElapsed(time.Unix(0, s.At).Sub(started)), s.Phase, s.Detail)
		}
		for _, t := range st.Tasks {
			if p := taskProgress(t); p != progress[t.ID] {
				progress[t.ID] = p
				fmt.Fprintf(out, "            %-12s %s %s: %s\n", "", t.Region, t.Type, p)
			}
		}
		if !st.Active {
			break
		}
		next, m, err := c.Switchover(ctx, st.Tenant, &client.QueryOptions{Consistency: cf.consistency, Index: idx, Wait: 20 * time.Second})
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("stopped following; the switchover goes on: `atomfed tenant switchover-status %s`", st.Tenant)
		case err != nil:
			if client.StatusOf(err) != 0 && client.StatusOf(err) < 500 {
				return err
			}
			fmt.Fprintf(os.Stderr, "  (reading the switchover failed: %v; retrying)\n", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if next.ID != st.ID {
			return fmt.Errorf("tenant %s's switchover %d was replaced by %d", st.Tenant, st.ID, next.ID)
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
	took := fmtElapsed(time.Unix(0, st.EndedAt).Sub(started))
	if st.Outcome == fsm.PhaseAborted {
		return errors.New("switchover aborted after " + took + ": " + st.Error + "; tenant " + st.Tenant + " is still at home in " + st.From)
	}
	if st.Kind == fsm.FailoverKind {
		risk := "unknown"
		if st.Risk != nil {
			risk = st.Risk.String()
		}
		fmt.Fprintf(out, "failover done in %s: tenant %s is at home in %s (epoch %d), applied up to %s of %s; data at risk: %s; %s re-syncs as a mirror once it is back\n",
			took, st.Tenant, st.To, st.NewEpoch, orDashStr(st.AppliedLSN), st.From, risk, st.From)
		return nil
	}
	fmt.Fprintf(out, "switchover done in %s: tenant %s is at home in %s (epoch %d); the old home %s mirrors it\n", took, st.Tenant, st.To, st.NewEpoch, st.From)
	return nil
}

// taskProgress is one line on where a switchover's task is.
func taskProgress(t wire.SwitchoverTask) string {
	var r struct {
		State       string `json:"state"`
		Applied     string `json:"applied"`
		Target      string `json:"target"`
		BytesBehind int64  `json:"bytes_behind"`
	}
	_ = json.Unmarshal(t.Result, &r)
	p := t.Status
	if t.Agent == "" {
		p = "waiting for an agent of " + t.Region + " that runs " + t.Type
	}
	if r.State != "" {
		p += ", " + r.State
	}
	if t.Type == fsm.TaskTypeTenantCatchUp && r.Target != "" {
		p += fmt.Sprintf(" (applied %s of %s, %d bytes behind)", orDashStr(r.Applied), r.Target, r.BytesBehind)
	}
	if t.Error != "" {
		p += ": " + t.Error
	}
	return p
}

func orDashStr(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtElapsed(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Round(10 * time.Millisecond).String()
}

func printSwitchover(w *tabwriter.Writer, st *wire.SwitchoverStatus) {
	state := st.Phase
	if st.Outcome != "" {
		state += " (ended " + fmtTime(st.EndedAt) + ")"
	}
	fmt.Fprintf(w, "Tenant\t%s\nSwitchover\t%d (%s)\nFrom\t%s (epoch %d)\nTo\t%s (epoch %d)\nOther mirrors\t%s\nPhase\t%s\n",
		st.Tenant, st.ID, st.Kind, st.From, st.FromEpoch, st.To, st.NewEpoch, joinOrDash(st.Others), state)
	fmt.Fprintf(w, "Requested by\t%s\nStarted\t%s\nTimeout\t%s\n", orDashStr(st.RequestedBy), fmtTime(st.StartedAt), time.Duration(st.TimeoutMS)*time.Millisecond)
	if st.FencedLSN != "" {
		fmt.Fprintf(w, "Fenced LSN\t%s\n", st.FencedLSN)
	}
	if st.Error != "" {
		fmt.Fprintf(w, "Error\t%s\n", st.Error)
	}
	for _, s := range st.Steps {
		fmt.Fprintf(w, "Step\t%s %s (index %d) %s\n", fmtTime(s.At), s.Phase, s.Index, s.Detail)
	}
	for _, t := range st.Tasks {
		fmt.Fprintf(w, "Task\t%s: %s\n", t.ID, taskProgress(t))
	}
	if len(st.Slots) > 0 {
		var slots []string
		for r, lsn := range st.Slots {
			slots = append(slots, r+"@"+lsn)
		}
		fmt.Fprintf(w, "Hand-off slots\t%s\n", strings.Join(slots, ", "))
	}
}

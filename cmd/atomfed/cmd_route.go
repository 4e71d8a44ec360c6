package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/routing"
)

func newRouteCmd() *cobra.Command {
	var cf clientFlags
	var req client.RouteRequest
	var staleness time.Duration
	cmd := &cobra.Command{
		Use:   "route",
		Short: "Show where a tenant's read or write goes (GET /v1/route)",
		Long: `Show where a tenant's request goes: writes to its home region; reads to
the nearest region (Serf round-trip time from --from, then distance) whose
copy is within the staleness budget: the home, or a mirror whose last
reported replication lag is at most --max-staleness. Each region is shown
with its application URL and why it was chosen or skipped. The answer comes
from the queried server's own state (consistency stale unless --consistency
says otherwise).`,
		Example: `  atomfed route --tenant acme --op write
  atomfed route --tenant acme --op read --from eu-west --max-staleness 500ms
  atomfed route --tenant acme --op read --from 53.35,-6.26 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Op != routing.OpRead && req.Op != routing.OpWrite {
				return fmt.Errorf("--op %q must be read or write", req.Op)
			}
			if cmd.Flags().Changed("max-staleness") {
				if staleness < 0 || staleness%time.Millisecond != 0 {
					return fmt.Errorf("--max-staleness %s must be a whole number of milliseconds, 0 or more (0: the home only)", staleness)
				}
				ms := staleness.Milliseconds()
				req.MaxStalenessMS = &ms
			}
			q := cf.query()
			if q.Consistency == "" {
				q.Consistency = "stale"
			}
			return cf.do(func(ctx context.Context, c *client.Client) error {
				out, _, err := c.Route(ctx, req, q)
				if err != nil {
					return err
				}
				return cf.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "tenant %s, %s from %s (home %s, staleness budget %d ms)\n", out.Tenant, out.Op, out.From, out.HomeRegion, out.MaxStalenessMS)
					fmt.Fprintln(w, "\tREGION\tAPP_URL\tLAG\tRTT\tREASON")
					fmt.Fprintf(w, "->\t%s\t%s\t\t\t%s\n", out.Region, orDash(out.AppURL), out.Reason)
					for _, a := range out.Alternatives {
						mark := "ok"
						if !a.Eligible {
							mark = "no"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", mark, a.Region, orDash(a.AppURL), fmtMillis(a.LagMS), fmtMillis(a.RTTMS), a.Reason)
					}
				})
			})
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&req.Tenant, "tenant", "", "tenant id")
	f.StringVar(&req.Op, "op", "", "read or write")
	f.StringVar(&req.From, "from", "", "region name or lat,lon to route from (default: the queried server's region)")
	f.DurationVar(&staleness, "max-staleness", time.Duration(routing.DefaultMaxStalenessMS)*time.Millisecond, "a read's staleness budget: the largest mirror lag it accepts (0: the home only)")
	markRequired(cmd, "tenant", "op")
	return cmd
}

func fmtMillis(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fms", *v)
}

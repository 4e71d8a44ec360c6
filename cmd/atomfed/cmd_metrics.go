package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/httpapi/client"
)

func newMetricsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "The global metrics view: every region's metrics, merged (G.1.5)",
		Long: `The global metrics view. In each region one agent runs the region's metrics
task: it scrapes the region's Prometheus (/federate, when the agent has
PROM_URL) and the /metrics of the region's atomfed nodes, labels every series
with region=<region>, and pushes the snapshot to every server. Any server
merges the regions on GET /v1/metrics/federate within a deadline, and names
the regions it has no fresh snapshot of.`,
	}
	cmd.AddCommand(newMetricsRegionsCmd(), newMetricsFederateCmd())
	return cmd
}

func newMetricsRegionsCmd() *cobra.Command {
	var cf clientFlags
	var maxAge time.Duration
	cmd := &cobra.Command{
		Use:   "regions",
		Short: "Show each region's metrics scrape status on the queried server (GET /v1/metrics/regions)",
		Example: `  atomfed metrics regions
  atomfed metrics regions --max-age 30s -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				out, err := c.MetricsRegions(ctx, maxAge)
				if err != nil {
					return err
				}
				return cf.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "REGION\tSTATUS\tAGE\tSERIES\tBYTES\tAGENT\tSOURCES")
					for _, r := range out {
						age := "-"
						if r.AgeSeconds != nil {
							age = fmt.Sprintf("%.1fs", *r.AgeSeconds)
						}
						var src []string
						for _, s := range r.Scrape.Sources {
							st := "up"
							if !s.Up {
								st = "down: " + s.Error
							}
							src = append(src, fmt.Sprintf("%s %s %s", s.Source, s.Instance, st))
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Region, r.Status, age, r.Series, r.Bytes, orDash(r.Agent), orDash(strings.Join(src, "; ")))
					}
				})
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().DurationVar(&maxAge, "max-age", 0, "a snapshot older than this is stale (default: the server's, 15s)")
	return cmd
}

func newMetricsFederateCmd() *cobra.Command {
	var cf clientFlags
	var o client.FederateOptions
	var openMetrics bool
	cmd := &cobra.Command{
		Use:   "federate",
		Short: "Print the global view in Prometheus' text format (GET /v1/metrics/federate)",
		Long: `Print the series of every region that match the selectors, in Prometheus'
text format (or OpenMetrics), as Prometheus' /federate would. The answer
comes within --deadline; regions without a fresh snapshot are named on
stderr and in atomfed_region_scrape_up{region}=0.`,
		Example: `  atomfed metrics federate --match 'up'
  atomfed metrics federate --match '{__name__=~"atomfed_http_.*"}' --match 'atomfed_scrape_up' --deadline 2s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(o.Match) == 0 {
				return fmt.Errorf(`give at least one selector with --match, e.g. --match 'up' or --match '{region="us-east"}'`)
			}
			if openMetrics {
				o.Accept = "application/openmetrics-text;version=1.0.0"
			}
			return cf.do(func(ctx context.Context, c *client.Client) error {
				res, err := c.Federate(ctx, o, os.Stdout)
				if err != nil {
					return err
				}
				if res.Missing != "" {
					fmt.Fprintf(os.Stderr, "missing regions (no fresh snapshot): %s\n", res.Missing)
				}
				if res.Incomplete != "" {
					fmt.Fprintf(os.Stderr, "incomplete regions (cut by the deadline): %s\n", res.Incomplete)
				}
				return nil
			})
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&o.Match, "match", nil, "a match[] selector, Prometheus syntax (repeatable)")
	f.DurationVar(&o.Timeout, "deadline", 0, "the server's deadline for the answer (default 5s, at most 1m)")
	f.DurationVar(&o.MaxAge, "max-age", 0, "a region's snapshot older than this is missing (default 15s)")
	f.BoolVar(&openMetrics, "openmetrics", false, "ask for OpenMetrics instead of Prometheus text")
	return cmd
}

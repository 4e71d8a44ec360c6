package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// newTenantDivergenceCmds are `tenant divergence` and `tenant
// divergence-resolve`.
func newTenantDivergenceCmds(cf *clientFlags) []*cobra.Command {
	show := &cobra.Command{
		Use:   "divergence ID",
		Short: "Show the rows each old home of a tenant keeps in quarantine after a failover (counts per table)",
		Long: `After an unplanned failover, the tenant's old home that comes back is fenced,
keeps the rows it committed that the new home does not have (or has with
other values) in its own database, in atomfed_quarantine.divergent_rows,
and then mirrors the new home. This shows how many, per old home and table;
the rows themselves never leave that region. Reconcile them there (see
docs/operations.md, "The old home comes back"), then mark them reconciled
with divergence-resolve.`,
		Example: `  atomfed tenant divergence acme
  atomfed tenant divergence acme -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				l, _, err := c.Divergence(ctx, args[0], cf.query())
				if err != nil {
					return err
				}
				return cf.print(l, func(w *tabwriter.Writer) { printDivergence(w, l) })
			})
		},
	}
	var note string
	resolve := &cobra.Command{
		Use:   "divergence-resolve ID --region REGION",
		Short: "Mark the rows an old home keeps in quarantine for a tenant as reconciled (audited)",
		Long: `Records that a person reconciled the rows the old home REGION keeps in
quarantine for the tenant (merged into the new home, or judged not to be
kept). The record stays, marked resolved, with your token's accessor and
--note, in the audit chain too, and atomfed_tenant_divergent_rows drops to 0.
The rows stay in that region's atomfed_quarantine.divergent_rows until you
delete them there.`,
		Example: `  atomfed tenant divergence-resolve acme --region us-east --note "merged 3 orders into eu-west, ticket OPS-112"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			region, _ := cmd.Flags().GetString("region")
			if region == "" {
				return fmt.Errorf("give the old home whose quarantined rows you reconciled: --region REGION (atomfed tenant divergence %s lists them)", args[0])
			}
			return cf.do(func(ctx context.Context, c *client.Client) error {
				e, err := c.ResolveDivergence(ctx, args[0], region, note)
				if err != nil {
					return err
				}
				return cf.print(e, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "the %d quarantined rows of tenant %s at %s are marked reconciled by %s\n", e.Total, e.Tenant, e.Region, e.ResolvedBy)
				})
			})
		},
	}
	resolve.Flags().String("region", "", "the old home that holds the quarantined rows")
	resolve.Flags().StringVar(&note, "note", "", "what was done with the rows, recorded with the mark and in the audit chain")
	return []*cobra.Command{show, resolve}
}

func printDivergence(w *tabwriter.Writer, l *wire.DivergenceList) {
	if len(l.Divergence) == 0 {
		fmt.Fprintf(w, "tenant %s: no rows in quarantine\n", l.Tenant)
		return
	}
	fmt.Fprintln(w, "REGION\tSTATE\tROWS\tMISSING AT NEW HOME\tDIFFERENT\tTABLES\tFOUND")
	for _, d := range l.Divergence {
		state := "open: reconcile them"
		if !d.Open {
			state = "reconciled by " + d.ResolvedBy
		}
		tables := make([]string, 0, len(d.Tables))
		for t, n := range d.Tables {
			tables = append(tables, fmt.Sprintf("%s=%d", t, n))
		}
		sort.Strings(tables)
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", d.Region, state, d.Total, d.Missing, d.Differs, strings.Join(tables, ","),
			time.Unix(0, d.FoundAt).UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "the rows are in %s in each region's own database\n", wire.QuarantineTable)
	for _, d := range l.Divergence {
		if len(d.Keys) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nkeys at %s (the first %d of %d):\nTABLE\tKEY\tREASON\n", d.Region, len(d.Keys), d.Total)
		for _, k := range d.Keys {
			fmt.Fprintf(w, "%s\t%s\t%s\n", k.Table, k.Key, k.Reason)
		}
	}
}

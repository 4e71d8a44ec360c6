package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/atomcloud/atomfed/httpapi/client"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
)

// newTenantReplicationCmd shows a tenant's replication: per mirror its
// state, lag and last error.
func newTenantReplicationCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "replication ID",
		Short: "Show a tenant's replication: the home's publication and each mirror's state, lag and last error",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				v, _, err := c.TenantReplication(ctx, args[0], cf.query())
				if err != nil {
					return err
				}
				return cf.print(v, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "Tenant\t%s (home %s, %s)\nStatus\t%s\n", v.Tenant, v.Home, v.SyncMode, v.Status)
					for _, r := range v.Reasons {
						fmt.Fprintf(w, "\t%s\n", r)
					}
					if s := v.Sync; s != nil {
						fmt.Fprintf(w, "Sync\tcurrent %s, recorded %s (fallback %s after %d ms)\n", dash(s.Current), dash(s.Recorded), s.Fallback, s.DegradeAfterMS)
					}
					if p := v.Publisher; p != nil {
						fmt.Fprintf(w, "Publisher\t%s on %s: %s\n", p.Publication, dash(p.Agent), p.State)
					}
					fmt.Fprintln(w, "MIRROR\tSTATE\tLAG\tLAG_BYTES\tLAST_ERROR")
					for _, m := range v.Mirrors {
						last := "-"
						if m.LastError != nil {
							last = m.LastError.Code + ": " + m.LastError.Message
						}
						state := m.State
						if m.Ensure == fsm.EnsureAbsent {
							state = "removing"
						}
						fmt.Fprintf(w, "%s\t%s\t%.3fs\t%d\t%s\n", m.Region, state, m.LagSeconds, m.LagBytes, last)
					}
				})
			})
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newGlobalTableCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "global-table", Short: "Replicate global (non-tenant) tables from a writer region to every region"}
	cf.register(cmd)
	var writer string
	put := &cobra.Command{
		Use:     "put NAME",
		Short:   "Make a table global, written in one region",
		Example: `  atomfed global-table put public.currencies --writer us-east`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				out, err := c.PutGlobalTable(ctx, &fsm.GlobalTable{Name: args[0], WriterRegion: writer}, nil)
				if err != nil {
					return err
				}
				return cf.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "global table %s written in %s (modify_index %d)\n", out.Name, out.WriterRegion, out.ModifyIndex)
				})
			})
		},
	}
	put.Flags().StringVar(&writer, "writer", "", "the region where the table is written")
	markRequired(put, "writer")
	list := &cobra.Command{
		Use:   "list",
		Short: "List global tables with their sync status and drift",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				sum, err := c.Replication(ctx, cf.query())
				if err != nil {
					return err
				}
				return cf.print(sum, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "TABLE\tWRITER\tSTATUS\tREASONS")
					for _, g := range sum.GlobalTables {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", g.Name, g.Writer, g.Status, joinOrDash(g.Reasons))
					}
				})
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Stop replicating a global table (the copies stay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				if err := c.DeleteGlobalTable(ctx, args[0], nil); err != nil {
					return err
				}
				fmt.Printf("global table %s deleted\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(put, list, del)
	return cmd
}

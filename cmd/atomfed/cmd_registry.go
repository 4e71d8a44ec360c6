package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
)

func newRegionCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "region", Short: "Register, list, show and delete regions"}
	cf.register(cmd)

	var r fsm.Region
	var labels []string
	var cas uint64
	reg := &cobra.Command{
		Use:   "register",
		Short: "Register a region, or update it",
		Long: `Register a region, or update it. The request is signed with the region's
key (--key or COSIGN_KEY_PATH): a first registration proves possession of
that key, which becomes the region's; later updates must be signed by it.
Registering a production region waits for approvals under the default policy.`,
		Example: `  COSIGN_KEY_PATH=eu-west.key atomfed region register --name eu-west \
    --url https://eu-west.example.com:8401 --app-url https://app.eu-west.example.com \
    --tier production --lat 53.35 --lon -6.26 --label provider=aws`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.doSigned(func(ctx context.Context, c *client.Client) error {
				var err error
				if r.Labels, err = parseLabels(labels); err != nil {
					return err
				}
				out, pending, err := c.RegisterRegionGated(ctx, &r, optCAS(cmd, cas))
				if err != nil {
					return err
				}
				if pending != nil {
					return printApproval(&cf, pending)
				}
				return cf.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "region %s registered (modify_index %d)\n", out.Name, out.ModifyIndex)
				})
			})
		},
	}
	rf := reg.Flags()
	rf.StringVar(&r.Name, "name", "", "region name (a DNS label)")
	rf.StringVar(&r.URL, "url", "", "the region's API endpoint URL")
	rf.StringVar(&r.AppURL, "app-url", "", "the region's tenant-facing application URL, where GET /v1/route sends tenants (https; http only if --url is http)")
	rf.StringVar(&r.Tier, "tier", "staging", "staging or production")
	rf.StringVar(&r.Status, "status", "active", "active, maintenance or draining")
	rf.Float64Var(&r.Location.Lat, "lat", 0, "latitude")
	rf.Float64Var(&r.Location.Lon, "lon", 0, "longitude")
	rf.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	rf.Uint64Var(&cas, "cas", 0, "only write if the region's modify_index is this (0: create only)")
	markRequired(reg, "name", "url")

	list := &cobra.Command{
		Use:   "list",
		Short: "List regions",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				regions, _, err := c.RegionViews(ctx, cf.query())
				if err != nil {
					return err
				}
				return cf.print(map[string]any{"regions": regions}, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "NAME\tTIER\tSTATUS\tHEALTH\tAGENTS\tPROBE\tURL\tMODIFY_INDEX")
					for _, r := range regions {
						probe := "-"
						if p := r.Health.Probe; p != nil {
							probe = fmt.Sprintf("%.1fms", p.LatencyMS)
							if !p.OK {
								probe = "failing"
							}
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%d\n", r.Name, r.Tier, r.Status, r.Health.Status,
							r.Health.AgentsAlive, r.Health.AgentsTotal, probe, r.URL, r.ModifyIndex)
					}
				})
			})
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one region",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				r, _, err := c.Region(ctx, args[0], cf.query())
				if err != nil {
					return err
				}
				return cf.print(r, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "Name\t%s\nURL\t%s\nApp URL\t%s\nTier\t%s\nStatus\t%s\nLocation\t%.4f, %.4f\nLabels\t%s\nCreated\t%s (index %d)\nModified\t%s (index %d)\n",
						r.Name, r.URL, orDash(r.AppURL), r.Tier, r.Status, r.Location.Lat, r.Location.Lon, fmtLabels(r.Labels),
						fmtTime(r.CreatedAt), r.CreateIndex, fmtTime(r.UpdatedAt), r.ModifyIndex)
				})
			})
		},
	}
	var delCAS uint64
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Deregister a region no tenant uses",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				pending, err := c.DeleteRegionGated(ctx, args[0], optCAS(cmd, delCAS))
				if err != nil {
					return err
				}
				if pending != nil {
					return printApproval(&cf, pending)
				}
				fmt.Printf("region %s deleted\n", args[0])
				return nil
			})
		},
	}
	del.Flags().Uint64Var(&delCAS, "cas", 0, "only delete if the region's modify_index is this")
	var from string
	nearest := &cobra.Command{
		Use:   "nearest",
		Short: "Rank regions by estimated round-trip time from a node or region (Serf coordinates)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				if from == "" {
					h, err := c.Health(ctx)
					if err != nil {
						return err
					}
					from = h.Node
				}
				out, err := c.NearestRegions(ctx, from)
				if err != nil {
					return err
				}
				return cf.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "REGION\tRTT_FROM_%s\tVIA\n", from)
					for _, r := range out {
						rtt := "unknown"
						if r.RTTMillis >= 0 {
							rtt = fmt.Sprintf("%.3fms", r.RTTMillis)
						}
						fmt.Fprintf(w, "%s\t%s\t%s\n", r.Region, rtt, orDash(r.To))
					}
				})
			})
		},
	}
	nearest.Flags().StringVar(&from, "from", "", "node or region to measure from (default: the queried server)")
	cmd.AddCommand(reg, list, show, del, nearest, newRegionFailoverCmd(&cf))
	return cmd
}

func newTenantCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "tenant", Short: "Create, read, list and delete tenants"}
	cf.register(cmd)

	var t fsm.Tenant
	var tables, labels []string
	var cas uint64
	var degradeAfter time.Duration
	put := &cobra.Command{
		Use:   "put ID",
		Short: "Create or replace a tenant's placement (a full replace: what is not given is dropped; see tenant patch)",
		Example: `  atomfed tenant put acme --home us-east --mirror eu-west --mirror ap-south \
    --table orders:email,phone --table invoices`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			t.ID = args[0]
			// The seed's PRIMARY_REGION and SECONDARY_REGIONS place a
			// tenant whose command names no region: home in the
			// primary, mirrored in the secondaries. A command that
			// names its home gets no default mirror.
			if !cmd.Flags().Changed("home") && !cmd.Flags().Changed("mirror") {
				t.HomeRegion = os.Getenv("PRIMARY_REGION")
				if t.HomeRegion == "" {
					return fmt.Errorf("tenant put %s: name a home region (--home us-east), or set PRIMARY_REGION (and SECONDARY_REGIONS for mirrors)", args[0])
				}
				t.Mirrors = secondaryRegions(t.HomeRegion)
			} else if t.HomeRegion == "" {
				return fmt.Errorf("tenant put %s: --mirror needs --home (the region where the tenant's data and PII live)", args[0])
			}
			t.SyncDegradeAfterMS = int(degradeAfter / time.Millisecond)
			if t.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			t.Tables = parseTables(tables)
			ctx, cancel := cf.ctx()
			defer cancel()
			out, err := c.PutTenant(ctx, &t, optCAS(cmd, cas))
			if err != nil {
				return err
			}
			return cf.print(out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "tenant %s stored (modify_index %d)\n", out.ID, out.ModifyIndex)
			})
		},
	}
	pf := put.Flags()
	pf.StringVar(&t.HomeRegion, "home", "", "home region (where the data and its PII live; default $PRIMARY_REGION when no --mirror is given either)")
	pf.StringSliceVar(&t.Mirrors, "mirror", nil, "mirror region (repeatable; default the regions of $SECONDARY_REGIONS when --home is not given either)")
	pf.StringArrayVar(&tables, "table", nil, "table[:pii_col,pii_col] (repeatable)")
	pf.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	pf.Uint64Var(&cas, "cas", 0, "only write if the tenant's modify_index is this (0: create only)")
	pf.StringVar(&t.SyncMode, "sync-mode", "", "async (default) or sync: commits at home return once a mirror has them")
	pf.StringVar(&t.SyncFallback, "sync-fallback", "", "with sync: degrade (default: go async when every mirror is down) or wait")
	pf.DurationVar(&degradeAfter, "sync-degrade-after", 0, "with sync and degrade: how long commits wait with every mirror down (default 10s)")

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a tenant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				t, _, err := c.Tenant(ctx, args[0], cf.query())
				if err != nil {
					return err
				}
				return cf.print(t, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "ID\t%s\nHome\t%s\nEpoch\t%s\nMirrors\t%s\nLabels\t%s\nModified\t%s (index %d)\n", t.ID, t.HomeRegion,
						fmtEpoch(t.Epoch), joinOrDash(t.Mirrors), fmtLabels(t.Labels), fmtTime(t.UpdatedAt), t.ModifyIndex)
					for _, tb := range t.Tables {
						fmt.Fprintf(w, "Table\t%s (PII: %s)\n", tb.Name, joinOrDash(tb.PIIColumns))
					}
				})
			})
		},
	}
	var region string
	list := &cobra.Command{
		Use:   "list",
		Short: "List tenants",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				ts, _, err := c.Tenants(ctx, region, cf.query())
				if err != nil {
					return err
				}
				return cf.print(map[string]any{"tenants": ts}, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tHOME\tMIRRORS\tTABLES\tMODIFY_INDEX")
					for _, t := range ts {
						fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\n", t.ID, t.HomeRegion, joinOrDash(t.Mirrors), len(t.Tables), t.ModifyIndex)
					}
				})
			})
		},
	}
	list.Flags().StringVar(&region, "region", "", "only tenants placed in this region")
	var delCAS uint64
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a tenant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				if err := c.DeleteTenant(ctx, args[0], optCAS(cmd, delCAS)); err != nil {
					return err
				}
				fmt.Printf("tenant %s deleted\n", args[0])
				return nil
			})
		},
	}
	del.Flags().Uint64Var(&delCAS, "cas", 0, "only delete if the tenant's modify_index is this")
	cmd.AddCommand(put, newTenantPatchCmd(&cf), get, list, del, newTenantReplicationCmd(&cf))
	cmd.AddCommand(newTenantSwitchoverCmds(&cf)...)
	cmd.AddCommand(newTenantDivergenceCmds(&cf)...)
	cmd.AddCommand(newTenantFailoverCmds(&cf)...)
	return cmd
}

func fmtLabels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func fmtTime(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}

// parseTables turns --table table[:pii_col,pii_col] flags into tables.
func parseTables(specs []string) []fsm.TenantTable {
	var out []fsm.TenantTable
	for _, spec := range specs {
		name, cols, _ := strings.Cut(spec, ":")
		tb := fsm.TenantTable{Name: name}
		if cols != "" {
			tb.PIIColumns = strings.Split(cols, ",")
		}
		out = append(out, tb)
	}
	return out
}

// newTenantPatchCmd changes only what its flags name (PATCH, a JSON merge
// patch), where tenant put replaces the whole tenant.
func newTenantPatchCmd(cf *clientFlags) *cobra.Command {
	var home, syncMode, syncFallback string
	var mirrors, tables, labels, unlabels []string
	var degradeAfter time.Duration
	var cas uint64
	cmd := &cobra.Command{
		Use:   "patch ID",
		Short: "Change only the named fields of a tenant; everything else stays",
		Long: `Change only what the flags name and keep the rest of the tenant, on the
tenant as it is when the server applies the change. --mirror and --table
replace the whole list (--mirror '' leaves no mirror); --label adds or
changes one label and --remove-label drops one.`,
		Example: `  atomfed tenant patch acme --mirror eu-west --mirror ap-south
  atomfed tenant patch acme --label tier=gold --remove-label trial`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			patch := map[string]any{}
			if f.Changed("home") {
				patch["home_region"] = home
			}
			if f.Changed("mirror") {
				patch["mirrors"] = splitList(mirrors)
			}
			if f.Changed("table") {
				patch["tables"] = parseTables(tables)
			}
			if f.Changed("sync-mode") {
				patch["sync_mode"] = syncMode
			}
			if f.Changed("sync-fallback") {
				patch["sync_fallback"] = syncFallback
			}
			if f.Changed("sync-degrade-after") {
				patch["sync_degrade_after_ms"] = int(degradeAfter / time.Millisecond)
			}
			if len(labels) > 0 || len(unlabels) > 0 {
				set, err := parseLabels(labels)
				if err != nil {
					return err
				}
				lp := map[string]any{}
				for k, v := range set {
					lp[k] = v
				}
				for _, k := range unlabels {
					lp[k] = nil
				}
				patch["labels"] = lp
			}
			if len(patch) == 0 {
				return fmt.Errorf("nothing to change: name at least one of --home, --mirror, --table, --label, --remove-label, --sync-mode, --sync-fallback, --sync-degrade-after")
			}
			return cf.do(func(ctx context.Context, c *client.Client) error {
				out, err := c.PatchTenant(ctx, args[0], patch, optCAS(cmd, cas))
				if err != nil {
					return err
				}
				return cf.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "tenant %s changed (modify_index %d): home %s, mirrors %s\n", out.ID, out.ModifyIndex, out.HomeRegion, joinOrDash(out.Mirrors))
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&home, "home", "", "new home region")
	f.StringSliceVar(&mirrors, "mirror", nil, "mirror region (repeatable; replaces the list)")
	f.StringArrayVar(&tables, "table", nil, "table[:pii_col,pii_col] (repeatable; replaces the list)")
	f.StringArrayVar(&labels, "label", nil, "label key=value to add or change (repeatable)")
	f.StringArrayVar(&unlabels, "remove-label", nil, "label key to remove (repeatable)")
	f.StringVar(&syncMode, "sync-mode", "", "async or sync")
	f.StringVar(&syncFallback, "sync-fallback", "", "with sync: degrade or wait")
	f.DurationVar(&degradeAfter, "sync-degrade-after", 0, "with sync and degrade: how long commits wait with every mirror down")
	f.Uint64Var(&cas, "cas", 0, "only change the tenant if its modify_index is this")
	return cmd
}

// fmtEpoch shows a tenant's placement epoch; 0 is a tenant created before
// epochs, whose home has not changed since.
func fmtEpoch(e uint64) string {
	if e == 0 {
		return "0 (created before epochs; its first change of home makes it 1)"
	}
	return strconv.FormatUint(e, 10)
}

// secondaryRegions returns the regions of SECONDARY_REGIONS (comma or space
// separated), without home and duplicates.
func secondaryRegions(home string) []string {
	var out []string
	for _, r := range strings.FieldsFunc(os.Getenv("SECONDARY_REGIONS"), func(c rune) bool { return c == ',' || c == ' ' }) {
		if r != home && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

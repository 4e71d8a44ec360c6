package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/atomcloud/atomfed/httpapi/client"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/internal/structs"
)

func newMembersCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the servers and agents Serf knows, with region, role and status, and (asked on the leader) the members it refused",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				ms, err := c.Members(ctx)
				if err != nil {
					return err
				}
				coords, err := c.Coordinates(ctx)
				if err != nil {
					return err
				}
				h, err := c.Health(ctx)
				if err != nil {
					return err
				}
				rtt := rttFrom(coords, h.Node)
				byNode := map[string]structs.Coordinate{}
				for _, co := range coords {
					byNode[co.Node] = co
				}
				type row struct {
					structs.Member
					Coordinate *structs.Coordinate `json:"coordinate,omitempty"`
					RTTMillis  *float64            `json:"rtt_ms_from_queried_server,omitempty"`
				}
				rows := make([]row, len(ms))
				for i, m := range ms {
					rows[i].Member = m
					if co, ok := byNode[m.Name]; ok {
						co := co
						rows[i].Coordinate = &co
					}
					if d, ok := rtt[m.Name]; ok {
						ms := float64(d.Microseconds()) / 1000
						rows[i].RTTMillis = &ms
					}
				}
				return cf.print(rows, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "NAME\tADDRESS\tROLE\tREGION\tSTATUS\tCOORD_ERROR\tRTT_FROM_%s\n", h.Node)
					for _, r := range rows {
						coordErr, rttS := "-", "-"
						if r.Coordinate != nil {
							coordErr = fmt.Sprintf("%.3f", r.Coordinate.Error)
						}
						if r.RTTMillis != nil {
							rttS = fmt.Sprintf("%.3fms", *r.RTTMillis)
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Addr, r.Role, r.Region, r.Status, coordErr, rttS)
					}
					// A refusal is the leader's: it admits members by identity.
					for _, r := range rows {
						if r.Refused != "" {
							fmt.Fprintf(w, "REFUSED %s: %s\n", r.Name, r.Refused)
						}
					}
				})
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func newStatusCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this server's health and the cluster leader",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				h, err := c.Health(ctx)
				if err != nil {
					return err
				}
				return cf.print(h, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "Node\t%s\nRegion\t%s\nRaft state\t%s\nLeader\t%s\nIndex\t%d\nAudit head\t%s (index %d)\nVersion\t%s\n",
						h.Node, h.Region, h.RaftState, orDash(h.Leader), h.Index, h.AuditHead, h.AuditIndex, h.Version)
				})
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func newOperatorCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "operator", Short: "Cluster operator commands"}
	cf.register(cmd)
	rc := &cobra.Command{Use: "raft", Short: "Inspect and change the Raft configuration"}
	list := &cobra.Command{
		Use:   "list-peers",
		Short: "List the Raft servers, their suffrage and the leader",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				peers, err := c.RaftConfiguration(ctx, cf.query())
				if err != nil {
					return err
				}
				return cf.print(peers, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "NODE\tADDRESS\tREGION\tSTATE\tVOTER\tSERF\tPROTOCOL")
					for _, p := range peers {
						state := "follower"
						if p.Leader {
							state = "leader"
						}
						proto := "-"
						if p.Protocol > 0 {
							proto = fmt.Sprint(p.Protocol)
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", p.ID, p.Address, orDash(p.Region), state, p.Voter, orDash(p.Status), proto)
					}
				})
			})
		},
	}
	remove := &cobra.Command{
		Use:   "remove-peer NODE",
		Short: "Remove a server from the Raft configuration (for a server that is gone for good)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				if err := c.RemovePeer(ctx, args[0]); err != nil {
					return err
				}
				fmt.Printf("removed %s from the raft configuration\n", args[0])
				return nil
			})
		},
	}
	rc.AddCommand(list, remove)
	cmd.AddCommand(rc)
	return cmd
}

func newSnapshotCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "snapshot", Short: "Save and restore the federation state; list, ship and restore the snapshots shipped to the repository"}
	cf.register(cmd)
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the state (taken on the leader) to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				tmp := args[0] + ".part"
				f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				meta, err := c.SnapshotSave(ctx, f)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(tmp)
					return err
				}
				if err := os.Rename(tmp, args[0]); err != nil {
					return err
				}
				fmt.Printf("saved snapshot at index %d to %s\n", meta.Index, args[0])
				return nil
			})
		},
	}
	var fromRepo string
	restore := &cobra.Command{
		Use:   "restore FILE | --from-repo latest|ID",
		Short: "Restore the state from a snapshot FILE, or a shipped snapshot read by the leader from the repository (replaces the data on every server; trust, nonces and the audit chain stay); once the federation has its approvers, the first run asks for their approval of this snapshot and the run after it restores",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case fromRepo != "" && len(args) > 0:
				return fmt.Errorf("give a snapshot FILE or --from-repo, not both")
			case fromRepo != "":
				return restoreFromRepo(&cf, fromRepo)
			case len(args) == 0:
				return fmt.Errorf("name a snapshot FILE, or --from-repo latest|ID for a shipped one (atomfed snapshot list)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			ctx, cancel := cf.ctx()
			defer cancel()
			meta, pending, err := c.SnapshotRestoreGated(ctx, f)
			if err != nil {
				return err
			}
			if pending != nil {
				if err := printApproval(&cf, pending); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "once approved, run the same command again to restore this snapshot\n")
				return nil
			}
			fmt.Printf("restored snapshot %s taken by %s at state index %d (audit head %s)\n", meta.Digest, meta.Node, meta.Index, meta.AuditHead)
			return nil
		},
	}
	restore.Flags().StringVar(&fromRepo, "from-repo", "", "restore a snapshot shipped to the repository: latest, or its id (atomfed snapshot list)")
	cmd.AddCommand(save, restore, newSnapshotListCmd(&cf), newSnapshotShipCmd(&cf), newSnapshotPolicyCmd(&cf))
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

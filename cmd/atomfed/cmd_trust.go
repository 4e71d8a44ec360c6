package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

func printApproval(cf *clientFlags, a *fsm.Approval) error {
	return cf.print(a, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "pending approval %s: %s\nneeds %d approvals (has %d); approvers run: atomfed approve %s\n",
			a.ID, a.Summary, a.Required, len(a.Votes), a.ID)
	})
}

func newApproveCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a pending action, signed with your approver key (--key or COSIGN_KEY_PATH)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.doSigned(func(ctx context.Context, c *client.Client) error {
				a, err := c.Approve(ctx, args[0])
				if err != nil {
					return err
				}
				return cf.print(a, func(w *tabwriter.Writer) {
					switch a.Status {
					case fsm.ApprovalApplied:
						fmt.Fprintf(w, "approved: %d of %d; %s was applied (%s)\n", len(a.Votes), a.Required, a.Summary, a.Result)
					case fsm.ApprovalFailed:
						fmt.Fprintf(w, "approved: %d of %d, but %s failed its preconditions: %s\n", len(a.Votes), a.Required, a.Summary, a.Result)
					default:
						fmt.Fprintf(w, "approved: %d of %d; waiting for %d more\n", len(a.Votes), a.Required, a.Required-len(a.Votes))
					}
				})
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func newApprovalsCmd() *cobra.Command {
	var cf clientFlags
	var status string
	cmd := &cobra.Command{
		Use:   "approvals [ID]",
		Short: "List approvals (or show one)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				if len(args) == 1 {
					a, err := c.Approval(ctx, args[0])
					if err != nil {
						return err
					}
					return cf.print(a, nil)
				}
				list, err := c.Approvals(ctx, status)
				if err != nil {
					return err
				}
				return cf.print(map[string]any{"approvals": list}, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tACTION\tSTATUS\tVOTES\tREQUESTED_BY\tSUMMARY")
					for _, a := range list {
						fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", a.ID, a.Action, a.Status, len(a.Votes), a.Required, orDash(a.RequestedBy), a.Summary)
					}
				})
			})
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only approvals with this status (pending, applied, failed, expired)")
	cf.register(cmd)
	return cmd
}

func newTokenCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke API tokens (operator)"}
	cf.register(cmd)
	var role, desc, tokNode, tokRegion string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token; its secret is shown once",
		Long: `Create a token; its secret is shown once. An agent token is bound to one
agent node and its region (--node, --region): the leader admits only an
agent whose name and region a token is bound to, and the token acts only as
that node, for that region.`,
		Example: `  atomfed token create --role reader --description dashboards
  atomfed token create --role agent --node us-east-a1 --region us-east`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if role == fsm.RoleAgent && (tokNode == "" || tokRegion == "") {
				return fmt.Errorf("an agent token is bound to one agent: give --node <agent node name> and --region <its region>")
			}
			if role != fsm.RoleAgent && (tokNode != "" || tokRegion != "") {
				return fmt.Errorf("--node and --region bind agent tokens only; drop them for a %s token", role)
			}
			return cf.do(func(ctx context.Context, c *client.Client) error {
				var t *wire.TokenSecret
				var err error
				if role == fsm.RoleAgent {
					t, err = c.CreateAgentToken(ctx, tokNode, tokRegion, desc)
				} else {
					t, err = c.CreateToken(ctx, role, desc)
				}
				if err != nil {
					return err
				}
				return cf.print(t, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "Accessor\t%s\nRole\t%s\n", t.Accessor, t.Role)
					if t.Node != "" {
						fmt.Fprintf(w, "Node\t%s\nRegion\t%s\n", t.Node, t.Region)
					}
					fmt.Fprintf(w, "Secret\t%s\n\nThe secret is shown only now.\n", t.Secret)
				})
			})
		},
	}
	create.Flags().StringVar(&role, "role", "reader", "operator, approver, agent or reader")
	create.Flags().StringVar(&desc, "description", "", "what the token is for")
	create.Flags().StringVar(&tokNode, "node", "", "agent tokens: the agent node name (its --node) the token is bound to")
	create.Flags().StringVar(&tokRegion, "region", "", "agent tokens: the region (the agent's --region) the token is bound to")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				ts, err := c.ListTokens(ctx)
				if err != nil {
					return err
				}
				return cf.print(map[string]any{"tokens": ts}, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ACCESSOR\tROLE\tBOUND TO\tCREATED\tDESCRIPTION")
					for _, t := range ts {
						bound := "-"
						if t.Node != "" {
							bound = t.Node + " (" + t.Region + ")"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Accessor, t.Role, bound, fmtTime(t.CreatedAt), orDash(t.Description))
					}
				})
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ACCESSOR|bootstrap",
		Short: "Revoke a token (effective on every server once committed); 'bootstrap' retires the servers' FEDERATION_TOKEN for good, once another operator token exists",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				if err := c.RevokeToken(ctx, args[0]); err != nil {
					return err
				}
				if args[0] == "bootstrap" {
					fmt.Println("bootstrap token retired: every server now refuses FEDERATION_TOKEN; use your operator token")
					return nil
				}
				fmt.Printf("token %s revoked\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newTrustCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "trust", Short: "Trust members, their keys and the trust bundle"}
	cf.register(cmd)
	var kind string
	members := &cobra.Command{
		Use:   "members",
		Short: "List trust members and their keys",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				ms, err := c.TrustMembers(ctx, kind)
				if err != nil {
					return err
				}
				return cf.print(map[string]any{"members": ms}, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "MEMBER\tKIND\tKEY_ID\tSTATE")
					for _, m := range ms {
						for _, k := range m.Keys {
							state := "valid"
							switch {
							case k.Revoked:
								state = "revoked"
							case k.NotAfter != 0:
								state = "rotating out until " + fmtTime(k.NotAfter)
							}
							fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.ID, m.Kind, k.KeyID, state)
						}
					}
				})
			})
		},
	}
	members.Flags().StringVar(&kind, "kind", "", "only members of this kind (region, agent, approver, server)")
	var id, regKind string
	register := &cobra.Command{
		Use:   "register --id ID --kind approver|agent",
		Short: "Register the key given by --key as a member (signed by it: proof of possession); once the federation has its approvers, a new approver waits for their approvals",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.doSigned(func(ctx context.Context, c *client.Client) error {
				m, pending, err := c.RegisterMemberGated(ctx, id, regKind)
				if err != nil {
					return err
				}
				if pending != nil {
					return printApproval(&cf, pending)
				}
				return cf.print(m, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "%s %s registered with key %s\n", m.Kind, m.ID, m.Keys[0].KeyID)
				})
			})
		},
	}
	register.Flags().StringVar(&id, "id", "", "member id")
	register.Flags().StringVar(&regKind, "kind", fsm.MemberApprover, "approver or agent")
	markRequired(register, "id")
	var newPub string
	rotate := &cobra.Command{
		Use:   "rotate MEMBER --new-public-key FILE",
		Short: "Announce MEMBER's new key, signed by its current key (--key); the old key stays valid for the overlap window",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.doSigned(func(ctx context.Context, c *client.Client) error {
				pub, err := os.ReadFile(newPub)
				if err != nil {
					return fmt.Errorf("--new-public-key: %w", err)
				}
				m, pending, err := c.RotateKey(ctx, args[0], pub)
				if err != nil {
					return err
				}
				if pending != nil {
					return printApproval(&cf, pending)
				}
				return cf.print(m, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%s now has %d keys\n", m.ID, len(m.Keys)) })
			})
		},
	}
	rotate.Flags().StringVar(&newPub, "new-public-key", "", "PEM public key file of the new key")
	markRequired(rotate, "new-public-key")
	revoke := &cobra.Command{
		Use:   "revoke MEMBER KEY_ID",
		Short: "Revoke a key (waits for approvals under the default policy)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				m, pending, err := c.RevokeKey(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				if pending != nil {
					return printApproval(&cf, pending)
				}
				return cf.print(m, func(w *tabwriter.Writer) { fmt.Fprintf(w, "key %s of %s revoked\n", args[1], args[0]) })
			})
		},
	}
	bundle := &cobra.Command{
		Use:   "bundle",
		Short: "Fetch and verify the trust bundle (signed by a server key it lists)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				b, err := c.TrustBundle(ctx)
				if err != nil {
					return err
				}
				return cf.print(b, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "sequence %d, issued by %s at %s, signature verified\n", b.Sequence, b.Issuer, b.IssuedAt.Format("2006-01-02T15:04:05Z"))
					for _, k := range b.Keys {
						fmt.Fprintf(w, "%s\t%s\t%s\n", k.Member, k.Kind, k.KeyID)
					}
				})
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete MEMBER",
		Short: "Delete an agent, approver or server member and its keys (waits for approvals once the federation has its approvers)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				pending, err := c.DeleteMember(ctx, args[0])
				if err != nil {
					return err
				}
				if pending != nil {
					return printApproval(&cf, pending)
				}
				fmt.Printf("member %s deleted\n", args[0])
				return nil
			})
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether the bootstrap window is closed (trust sealed) and the bootstrap token retired",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				st, err := c.TrustStatus(ctx)
				if err != nil {
					return err
				}
				return cf.print(st, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "sealed:\t%v\napprovers:\t%d (the trust rules need %d)\nbootstrap token retired:\t%v\n",
						st.Sealed, st.Approvers, st.ApproversNeeded, st.BootstrapRetired)
				})
			})
		},
	}
	cmd.AddCommand(members, register, rotate, revoke, del, status, bundle)
	return cmd
}

func newPolicyCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "policy", Short: "Show or set the approval and trust policy"}
	cf.register(cmd)
	show := &cobra.Command{
		Use:   "show",
		Short: "Show the policy",
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				p, err := c.Policy(ctx)
				if err != nil {
					return err
				}
				return cf.print(p, nil)
			})
		},
	}
	set := &cobra.Command{
		Use:   "set FILE",
		Short: "Replace the policy with the JSON in FILE ('-' for stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var raw []byte
			if args[0] == "-" {
				raw, err = io.ReadAll(os.Stdin)
			} else {
				raw, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			var p fsm.Policy
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&p); err != nil {
				return fmt.Errorf("policy file: %w", err)
			}
			ctx, cancel := cf.ctx()
			defer cancel()
			out, pending, err := c.SetPolicyGated(ctx, &p)
			if err != nil {
				return err
			}
			if pending != nil {
				return printApproval(&cf, pending)
			}
			return cf.print(out, nil)
		},
	}
	cmd.AddCommand(show, set)
	return cmd
}

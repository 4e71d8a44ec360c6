package main

import (
	"context"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"

	"github.com/hashicorp/serf/coordinate"
	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/internal/structs"
)

func newAgentTasksCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "tasks NODE",
		Short: "List the tasks assigned to an agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.do(func(ctx context.Context, c *client.Client) error {
				tasks, _, err := c.Tasks(ctx, "", "", args[0], cf.query())
				if err != nil {
					return err
				}
				return cf.print(map[string]any{"tasks": tasks}, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tTYPE\tREGION\tSTATUS\tGENERATION\tREPORTED\tERROR")
					for _, t := range tasks {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", t.ID, t.Type, t.Region, t.Status, t.Generation, fmtTime(t.ReportedAt), orDash(t.Error))
					}
				})
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func toCoord(c structs.Coordinate) *coordinate.Coordinate {
	return &coordinate.Coordinate{Vec: c.Vec, Error: c.Error, Adjustment: c.Adjustment, Height: c.Height}
}

// rttFrom estimates the RTT from node `from` to every node with a
// coordinate.
func rttFrom(coords []structs.Coordinate, from string) map[string]time.Duration {
	out := map[string]time.Duration{}
	var src *coordinate.Coordinate
	for _, c := range coords {
		if c.Node == from {
			src = toCoord(c)
		}
	}
	if src == nil {
		return out
	}
	for _, c := range coords {
		if dst := toCoord(c); src.IsCompatibleWith(dst) {
			out[c.Node] = src.DistanceTo(dst)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

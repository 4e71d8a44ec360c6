package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/internal/report"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

func newReportCmd() *cobra.Command {
	var out, addr, token, caCert, testJSON, testCommand string
	var settle time.Duration
	cmd := &cobra.Command{
		Use:   "report [--out DIR]",
		Short: "Write the phase G.1 reports (G.1.1-G.1.7 and PhaseG.1_Snapshot.json) from a live federation",
		Long: `Write one Markdown report per phase task (G.1.1_registry.md ...
G.1.7_policy_manager.md) and PhaseG.1_Snapshot.json covering all of them.

Each report holds the commit of this build, the federation's SIMULATION_MODE,
the test summary of the component's packages from a go test -json recording
(--test-json), the outputs of a verification run against the live federation
at --addr (the registry verification registers, reads back on every server
and deregisters the region "report-verify"), the P1-P7 matrix of
GET /v1/policy/status, and audit hash refs: the chain head and the entries the
verification created. A component that is not built is reported as not
implemented, never as passed. G.1_precheck.json in DIR, when present, is
summarised too.

make reports runs the tests, starts a federation, runs this and stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if testJSON == "" {
				testJSON = filepath.Join(out, "logs", "go-test.json")
			}
			ctx, cancel := context.WithTimeout(context.Background(), settle+2*time.Minute)
			defer cancel()
			c, dirty := strings.CutSuffix(commit, "-dirty")
			var tlsCfg *tls.Config
			if caCert != "" {
				var err error
				if tlsCfg, err = tlsutil.ClientConfig(tlsutil.Files{CA: caCert}, ""); err != nil {
					return err
				}
			}
			snap, files, err := report.Generate(ctx, report.Config{
				Addr: addr, Token: cmp.Or(token, os.Getenv("FEDERATION_TOKEN")), TLS: tlsCfg, OutDir: out, TestJSON: testJSON, TestCommand: testCommand,
				Commit: c, Dirty: dirty, Version: version, Settle: settle,
			})
			if err != nil {
				return err
			}
			for _, cr := range snap.Components {
				fmt.Printf("%-6s %-30s %s\n", cr.Task, cr.Name, strings.ToUpper(cr.Verdict))
			}
			fmt.Printf("%s; audit head %s at index %d\n", snap.Simulation.Summary, snap.Audit.Head, snap.Audit.Index)
			if snap.Tests.Run == nil {
				fmt.Fprintln(os.Stderr, "warning:", snap.Tests.Error)
			}
			fmt.Printf("wrote %d files: %s\n", len(files), strings.Join(files, " "))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "reports", "directory for the reports")
	f.StringVar(&addr, "addr", defaultAddr(), "a server of the live federation (env ATOMFED_ADDR, else GLOBAL_REGISTRY_URL)")
	f.StringVar(&token, "token", "", "API token (default $FEDERATION_TOKEN)")
	f.StringVar(&caCert, "ca-cert", os.Getenv("ATOMFED_CACERT"), "CA certificate of the federation (env ATOMFED_CACERT)")
	f.StringVar(&testJSON, "test-json", "", "go test -json recording to summarise (default DIR/logs/go-test.json)")
	f.StringVar(&testCommand, "test-command", "", "how the recording was made, shown in the reports")
	f.DurationVar(&settle, "settle", 60*time.Second, "how long to wait for a leader and a probe result of every region")
	return cmd
}

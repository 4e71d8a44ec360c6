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
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

func newReportCmd() *cobra.Command {
	var out, addr, token, caCert, testJSON, testCommand, devDir string
	var approverKeys, regionDBs []string
	var settle, verifyTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "report [--out DIR]",
		Short: "Write the phase G.1 reports (G.1.1-G.1.7 and PhaseG.1_Snapshot.json) from a live federation",
		Long: `Write one Markdown report per phase task (G.1.1_registry.md ...
G.1.7_policy_manager.md) and PhaseG.1_Snapshot.json covering all of them.

Each report holds the commit of this build, the federation's SIMULATION_MODE,
the test summary of the component's packages from a go test -json recording
(--test-json), the outputs of a verification run against the live federation
at --addr, the P1-P7 matrix of GET /v1/policy/status, and audit hash refs:
the chain head and the entries the verification created.

The verifications exercise each component and can fail:
  G.1.1  registers the staging region "report-verify" (signed with a key made
         for the run), reads it back on every server, deregisters it;
  G.1.2  creates a table in the first region's database, makes it global,
         compares its rows in every region, changes rows, compares again,
         removes it;
  G.1.4  places the tenant "report-verify" with a mirror, compares its rows,
         checks the mirror has no PII, no other tenant's rows and RLS on;
  G.1.7  sends a registration whose body was changed after signing (must get
         403), and registers and deregisters the production region
         "report-verify-prod" through approvals signed with --approver-key.
G.1.2 and G.1.4 need the regions' databases (--region-db); --dev-dir of an
atomfed dev federation gives the databases, approver keys and CA. A
component that is not built is reported as not implemented, one verified
while a part it depends on runs simulated as pass_simulated, never as passed.
G.1_precheck.json in DIR, when present, is summarised too.

make reports runs the tests, starts a federation, runs this and stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if testJSON == "" {
				testJSON = filepath.Join(out, "logs", "go-test.json")
			}
			ctx, cancel := context.WithTimeout(context.Background(), settle+2*time.Minute)
			defer cancel()
			c, dirty := strings.CutSuffix(commit, "-dirty")
			if devDir != "" {
				df, err := readDevFile(devDir)
				if err != nil {
					return err
				}
				approverKeys = append(approverKeys, df.ApproverKeys...)
				for r, dsn := range df.RegionDBs {
					regionDBs = append(regionDBs, r+"="+dsn)
				}
				if caCert == "" {
					caCert = df.CACert
				}
			}
			var approvers []*signing.Signer
			for _, p := range approverKeys {
				s, err := signing.LoadSigner(p, []byte(os.Getenv(signing.PasswordEnv)))
				if err != nil {
					return fmt.Errorf("--approver-key %s: %w", p, err)
				}
				approvers = append(approvers, s)
			}
			dbs := map[string]string{}
			for _, kv := range regionDBs {
				r, dsn, ok := strings.Cut(kv, "=")
				if !ok || r == "" || dsn == "" {
					// The value is not echoed: it may hold a password.
					return fmt.Errorf("--region-db: want REGION=DSN, e.g. eu-west='postgres://postgres@db.eu-west:5432/atomfed?passfile=/etc/atomfed/pgpass'")
				}
				dbs[r] = dsn
			}
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
				Approvers: approvers, RegionDBs: dbs, VerifyTimeout: verifyTimeout,
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
	f.StringArrayVar(&approverKeys, "approver-key", nil, "an approver's private key file (repeat; password in COSIGN_PASSWORD), to approve the G.1.7 verification's approvals")
	f.StringArrayVar(&regionDBs, "region-db", nil, "REGION=DSN of a region's database (repeat), where the G.1.2 and G.1.4 verifications create, compare and drop their tables")
	f.StringVar(&devDir, "dev-dir", os.Getenv("ATOMFED_DEV_DIR"), "data directory of an atomfed dev federation: its approver keys, region databases and CA (from its "+DevFile+"; env ATOMFED_DEV_DIR, which make run's export line sets)")
	f.DurationVar(&verifyTimeout, "verify-timeout", 60*time.Second, "how long each wait of a verification may take (rows to replicate, objects to appear everywhere)")
	return cmd
}

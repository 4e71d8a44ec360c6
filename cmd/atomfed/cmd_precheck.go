package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/internal/precheck"
)

// precheckConfigFromEnv reads the seed's environment variables into the
// precheck's config.
func precheckConfigFromEnv() precheck.Config {
	cfg := precheck.Config{
		// The seed's GLOBAL_REGISTRY_URL, else the CLI's ATOMFED_ADDR (the
		// server the other commands talk to), else the default.
		RegistryURL:    cmp.Or(os.Getenv("GLOBAL_REGISTRY_URL"), os.Getenv("ATOMFED_ADDR")),
		VaultAddr:      os.Getenv("VAULT_ADDR"),
		CosignKeyPath:  os.Getenv("COSIGN_KEY_PATH"),
		CosignPassword: []byte(os.Getenv("COSIGN_PASSWORD")),
		PostgresDSN:    os.Getenv("POSTGRES_DSN"),
		CAFile:         os.Getenv("ATOMFED_CACERT"),
		RedisURL:       os.Getenv("REDIS_URL"),
		PromURL:        os.Getenv("PROM_URL"),
		S3Endpoint:     os.Getenv("S3_ENDPOINT"),
	}
	// These never reach an output by construction; masking them as well
	// costs nothing. Short values are left alone so that masking cannot
	// garble ordinary words.
	if pw := os.Getenv("PGPASSWORD"); pw != "" {
		cfg.Secrets = append(cfg.Secrets, pw)
	}
	for _, k := range []string{"COSIGN_PASSWORD", "FEDERATION_TOKEN", "VAULT_TOKEN"} {
		if v := os.Getenv(k); len(v) >= 8 {
			cfg.Secrets = append(cfg.Secrets, v)
		}
	}
	return cfg
}

func newPrecheckCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "precheck [--out DIR]",
		Short: "Check the federation's infrastructure and decide PROCEED, PROCEED_SIMULATION or BLOCK",
		Long: `Check the infrastructure a federation needs and decide whether a pipeline may
go on, as the seed rules it:

  registry  GET ${GLOBAL_REGISTRY_URL:-${ATOMFED_ADDR:-http://localhost:8401}}/health answers
                                                                        UP | NO_REGISTRY
  vault     $VAULT_ADDR/v1/sys/health: initialized and unsealed           UP | MISSING | ERROR:<reason>
  cosign    COSIGN_KEY_PATH loads as a signing key with COSIGN_PASSWORD   OK | MISSING | ERROR:<reason>
  postgres  a pgx connection to POSTGRES_DSN within 3 s                   REACHABLE | MISSING | ERROR:<reason>
            and findings (printed last, "findings" in the JSON; they do not
            change the decision) when the replication role
            atomfed_replicator has BYPASSRLS or superuser, or an output
            plugin other than pgoutput (test_decoding, wal2json, ...) is in
            $libdir (listed only when the DSN's role may: superuser, or
            EXECUTE on pg_ls_dir and SELECT on pg_config)

The components' infrastructure is checked and reported too, after a blank
line, but never changes the decision (a component without its part says so
itself):

  redis       REDIS_URL answers PING (edge routing table)      REACHABLE | MISSING | ERROR:<reason>
  prometheus  $PROM_URL/-/ready answers 200 (metrics)          UP | MISSING | ERROR:<reason>
  s3          S3_ENDPOINT answers HTTP, anonymously (DR repo)  REACHABLE | MISSING | ERROR:<reason>

Decision: every check up, ok and reachable -> PROCEED (exit 0); something
missing or in error but the registry up -> PROCEED_SIMULATION (exit 0, with a
WARNING line on stderr); no registry -> BLOCK (exit 3). Exit 1 means the
precheck itself failed.

Writes DIR/G.1_precheck.json and DIR/logs/G.1_precheck.log. No secret is
written or printed: DSN passwords are masked everywhere.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := precheck.Precheck(ctx, precheckConfigFromEnv(), version)
			jp, lp, err := r.Write(out)
			if err != nil {
				return fmt.Errorf("write the precheck report: %w", err)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			for _, n := range precheck.AllChecks {
				c := r.Checks[n]
				fmt.Fprintf(w, "%s\t%s\t%s\n", n, c.Status, c.Detail)
			}
			fmt.Fprintln(w, "\t\t")
			for _, n := range precheck.OptionalChecks {
				c := r.Checks[n]
				fmt.Fprintf(w, "%s\t%s\t%s (does not change the decision)\n", n, c.Status, c.Detail)
			}
			w.Flush()
			fmt.Printf("decision: %s\nwrote %s and %s\n", r.Decision, jp, lp)
			// Findings do not change the decision (the seed's WARNING line
			// is for simulation only): they are printed after it.
			for _, n := range precheck.AllChecks {
				for _, f := range r.Checks[n].Findings {
					fmt.Printf("%s finding: %s\n", n, f)
				}
			}
			switch r.Decision {
			case precheck.ProceedSimulation:
				fmt.Fprintln(os.Stderr, r.Warning())
			case precheck.Block:
				return &exitError{code: precheck.ExitBlock, err: fmt.Errorf("precheck decision BLOCK: %s", r.Checks[precheck.Registry].Detail)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "reports", "directory for G.1_precheck.json and logs/G.1_precheck.log")
	return cmd
}

// Command atomfed is the one binary of the atomfed federation control plane:
// server, region agent, local dev federation and the operator CLI.
//
// The command table is newRootCmd below; each command lives in its own
// file: server.go and node.go (atomfed server), agent.go (atomfed agent),
// endpoint.go (what the two share: listener, registry, HTTP life cycle,
// signals), dev.go (atomfed dev), security.go (TLS, keys, gossip key),
// simulation.go (SIMULATION_MODE), and the client commands in cmd_*.go.
// Flags and environment become configs here and nowhere else; this is the
// only package that exits.
package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// commit is the git commit of the build, set with -ldflags
// "-X main.commit=<sha>" (a "-dirty" suffix marks uncommitted changes).
var commit = "unknown"

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		if h := hint(err); h != "" {
			fmt.Fprintln(os.Stderr, "hint:", h)
		}
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "atomfed",
		Short:         "atomfed: the global federation control plane of ATOM Cloud",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServerCmd(),
		newAgentCmd(),
		newDevCmd(),
		newRegionCmd(),
		newTenantCmd(),
		newRouteCmd(),
		newMetricsCmd(),
		newEdgeCmd(),
		newGlobalTableCmd(),
		newMembersCmd(),
		newOperatorCmd(),
		newSnapshotCmd(),
		newBackupCmd(),
		newDRCmd(),
		newStatusCmd(),
		newApproveCmd(),
		newApprovalsCmd(),
		newTokenCmd(),
		newTrustCmd(),
		newPolicyCmd(),
		newKeygenCmd(),
		newSecretsCmd(),
		newPrecheckCmd(),
		newReportCmd(),
	)
	return root
}

// hint returns what to do about an error the user can fix by a flag, or "".
func hint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) || strings.Contains(err.Error(), "certificate signed by unknown authority") {
		return "the server's certificate is not signed by a CA this command trusts: pass the federation's CA certificate with --ca-cert or ATOMFED_CACERT (atomfed dev prints the export line)"
	}
	return ""
}

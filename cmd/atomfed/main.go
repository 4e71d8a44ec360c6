// Command atomfed is the one binary of the atomfed federation control plane:
// server, region agent, local dev federation and the operator CLI.
package main

import (
	"errors"
	"fmt"
	"os"

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
		newGlobalTableCmd(),
		newMembersCmd(),
		newOperatorCmd(),
		newSnapshotCmd(),
		newStatusCmd(),
		newApproveCmd(),
		newApprovalsCmd(),
		newTokenCmd(),
		newTrustCmd(),
		newPolicyCmd(),
		newKeygenCmd(),
		newPrecheckCmd(),
		newReportCmd(),
	)
	return root
}

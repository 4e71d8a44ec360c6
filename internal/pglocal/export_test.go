package pglocal

// Process helpers for the external tests (package pglocal_test).
var (
	ProcessExists = processExists
	ChildrenOf    = childrenOf
)

// PostmasterPID is the pid of the cluster's postmaster.
func PostmasterPID(c *Cluster) int { return c.cmd.Process.Pid }

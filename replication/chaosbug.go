//go:build chaosbug

package replication

import (
	"os"
	"strings"
)

// This file exists only in binaries built with the chaosbug tag: the chaos
// suite's data-plane run builds one to show that its checks catch real
// replication bugs. A normal build compiles chaosbug_off.go instead and
// carries no switch.
//
// ATOMFED_CHAOS_BUG holds a comma-separated list; the bugs of this
// package are:
//
//   - "repl-no-row-filter": a tenant publication lists its tables without
//     the row filter tenant_id = '<tenant>', so every tenant's rows of a
//     shared table reach the tenant's mirrors.
//   - "repl-no-rls": a mirror table gets no row-level security and no
//     tenant policy, so an application session sees every tenant's rows.
var chaosBugs = strings.Split(os.Getenv("ATOMFED_CHAOS_BUG"), ",")

func chaosBug(name string) bool {
	for _, b := range chaosBugs {
		if strings.TrimSpace(b) == name {
			return true
		}
	}
	return false
}

func dropRowFilter() bool { return chaosBug("repl-no-row-filter") }

func skipRLS() bool { return chaosBug("repl-no-rls") }

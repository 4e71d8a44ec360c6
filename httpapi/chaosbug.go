//go:build chaosbug

package httpapi

import "os"

// This file exists only in binaries built with the chaosbug tag: the chaos
// suite builds one to show that its checker catches a real consistency bug.
// A normal build compiles chaosbug_off.go instead and carries no switch.

// chaosBug names the bug to inject, from ATOMFED_CHAOS_BUG.
var chaosBug = os.Getenv("ATOMFED_CHAOS_BUG")

// bugLocalReads: linearizable reads are answered from this server's local
// state, without going to the leader or confirming leadership, as if a
// follower's state were current.
func bugLocalReads() bool { return chaosBug == "local-reads" }

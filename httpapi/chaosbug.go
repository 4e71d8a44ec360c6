//go:build chaosbug

package httpapi

import "os"

// This file exists only in binaries built with the chaosbug tag: the chaos
// suite builds one to show that its checker catches real consistency bugs.
// A normal build compiles chaosbug_off.go instead and carries no switch.

// chaosBug names the bug to inject, from ATOMFED_CHAOS_BUG.
var chaosBug = os.Getenv("ATOMFED_CHAOS_BUG")

// bugLocalReads ("local-reads"): every server answers linearizable reads
// from its local state, without going to the leader, as if a follower's
// state were current.
func bugLocalReads() bool { return chaosBug == "local-reads" }

// bugNoReadBarrier ("no-read-barrier", and implied by "local-reads"): the
// leader answers linearizable reads without confirming with a quorum that
// it still leads, so a deposed leader that has not noticed yet (one woken
// from a pause) serves stale data.
func bugNoReadBarrier() bool { return chaosBug == "local-reads" || chaosBug == "no-read-barrier" }

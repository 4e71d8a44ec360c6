//go:build chaosbug

package httpapi

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

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
// it still leads.
func bugNoReadBarrier() bool { return chaosBug == "local-reads" || chaosBug == "no-read-barrier" }

// cachedLeader is the leadership flag of the no-read-barrier bug: read
// once every 500 ms instead of per request, as a "cheap" read path might.
var (
	cachedLeader     atomic.Bool
	cachedLeaderOnce sync.Once
)

// leaderForReads says whether this server may answer a linearizable read
// itself. With no-read-barrier it answers from the cached flag, so a
// leader woken from a pause keeps serving its stale state for up to 500 ms
// after it was deposed.
func (a *API) leaderForReads() bool {
	if chaosBug != "no-read-barrier" {
		return a.c.IsLeader()
	}
	cachedLeaderOnce.Do(func() {
		cachedLeader.Store(a.c.IsLeader())
		go func() {
			for range time.Tick(500 * time.Millisecond) {
				cachedLeader.Store(a.c.IsLeader())
			}
		}()
	})
	return cachedLeader.Load()
}

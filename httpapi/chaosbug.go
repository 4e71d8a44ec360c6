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

// chaosBug names the bug to inject, from ATOMFED_CHAOS_BUG:
//
//   - "follower-local-reads": a follower answers linearizable reads from
//     its own state without the read-index round, as if what it has
//     applied were current. A follower cut off from the leader, or merely
//     behind it, returns values the majority has overwritten.
//   - "no-read-barrier": a server that believes it leads answers
//     linearizable reads without confirming its leadership with a quorum,
//     from a leadership flag it refreshes every 500 ms; a leader woken from
//     a pause answers the reads queued meanwhile from its stale state
//     before the flag catches up. Other servers read as usual.
var chaosBug = os.Getenv("ATOMFED_CHAOS_BUG")

// skipReadBarrier says whether a linearizable read skips ConsistentRead
// and is answered from this server's state as it stands.
func (a *API) skipReadBarrier() bool {
	switch chaosBug {
	case "follower-local-reads":
		return !a.c.IsLeader()
	case "no-read-barrier":
		return a.cachedLeader()
	}
	return false
}

// leaderFlag is the no-read-barrier bug's leadership flag: read once every
// 500 ms instead of per request, as a "cheap" read path might.
var (
	leaderFlag     atomic.Bool
	leaderFlagOnce sync.Once
)

func (a *API) cachedLeader() bool {
	leaderFlagOnce.Do(func() {
		leaderFlag.Store(a.c.IsLeader())
		go func() {
			for range time.Tick(500 * time.Millisecond) {
				leaderFlag.Store(a.c.IsLeader())
			}
		}()
	})
	return leaderFlag.Load()
}

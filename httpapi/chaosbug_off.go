//go:build !chaosbug

package httpapi

// The injectable bugs are always off in a normal build; see chaosbug.go.

func bugLocalReads() bool    { return false }
func bugNoReadBarrier() bool { return false }

// leaderForReads says whether this server may answer a linearizable read
// itself (after confirming its leadership with a quorum).
func (a *API) leaderForReads() bool { return a.c.IsLeader() }

//go:build !chaosbug

package httpapi

// The injectable bugs are always off in a normal build; see chaosbug.go.

// skipReadBarrier: a linearizable read always goes through ConsistentRead
// (the leader's quorum check, a follower's read index).
func (a *API) skipReadBarrier() bool { return false }

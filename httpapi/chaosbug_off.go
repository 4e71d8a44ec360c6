//go:build !chaosbug

package httpapi

// The injectable bugs are always off in a normal build; see chaosbug.go.

func bugLocalReads() bool    { return false }
func bugNoReadBarrier() bool { return false }

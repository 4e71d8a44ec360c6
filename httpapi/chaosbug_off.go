//go:build !chaosbug

package httpapi

// bugLocalReads is always false in a normal build; see chaosbug.go.
func bugLocalReads() bool { return false }

//go:build !chaosbug

package replication

// The injectable bugs are always off in a normal build; see chaosbug.go.

// dropRowFilter: a tenant publication always carries the tenant's row
// filter.
func dropRowFilter() bool { return false }

// skipRLS: a mirror table always gets row-level security and the tenant
// policy.
func skipRLS() bool { return false }

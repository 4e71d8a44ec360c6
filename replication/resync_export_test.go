package replication

// SetResyncPoint sets the hook called at each boundary between a
// resync's steps, for the test in package replication_test; the returned
// function removes it.
func SetResyncPoint(f func(point string)) func() {
	resyncPoint = f
	return func() { resyncPoint = nil }
}

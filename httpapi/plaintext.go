package httpapi

import (
	"net/http"
)

// PlaintextGuard wraps an API handler served on a port that speaks both
// TLS and plain HTTP: plain HTTP gets only the public endpoints (/health,
// /metrics), and anything else an error that says where the API is.
func PlaintextGuard(next http.Handler) http.Handler {
	return PlaintextGuardWith()(next)
}

// PlaintextGuardWith is PlaintextGuard that also lets the given paths
// through over plain HTTP (see Config.AnonymousRegionList).
func PlaintextGuardWith(extra ...string) func(http.Handler) http.Handler {
	public := map[string]bool{"/health": true, "/metrics": true}
	for _, p := range extra {
		public[p] = true
	}
	what := "/health and /metrics"
	if len(extra) > 0 {
		what = "/health, /metrics and the anonymous reads"
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil && !public[r.URL.Path] {
				writeError(w, badRequest("tls_required",
					"this server speaks HTTPS: use https://"+r.Host+r.URL.Path+" with the federation CA (--cacert) and a token; plain HTTP serves only "+what))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

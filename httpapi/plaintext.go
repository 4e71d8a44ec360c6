package httpapi

import (
	"net/http"
)

// PlaintextGuard wraps an API handler served on a port that speaks both
// TLS and plain HTTP: plain HTTP gets only the public endpoints (/health,
// /metrics), and anything else an error that says where the API is.
func PlaintextGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil && r.URL.Path != "/health" && r.URL.Path != "/metrics" {
			writeError(w, &apiError{status: http.StatusBadRequest, code: "tls_required",
				message: "this server speaks HTTPS: use https://" + r.Host + r.URL.Path + " with the federation CA (--cacert) and a token; plain HTTP serves only /health and /metrics"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

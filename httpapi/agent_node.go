package httpapi

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// This file is the region agent's own small HTTP router, served by
// `atomfed agent` on its --http-addr: /health, /global-status and /metrics
// about that agent alone. It is not the servers' API: the servers' /v1/agents
// endpoints, through which agents report and watch their tasks, are in
// agents.go, and the route table of the servers' API is in api.go.

// AgentSource is what the agent's own small API reads.
type AgentSource interface {
	// AgentStatus returns the agent's view of itself (JSON-encodable),
	// tasks and database included.
	AgentStatus() any
	// AgentSummary is what anyone may see: status and counts, no tenant,
	// task or database detail.
	AgentSummary() any
}

// NewAgentHandler serves a region agent's own endpoints: /health and
// /global-status (its view) and /metrics (policy P4: every node serves
// both). Without the agent's own token (token, the one it presents to the
// servers) they show the summary and the metrics without tenant, table or
// task labels; with it, everything. The agent cannot verify other tokens,
// so any other bearer gets the anonymous view.
func NewAgentHandler(src AgentSource, g prometheus.Gatherer, token string, log hclog.Logger) http.Handler {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	detail := func(r *http.Request) bool {
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		return ok && token != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(token)) == 1
	}
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeError(w, errRoute) })
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeError(w, errMethod) })
	r.Use(recoverer(log))
	status := func(w http.ResponseWriter, r *http.Request) {
		if detail(r) {
			writeJSON(w, http.StatusOK, src.AgentStatus())
			return
		}
		writeJSON(w, http.StatusOK, src.AgentSummary())
	}
	r.HandleFunc("/health", status).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/global-status", status).Methods(http.MethodGet)
	full := promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: log.StandardLogger(nil)})
	anonymous := promhttp.HandlerFor(RedactedGatherer(g), promhttp.HandlerOpts{ErrorLog: log.StandardLogger(nil)})
	r.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if detail(r) {
			full.ServeHTTP(w, r)
			return
		}
		anonymous.ServeHTTP(w, r)
	})).Methods(http.MethodGet)
	return r
}

// DetailLabels are the metric labels that name a tenant, a table or a
// task (or a tenant or a global table, "name"): series with one of them
// are left out of /metrics without a token.
var DetailLabels = []string{"tenant", "name", "table", "task"}

// RedactedGatherer gathers g without the series that carry a DetailLabels
// label (and without families left empty): what /metrics shows without a
// token. Aggregate series (by region, kind, code, route, ...) stay.
func RedactedGatherer(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		out := mfs[:0]
		for _, mf := range mfs {
			kept := mf.Metric[:0]
			for _, m := range mf.Metric {
				detailed := false
				for _, l := range m.GetLabel() {
					for _, d := range DetailLabels {
						if l.GetName() == d {
							detailed = true
						}
					}
				}
				if !detailed {
					kept = append(kept, m)
				}
			}
			if len(kept) > 0 {
				mf.Metric = kept
				out = append(out, mf)
			}
		}
		return out, err
	})
}

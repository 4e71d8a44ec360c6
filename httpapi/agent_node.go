package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// This file is the region agent's own small HTTP router, served by
// `atomfed agent` on its --http-addr: /health, /global-status and /metrics
// about that agent alone. It is not the servers' API: the servers' /v1/agents
// endpoints, through which agents report and watch their tasks, are in
// agents.go, and the route table of the servers' API is in api.go.

// AgentSource is what the agent's own small API reads.
type AgentSource interface {
	// AgentStatus returns the agent's view of itself (JSON-encodable).
	AgentStatus() any
}

// NewAgentHandler serves a region agent's own endpoints: /health and
// /global-status (its view: tasks and servers) and /metrics (policy P4:
// every node serves both).
func NewAgentHandler(src AgentSource, g prometheus.Gatherer, log hclog.Logger) http.Handler {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeError(w, errRoute) })
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeError(w, errMethod) })
	r.Use(recoverer(log))
	status := func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, src.AgentStatus()) }
	r.HandleFunc("/health", status).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/global-status", status).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	return r
}
